"""``python -m validation.interop --backend jax|torch GOLDEN_DIR --out values.npz``: forwards to
:func:`refscore.validation.interop.run.main`."""
import sys

from refscore.validation.interop.run import main

if __name__ == "__main__":
    sys.exit(main())
