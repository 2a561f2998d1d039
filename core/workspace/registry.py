"""The model registry (versions, activation, rollback) and stored predictions."""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping, Optional

import sqlite_utils

from core.errors import NotFound, WorkspaceError
from core.types import ModelVersion, Prediction

from .connection import ConnectionPool, dumps, loads, now_iso

logger = logging.getLogger(__name__)

MODEL_STATUSES = ("candidate", "active", "rejected", "retired")
_ACTIVATION_ACTIONS = ("model.activate", "model.rollback")


def _row_to_model(row: Mapping[str, Any]) -> ModelVersion:
    return ModelVersion(
        version=row["version"],
        arch=row["arch"],
        classes=tuple(loads(row["classes"], [])),
        path=row["path"],
        parent=row["parent"],
        weights=row["weights"],
        status=row["status"],
        created_at=row["created_at"],
        file_hash=row["file_hash"],
        params=loads(row["params"], {}),
        metrics=loads(row["metrics"], {}),
        reason=row["reason"],
    )


def _missing_model(version: str) -> NotFound:
    return NotFound(f"no model version '{version}' in this workspace; run `loupe models`")


class ModelsMixin:
    """Model-registry and prediction methods of :class:`~core.workspace.Workspace`."""

    _pool: ConnectionPool

    # --- registry ------------------------------------------------------------------------

    def add_model(self, model: ModelVersion, actor: str = "system") -> ModelVersion:
        """Register a model version; returns it as stored (``created_at`` filled in).

        A version registered with status ``active`` becomes the only active one,
        as with :meth:`activate_model`. Raises :class:`WorkspaceError` if the
        version exists already and :class:`ValueError` for an unknown status.
        """
        if model.status not in MODEL_STATUSES:
            raise ValueError(f"unknown model status '{model.status}': use one of {', '.join(MODEL_STATUSES)}")
        created_at = model.created_at or now_iso()
        with self._pool.write() as db:
            if db.execute("SELECT 1 FROM models WHERE version = ?", (model.version,)).fetchone():
                raise WorkspaceError(f"model version '{model.version}' already exists in this workspace")
            if model.parent and not db.execute(
                "SELECT 1 FROM models WHERE version = ?", (model.parent,)
            ).fetchone():
                raise _missing_model(model.parent)
            db.execute(
                "INSERT INTO models (version, arch, classes, path, parent, weights, status, created_at, "
                "file_hash, params, metrics, reason) VALUES (?, ?, ?, ?, ?, ?, 'candidate', ?, ?, ?, ?, ?)",
                (model.version, model.arch, dumps(list(model.classes)), model.path, model.parent,
                 model.weights, created_at, model.file_hash, dumps(model.params),
                 dumps(model.metrics), model.reason),
            )
            self._append_audit(
                db, actor, "model.add", model.version,
                {"arch": model.arch, "parent": model.parent, "weights": model.weights,
                 "file_hash": model.file_hash, "status": model.status},
            )
            if model.status == "active":
                self._activate(db, model.version, actor, model.reason, "model.activate")
            elif model.status != "candidate":
                db.execute("UPDATE models SET status = ? WHERE version = ?", (model.status, model.version))
        return self.model(model.version)

    def model(self, version: str) -> ModelVersion:
        """The model version with this name. Raises :class:`NotFound`."""
        with self._pool.read() as db:
            rows = list(db.query("SELECT * FROM models WHERE version = ?", [version]))
        if not rows:
            raise _missing_model(version)
        return _row_to_model(rows[0])

    def models(self) -> list[ModelVersion]:
        """Every model version, newest first."""
        with self._pool.read() as db:
            rows = db.query("SELECT * FROM models ORDER BY created_at DESC, rowid DESC")
            return [_row_to_model(row) for row in rows]

    def active_model(self) -> Optional[ModelVersion]:
        """The active model version, or ``None`` when there is none."""
        with self._pool.read() as db:
            rows = list(db.query("SELECT * FROM models WHERE status = 'active'"))
        return _row_to_model(rows[0]) if rows else None

    def activate_model(self, version: str, actor: str = "system", reason: str = "") -> ModelVersion:
        """Make ``version`` the one active model; the previously active one becomes ``retired``.

        Audited as ``model.activate``. Raises :class:`NotFound` for an unknown version.
        """
        with self._pool.write() as db:
            self._activate(db, version, actor, reason, "model.activate")
        return self.model(version)

    def _activate(self, db: sqlite_utils.Database, version: str, actor: str, reason: str, action: str) -> None:
        if not db.execute("SELECT 1 FROM models WHERE version = ?", (version,)).fetchone():
            raise _missing_model(version)
        row = db.execute("SELECT version FROM models WHERE status = 'active'").fetchone()
        previous = row[0] if row else None
        if previous == version:
            return
        db.execute("UPDATE models SET status = 'retired' WHERE status = 'active'")
        db.execute("UPDATE models SET status = 'active', reason = ? WHERE version = ?", (reason or "", version))
        self._append_audit(db, actor, action, version, {"previous": previous, "reason": reason or ""})
        logger.info("model %s active (was %s): %s", version, previous, reason)

    def set_model_status(self, version: str, status: str, reason: str = "", actor: str = "system") -> ModelVersion:
        """Set a version's status (``candidate``, ``active``, ``rejected``, ``retired``) with a reason.

        ``active`` goes through :meth:`activate_model`. Raises :class:`NotFound`
        and :class:`ValueError` for an unknown status.
        """
        if status not in MODEL_STATUSES:
            raise ValueError(f"unknown model status '{status}': use one of {', '.join(MODEL_STATUSES)}")
        if status == "active":
            return self.activate_model(version, actor, reason)
        with self._pool.write() as db:
            cursor = db.execute(
                "UPDATE models SET status = ?, reason = ? WHERE version = ?", (status, reason or "", version)
            )
            if cursor.rowcount == 0:
                raise _missing_model(version)
            self._append_audit(db, actor, "model.status", version, {"status": status, "reason": reason or ""})
        return self.model(version)

    def update_model_metrics(self, version: str, metrics: dict, actor: str = "system") -> ModelVersion:
        """Merge ``metrics`` into a version's stored metrics (e.g. after an evaluation). Raises :class:`NotFound`."""
        with self._pool.write() as db:
            row = db.execute("SELECT metrics FROM models WHERE version = ?", (version,)).fetchone()
            if row is None:
                raise _missing_model(version)
            merged = {**loads(row[0], {}), **metrics}
            db.execute("UPDATE models SET metrics = ? WHERE version = ?", (dumps(merged), version))
            self._append_audit(db, actor, "model.metrics", version, {"keys": sorted(metrics)})
        return self.model(version)

    def rollback(self, actor: str = "system", reason: str = "") -> ModelVersion:
        """Re-activate the version that was active before the current one.

        The activation history in the audit log is replayed as a stack (an
        activation pushes, a rollback pops), skipping versions since rejected;
        when it has nothing, the active model's parent is used. The rolled-back
        version becomes ``retired``. Audited as ``model.rollback``. Raises
        :class:`NotFound` when there is no active model or nothing to go back to.
        """
        with self._pool.write() as db:
            row = db.execute("SELECT version, parent FROM models WHERE status = 'active'").fetchone()
            if row is None:
                raise NotFound("no model is active, so there is nothing to roll back")
            current, parent = row
            stack: list[str] = []
            for action, subject in db.execute(
                "SELECT action, subject FROM audit_log WHERE action IN (?, ?) ORDER BY id",
                _ACTIVATION_ACTIONS,
            ):
                if action == "model.rollback":
                    if stack:
                        stack.pop()
                    # the rolled-back-to version was pushed long ago; make sure it is on top
                    if not stack or stack[-1] != subject:
                        stack.append(subject)
                else:
                    stack.append(subject)
            target = None
            while stack:
                candidate = stack.pop()
                if candidate == current:
                    continue
                status = db.execute("SELECT status FROM models WHERE version = ?", (candidate,)).fetchone()
                if status is not None and status[0] != "rejected":
                    target = candidate
                    break
            if target is None and parent:
                target = parent
            if target is None:
                raise NotFound(f"model {current} has no earlier version to roll back to")
            self._activate(db, target, actor, reason, "model.rollback")
        return self.model(target)

    # --- predictions ---------------------------------------------------------------------

    def add_predictions(self, version: str, predictions: Iterable[Prediction]) -> int:
        """Store (or replace) a model version's predictions in one transaction; returns how many."""
        created_at = now_iso()
        rows = [
            (p.image_id, version, dumps(dict(p.probs)), p.predicted, p.created_at or created_at,
             None if p.severity is None else int(p.severity),
             None if p.severity_probability is None else float(p.severity_probability))
            for p in predictions
        ]
        with self._pool.write() as db:
            db.conn.executemany(
                "INSERT INTO predictions (image_id, version, probs, predicted, created_at, severity, "
                "severity_probability) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(image_id, version) DO UPDATE SET "
                "probs = excluded.probs, predicted = excluded.predicted, created_at = excluded.created_at, "
                "severity = excluded.severity, severity_probability = excluded.severity_probability",
                rows,
            )
        return len(rows)

    def predictions(self, version: str, image_ids: Optional[Iterable[str]] = None) -> dict[str, Prediction]:
        """``{image_id: Prediction}`` of one version, for all images or only ``image_ids``."""
        with self._pool.read() as db:
            rows = list(db.query("SELECT * FROM predictions WHERE version = ?", [version]))
        wanted = None if image_ids is None else set(image_ids)
        return {row["image_id"]: _row_to_prediction(row) for row in rows
                if wanted is None or row["image_id"] in wanted}

    def prediction(self, version: str, image_id: str) -> Optional[Prediction]:
        """One image's prediction by one version, or None (one row read, not the version's whole table)."""
        with self._pool.read() as db:
            rows = list(db.query("SELECT * FROM predictions WHERE version = ? AND image_id = ?", [version, image_id]))
        return _row_to_prediction(rows[0]) if rows else None

    def predictions_of_image(self, image_id: str) -> list[Prediction]:
        """Every stored prediction of one image, by any version, oldest first."""
        with self._pool.read() as db:
            rows = list(db.query("SELECT * FROM predictions WHERE image_id = ? ORDER BY created_at, version",
                                 [image_id]))
        return [_row_to_prediction(row) for row in rows]


def _row_to_prediction(row: Mapping[str, Any]) -> Prediction:
    return Prediction(image_id=row["image_id"], version=row["version"], probs=loads(row["probs"], {}),
                      predicted=row["predicted"], created_at=row["created_at"], severity=row.get("severity"),
                      severity_probability=row.get("severity_probability"))
