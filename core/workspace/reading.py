"""A reading team: readers with roles, blinded double reading and adjudication — the truth rule.

With double reading on (a workspace setting), every case labelled from then on is
read by two readers. Each reader's *read* is that reader's own newest label of
the image (their own undo walks back only their own reads). The **truth** of an
image is, in order:

1. the newest adjudication (a label written through :meth:`ReadingMixin.adjudicate`);
2. a label imported from a CSV (``import`` labels are confirmed ground truth);
3. the common label of two or more human reads that agree (same classes and
   severity) — status ``agreed``;
4. nothing while a second read is pending (``awaiting second read``) or the
   reads disagree (``disputed``: the case is in the adjudication queue).

:meth:`current_labels` and :meth:`current_label` return the truth, so training,
metrics, the queue's pool, the worklist and exports all follow this one rule and
never see a single reader's label while a second read is pending — nor does one
reader see the other's (blinding). Labels written before double reading was
switched on keep the single-reader rule (the newest label) until a new read
arrives for that image.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from core.errors import LoupeError, NotFound
from core.types import Label, QueueItem

from .connection import ConnectionPool, dumps, loads, now_iso

logger = logging.getLogger(__name__)

ROLES = ("annotator", "reader", "adjudicator")
DOUBLE_READING_SETTING = "double_reading"

#: Statuses of a case under double reading.
UNREAD, AWAITING, AGREED, DISPUTED, ADJUDICATED, IMPORTED = (
    "unread", "awaiting second read", "agreed", "disputed", "adjudicated", "imported")


@dataclass(frozen=True)
class Reader:
    """A member of the reading team."""

    name: str
    role: str
    created_at: str = ""

    def to_json(self) -> dict:
        return {"name": self.name, "role": self.role, "created_at": self.created_at}


@dataclass(frozen=True)
class DoubleReading:
    """The double-reading setting: on or off, blinded to the model or not, and since which label row."""

    enabled: bool = False
    blind_model: bool = False
    since_label_id: Optional[int] = None

    def to_json(self) -> dict:
        return {"enabled": self.enabled, "blind_model": self.blind_model, "since_label_id": self.since_label_id}


@dataclass(frozen=True)
class CaseReads:
    """One image under double reading: each reader's current read, any adjudication, the truth and the status.

    ``reads`` are the human reads in the order they were written (adjudications
    excluded); ``truth`` is ``None`` unless the status is ``agreed``,
    ``adjudicated`` or ``imported``.
    """

    image_id: str
    reads: tuple[Label, ...]
    status: str
    truth: Optional[Label] = None
    adjudication: Optional[Label] = None

    def to_json(self, blind: bool = False) -> dict:
        """JSON form; ``blind`` leaves out the reads' classes (for a reader who must not see them)."""
        reads = [{"reader": r.annotator, "role": r.role, "label_id": r.id,
                  **({} if blind else {"classes": list(r.classes), "severity": r.severity, "note": r.note})}
                 for r in self.reads]
        return {"id": self.image_id, "status": self.status, "reads": reads,
                "truth": None if self.truth is None or blind else list(self.truth.classes),
                "adjudicator": self.adjudication.annotator if self.adjudication else None}


def _label(row: Mapping[str, Any]) -> Label:
    return Label(image_id=row["image_id"], classes=tuple(loads(row["classes"], [])), annotator=row["annotator"],
                 created_at=row["created_at"], source=row["source"], severity=row["severity"],
                 note=row["note"] or "", flag_wrong=bool(row["flag_wrong"]), id=row["id"],
                 role=row.get("role") or "")


def _agree(a: Label, b: Label) -> bool:
    return set(a.classes) == set(b.classes) and a.severity == b.severity


