"""``python -m validation [--quick] [--only NAME] [--seed N] [--out-dir DIR]``: forwards to
:func:`refscore.validation.runner.main`."""
import sys

from refscore.validation.runner import main

if __name__ == "__main__":
    sys.exit(main())
