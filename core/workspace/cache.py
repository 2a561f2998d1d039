"""Key-value stores: the explanation cache and workspace settings."""

from __future__ import annotations

import logging
from typing import Any, Optional

from .connection import ConnectionPool, dumps, loads, now_iso

logger = logging.getLogger(__name__)


class CacheMixin:
    """Explanation-cache and settings methods of :class:`~core.workspace.Workspace`."""

    _pool: ConnectionPool

    # --- explanations --------------------------------------------------------------------

    def put_explanation(
        self,
        key: str,
        image_id: str,
        version: str,
        method: str,
        target: str,
        params: dict,
        data: bytes,
        meta: dict,
    ) -> None:
        """Store (or replace) one explanation map under ``key``.

        ``data`` is the serialised map (e.g. ``.npy`` bytes), ``params`` and
        ``meta`` JSON-serialisable dicts (shape, dtype, seconds …).
        """
        with self._pool.write() as db:
            db.execute(
                "INSERT OR REPLACE INTO explanations "
                "(key, image_id, version, method, target, params, data, meta, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, image_id, version, method, target, dumps(params or {}), bytes(data),
                 dumps(meta or {}), now_iso()),
            )

    def get_explanation(self, key: str) -> Optional[dict]:
        """The cached explanation as a dict (``data`` bytes, ``params``/``meta`` dicts …), or ``None``."""
        with self._pool.read() as db:
            rows = list(db.query("SELECT * FROM explanations WHERE key = ?", [key]))
        if not rows:
            return None
        return _decoded(rows[0])

    def explanations_for(self, image_id: str, version: Optional[str] = None) -> list[dict]:
        """Every cached explanation of one image (of one model version when given), oldest first.

        Same dicts as :meth:`get_explanation`; maps made with any parameters are listed.
        """
        sql, args = "SELECT * FROM explanations WHERE image_id = ?", [image_id]
        if version is not None:
            sql, args = sql + " AND version = ?", args + [version]
        with self._pool.read() as db:
            rows = list(db.query(sql + " ORDER BY created_at, key", args))
        return [_decoded(row) for row in rows]

    def drop_explanations(self, version: Optional[str] = None) -> int:
        """Forget cached explanations (all, or one model version's); returns how many."""
        with self._pool.write() as db:
            if version is None:
                return db.execute("DELETE FROM explanations").rowcount
            return db.execute("DELETE FROM explanations WHERE version = ?", (version,)).rowcount

    # --- settings ------------------------------------------------------------------------

    def get_setting(self, key: str, default: Any = None) -> Any:
        """A workspace setting's JSON value, or ``default`` when unset."""
        with self._pool.read() as db:
            row = db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return default if row is None else loads(row[0])

    def set_setting(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable setting (committed on return)."""
        text = dumps(value)
        with self._pool.write() as db:
            db.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, text),
            )


def _decoded(row: dict) -> dict:
    """An explanations row with its blob as bytes and its JSON columns parsed."""
    row["data"] = bytes(row["data"])
    row["params"] = loads(row["params"], {})
    row["meta"] = loads(row["meta"], {})
    return row
