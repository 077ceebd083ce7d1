"""`python -m parts2whole ...`: the command line (see parts2whole/cli/)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
