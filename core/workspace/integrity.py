"""Damaged images, replacing a damaged copy by an intact one, and site thresholds (one row per version and class)."""

from __future__ import annotations

import logging
import os
from typing import Any, Iterable, Optional

from core.errors import NotFound
from core.types import ImageRecord

from .connection import ConnectionPool, now_iso

logger = logging.getLogger(__name__)


class IntegrityMixin:
    """Integrity and site-threshold methods of :class:`~core.workspace.Workspace`."""

    _pool: ConnectionPool

    # --- identity and damage ------------------------------------------------------------------

    def images_by_keys(self, keys: Iterable[str]) -> dict[str, dict]:
        """The stored images whose key (SOP Instance UID or photo hash) is in ``keys``.

        Returns ``{key: {"id", "path", "damaged"}}`` (``damaged`` is the reason or None).
        """
        wanted = list(dict.fromkeys(keys))
        out: dict[str, dict] = {}
        with self._pool.read() as db:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for key, image_id, path, damaged in db.execute(
                        f"SELECT key, id, path, damaged FROM images WHERE key IN ({marks})", chunk):
                    out[key] = {"id": image_id, "path": path, "damaged": damaged}
        return out

    def damaged_images(self) -> dict[str, str]:
        """``{image_id: reason}`` of every image found damaged (left out of prediction, queue and training)."""
        with self._pool.read() as db:
            return {row[0]: row[1] for row in db.execute("SELECT id, damaged FROM images WHERE damaged IS NOT NULL")}

    def damaged_reason(self, image_id: str) -> Optional[str]:
        """Why the image was found damaged, or None when it is not (or is unknown)."""
        with self._pool.read() as db:
            row = db.execute("SELECT damaged FROM images WHERE id = ?", (image_id,)).fetchone()
        return row[0] if row is not None else None

    def mark_damaged(self, image_id: str, reason: str, actor: str = "system") -> bool:
        """Record that an image's pixel data is damaged; it leaves the queue and its predictions are dropped.

        Returns True when the mark is new (False when it was already marked).
        Audited as ``images.damaged``. Raises :class:`NotFound`.
        """
        with self._pool.write() as db:
            row = db.execute("SELECT damaged FROM images WHERE id = ?", (image_id,)).fetchone()
            if row is None:
                raise NotFound(f"no image with id '{image_id}' in this workspace; run `loupe list`")
            if row[0] is not None:
                return False
            db.execute("UPDATE images SET damaged = ? WHERE id = ?", (reason, image_id))
            db.execute("DELETE FROM queue WHERE image_id = ?", (image_id,))
            db.execute("DELETE FROM predictions WHERE image_id = ?", (image_id,))
            self._append_audit(db, actor, "images.damaged", image_id, {"reason": reason})
        logger.info("image %s marked damaged: %s", image_id, reason)
        return True

    def replace_image_file(self, image_id: str, record: ImageRecord, actor: str = "system",
                           reason: str = "") -> str:
        """Point an image at an intact copy of the same identity (same key) instead of its damaged file.

        The damage mark, its predictions, queue entry and cached explanations
        (all computed from the damaged pixels) are dropped; labels stay. Audited
        as ``images.replace`` with both paths. Returns the old path. Raises
        :class:`NotFound`, and ValueError when ``record.key`` is not the image's key.
        """
        path = os.path.abspath(record.path)
        with self._pool.write() as db:
            row = db.execute("SELECT key, path, damaged FROM images WHERE id = ?", (image_id,)).fetchone()
            if row is None:
                raise NotFound(f"no image with id '{image_id}' in this workspace; run `loupe list`")
            if row[0] != record.key:
                raise ValueError(f"{path} is not a copy of image {image_id}: different identity")
            db.execute("UPDATE images SET path = ?, damaged = NULL, frames = ?, transfer_syntax = ? WHERE id = ?",
                       (path, int(record.frames or 1), record.transfer_syntax or "", image_id))
            db.execute("DELETE FROM queue WHERE image_id = ?", (image_id,))
            db.execute("DELETE FROM predictions WHERE image_id = ?", (image_id,))
            db.execute("DELETE FROM explanations WHERE image_id = ?", (image_id,))
            self._append_audit(db, actor, "images.replace", image_id,
                               {"old_path": row[1], "new_path": path, "old_damage": row[2] or reason})
        logger.warning("image %s: damaged copy %s replaced by intact %s", image_id, row[1], path)
        return row[1]

    # --- site thresholds ----------------------------------------------------------------------

    def site_threshold_rows(self, version: Optional[str] = None) -> dict[str, dict[str, float]]:
        """``{version: {class: threshold}}`` saved at this site (one version's only when given)."""
        sql, args = "SELECT version, class_name, value FROM site_thresholds", []
        if version is not None:
            sql += " WHERE version = ?"
            args.append(version)
        out: dict[str, dict[str, float]] = {}
        with self._pool.read() as db:
            for v, name, value in db.execute(sql, args):
                out.setdefault(v, {})[name] = float(value)
        return out

    def save_site_threshold(self, version: str, class_name: str, value: Optional[float], actor: str,
                            detail: Optional[dict[str, Any]] = None) -> Optional[float]:
        """Set (or with None clear) one class's site threshold for ``version`` in one audited transaction.

        Only that (version, class) row changes, so concurrent saves of other
        classes or versions are never lost. Returns the previous value.
        """
        with self._pool.write() as db:
            row = db.execute("SELECT value FROM site_thresholds WHERE version = ? AND class_name = ?",
                             (version, class_name)).fetchone()
            old = None if row is None else float(row[0])
            if value is None:
                db.execute("DELETE FROM site_thresholds WHERE version = ? AND class_name = ?", (version, class_name))
            else:
                db.execute("INSERT INTO site_thresholds (version, class_name, value, updated_at) VALUES (?, ?, ?, ?) "
                           "ON CONFLICT(version, class_name) DO UPDATE SET value = excluded.value, "
                           "updated_at = excluded.updated_at", (version, class_name, float(value), now_iso()))
            self._append_audit(db, actor, "model.threshold", version,
                               {"class": class_name, "old": old, "new": value, **(detail or {})})
        return old
