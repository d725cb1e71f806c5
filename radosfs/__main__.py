"""`python -m radosfs`: the radosfs command (radosfs/cli.py)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
