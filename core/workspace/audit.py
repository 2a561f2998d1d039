"""The audit log: an append-only hash chain of who did what.

Each entry's ``hash`` is ``sha256(prev_hash + canonical JSON of the entry)``
where the entry is ``{id, at, actor, action, subject, detail}``; the first
entry's ``prev_hash`` is the empty string. Editing, removing or reordering
any entry but the newest breaks the chain at that entry or the next one.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Optional

import sqlite_utils

from .connection import ConnectionPool, dumps, loads, now_iso

logger = logging.getLogger(__name__)


def entry_hash(prev_hash: str, entry: dict) -> str:
    """The chain hash of one entry given the previous entry's hash."""
    canonical = dumps(
        {
            "id": entry["id"],
            "at": entry["at"],
            "actor": entry["actor"],
            "action": entry["action"],
            "subject": entry["subject"],
            "detail": entry["detail"],
        }
    )
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


class AuditMixin:
    """Audit-log methods of :class:`~core.workspace.Workspace`."""

    _pool: ConnectionPool

    def audit(self, actor: str, action: str, subject: str = "", detail: Optional[dict] = None) -> int:
        """Append one entry to the audit log and commit; returns the entry's id.

        ``detail`` must be JSON-serialisable. Use dotted action names such as
        ``label.add`` or ``model.activate``.
        """
        with self._pool.write() as db:
            return self._append_audit(db, actor, action, subject, detail)

    def _append_audit(
        self,
        db: sqlite_utils.Database,
        actor: str,
        action: str,
        subject: str = "",
        detail: Optional[dict] = None,
    ) -> int:
        """Append an entry inside the caller's write transaction (which holds the write lock)."""
        last = db.execute("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
        prev_id, prev_hash = last if last else (0, "")
        # Round-trip through JSON so the hash covers exactly what is stored.
        entry = {
            "id": prev_id + 1,
            "at": now_iso(),
            "actor": str(actor),
            "action": str(action),
            "subject": str(subject or ""),
            "detail": loads(dumps(detail or {})),
        }
        digest = entry_hash(prev_hash, entry)
        db.execute(
            "INSERT INTO audit_log (id, at, actor, action, subject, detail, prev_hash, hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry["id"],
                entry["at"],
                entry["actor"],
                entry["action"],
                entry["subject"],
                dumps(entry["detail"]),
                prev_hash,
                digest,
            ),
        )
        logger.debug("audit %d %s %s %s", entry["id"], actor, action, subject)
        return entry["id"]

    def audit_log(self, limit: Optional[int] = None, action: Optional[str] = None) -> list[dict]:
        """Audit entries, newest first, as dicts with ``detail`` parsed.

        ``limit`` caps the number of entries; ``action`` keeps only entries
        whose action equals it or starts with it followed by a dot (``"model"``
        matches ``model.activate``).
        """
        sql = "SELECT id, at, actor, action, subject, detail, prev_hash, hash FROM audit_log"
        params: list[Any] = []
        if action:
            sql += " WHERE action = ? OR action LIKE ? ESCAPE '\\'"
            escaped = action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params += [action, escaped + ".%"]
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._pool.read() as db:
            rows = list(db.query(sql, params))
        for row in rows:
            row["detail"] = loads(row["detail"], {})
        return rows

    def verify_audit(self) -> tuple[bool, Optional[int]]:
        """Check the hash chain: ``(True, None)`` when intact, else ``(False, id of the first bad entry)``."""
        prev_hash = ""
        prev_id = 0
        with self._pool.read() as db:
            cursor = db.execute(
                "SELECT id, at, actor, action, subject, detail, prev_hash, hash FROM audit_log ORDER BY id"
            )
            for row in cursor:
                entry_id, at, actor, action, subject, detail, stored_prev, stored_hash = row
                try:
                    parsed = loads(detail, {})
                except ValueError:
                    return False, entry_id
                entry = {
                    "id": entry_id,
                    "at": at,
                    "actor": actor,
                    "action": action,
                    "subject": subject,
                    "detail": parsed,
                }
                if (
                    entry_id != prev_id + 1
                    or stored_prev != prev_hash
                    or entry_hash(prev_hash, entry) != stored_hash
                ):
                    logger.warning("audit chain broken at entry %d", entry_id)
                    return False, entry_id
                prev_hash, prev_id = stored_hash, entry_id
        return True, None
