"""What a shared (PostgreSQL) workspace adds: model files in the database, cached locally by hash,
and one training run at a time across every workstation."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from core.errors import NotFound, WorkspaceBusy, WorkspaceError
from core.types import ModelVersion

logger = logging.getLogger(__name__)

MODEL_FILES_SQL = "CREATE TABLE IF NOT EXISTS model_files (hash TEXT PRIMARY KEY, data BYTEA NOT NULL, size BIGINT NOT NULL)"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class SharedMixin:
    """Shared-workspace behaviour; on a SQLite file every method here behaves as before."""

    @property
    def shared(self) -> bool:
        """True for a workspace on a PostgreSQL server."""
        from .pg import PgPool

        return isinstance(self._pool, PgPool)

    # --- model files ---------------------------------------------------------------------

    def add_model(self, model: ModelVersion, actor: str = "system") -> ModelVersion:
        """Register a model; on a shared workspace its file's bytes go into the database in the same transaction."""
        if not self.shared:
            return super().add_model(model, actor)  # type: ignore[misc]
        data = Path(model.path).read_bytes()
        if model.file_hash and _sha256(data) != model.file_hash:
            raise WorkspaceError(f"the model file {model.path} changed before it could be stored; train again")
        with self._pool.write() as db:
            db.execute("INSERT OR IGNORE INTO model_files (hash, data, size) VALUES (?, ?, ?)",
                       (model.file_hash or _sha256(data), data, len(data)))
            return self._local_model(super().add_model(model, actor))  # type: ignore[misc]

    def _model_cache_dir(self) -> Path:
        from core.models.versions import models_dir

        return models_dir(self.path)

    def _local_model(self, record: Optional[ModelVersion]) -> Optional[ModelVersion]:
        """The record with ``path`` on this workstation: ``<cache>/<sha256>.pt``, fetched once from the server."""
        if record is None or not self.shared or not record.file_hash:
            return record
        target = self._model_cache_dir() / f"{record.file_hash}.pt"
        if not target.exists():
            with self._pool.read() as db:
                row = db.execute("SELECT data FROM model_files WHERE hash = ?", (record.file_hash,)).fetchone()
            if row is None:
                raise NotFound(f"the shared workspace has no file for model {record.version}")
            data = bytes(row[0])
            if _sha256(data) != record.file_hash:
                raise WorkspaceError(f"the stored file of model {record.version} does not match its hash")
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{record.file_hash[:8]}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            logger.info("cached model %s (%d bytes) at %s", record.version, len(data), target)
        return dataclasses.replace(record, path=str(target))

    def model(self, version: str) -> ModelVersion:
        return self._local_model(super().model(version))  # type: ignore[misc]

    def active_model(self) -> Optional[ModelVersion]:
        return self._local_model(super().active_model())  # type: ignore[misc]

    def models(self) -> list[ModelVersion]:
        return [self._local_model(m) for m in super().models()]  # type: ignore[misc]

    # --- one training at a time ----------------------------------------------------------

    @contextmanager
    def training_lock(self) -> Iterator[None]:
        """Hold the workspace's training lock; raises :class:`WorkspaceBusy` when another run holds it.

        On a shared workspace it is a PostgreSQL advisory lock, released when
        the run ends or its process dies. A SQLite workspace has one
        workstation, whose window and CLI already refuse a second run.
        """
        if not self.shared:
            yield
            return
        if not self._pool.try_training_lock():
            raise WorkspaceBusy("another workstation is training this shared workspace; "
                                "wait for it to finish (one training run at a time)")
        try:
            yield
        finally:
            try:
                self._pool.release_training_lock()
            except Exception:  # the connection died: the server released the lock with it
                logger.debug("training lock release failed", exc_info=True)
