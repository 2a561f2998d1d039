"""Classes and labels. Labels are a history: nothing is ever updated or deleted.

A relabel appends a row and the current label of an image is its newest row.
A row with no classes means "unlabelled" (what undoing the first label leaves).
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import sqlite_utils

from core.errors import NotFound
from core.types import Label

from .connection import ConnectionPool, dumps, loads, now_iso
from .images import CURRENT_LABELS_SQL

logger = logging.getLogger(__name__)

#: Sources a caller may give; ``undo`` is written by :meth:`LabelsMixin.undo_label` only.
LABEL_SOURCES = ("human", "import", "model")

ClassesArg = Union[str, Iterable[str]]
_LABEL_FIELDS = ("image_id", "classes", "annotator", "source", "severity", "note", "flag_wrong")


def normalize_classes(classes: ClassesArg) -> tuple[str, ...]:
    """``"A;B"`` or ``["A", "B"]`` → ``("A", "B")``: stripped, empty names dropped, duplicates removed."""
    if isinstance(classes, str):
        classes = classes.split(";")
    seen: dict[str, None] = {}
    for name in classes:
        name = str(name).strip()
        if name:
            seen.setdefault(name, None)
    return tuple(seen)


def _row_to_label(row: Mapping[str, Any]) -> Label:
    return Label(
        image_id=row["image_id"],
        classes=tuple(loads(row["classes"], [])),
        annotator=row["annotator"],
        created_at=row["created_at"],
        source=row["source"],
        severity=row["severity"],
        note=row["note"] or "",
        flag_wrong=bool(row["flag_wrong"]),
        id=row["id"],
        role=row.get("role") or "",
    )


class LabelsMixin:
    """Class and label methods of :class:`~core.workspace.Workspace`."""

    _pool: ConnectionPool

    # --- classes -------------------------------------------------------------------------

    def classes(self) -> list[str]:
        """The class names in the order they were added."""
        with self._pool.read() as db:
            return [row[0] for row in db.execute("SELECT name FROM classes ORDER BY position")]

    def add_classes(self, names: ClassesArg) -> list[str]:
        """Append the class names not yet known, keeping order; idempotent. Returns all classes."""
        with self._pool.write() as db:
            self._add_classes(db, normalize_classes(names))
        return self.classes()

    @staticmethod
    def _add_classes(db: sqlite_utils.Database, names: Sequence[str]) -> None:
        for name in names:
            if db.execute("SELECT 1 FROM classes WHERE name = ?", (name,)).fetchone() is None:
                db.execute(
                    "INSERT INTO classes (name, position) "
                    "SELECT ?, COALESCE(MAX(position), -1) + 1 FROM classes",
                    (name,),
                )

    # --- writing labels ------------------------------------------------------------------

    def add_label(
        self,
        image_id: str,
        classes: ClassesArg,
        annotator: str,
        source: str = "human",
        severity: Optional[int] = None,
        note: str = "",
        flag_wrong: bool = False,
    ) -> Label:
        """Append a label for one image and commit it before returning.

        ``classes`` is a list of names or a ``;``-separated string; unknown
        classes are added to the workspace. ``source`` is ``human``, ``import``
        or ``model``. Raises :class:`NotFound` for an unknown image,
        :class:`ValueError` for a bad source or no classes, and
        :class:`WorkspaceBusy` when another process holds the write lock too long.
        """
        with self._pool.write() as db:
            label = self._insert_label(db, image_id, classes, annotator, source, severity, note, flag_wrong)
            self._append_audit(
                db, annotator, "label.add", image_id,
                {"label_id": label.id, "classes": list(label.classes), "source": label.source,
                 "severity": label.severity, "flag_wrong": label.flag_wrong},
            )
        return label

    def add_labels(self, items: Iterable[Union[Mapping[str, Any], Sequence[Any]]], actor: str = "import") -> list[Label]:
        """Append many labels in one transaction (CSV import); all or nothing.

        Each item is a dict with :meth:`add_label`'s keyword names, or a tuple in
        its positional order ``(image_id, classes, annotator, source, severity,
        note, flag_wrong)``. One audit entry summarises the batch. Raises like
        :meth:`add_label`.
        """
        labels: list[Label] = []
        with self._pool.write() as db:
            for item in items:
                kwargs = dict(item) if isinstance(item, Mapping) else dict(zip(_LABEL_FIELDS, item))
                labels.append(self._insert_label(db, **kwargs))
            if labels:
                self._append_audit(
                    db, actor, "labels.add_batch", "",
                    {"count": len(labels), "first_id": labels[0].id, "last_id": labels[-1].id,
                     "annotators": sorted({label.annotator for label in labels})},
                )
        logger.info("added %d labels in one batch", len(labels))
        return labels

    def _insert_label(
        self,
        db: sqlite_utils.Database,
        image_id: str,
        classes: ClassesArg,
        annotator: str,
        source: str = "human",
        severity: Optional[int] = None,
        note: str = "",
        flag_wrong: bool = False,
        *,
        allow_empty: bool = False,
    ) -> Label:
        if source not in LABEL_SOURCES and not (allow_empty and source == "undo"):
            raise ValueError(f"unknown label source '{source}': use one of {', '.join(LABEL_SOURCES)}")
        names = normalize_classes(classes)
        if not names and not allow_empty:
            raise ValueError("a label needs at least one class")
        if db.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is None:
            raise NotFound(f"no image with id '{image_id}' in this workspace; run `loupe list`")
        self._add_classes(db, names)
        created_at = now_iso()
        severity = None if severity is None else int(severity)
        # The reader's role (from the team's ``readers`` table) is stored on the label itself.
        role_row = db.execute("SELECT role FROM readers WHERE name = ?", (str(annotator),)).fetchone()
        role = role_row[0] if role_row else ""
        cursor = db.execute(
            "INSERT INTO labels (image_id, classes, annotator, created_at, source, severity, note, flag_wrong, role) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (image_id, dumps(list(names)), str(annotator), created_at, source, severity,
             note or "", int(bool(flag_wrong)), role),
        )
        return Label(
            image_id=image_id, classes=names, annotator=str(annotator), created_at=created_at,
            source=source, severity=severity, note=note or "", flag_wrong=bool(flag_wrong),
            id=cursor.lastrowid, role=role,
        )

    def undo_label(self, image_id: str, annotator: str) -> Label:
        """Undo the image's latest labelling act by appending a row (nothing is deleted).

        The new row (source ``undo``) restores the label that was current before
        the undone one, or has no classes ("unlabelled") if there was none.
        Repeated undos walk further back. Raises :class:`NotFound` when there is
        nothing left to undo.
        """
        with self._pool.write() as db:
            rows = list(db.query("SELECT * FROM labels WHERE image_id = ? ORDER BY id", [image_id]))
            stack: list[dict] = []
            for row in rows:
                if row["source"] == "undo":
                    if stack:
                        stack.pop()
                else:
                    stack.append(row)
            if not stack:
                raise NotFound(f"image '{image_id}' has no label to undo")
            undone = stack.pop()
            restored = stack[-1] if stack else None
            label = self._insert_label(
                db, image_id,
                loads(restored["classes"]) if restored else (),
                annotator, "undo",
                restored["severity"] if restored else None,
                restored["note"] if restored else "",
                bool(restored["flag_wrong"]) if restored else False,
                allow_empty=True,
            )
            self._append_audit(
                db, annotator, "label.undo", image_id,
                {"label_id": label.id, "undone_id": undone["id"],
                 "restored_id": restored["id"] if restored else None, "classes": list(label.classes)},
            )
        return label

    # --- reading labels ------------------------------------------------------------------

    def current_label(self, image_id: str) -> Optional[Label]:
        """The image's newest label, or ``None`` when it has none (or was undone to unlabelled)."""
        with self._pool.read() as db:
            rows = list(db.query(
                "SELECT * FROM labels WHERE image_id = ? ORDER BY id DESC LIMIT 1", [image_id]
            ))
        if not rows:
            return None
        label = _row_to_label(rows[0])
        return label if label.classes else None

    def label_history(self, image_id: str) -> list[Label]:
        """Every label row of the image, newest first (undo rows included)."""
        with self._pool.read() as db:
            rows = db.query("SELECT * FROM labels WHERE image_id = ? ORDER BY id DESC", [image_id])
            return [_row_to_label(row) for row in rows]

    def current_labels(self) -> dict[str, Label]:
        """``{image_id: current label}`` for every labelled image (unlabelled ones left out)."""
        with self._pool.read() as db:
            labels = [_row_to_label(row) for row in db.query(CURRENT_LABELS_SQL)]
        return {label.image_id: label for label in labels if label.classes}

    def label_count(self) -> int:
        """How many label rows exist (the whole history, undo rows included)."""
        with self._pool.read() as db:
            return db["labels"].count
