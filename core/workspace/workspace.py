"""The :class:`Workspace`: one SQLite file holding images, labels, models and the audit log."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional
from urllib.parse import quote

from core.errors import WorkspaceError

from . import schema
from .audit import AuditMixin
from .audit_picks import AuditPicksMixin
from .cache import CacheMixin
from .findings import FindingsMixin
from .connection import DEFAULT_TIMEOUT, ConnectionPool
from .images import ImagesMixin
from .integrity import IntegrityMixin
from .labels import LabelsMixin
from .queue import QueueMixin
from .reading import ReadingMixin
from .shared import SharedMixin
from .registry import ModelsMixin

logger = logging.getLogger(__name__)


def _readonly_uri(path: Path) -> str | None:
    """An SQLite URI that opens ``path`` read-only, or None when the workspace can be written.

    A workspace on read-only media, or whose file or folder this user may not
    write, must still open for reading. SQLite's WAL mode needs a writable
    ``-shm`` file beside the database, so when none can be created and no
    journal is pending the file is opened ``immutable`` (nothing can change it
    while the medium is read-only). A pending ``-wal`` journal that cannot be
    read is an error: reading without it would show stale data.
    """
    if not path.exists():
        return None
    folder_ok = os.access(path.parent, os.W_OK)
    if os.access(path, os.W_OK) and folder_ok:
        return None
    base = "file:" + quote(str(path)) + "?mode=ro"
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    if shm.exists() and wal.exists():
        return base  # SQLite reads the pending journal through the existing index
    if wal.exists() and wal.stat().st_size > 0:
        raise WorkspaceError(f"the workspace {path} is read-only and holds changes not yet merged into it: "
                             f"copy the folder to a writable place and open it there")
    logger.info("workspace %s is read-only: opening it for reading only", path)
    return base + "&immutable=1"


PGREF_SUFFIX = ".pgref"

#: ``LOUPE_CACHE_DIR`` names this workstation's cache folder; read by the entry points, never by the core itself.
CACHE_ENV = "LOUPE_CACHE_DIR"
_cache_root: Optional[Path] = None


def set_cache_root(path: Optional[str | os.PathLike]) -> None:
    """Where this workstation keeps shared workspaces' reference files and model caches.

    ``None`` (the default) means the platform's user cache folder. The command line,
    the window and the training process set it from ``LOUPE_CACHE_DIR`` at start-up.
    """
    global _cache_root
    _cache_root = Path(path) if path else None


def _pgref_for(url: str) -> Path:
    """Where this workstation keeps the reference file and model cache of a shared workspace."""
    import hashlib

    from platformdirs import user_cache_dir

    from .pg import redact

    root = _cache_root or Path(user_cache_dir("loupe", appauthor=False))
    return root / "pg" / hashlib.sha1(redact(url).encode()).hexdigest()[:12] / f"workspace{PGREF_SUFFIX}"


class Workspace(SharedMixin, ReadingMixin, ImagesMixin, LabelsMixin, ModelsMixin, QueueMixin, CacheMixin, AuditMixin,
                FindingsMixin, AuditPicksMixin, IntegrityMixin):
    """A Loupe workspace: the only object in Loupe that knows tables and SQL.

    Open it with :meth:`open`; it is safe to share between threads (each
    thread gets its own SQLite connection) and between processes (SQLite WAL
    with a busy timeout). Every write method commits before it returns; a
    write that waits longer than the timeout for another process raises
    :class:`~core.errors.WorkspaceBusy`.
    """

    def __init__(self, path: Path, pool: ConnectionPool) -> None:
        """Use :meth:`open`."""
        self._path = path
        self._pool = pool

    @classmethod
    def open(cls, path: str | os.PathLike, timeout: float = DEFAULT_TIMEOUT) -> "Workspace":
        """Open (creating folders and file as needed) and migrate the workspace at ``path``.

        ``timeout`` is how many seconds a write waits for another process's
        lock before raising :class:`~core.errors.WorkspaceBusy`. Raises
        :class:`~core.errors.WorkspaceError` when the file is not a workspace,
        cannot be created, or was written by a newer Loupe.
        """
        from .pg import is_postgres_url

        if is_postgres_url(str(path)) or str(path).endswith(PGREF_SUFFIX):
            return cls._open_shared(str(path), timeout)
        path = Path(path).absolute()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise WorkspaceError(f"cannot create the folder for the workspace {path}: {error}") from error
        pool = ConnectionPool(path, timeout, uri=_readonly_uri(path))
        try:
            cls._prepare(pool)
        except BaseException:
            pool.close()
            raise
        logger.info("opened workspace %s", path)
        return cls(path, pool)

    @classmethod
    def _open_shared(cls, location: str, timeout: float) -> "Workspace":
        """Open a workspace on a PostgreSQL server (a URL, or the local ``.pgref`` that names one).

        The workspace's :attr:`path` is then a small local file,
        ``<user cache>/loupe/pg/<id>/workspace.pgref``, holding the URL: every
        process given that path (training, workers) opens the same server, and
        its folder caches model files by hash.
        """
        from . import shared
        from .pg import PgPool, redact

        url = Path(location).read_text().strip() if location.endswith(PGREF_SUFFIX) else location
        pool = PgPool(url, timeout)
        try:
            with pool.migration_lock() as db:
                schema.migrate(db, pool.path, schema.MIGRATIONS)
                db.execute(shared.MODEL_FILES_SQL)
        except BaseException:
            pool.close()
            raise
        ref = Path(location) if location.endswith(PGREF_SUFFIX) else _pgref_for(url)
        if not location.endswith(PGREF_SUFFIX):
            ref.parent.mkdir(parents=True, exist_ok=True)
            tmp = ref.with_suffix(".tmp")
            tmp.write_text(url)
            os.chmod(tmp, 0o600)  # the URL may carry a password
            os.replace(tmp, ref)
        logger.info("opened shared workspace %s", redact(url))
        return cls(ref, pool)

    @staticmethod
    def _prepare(pool: ConnectionPool) -> None:
        migrations = schema.MIGRATIONS
        with pool.read() as db:
            mode = db.execute("PRAGMA journal_mode").fetchone()[0]
            if mode.lower() != "wal" and not pool.readonly:
                mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    logger.warning("workspace %s: WAL journal unavailable, using %s", pool.path, mode)
            version = schema.user_version(db)
            if version > len(migrations):
                schema.migrate(db, pool.path, migrations)  # raises the "newer Loupe" error
        if version < len(migrations):
            if pool.readonly:
                raise WorkspaceError(f"the workspace {pool.path} is read-only and was made by an older Loupe: "
                                     f"copy it to a writable folder so it can be upgraded")
            with pool.write() as db:
                schema.migrate(db, pool.path, migrations)

    @property
    def path(self) -> Path:
        """Absolute path of the workspace file."""
        return self._path

    @property
    def location(self) -> str:
        """What names this workspace for ``--workspace``: the file path, or the server URL (password hidden)."""
        return self._pool.path if self.shared else str(self._path)

    @property
    def schema_version(self) -> int:
        """The schema version of the open file."""
        with self._pool.read() as db:
            return schema.user_version(db)

    def integrity_check(self) -> bool:
        """Run SQLite's integrity and foreign-key checks; ``True`` when both pass."""
        with self._pool.read() as db:
            integrity = [row[0] for row in db.execute("PRAGMA integrity_check")]
            foreign = db.execute("PRAGMA foreign_key_check").fetchall()
        ok = integrity == ["ok"] and not foreign
        if not ok:
            logger.error("workspace %s failed its checks: %s; foreign keys: %s", self._path, integrity, foreign)
        return ok

    def release_thread(self) -> None:
        """Close the calling thread's connection (call from a worker thread before it ends)."""
        self._pool.release_thread()

    def close(self) -> None:
        """Close every connection; the workspace cannot be used afterwards. Idempotent."""
        if not self._pool.closed:
            self._pool.close()
            logger.info("closed workspace %s", self._path)

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Workspace({str(self._path)!r})"
