"""The workspace's findings: classes, exclusive or multi-label, rare classes, miss costs, severity grades.

Stored as one JSON setting (``findings``) and audited (``findings.set``) in the same transaction. Setting the
findings also writes the queue settings the acquisition already reads (``rare_class``, ``rare_classes``,
``miss_cost`` and a ``cost_matrix`` of per-class miss costs), so the queue and the findings never disagree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from core.errors import LoupeError

from .connection import ConnectionPool, dumps, loads

logger = logging.getLogger(__name__)

FINDINGS_SETTING = "findings"


class FindingsError(LoupeError):
    """Findings that cannot be stored as given (the message says what to change)."""


@dataclass(frozen=True)
class Findings:
    """What a reader decides about an image.

    Attributes:
        classes: class names in button order.
        multilabel: several classes may be true at once (else exactly one).
        rare: the rare classes the queue protects (a subset of ``classes``).
        costs: miss cost per class (missing a case of that class costs this much; unnamed classes cost 1).
        severity: names of an optional ordinal severity scale, mildest first (empty: none).
    """

    classes: tuple[str, ...]
    multilabel: bool = False
    rare: tuple[str, ...] = ()
    costs: Mapping[str, float] = field(default_factory=dict)
    severity: tuple[str, ...] = ()

    def to_json(self) -> dict:
        """The CLI.md document: ``{"classes", "multilabel", "rare", "costs", "severity"}``."""
        return {"classes": list(self.classes), "multilabel": bool(self.multilabel), "rare": list(self.rare),
                "costs": {k: float(v) for k, v in self.costs.items()}, "severity": list(self.severity)}

    @classmethod
    def from_json(cls, data: Mapping) -> "Findings":
        """Inverse of :meth:`to_json` (unknown keys ignored)."""
        return cls(classes=tuple(data.get("classes") or ()), multilabel=bool(data.get("multilabel", False)),
                   rare=tuple(data.get("rare") or ()), costs=dict(data.get("costs") or {}),
                   severity=tuple(data.get("severity") or ()))

    def validated(self) -> "Findings":
        """A normalised copy (names stripped); raises :class:`FindingsError` saying what is wrong."""
        classes = tuple(c.strip() for c in self.classes if c and c.strip())
        if len(set(classes)) != len(classes):
            raise FindingsError(f"class names must be unique, got {', '.join(classes)}")
        if any(";" in c or "," in c for c in classes):
            raise FindingsError("class names cannot contain ';' or ','")
        need = 1 if self.multilabel else 2
        if len(classes) < need:
            raise FindingsError(f"{'multi-label' if self.multilabel else 'exclusive'} findings need at least "
                                f"{need} class{'es' if need > 1 else ''}, got {len(classes)}")
        rare = tuple(r.strip() for r in self.rare if r and r.strip())
        unknown = [r for r in rare if r not in classes]
        if unknown:
            raise FindingsError(f"rare class {', '.join(unknown)} is not one of the classes {', '.join(classes)}")
        if len(rare) >= len(classes) and not self.multilabel:
            raise FindingsError("not every class can be rare: leave at least one common class")
        costs: dict[str, float] = {}
        for name, value in self.costs.items():
            name = name.strip()
            if name not in classes:
                raise FindingsError(f"miss cost for {name!r}, which is not one of the classes {', '.join(classes)}")
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise FindingsError(f"miss cost of {name} must be a number, got {value!r}") from None
            if not number > 0 or number != number or number == float("inf"):
                raise FindingsError(f"miss cost of {name} must be a positive number, got {value!r}")
            costs[name] = number
        severity = tuple(s.strip() for s in self.severity if s and s.strip())
        if severity and len(severity) < 2:
            raise FindingsError("a severity scale needs at least two grades (e.g. none,mild,moderate,severe)")
        if len(set(severity)) != len(severity):
            raise FindingsError(f"severity grades must be unique, got {', '.join(severity)}")
        return Findings(classes, bool(self.multilabel), rare, costs, severity)

    def cost_matrix_overrides(self) -> dict[str, float]:
        """``{"true>decided": cost}`` for the acquisition's cost matrix: missing class c costs ``costs[c]``."""
        return {f"{c}>{d}": float(cost) for c, cost in self.costs.items() for d in self.classes if d != c}


def parse_costs(text: str) -> dict[str, float]:
    """``"B=5,C=3"`` → ``{"B": 5.0, "C": 3.0}``; raises :class:`FindingsError` for a malformed pair."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in (text or "").split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise FindingsError(f"miss costs are written CLASS=NUMBER, got {part!r}")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise FindingsError(f"miss cost of {name.strip()} must be a number, got {value.strip()!r}") from None
    return out


class FindingsMixin:
    """Findings methods of :class:`~core.workspace.Workspace`."""

    _pool: ConnectionPool

    def has_findings(self) -> bool:
        """True once findings were set (a new workspace has none: the window asks for them)."""
        with self._pool.read() as db:
            return db.execute("SELECT 1 FROM settings WHERE key = ?", (FINDINGS_SETTING,)).fetchone() is not None

    def findings(self) -> Findings:
        """The stored findings; before any were set, the classes known so far (from imported labels or a model)
        with the single-rare-class setting, exclusive, no costs and no severity scale."""
        with self._pool.read() as db:
            row = db.execute("SELECT value FROM settings WHERE key = ?", (FINDINGS_SETTING,)).fetchone()
            if row is not None:
                return Findings.from_json(loads(row[0], {}))
            classes = tuple(r[0] for r in db.execute("SELECT name FROM classes ORDER BY position"))
            rare_row = db.execute("SELECT value FROM settings WHERE key = 'rare_class'").fetchone()
        rare = loads(rare_row[0]) if rare_row is not None else None
        return Findings(classes, rare=(rare,) if rare in classes else ())

    def set_findings(self, findings: Findings, actor: str = "system") -> Findings:
        """Validate and store ``findings`` (audited as ``findings.set``); new classes join the class list.

        Also writes the queue settings derived from them (``rare_class``, ``rare_classes``, ``miss_cost``,
        ``cost_matrix``). Returns the stored (normalised) findings; raises :class:`FindingsError`.
        """
        findings = findings.validated()
        derived = {"rare_classes": list(findings.rare),
                   "rare_class": findings.rare[0] if findings.rare else None,
                   "cost_matrix": findings.cost_matrix_overrides() or None}
        if findings.rare and findings.rare[0] in findings.costs:
            derived["miss_cost"] = findings.costs[findings.rare[0]]
        with self._pool.write() as db:
            before_row = db.execute("SELECT value FROM settings WHERE key = ?", (FINDINGS_SETTING,)).fetchone()
            self._add_classes(db, list(findings.classes))  # type: ignore[attr-defined]
            for key, value in [(FINDINGS_SETTING, findings.to_json()), *derived.items()]:
                if value is None:
                    db.execute("DELETE FROM settings WHERE key = ?", (key,))
                else:
                    db.execute("INSERT INTO settings (key, value) VALUES (?, ?) "
                               "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, dumps(value)))
            self._append_audit(db, actor, "findings.set", "",  # type: ignore[attr-defined]
                               {"findings": findings.to_json(),
                                "before": loads(before_row[0], None) if before_row is not None else None})
        logger.info("findings set by %s: %s", actor, findings.to_json())
        return findings


def added_classes(before: Findings | Sequence[str], after: Findings) -> list[str]:
    """Classes in ``after`` that ``before`` (findings or a model's class list) lacks, in order."""
    old = set(before.classes if isinstance(before, Findings) else before)
    return [c for c in after.classes if c not in old]
