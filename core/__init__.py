"""Loupe core: the clinical domain, importable and testable without Qt.

Nothing in this package may import PySide6 (a test enforces it) or read
settings and environment variables on its own: the app or the CLI resolves
paths and options and passes them in.
"""

__version__ = "0.1.0"