def resolve_case(image_id: str, rows: list[Label], adjudicated_ids: set[int]) -> CaseReads:
    """Apply the truth rule to one image's label rows (oldest first) written under double reading.

    Pure function (no database): each annotator's rows form their own undo stack;
    ``model`` pre-labels are ignored. See the module docstring for the rule.
    """
    stacks: dict[str, list[Label]] = defaultdict(list)
    for row in rows:
        if row.source == "undo":
            if stacks[row.annotator]:
                stacks[row.annotator].pop()
        elif row.source != "model":
            stacks[row.annotator].append(row)
    tops = sorted((s[-1] for s in stacks.values() if s and s[-1].classes), key=lambda lab: lab.id or 0)
    adjudications = [t for t in tops if t.id in adjudicated_ids]
    reads = tuple(t for t in tops if t.id not in adjudicated_ids and t.source == "human")
    imports = [t for t in tops if t.source == "import"]
    if adjudications:
        return CaseReads(image_id, reads, ADJUDICATED, adjudications[-1], adjudications[-1])
    if imports:
        return CaseReads(image_id, reads, IMPORTED, imports[-1])
    if len(reads) < 2:
        return CaseReads(image_id, reads, AWAITING if reads else UNREAD)
    if all(_agree(reads[0], r) for r in reads[1:]):
        first, last = reads[0], reads[-1]
        truth = Label(image_id=image_id, classes=first.classes,
                      annotator="+".join(r.annotator for r in reads), created_at=last.created_at,
                      source="human", severity=first.severity, note="",
                      flag_wrong=any(r.flag_wrong for r in reads), id=last.id, role="consensus")
        return CaseReads(image_id, reads, AGREED, truth)
    return CaseReads(image_id, reads, DISPUTED)


