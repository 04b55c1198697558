"""Runs the registered experiments and writes figures/ and REPORT.md (stub until experiments land)."""
import argparse

EXPERIMENTS = {}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m validation", description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", action="append", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=".")
    p.parse_args(argv)
    if not EXPERIMENTS:
        print("no experiments yet")
    return 0
