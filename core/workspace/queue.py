"""The active-learning queue: images waiting for an expert label, in rank order."""

from __future__ import annotations

import logging
from typing import Iterable, Optional

from core.types import QueueItem

from .connection import ConnectionPool, dumps, loads
from .images import NEWEST_LABEL_ID_SQL

logger = logging.getLogger(__name__)

# An image leaves the queue once its current label is a real (non-model) label.
_QUEUE_SQL = f"""
SELECT q.image_id, q.rank, q.score, q.strategy, q.why, q.version
FROM queue q
WHERE NOT EXISTS (
    SELECT 1 FROM labels cl
    WHERE cl.id = ({NEWEST_LABEL_ID_SQL.format(image="q.image_id")})
      AND cl.classes != '[]' AND cl.source != 'model'
)
ORDER BY q.rank, q.image_id
"""
# one image's rank, by the same rule (an index lookup, not the whole queue)
_RANK_SQL = _QUEUE_SQL.replace("WHERE NOT EXISTS", "WHERE q.image_id = ? AND NOT EXISTS")


class QueueMixin:
    """Queue methods of :class:`~core.workspace.Workspace`."""

    _pool: ConnectionPool

    def replace_queue(self, items: Iterable[QueueItem]) -> int:
        """Replace the whole queue with ``items`` in one transaction; returns how many were stored."""
        rows = [
            (item.image_id, int(item.rank), float(item.score), item.strategy, dumps(item.why or {}), item.version)
            for item in items
        ]
        with self._pool.write() as db:
            db.execute("DELETE FROM queue")
            db.conn.executemany(
                "INSERT INTO queue (image_id, rank, score, strategy, why, version) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
        logger.info("queue replaced: %d items", len(rows))
        return len(rows)

    def queue(self, n: Optional[int] = None) -> list[QueueItem]:
        """The next ``n`` (default all) queued images in rank order, leaving out labelled ones."""
        sql, params = _QUEUE_SQL, []
        if n is not None:
            sql += " LIMIT ?"
            params.append(int(n))
        with self._pool.read() as db:
            rows = list(db.execute(sql, params))
        return [
            QueueItem(image_id=image_id, rank=rank, score=score, strategy=strategy,
                      why=loads(why, {}), version=version)
            for image_id, rank, score, strategy, why, version in rows
        ]

    def queue_rank(self, image_id: str) -> Optional[int]:
        """The image's rank while it waits in the queue (as :meth:`queue` lists it), else None."""
        with self._pool.read() as db:
            row = db.execute(_RANK_SQL, [image_id]).fetchone()
        return int(row[1]) if row is not None else None

    def dequeue(self, image_id: str) -> bool:
        """Remove one image from the queue; returns whether it was queued."""
        with self._pool.write() as db:
            return db.execute("DELETE FROM queue WHERE image_id = ?", (image_id,)).rowcount > 0