class ReadingMixin:
    """Reader and double-reading methods of :class:`~core.workspace.Workspace`.

    It comes first in the workspace's bases so that :meth:`current_labels`,
    :meth:`current_label`, :meth:`queue`, :meth:`dequeue`, :meth:`replace_queue`
    and :meth:`undo_label` follow the truth rule when double reading is on, and
    behave exactly as before when it is off.
    """

    _pool: ConnectionPool

    # --- readers -------------------------------------------------------------------------

    def readers(self) -> list[Reader]:
        """The reading team, by name."""
        with self._pool.read() as db:
            return [Reader(*row) for row in db.execute("SELECT name, role, created_at FROM readers ORDER BY name")]

    def reader(self, name: str) -> Optional[Reader]:
        """The reader called ``name``, or ``None`` when the name is not on the team."""
        with self._pool.read() as db:
            row = db.execute("SELECT name, role, created_at FROM readers WHERE name = ?", (name,)).fetchone()
        return Reader(*row) if row else None

    def add_reader(self, name: str, role: str, actor: str = "system") -> Reader:
        """Add a reader to the team, or change an existing reader's role (audited).

        Raises :class:`ValueError` for an empty name or an unknown role.
        """
        name = str(name or "").strip()
        if not name:
            raise ValueError("a reader needs a name")
        if role not in ROLES:
            raise ValueError(f"unknown role '{role}': use one of {', '.join(ROLES)}")
        with self._pool.write() as db:
            db.execute("INSERT INTO readers (name, role, created_at) VALUES (?, ?, ?) "
                       "ON CONFLICT(name) DO UPDATE SET role = excluded.role", (name, role, now_iso()))
            self._append_audit(db, actor, "reader.set", name, {"role": role})
            row = db.execute("SELECT name, role, created_at FROM readers WHERE name = ?", (name,)).fetchone()
        return Reader(*row)

    # --- the double-reading setting --------------------------------------------------------

    def double_reading(self) -> DoubleReading:
        """The double-reading setting (off by default)."""
        value = self.get_setting(DOUBLE_READING_SETTING) or {}
        return DoubleReading(bool(value.get("enabled")), bool(value.get("blind_model")),
                             value.get("since_label_id"))

    def set_double_reading(self, enabled: bool, blind_model: bool = False, actor: str = "system") -> DoubleReading:
        """Switch double reading on or off (audited).

        Switching it on keeps the labels written so far under the single-reader
        rule; every label from now on is a read that needs a second one.
        """
        with self._pool.write() as db:
            old = loads((db.execute("SELECT value FROM settings WHERE key = ?",
                                    (DOUBLE_READING_SETTING,)).fetchone() or ["{}"])[0], {}) or {}
            since = old.get("since_label_id")
            if enabled and (since is None or not old.get("enabled")):
                since = int(db.execute("SELECT COALESCE(MAX(id), 0) FROM labels").fetchone()[0])
            value = {"enabled": bool(enabled), "blind_model": bool(blind_model), "since_label_id": since}
            db.execute("INSERT INTO settings (key, value) VALUES (?, ?) "
                       "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (DOUBLE_READING_SETTING, dumps(value)))
            self._append_audit(db, actor, "double_reading.set", "", value)
        return self.double_reading()

    def model_hidden(self) -> bool:
        """Whether readers must not see the model's prediction (double reading, blind to the model)."""
        setting = self.double_reading()
        return setting.enabled and setting.blind_model

    # --- cases under double reading --------------------------------------------------------

    def _case_rows(self, since: int, image_id: Optional[str] = None) -> tuple[dict[str, list[Label]], set[int]]:
        """Label rows of images with a row newer than ``since`` (grouped, oldest first) and adjudicated ids."""
        where, params = "l.image_id IN (SELECT image_id FROM labels WHERE id > ?)", [since]
        if image_id is not None:
            where += " AND l.image_id = ?"
            params.append(image_id)
        with self._pool.read() as db:
            rows = list(db.query(f"SELECT l.* FROM labels l WHERE {where} AND l.id > ? ORDER BY l.id",
                                 params + [since]))
            adjudicated = {r[0] for r in db.execute(
                "SELECT label_id FROM adjudications WHERE label_id > ?", (since,))}
        grouped: dict[str, list[Label]] = defaultdict(list)
        for row in rows:
            grouped[row["image_id"]].append(_label(row))
        return grouped, adjudicated

    def case_reads(self, image_id: Optional[str] = None) -> dict[str, CaseReads]:
        """``{image_id: CaseReads}`` for every image read since double reading was (last) switched on.

        Empty when double reading was never switched on. ``image_id`` limits it to one image.
        """
        since = self.double_reading().since_label_id
        if since is None:
            return {}
        grouped, adjudicated = self._case_rows(int(since), image_id)
        return {i: resolve_case(i, rows, adjudicated) for i, rows in grouped.items()}

    def adjudication_queue(self) -> list[CaseReads]:
        """Disputed cases waiting for an adjudicator, oldest dispute first."""
        cases = [c for c in self.case_reads().values() if c.status == DISPUTED]
        return sorted(cases, key=lambda c: c.reads[-1].id or 0)

    def reader_label(self, image_id: str, reader: str) -> Optional[Label]:
        """``reader``'s own current read of the image (what that reader may see), or ``None``."""
        case = self.case_reads(image_id).get(image_id)
        if case is not None:
            for read in case.reads + ((case.adjudication,) if case.adjudication else ()):
                if read.annotator == reader:
                    return read
            return None
        label = super().current_label(image_id)  # type: ignore[misc]
        return label if label is not None and label.annotator == reader else None

    def visible_history(self, image_id: str, reader: str) -> list[Label]:
        """The label history ``reader`` may see, newest first.

        Under double reading that is the reader's own rows since it was switched
        on (blinded to the other reader); otherwise the whole history.
        """
        history = self.label_history(image_id)  # type: ignore[attr-defined]
        setting = self.double_reading()
        if not setting.enabled:
            return history
        since = int(setting.since_label_id or 0)
        return [label for label in history if (label.id or 0) <= since or label.annotator == reader]

    def adjudicate(self, image_id: str, classes, adjudicator: str, severity: Optional[int] = None,
                   note: str = "") -> Label:
        """Settle a disputed double read: the adjudicator's label becomes the truth (audited).

        Raises :class:`LoupeError` when ``adjudicator`` is not a reader with the
        ``adjudicator`` role or the case is not disputed, and :class:`NotFound`
        for an unknown image.
        """
        who = self.reader(adjudicator)
        if who is None or who.role != "adjudicator":
            raise LoupeError(f"'{adjudicator}' is not an adjudicator: add them with "
                             f"`loupe readers add {adjudicator or 'NAME'} --role adjudicator`")
        self.find_image(image_id)  # NotFound with a plain message
        with self._pool.write() as db:  # the dispute is re-checked inside the write lock
            case = self.case_reads(image_id).get(image_id)
            if case is None or case.status != DISPUTED:
                status = case.status if case else "not double-read"
                raise LoupeError(f"image {image_id} is not disputed ({status}): only a disagreement is adjudicated")
            label = self._insert_label(db, image_id, classes, adjudicator, "human", severity, note)
            read_ids = [r.id for r in case.reads]
            db.execute("INSERT INTO adjudications (label_id, image_id, read_ids, created_at) VALUES (?, ?, ?, ?)",
                       (label.id, image_id, dumps(read_ids), now_iso()))
            self._append_audit(db, adjudicator, "label.adjudicate", image_id,
                               {"label_id": label.id, "classes": list(label.classes), "reads": read_ids,
                                "severity": label.severity})
        return label

    # --- the truth rule over the inherited label and queue methods -----------------------

    def current_labels(self) -> dict[str, Label]:
        """``{image_id: truth}``: the newest label, or under double reading the truth rule's label."""
        labels = super().current_labels()  # type: ignore[misc]
        setting = self.double_reading()
        if not setting.enabled:
            return labels
        for image_id, case in self.case_reads().items():
            if case.truth is None:
                labels.pop(image_id, None)
            else:
                labels[image_id] = case.truth
        return labels

    def current_label(self, image_id: str) -> Optional[Label]:
        """The image's truth (see :meth:`current_labels`), or ``None``."""
        if not self.double_reading().enabled:
            return super().current_label(image_id)  # type: ignore[misc]
        case = self.case_reads(image_id).get(image_id)
        return super().current_label(image_id) if case is None else case.truth  # type: ignore[misc]

    def undo_label(self, image_id: str, annotator: str) -> Label:
        """Undo ``annotator``'s latest act on the image; under double reading only their own reads walk back."""
        setting = self.double_reading()
        if not setting.enabled:
            return super().undo_label(image_id, annotator)  # type: ignore[misc]
        with self._pool.write() as db:
            grouped, _ = self._case_rows(int(setting.since_label_id or 0), image_id)
            stack: list[Label] = []
            for row in grouped.get(image_id, []):
                if row.annotator != annotator:
                    continue
                if row.source == "undo":
                    if stack:
                        stack.pop()
                elif row.source != "model":
                    stack.append(row)
            if not stack:
                raise NotFound(f"{annotator} has no read of image '{image_id}' to undo")
            undone = stack.pop()
            restored = stack[-1] if stack else None
            label = self._insert_label(db, image_id, restored.classes if restored else (), annotator, "undo",
                                       restored.severity if restored else None, restored.note if restored else "",
                                       restored.flag_wrong if restored else False, allow_empty=True)
            self._append_audit(db, annotator, "label.undo", image_id,
                               {"label_id": label.id, "undone_id": undone.id,
                                "restored_id": restored.id if restored else None, "classes": list(label.classes)})
        return label

    def _raw_queue(self) -> list[QueueItem]:
        with self._pool.read() as db:
            rows = list(db.execute("SELECT image_id, rank, score, strategy, why, version FROM queue "
                                   "ORDER BY rank, image_id"))
        return [QueueItem(image_id=i, rank=r, score=s, strategy=st, why=loads(w, {}), version=v)
                for i, r, s, st, w, v in rows]

    def queue_rank(self, image_id: str) -> Optional[int]:
        """The image's rank while it waits in the queue; under double reading, until its second read."""
        if not self.double_reading().enabled:
            return super().queue_rank(image_id)  # type: ignore[misc]
        return next((item.rank for item in self.queue() if item.image_id == image_id), None)

    def queue(self, n: Optional[int] = None) -> list[QueueItem]:
        """Queued images in rank order; under double reading a case stays until its second read."""
        if not self.double_reading().enabled:
            return super().queue(n)  # type: ignore[misc]
        cases = self.case_reads()
        truths = super().current_labels()  # type: ignore[misc]
        items = []
        for item in self._raw_queue():
            case = cases.get(item.image_id)
            if case is None:
                label = truths.get(item.image_id)
                if label is not None and label.source != "model":
                    continue  # labelled before double reading: done
            elif case.status not in (UNREAD, AWAITING):
                continue
            items.append(item)
        return items if n is None else items[:int(n)]

    def reading_queue(self, reader: str, n: Optional[int] = None) -> list[QueueItem]:
        """The queue as ``reader`` sees it: cases still needing a read that this reader has not read."""
        cases = self.case_reads()
        items = [item for item in self.queue()
                 if item.image_id not in cases
                 or all(r.annotator != reader for r in cases[item.image_id].reads)]
        return items if n is None else items[:int(n)]

    def dequeue(self, image_id: str) -> bool:
        """Remove one image from the queue; under double reading only once its reads are complete."""
        if self.double_reading().enabled:
            case = self.case_reads(image_id).get(image_id)
            if case is not None and case.status in (UNREAD, AWAITING):
                return False
        return super().dequeue(image_id)  # type: ignore[misc]

    def replace_queue(self, items: Iterable[QueueItem]) -> int:
        """Replace the queue; under double reading, cases awaiting their second read are kept first."""
        items = list(items)
        if self.double_reading().enabled:
            waiting = [c.image_id for c in self.case_reads().values() if c.status == AWAITING]
            picked = {item.image_id for item in items}
            kept = [QueueItem(image_id=i, rank=k, score=1.0, strategy="second read", why={"second_read": 1.0},
                              version=items[0].version if items else None)
                    for k, i in enumerate(w for w in waiting if w not in picked)]
            items = kept + [QueueItem(image_id=it.image_id, rank=len(kept) + k, score=it.score, strategy=it.strategy,
                                      why=it.why, version=it.version) for k, it in enumerate(items)]
        return super().replace_queue(items)  # type: ignore[misc]
