"""The audit slice's picks: which confident negatives each model version sent to a reader.

The queue is replaced on every refresh, so the audit picks are kept here: one
row per (image, version) with the rare class and the model's P(rare) when
picked. The readers' labels on those images turn into the version's audited
miss rate (:mod:`core.models.audit_slice`).
"""

from __future__ import annotations

import logging
from typing import Iterable, Optional

from .connection import ConnectionPool, now_iso

logger = logging.getLogger(__name__)


class AuditPicksMixin:
    """Audit-slice methods of :class:`~core.workspace.Workspace`."""

    _pool: ConnectionPool

    def record_audit_picks(self, version: str, rare_class: str, picks: Iterable[tuple[str, float]]) -> int:
        """Remember ``picks`` = (image id, P(rare)) as the audit slice of ``version``; returns how many are new.

        A case picked again by the same version keeps its first row.
        """
        at = now_iso()
        rows = [(image_id, version, rare_class, float(p), at) for image_id, p in picks]
        with self._pool.write() as db:
            before = db.execute("SELECT count(*) FROM audit_picks").fetchone()[0]
            db.conn.executemany(
                "INSERT OR IGNORE INTO audit_picks (image_id, version, rare_class, p_rare, picked_at) "
                "VALUES (?, ?, ?, ?, ?)", rows)
            after = db.execute("SELECT count(*) FROM audit_picks").fetchone()[0]
        return int(after - before)

    def audit_picks(self, version: Optional[str] = None) -> list[dict]:
        """Audit picks (of one version, or all), oldest first, as dicts with ``image_id, version, rare_class,
        p_rare, picked_at``."""
        sql, args = "SELECT * FROM audit_picks", []
        if version is not None:
            sql, args = sql + " WHERE version = ?", [version]
        with self._pool.read() as db:
            return [dict(row) for row in db.query(sql + " ORDER BY picked_at, image_id", args)]
