"""Entry script for the frozen bundle: the same ``main`` as the ``loupe`` console script."""

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main())
