"""Application logging: a rotating file in the user log dir, warnings to stderr."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path


def log_dir() -> Path:
    """The platform's user log folder for Loupe."""
    from platformdirs import user_log_dir

    return Path(user_log_dir("loupe", appauthor=False))


def setup_logging(folder: Path | None = None, level: int = logging.INFO, quiet_terminal: bool = True) -> Path:
    """Log to ``loupe.log`` (rotating, 5 × 2 MB) in ``folder``; returns the log file path.

    Python warnings are logged too; with ``quiet_terminal`` a terminal handler
    on the root logger shows only Loupe's own records, one line each, so no
    library traceback reaches the person (the file keeps everything).
    """
    folder = folder or log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "loupe.log"
    root = logging.getLogger()
    if not any(isinstance(h, logging.handlers.RotatingFileHandler) for h in root.handlers):
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=2_000_000, backupCount=5, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # library warnings (pydicom, decoders) go to the log, not the terminal
    for handler in root.handlers if quiet_terminal else ():
        if type(handler) is logging.StreamHandler and getattr(handler, "stream", None) in (sys.stderr, sys.stdout):
            quiet_libraries(handler)
    return path


#: Loggers whose records may reach the terminal (one line each); everything else goes to the log file only.
OWN_LOGGERS = ("core", "app", "loupe", "bench", "__main__")


class OwnRecordsOnly(logging.Filter):
    """Lets through only Loupe's own records (their tracebacks are cut by the handler's formatter).

    pydicom and the decoder plugins log a traceback for every frame they fail
    to decode; the person gets Loupe's one-line reason instead, and the log
    file keeps the details.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        return any(name == own or name.startswith(own + ".") for own in OWN_LOGGERS)


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return super().format(record).splitlines()[0] if record.getMessage() else super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def quiet_libraries(handler: logging.Handler, fmt: str = "%(levelname)s %(name)s: %(message)s") -> None:
    """Make a terminal handler show only Loupe's own records, one line each (see :class:`OwnRecordsOnly`)."""
    if not any(isinstance(f, OwnRecordsOnly) for f in handler.filters):
        handler.addFilter(OwnRecordsOnly())
    handler.setFormatter(_OneLine(fmt))


def setup_cli_logging(verbose: bool = False) -> None:
    """The ``loupe`` command's logging: one-line Loupe records on stderr, everything (tracebacks too) in the log file.

    The log file is the app's (``loupe.log`` in the user log dir, or ``$LOUPE_LOG_DIR``); when it cannot be
    created, library records are dropped rather than printed.
    """
    import os

    root = logging.getLogger()
    if not root.handlers:  # as logging.basicConfig: a host (e.g. a test runner) that set up logging keeps it
        stderr = logging.StreamHandler(sys.stderr)
        stderr.setLevel(logging.INFO if verbose else logging.WARNING)
        if not verbose:
            quiet_libraries(stderr)
        root.addHandler(stderr)
    try:
        folder = os.environ.get("LOUPE_LOG_DIR")
        setup_logging(Path(folder) if folder else None, level=logging.INFO, quiet_terminal=not verbose)
    except OSError:
        root.setLevel(logging.INFO if verbose else logging.WARNING)
        logging.captureWarnings(True)
