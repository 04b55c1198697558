"""Superseded by ``refscore bench --only langevin`` (``benchmarks/bench.py``).

That benchmark times ULA on the 2-D mixture 0.2 N((-5,-5),I) + 0.8 N((5,5),I)
and a 10-D mixture of 5 unit-covariance components at N = 1e3, 1e4, 1e5 chains:
refscore's numba and numpy backends, a plain vectorised NumPy ULA with
``np.random.Generator`` noise, and JAX / torch peers each in its own process;
plus the counter-based generator's normals/s and the arithmetic-limit estimate.
This script forwards to it.

Usage: ``python benchmarks/langevin.py [refscore bench options]``.
"""
import sys

from bench import main  # the harness next to this script (this folder is sys.path[0])

if __name__ == "__main__":
    sys.exit(main(["--only", "langevin", *sys.argv[1:]]))
