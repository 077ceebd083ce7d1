"""`python -m parts2whole ...`: the command line (see parts2whole/cli.py)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
