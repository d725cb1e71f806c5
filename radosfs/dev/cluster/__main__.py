"""``python -m radosfs.dev.cluster start|stop|status DIR``."""
import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
