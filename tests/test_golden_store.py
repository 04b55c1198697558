"""Golden files on disk: the manifest bound to the arrays it describes.

A manifest whose case description (model kwargs, sampler params, target
kwargs...) was edited after ``refscore golden`` wrote it no longer describes
the stored arrays; loading it must fail, naming the case and the field, and
``refscore check`` must not PASS against it.  Files written before the binding
(format 1, and format 2 without a ``binding`` per case) still load.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from refscore import cli, golden

DATA = Path(__file__).resolve().parent / "data"

#: one case of each kind that a hand edit could silently change
SMALL = ("mlpscore_tanh_depth1_d2", "dsm_multi_mlpscore_tanh_d2", "ksd_imq_gaussian_d2", "ula_gaussian_d2",
         "annealed_mixture_d1", "schedule_sd_leading", "diffusion_ddim_sd_trailing_eta1_mixture_d2")
DDIM = "diffusion_ddim_sd_trailing_eta1_mixture_d2"


@pytest.fixture(scope="module")
def small_golden(tmp_path_factory):
    """A golden directory of a few cases, written by golden.write (the full format, in a second)."""
    d = tmp_path_factory.mktemp("store") / "golden"
    specs, extra = golden.case_specs(), golden.extra_case_specs()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(golden, "case_specs", lambda: {k: v for k, v in specs.items() if k in SMALL})
        mp.setattr(golden, "extra_case_specs", lambda: {k: v for k, v in extra.items() if k in SMALL})
        golden.write(d)
    return d


@pytest.fixture(scope="module")
def values(small_golden, tmp_path_factory):
    """refscore's own values of the small golden directory, as a backend would save them."""
    p = tmp_path_factory.mktemp("store_values") / "values.npz"
    np.savez(p, **golden.compute(small_golden))
    return p


@pytest.fixture
def gcopy(small_golden, tmp_path):
    d = tmp_path / "g"
    shutil.copytree(small_golden, d)
    return d


def edit_manifest(gdir, edit):
    m = json.loads((gdir / "manifest.json").read_text())
    edit(m["cases"])
    (gdir / "manifest.json").write_text(json.dumps(m, indent=1))


def test_written_manifest_binds_every_case(small_golden):
    m = json.loads((small_golden / "manifest.json").read_text())
    assert set(m["cases"]) == set(SMALL)
    for name, meta in m["cases"].items():
        binding = meta["binding"]
        assert set(binding) == {"arrays", "fields"}
        assert set(binding["fields"]) == set(meta) - {"binding"}
    g = golden.load(small_golden)  # the untouched files load
    assert set(g.all_cases) == set(SMALL)


# every edit leaves a manifest that is well formed (the model or target still builds, the shapes
# still match the arrays): only the binding can tell that it no longer describes golden.npz
EDITS = {
    "activation": ("mlpscore_tanh_depth1_d2", "'kwargs'",
                   lambda c: c["mlpscore_tanh_depth1_d2"]["kwargs"].update(activation="softplus")),
    "step": ("ula_gaussian_d2", "'params'", lambda c: c["ula_gaussian_d2"]["params"].update(step=0.2)),
    "annealed sigmas": ("annealed_mixture_d1", "'params'",
                        lambda c: c["annealed_mixture_d1"]["params"].update(sigmas=[3.0, 1.0, 0.5])),
    "covariance": ("ksd_imq_gaussian_d2", "'kwargs'",
                   lambda c: c["ksd_imq_gaussian_d2"]["kwargs"].update(cov=[[1.5, 0.2], [0.2, 0.8]])),
    "imq c": ("ksd_imq_gaussian_d2", "'params'", lambda c: c["ksd_imq_gaussian_d2"]["params"].update(c=2.0)),
    "wrapped model": ("dsm_multi_mlpscore_tanh_d2", "'kwargs'",
                      lambda c: c["dsm_multi_mlpscore_tanh_d2"]["kwargs"]["model"]["kwargs"].update(
                          activation="gelu")),
    "layout": ("mlpscore_tanh_depth1_d2", "'layout'",
               lambda c: c["mlpscore_tanh_depth1_d2"].update(layout="[b (2), W]")),
    "seed": ("ula_gaussian_d2", "'seed'", lambda c: c["ula_gaussian_d2"].update(seed=[1, 2])),
    "added field": ("ksd_imq_gaussian_d2", "'note'", lambda c: c["ksd_imq_gaussian_d2"].update(note="mine")),
    "schedule table": ("schedule_sd_leading", "'schedule'",
                       lambda c: c["schedule_sd_leading"]["schedule"]["kwargs"].update(beta_end=0.02)),
    "spacing": ("schedule_sd_leading", "'params'",
                lambda c: c["schedule_sd_leading"]["params"]["grid"].update(spacing="trailing", steps_offset=0)),
    "prediction type": (DDIM, "'params'", lambda c: c[DDIM]["params"].update(prediction="eps")),
    "sampler option": (DDIM, "'params'", lambda c: c[DDIM]["params"]["options"].update(eta=0.5)),
    "data law": (DDIM, "'data'", lambda c: c[DDIM]["data"]["kwargs"].update(weights=[0.5, 0.5])),
}


