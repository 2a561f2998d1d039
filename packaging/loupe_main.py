"""Entry script for the frozen bundle: the same ``main`` as the ``loupe`` console script."""

import multiprocessing
import sys

from app.cli import main

if __name__ == "__main__":
    # the window decodes compressed DICOM in spawn worker processes (core.imaging.decode_pool): in a frozen
    # bundle such a child is this binary again, and freeze_support() makes it run the worker instead of Loupe
    multiprocessing.freeze_support()
    sys.exit(main())
