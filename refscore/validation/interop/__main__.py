"""``python -m refscore.validation.interop --backend jax|torch GOLDEN_DIR --out values.npz``."""
import sys

from .run import main

if __name__ == "__main__":
    sys.exit(main())