@pytest.mark.parametrize("what", list(EDITS))
def test_hand_edited_manifest_is_refused(gcopy, values, capsys, what):
    case, field, edit = EDITS[what]
    edit_manifest(gcopy, edit)
    with pytest.raises(ValueError) as exc:
        golden.load(gcopy)
    msg = str(exc.value)
    assert "\n" not in msg and "manifest.json" in msg
    assert f"case {case!r}" in msg and field in msg, msg
    # the command line: one line, exit status 2, never a PASS
    rc = cli.main(["check", str(gcopy), str(values)])
    cap = capsys.readouterr()
    assert rc == 2 and "RESULT: PASS" not in cap.out
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("refscore check: error:") and f"case {case!r}" in lines[0]


def test_an_edit_that_changes_no_value_is_no_change(gcopy):
    # the manifest re-saved with other indentation and key order describes the same case
    m = json.loads((gcopy / "manifest.json").read_text())
    m["cases"] = {name: dict(reversed(list(meta.items()))) for name, meta in m["cases"].items()}
    (gcopy / "manifest.json").write_text(json.dumps(m, indent=4))
    assert set(golden.load(gcopy).all_cases) == set(SMALL)


def test_arrays_from_another_run_are_refused(gcopy):
    # golden.npz rewritten with one stored value changed (a sound archive, every CRC right)
    with np.load(gcopy / "golden.npz") as f:
        arrays = dict(f)
    arrays["ula_gaussian_d2/states"] = arrays["ula_gaussian_d2/states"] * (1 + 1e-6)
    np.savez(gcopy / "golden.npz", **arrays)
    with pytest.raises(ValueError) as exc:
        golden.load(gcopy)
    msg = str(exc.value)
    assert "case 'ula_gaussian_d2'" in msg and "arrays" in msg and "golden.npz" in msg and "\n" not in msg


def test_damaged_binding_is_refused(gcopy):
    edit_manifest(gcopy, lambda c: c["ula_gaussian_d2"].update(binding="none"))
    with pytest.raises(ValueError, match="case 'ula_gaussian_d2': 'binding'"):
        golden.load(gcopy)


def test_files_written_before_the_binding_still_load(gcopy, values):
    # format 1 (tests/data/golden_v1): no binding, loads as before
    g1 = golden.load(DATA / "golden_v1")
    assert g1.format_version == 1 and len(g1.cases) == 2
    # format 2 without the binding (written before it existed): loads, unverified, and checks
    edit_manifest(gcopy, lambda c: [meta.pop("binding") for meta in c.values()])
    g = golden.load(gcopy)
    assert set(g.all_cases) == set(SMALL)
    assert golden.check(g, values).passed


