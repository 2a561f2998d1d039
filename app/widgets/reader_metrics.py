"""The metrics panel's follow-up section: severity agreement, the audit slice's miss rate, flagged cases.

:func:`reader_followup` (run in the metrics panel's background job) gathers the
figures from core; :class:`ReaderMetricsView` shows them: the severity head's
quadratic-weighted kappa with its bootstrap interval and per-grade confusion,
one row per model version with its audited miss rate (Wilson 95 % interval),
and each case a reader flagged "model was wrong" with the version that erred
and whether the current version still errs.
"""

from __future__ import annotations

import logging
from typing import Optional

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QAbstractItemView, QHeaderView, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout,
                               QWidget)

logger = logging.getLogger(__name__)

AUDIT_COLUMNS = ("Version", "Audited", "Labelled rare", "Miss rate", "95 % CI")
FLAG_COLUMNS = ("Image", "Label", "Erred", "Current", "Still wrong?")


def reader_followup(ws, loaded, true_grades, severity_logits, predict_missing: bool = True) -> dict:
    """Severity metrics, audit rate per version and flagged cases for the panel (no Qt; runs in a worker).

    Flagged cases the current version has not predicted are predicted first
    when ``predict_missing`` (a handful of images).
    """
    from core.active.flagged import flagged_cases
    from core.models.audit_slice import audit_by_version
    from core.models.service import predict_images, reader_metrics

    out = reader_metrics(ws, loaded, true_grades, severity_logits)
    version = loaded.version.version
    flags = flagged_cases(ws, version)
    missing = [r["image_id"] for r in flags if r["current_predicted"] is None]
    if missing and predict_missing:
        predict_images(ws, missing, version)
        flags = flagged_cases(ws, version)
    out["audit_by_version"] = audit_by_version(ws)
    out["flagged"] = flags
    return out


def _pct(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:.1%}"


def _table(columns) -> QTableWidget:
    table = QTableWidget(0, len(columns))
    table.setHorizontalHeaderLabels(list(columns))
    table.setEditTriggers(QAbstractItemView.NoEditTriggers)
    table.verticalHeader().setVisible(False)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
    table.horizontalHeader().setStretchLastSection(True)
    return table


def _fill(table: QTableWidget, rows: list[tuple]) -> None:
    table.setRowCount(len(rows))
    for r, cells in enumerate(rows):
        for c, text in enumerate(cells):
            item = QTableWidgetItem(str(text))
            if c > 0:
                item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
            table.setItem(r, c, item)
    table.resizeRowsToContents()
    height = table.horizontalHeader().height() + sum(table.rowHeight(i) for i in range(min(len(rows), 6)))
    table.setFixedHeight(height + 2 * table.frameWidth() + 2)


class ReaderMetricsView(QWidget):
    """Severity κ and per-grade confusion, audit miss rate per version, and the flagged cases."""

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.severity_label = QLabel("", wordWrap=True)
        self.grades = _table(())
        self.audit_label = QLabel("", wordWrap=True)
        self.audit = _table(AUDIT_COLUMNS)
        self.flag_label = QLabel("", wordWrap=True)
        self.flags = _table(FLAG_COLUMNS)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for w in (self.severity_label, self.grades, self.audit_label, self.audit, self.flag_label, self.flags):
            layout.addWidget(w)
        self.data: dict = {}
        self.set_data(None)

    def set_data(self, data: Optional[dict], version: Optional[str] = None) -> None:
        """Show :func:`reader_followup`'s dict (None hides everything)."""
        self.data = data or {}
        self.setVisible(bool(data))
        if not data:
            return
        sev = data.get("severity")
        self.severity_label.setVisible(sev is not None)
        self.grades.setVisible(sev is not None)
        if sev is not None:
            ci = sev.get("ci95")
            kappa = "n/a" if sev.get("kappa") is None else f"{sev['kappa']:.3f}"
            self.severity_label.setText(
                f"<b>Severity</b>: quadratic-weighted κ <b>{kappa}</b>"
                + (f" (95 % CI {ci[0]:.3f}–{ci[1]:.3f})" if ci else "")
                + f" on {sev['n']} graded case{'s' if sev['n'] != 1 else ''}. Rows: labelled grade; columns: predicted.")
            names = sev["grades"]
            self.grades.setColumnCount(len(names) + 2)
            self.grades.setHorizontalHeaderLabels(["Labelled \\ predicted", *names, "Recall"])
            _fill(self.grades, [(name, *row, _pct(sev["per_grade"][name]["recall"]))
                                for name, row in zip(names, sev["confusion"])])
        by_version = data.get("audit_by_version") or {}
        if by_version:
            current = data.get("audit")
            lead = (f"{current['missed']} of {current['n']} audited confident negatives were labelled rare: "
                    f"miss rate <b>{_pct(current['miss_rate'])}</b> (95 % CI {_pct(current['ci95'][0])}–"
                    f"{_pct(current['ci95'][1])})" if current else "none of this version's audit picks is labelled yet")
            self.audit_label.setText(f"<b>Audit slice</b> — {version or 'this version'}: {lead}.")
            _fill(self.audit, [(v, s["n"], s["missed"], _pct(s["miss_rate"]),
                                f"{_pct(s['ci95'][0])}–{_pct(s['ci95'][1])}") for v, s in by_version.items()])
        else:
            self.audit_label.setText("<b>Audit slice</b>: no audited confident negatives labelled yet.")
        self.audit.setVisible(bool(by_version))
        flags = data.get("flagged") or []
        still = sum(1 for r in flags if r["still_wrong"])
        self.flag_label.setText(f"<b>Flagged \"model was wrong\"</b>: {len(flags)} case{'s' if len(flags) != 1 else ''}"
                                + (f", {still} still wrong with the current version" if flags else "") + ".")
        _fill(self.flags, [(r["image_id"][:12], r["label"], f"{r['erred_version'] or '?'}: {r['erred_predicted'] or '?'}",
                            f"{r['current_version']}: {r['current_predicted'] or 'not predicted'}",
                            {True: "yes", False: "no", None: "—"}[r["still_wrong"]]) for r in flags])
        self.flags.setVisible(bool(flags))
