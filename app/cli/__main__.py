"""``python -m app.cli`` runs the ``loupe`` command line."""

import sys

from app.cli import main

sys.exit(main())