def test_manifest_check_names_the_type_of_a_list_param(gcopy):
    edit_manifest(gcopy, lambda c: c["annealed_mixture_d1"]["params"].update(sigmas=2.0))
    with pytest.raises(ValueError) as exc:
        golden.load(gcopy)
    msg = str(exc.value)
    assert "must give 'sigmas' a list of numbers, got 2.0" in msg and "a number," not in msg
    edit_manifest(gcopy, lambda c: c["annealed_mixture_d1"]["params"].update(sigmas=[2.0, "one"]))
    with pytest.raises(ValueError, match="must give 'sigmas' a list of numbers"):
        golden.load(gcopy)
    edit_manifest(gcopy, lambda c: c["annealed_mixture_d1"]["params"].update(sigmas=[3.0, 1.0, 0.5],
                                                                             steps=2.5))
    with pytest.raises(ValueError, match="must give .steps. a number \\(an integer\\), got 2.5"):
        golden.load(gcopy)


def test_manifest_check_of_a_diffusion_case_names_the_field(gcopy):
    edit_manifest(gcopy, lambda c: c[DDIM]["schedule"].update(name="cosine"))
    with pytest.raises(ValueError, match=f"case '{DDIM}' schedule .* cannot be built: schedule\\['name'\\] must be "
                                         "one of"):
        golden.load(gcopy)
    edit_manifest(gcopy, lambda c: c[DDIM].update(schedule={"name": "vp_discrete", "kwargs": {}},
                                                   params=dict(c[DDIM]["params"], grid={"steps": 10})))
    with pytest.raises(ValueError, match="must give 'grid' a grid rule"):
        golden.load(gcopy)
    edit_manifest(gcopy, lambda c: c[DDIM]["params"].update(grid={"rule": "karras", "steps": 10}))
    with pytest.raises(ValueError, match="grid rule 'karras' needs the EDM schedule"):
        golden.load(gcopy)
    edit_manifest(gcopy, lambda c: c[DDIM].update(data=[1, 2]))
    with pytest.raises(ValueError, match="'data' must be an object {'target', 'kwargs'} or null"):
        golden.load(gcopy)


# ----------------------------------------------------------------- files older than a registry entry
def test_a_file_written_before_a_loss_was_registered_still_loads_and_checks(small_golden, tmp_path, monkeypatch):
    """A loss added to refscore.losses.LOSSES gives every ``losses`` case new quantities; a golden
    file written before it lacks them and still loads, and compute and check cover what it holds.
    A loss of the format itself (FORMAT_LOSSES) stays required: its absence is damage."""
    from refscore.golden import store

    name = "mlpscore_tanh_depth1_d2"
    d = tmp_path / "g"
    shutil.copytree(small_golden, d)
    # the file as a refscore without ism wrote it (and, as before the binding existed, unbound)
    m = json.loads((d / "manifest.json").read_text())
    case = m["cases"][name]
    for q in ("ism", "ism_grad"):
        case["quantities"].remove(q)
        del case["shapes"][q]
    del case["binding"]
    (d / "manifest.json").write_text(json.dumps(m, indent=1))
    with np.load(d / "golden.npz") as z:
        arrays = {k: z[k] for k in z.files if k not in (f"{name}/ism", f"{name}/ism_grad")}
    np.savez(d / "golden.npz", **arrays)
    with pytest.raises(ValueError, match=f"case '{name}': 'quantities' lists nothing unknown and lacks ism, ism_grad"):
        golden.load(d)
    monkeypatch.setattr(store, "FORMAT_LOSSES", tuple(n for n in store.FORMAT_LOSSES if n != "ism"))
    g = golden.load(d)  # ism registered after the format: optional
    assert "ism" not in g.all_cases[name].quantities and "esm" in g.all_cases[name].quantities
    vals = golden.compute(g)
    assert f"{name}/ism" not in vals and f"{name}/esm" in vals
    res = golden.check(g, vals)
    assert res.passed and res.coverage["keys"][0] == res.coverage["keys"][1] == len(vals)
    # a quantity this refscore does not know is still refused
    case["quantities"].append("ism_typo")
    case["shapes"]["ism_typo"] = []
    (d / "manifest.json").write_text(json.dumps(m, indent=1))
    with pytest.raises(ValueError, match="lists ism_typo and lacks nothing"):
        golden.load(d)
