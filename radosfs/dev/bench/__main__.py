"""python -m radosfs.dev.bench: the benchmark (see the package's docstring)."""
import sys

from radosfs.dev.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
