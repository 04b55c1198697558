"""Entry point: ``python -m validation [--quick] [--only NAME] [--seed N]``."""
import sys

from .runner import main

if __name__ == "__main__":
    sys.exit(main())
