"""Superseded by ``refscore bench --only mlp`` (``benchmarks/bench.py``).

That benchmark times ISM and SSM loss + gradient for MLPScore hidden (64, 64)
tanh at n = 10⁴, d = 2, 10, 50 -- refscore's fused kernels (closed-form trace
and the generic any-depth forward path), a plain-NumPy forward-mode baseline,
and torch / JAX peers each in its own process -- and checks that every peer
computes the same loss and gradient.  This script forwards to it.

Usage: ``python benchmarks/mlp_losses.py [refscore bench options]``.
"""
import sys

from bench import main  # the harness next to this script (this folder is sys.path[0])

if __name__ == "__main__":
    sys.exit(main(["--only", "mlp", *sys.argv[1:]]))
