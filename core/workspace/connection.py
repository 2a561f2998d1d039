"""Connections to the workspace file: one per thread, WAL, foreign keys, busy timeout.

SQLite connection objects must not cross threads, so each thread that touches
the workspace gets its own :class:`sqlite_utils.Database` on the same file.
Writes run inside ``BEGIN IMMEDIATE`` transactions: the write lock is taken
up front (so two writers queue on the busy timeout instead of deadlocking
on a lock upgrade) and every public write commits before it returns.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import sqlite_utils

from core.errors import WorkspaceBusy, WorkspaceError

logger = logging.getLogger(__name__)

#: Seconds a writer waits for another process's write lock before giving up.
DEFAULT_TIMEOUT = 10.0

BUSY_MESSAGE = "the workspace is busy: another Loupe process is writing; try again"

# SQLite primary result codes (the low byte of an extended code).
_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL = 8, 10, 13


def now_iso() -> str:
    """The current UTC time as ISO-8601 with milliseconds, e.g. ``2024-05-01T12:00:00.123Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dumps(value: Any) -> str:
    """Canonical JSON: sorted keys, no spaces, UTF-8 kept (used for storage and hashing)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def loads(text: str | None, default: Any = None) -> Any:
    """Parse stored JSON; ``default`` for NULL."""
    if text is None:
        return default
    return json.loads(text)


def _primary_code(error: sqlite3.Error) -> int | None:
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+
    return None if code is None else code & 0xFF


def _is_full(error: sqlite3.Error, path: Path) -> bool:
    if _primary_code(error) == _SQLITE_FULL or "database or disk is full" in str(error).lower():
        return True
    # With no byte left, SQLite cannot even size its shared-memory index and says "disk I/O error".
    if _primary_code(error) == _SQLITE_IOERR or "disk i/o error" in str(error).lower():
        try:
            return shutil.disk_usage(path.parent).free < (1 << 20)
        except OSError:
            return False
    return False


def _is_readonly(error: sqlite3.Error) -> bool:
    return _primary_code(error) == _SQLITE_READONLY or "readonly database" in str(error).lower()


def _is_busy(error: sqlite3.Error) -> bool:
    message = str(error).lower()
    return isinstance(error, sqlite3.OperationalError) and (
        "locked" in message or "busy" in message
    )


@contextmanager
def translate_errors(path: Path) -> Iterator[None]:
    """Turn sqlite3 errors into :class:`WorkspaceBusy` / :class:`WorkspaceError` with plain messages."""
    try:
        yield
    except sqlite3.Error as error:
        if _is_busy(error):
            logger.warning("workspace %s busy: %s", path, error)
            raise WorkspaceBusy(BUSY_MESSAGE) from error
        # A full disk or a read-only file/folder/medium is the person's to fix, not a bug:
        # say so plainly. SQLite rolled the transaction back, so nothing was half-saved.
        if _is_full(error, path):
            logger.info("workspace %s: disk full: %s", path, error)
            raise WorkspaceError(f"the disk is full: the workspace {path} could not be written and nothing "
                                 f"was saved; free some space and try again") from error
        if _is_readonly(error):
            logger.info("workspace %s: read-only: %s", path, error)
            raise WorkspaceError(f"the workspace {path} is read-only (its file, folder or disk does not allow "
                                 f"writing): nothing was saved; open a writable copy to make changes") from error
        if "not a database" in str(error):
            raise WorkspaceError(f"{path} is not a Loupe workspace (not an SQLite file)") from error
        logger.exception("workspace %s: database error", path)
        raise WorkspaceError(f"the workspace {path} could not be read or written: {error}") from error


class _PerThreadPool:
    """What both pools share: one connection per thread, every one closable from :meth:`close`.

    Subclasses set ``path`` and call :meth:`_init_pool`, keep each thread's
    database in ``self._local.db`` and say how to reach its raw connection
    (:meth:`_raw`).
    """

    path: object

    def _init_pool(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list = []
        self._closed = False

    @staticmethod
    def _raw(db):
        """The DB-API connection behind a thread's database object."""
        return db.conn

    def release_thread(self) -> None:
        """Close the calling thread's connection (for worker threads that are about to end)."""
        db = getattr(self._local, "db", None)
        if db is None:
            return
        self._local.db = None
        conn = self._raw(db)
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)
        conn.close()

    def close(self) -> None:
        """Close every thread's connection; later calls raise :class:`WorkspaceError`."""
        with self._lock:
            conns, self._all = self._all, []
            self._closed = True
        for conn in conns:
            try:
                conn.close()
            except Exception:  # pragma: no cover - closing another thread's connection is best effort
                logger.warning("could not close a connection to %s", self.path, exc_info=True)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed


class ConnectionPool(_PerThreadPool):
    """One :class:`sqlite_utils.Database` per thread (and per process), all on one file."""

    def __init__(self, path: Path, timeout: float, uri: str | None = None) -> None:
        self.path = path
        self.timeout = timeout
        #: an SQLite URI (``file:...?mode=ro``) used instead of ``path`` for read-only workspaces
        self.uri = uri
        self._init_pool()

    def get(self) -> sqlite_utils.Database:
        """This thread's database, connecting on first use."""
        if self._closed:
            raise WorkspaceError(f"the workspace {self.path} is closed")
        db = getattr(self._local, "db", None)
        # A forked child must not reuse its parent's connection.
        if db is not None and self._local.pid == os.getpid():
            return db
        db = self._connect()
        self._local.db = db
        self._local.pid = os.getpid()
        self._local.depth = 0
        return db

    def _connect(self) -> sqlite_utils.Database:
        with translate_errors(self.path):
            # check_same_thread=False only so close() may close every thread's
            # connection; each connection is still used by its own thread alone.
            target, uri = (self.uri, True) if self.uri else (str(self.path), False)
            conn = sqlite3.connect(target, timeout=self.timeout, check_same_thread=False, uri=uri)
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            # FULL: a label survives even a power cut once add_label returns.
            conn.execute("PRAGMA synchronous = FULL")
            db = sqlite_utils.Database(conn, execute_plugins=False)
        with self._lock:
            self._all.append(conn)
        logger.debug("opened connection to %s in thread %s", self.path, threading.get_ident())
        return db

    @contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """A write transaction (``BEGIN IMMEDIATE`` … ``COMMIT``); nested calls join the outer one."""
        db = self.get()
        if self._local.depth:
            self._local.depth += 1
            try:
                with translate_errors(self.path):
                    yield db
            finally:
                self._local.depth -= 1
            return
        with translate_errors(self.path):
            db.conn.execute("BEGIN IMMEDIATE")
        self._local.depth = 1
        try:
            with translate_errors(self.path):
                yield db
                db.conn.execute("COMMIT")
        except BaseException:
            if db.conn.in_transaction:
                db.conn.execute("ROLLBACK")
            raise
        finally:
            self._local.depth = 0

    @contextmanager
    def read(self) -> Iterator[sqlite_utils.Database]:
        """This thread's database for reading, with sqlite errors translated."""
        db = self.get()
        with translate_errors(self.path):
            yield db

    @property
    def readonly(self) -> bool:
        """Whether this pool opened the file read-only."""
        return self.uri is not None
