"""The diffusion validation experiment's pieces at small size (the full experiment runs in
``python -m validation --quick``): its z statistic, its laws against samples and its negative control, the
order curves against the exact laws, and the mode-weight runs; and the diffusion_conformance experiment (samplers
written from the papers, slips named by the diagnosis): its per-step departures against a moved state, its rows
and figure, and the docs page's table of slips."""
import numpy as np
import pytest

from refscore.diffusion import EDM
from refscore.diffusion.samplers import output_distances
from refscore.validation import diffusion, runner


def test_registered():
    assert "diffusion" in runner.EXPERIMENTS
    assert diffusion.NAME == "diffusion"


def test_z_statistic():
    """_z_max against a direct computation: the largest |z| among the 2 means and the 3 distinct covariance
    entries, with the Gaussian standard errors sqrt(C_ii/n) and sqrt((C_ii C_jj + C_ij^2)/n)."""
    rng = np.random.default_rng(0)
    mean, cov = np.array([0.5, -1.0]), np.array([[2.0, 0.3], [0.3, 0.5]])
    x = rng.multivariate_normal(mean, cov, size=500)
    n = 500
    S = np.cov(x.T)
    zs = [(x[:, i].mean() - mean[i]) / np.sqrt(cov[i, i] / n) for i in range(2)]
    zs += [(S[i, j] - cov[i, j]) / np.sqrt((cov[i, i] * cov[j, j] + cov[i, j] ** 2) / n)
           for i, j in [(0, 0), (0, 1), (1, 1)]]
    assert diffusion._z_max(x, mean, cov) == pytest.approx(max(abs(z) for z in zs), rel=1e-12)


def test_laws_against_samples_and_the_negative_control():
    """1500 chains per sampler: every shown sampler within 4.5 standard errors of its exact law (10 cases, 50
    statistics), and DDPM 'large' far from the law of 'small'."""
    laws, control = diffusion.law_vs_samples(1500, 3)
    assert [label for label, *_ in laws] == [s[0] for s in diffusion.SHOWN]
    for label, got, (m, C) in laws:
        assert got.shape == (1500, 2)
        assert diffusion._z_max(got, m, C) < diffusion.Z_MAX, label
    assert control > 10


def test_order_curves_are_the_exact_laws_distances():
    curves = diffusion.order_curves((50, 100))
    name, errs = curves["heun"]
    edm = EDM()
    assert errs[1] == output_distances("heun", edm, edm.grid(100), diffusion.DATA).w2
    assert errs[0] / errs[1] == pytest.approx(4.0, rel=0.2)  # second order


def test_mode_weight_runs():
    """300 chains, 12 steps: one weight per step count (pf_ode: one), all probabilities."""
    w = diffusion.mode_weight_runs(300, (12,), 1)
    assert set(w) == {s[0] for s in diffusion.SHOWN if not (s[1] == "ddim" and s[2])}
    assert all(v.shape == (1,) and 0 <= v[0] <= 1 for v in w.values())
    # the deterministic samplers from the same starts agree with the adaptive PF-ODE within the 12-step error
    assert abs(w["heun"][0] - w["pf_ode"][0]) < 0.05


# ----------------------------------------------------------------- diffusion_conformance
def test_conformance_registered():
    from refscore.validation import diffusion_conformance

    assert "diffusion_conformance" in runner.EXPERIMENTS
    assert diffusion_conformance.NAME == "diffusion_conformance"
    assert set(diffusion_conformance.SHOWN) <= set(diffusion_conformance.SLIPS)


def test_step_departures_locate_a_moved_state():
    """refscore's steps from the golden trajectory itself reproduce it (the golden run is those steps, chained):
    every per-step departure is round-off, far below the tolerance (1e-6 of it; 0 by construction).  One
    coordinate of the state after step k moved by delta departs at step k alone by delta / (atol + rtol |g|), the
    update (your x0_hat of step k agrees); the next step is then taken from the moved state."""
    from refscore import testing
    from refscore.validation import diffusion_conformance as dc

    rtol, atol = 1e-8, 1e-10
    (c,) = testing.golden_cases("diffusion_ddim_sd_leading_gaussian_d2").all_cases.values()
    yours = {q: np.array(v) for q, v in c.quantities.items()}
    dep = dc.step_departures(c, yours, rtol, atol)
    assert all(np.all(v < 1e-6) for v in dep.values())
    assert dc.first_departure(dep) == (-1, "none")
    k, delta = 4, 1e-6
    g = yours["trajectory"][k + 1, 1, 0]
    yours["trajectory"][k + 1, 1, 0] += delta
    dep = dc.step_departures(c, yours, rtol, atol)
    assert dep["update"][k] == pytest.approx(delta / (atol + rtol * abs(g)), rel=1e-6)
    assert dep["chained"][k] == pytest.approx(delta / (atol + rtol * abs(g)), rel=1e-6)
    assert np.all(dep["update"][:k] < 1e-6) and np.all(dep["denoiser"][:k + 1] < 1e-6)
    assert np.all(np.delete(dep["chained"], k) < 1e-6)  # your other states are the golden ones
    assert dep["denoiser"][k + 1] > 1  # your x0_hat of step k + 1 is not at your moved state
    assert dc.first_departure(dep) == (k, "update")


def test_conformance_experiment_rows_and_figure(tmp_path):
    """The whole experiment (a few seconds): every sampler passes with every key compared, every slip is named
    with its row at the step the per-step departures give, and the figure is written."""
    from refscore.validation import diffusion_conformance as dc

    rows = dc.run(quick=True, seed=0, fig_dir=tmp_path)
    assert len(rows) == len(dc.WRITTEN) + len(dc.SLIPS)
    assert all(r.passed for r in rows), [(r.quantity, r.measured, r.expected) for r in rows if not r.passed]
    for slip, r in zip(dc.SLIPS, rows[len(dc.WRITTEN):]):
        assert f"'{slip}'" in r.quantity and r.measured.startswith(f"{dc.SLIPS[slip].label} [{dc.SLIPS[slip].row}]")
    assert (tmp_path / "diffusion_conformance.png").stat().st_size > 10_000


def test_the_docs_page_lists_every_slip_with_its_ledger_row():
    """docs/validate-diffusion.md's table of slips: one line per slip of SLIPS, its label and its ledger row in
    backquotes (the page's table is written by hand; this keeps it from drifting from what is verified)."""
    import pathlib

    from refscore import conventions
    from refscore.validation.diffusion_from_papers import SLIPS

    page = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "validate-diffusion.md").read_text(encoding="utf-8")
    lines = [ln for ln in page.splitlines() if ln.startswith("| `")]
    for slip in SLIPS.values():
        assert any(f"`{slip.label}`" in ln and f"{slip.row}" in ln for ln in lines), slip
        assert conventions.row(slip.row) is not None
    assert len(lines) == len({s.label for s in SLIPS.values()})
