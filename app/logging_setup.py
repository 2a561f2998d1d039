"""Application logging: a rotating file in the user log dir, warnings to stderr."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path


def log_dir() -> Path:
    """The platform's user log folder for Loupe."""
    from platformdirs import user_log_dir

    return Path(user_log_dir("loupe", appauthor=False))


def setup_logging(folder: Path | None = None, level: int = logging.INFO) -> Path:
    """Log to ``loupe.log`` (rotating, 5 × 2 MB) in ``folder``; returns the log file path."""
    folder = folder or log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "loupe.log"
    root = logging.getLogger()
    if not any(isinstance(h, logging.handlers.RotatingFileHandler) for h in root.handlers):
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=2_000_000, backupCount=5, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)
    return path
