"""Entry point: ``python -m refscore.validation [--quick] [--only NAME] [--seed N] [--out-dir DIR]``."""
import sys

from .runner import main

if __name__ == "__main__":
    sys.exit(main())
