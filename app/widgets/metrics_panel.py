"""The Metrics panel: how good is a model, per class, and at which operating threshold.

``set_evaluation(classes, y_true, probs, thresholds, title)`` shows the confusion
matrix, per-class ROC curves, the reliability diagram (with ECE) and a per-class
table (sensitivity and specificity with 95 % CIs, precision, F1, AUC, AP, n, the
small-n warning). The operating threshold of one class can be moved: the
trade-off and the table follow instantly (no bootstrap); the bootstrap CIs are
recomputed by the :class:`~app.workers.Runner` once the threshold settles.
``evaluate_active(split)`` runs the active model on a labelled split in the background.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDoubleSpinBox, QHBoxLayout, QHeaderView, QLabel,
                               QPushButton, QSlider, QStackedWidget, QTableWidget, QTableWidgetItem, QVBoxLayout,
                               QWidget)

from app.widgets.plots import PlotCanvas, draw_confusion, draw_reliability, draw_roc

logger = logging.getLogger(__name__)

TABLE_COLUMNS = ("Class", "n (pos / neg)", "Sensitivity [95% CI]", "Specificity [95% CI]", "Precision", "F1",
                 "AUC [95% CI]", "AP", "Threshold", "Note")
SLIDER_STEPS = 1000
SETTLE_MS = 400


def _f(v, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _with_ci(value, ci) -> str:
    if value is None:
        return "—"
    if ci == "pending":
        return f"{value:.3f}  […]"
    return f"{value:.3f}  [{ci[0]:.3f}–{ci[1]:.3f}]" if ci else f"{value:.3f}"


def one_vs_rest_rates(y_true, probs, class_index: int, threshold: float) -> dict:
    """Sensitivity/specificity/precision of "flag class c when p_c >= threshold" with the counts."""
    y = np.asarray(y_true) == class_index
    flag = np.asarray(probs)[:, class_index] >= threshold
    tp, fn = int(np.sum(y & flag)), int(np.sum(y & ~flag))
    tn, fp = int(np.sum(~y & ~flag)), int(np.sum(~y & flag))
    return {"tp": tp, "fn": fn, "tn": tn, "fp": fp,
            "sensitivity": tp / (tp + fn) if tp + fn else None, "specificity": tn / (tn + fp) if tn + fp else None,
            "precision": tp / (tp + fp) if tp + fp else None}


def _bootstrap_job(y_true, probs, classes, thresholds, key):
    """Full evaluation with bootstrap CIs (runs in the Runner's pool)."""
    from core.models.metrics import evaluate

    return key, evaluate(y_true, probs, classes, thresholds=thresholds, n_boot=1000, seed=0)


def _save_threshold_job(workspace_path: str, version: str, class_name: str, value: float, actor: str,
                        evidence: dict) -> str:
    """Save a site threshold (runs in the Runner's pool); returns the line to show."""
    from core.models.site_thresholds import set_site_threshold
    from core.workspace import Workspace

    with Workspace.open(workspace_path) as ws:
        set_site_threshold(ws, version, class_name, value, actor=actor, evidence=evidence)
    return f"saved: {class_name} threshold {value:.3f} for {version} on this workspace"


def _evaluate_active_job(workspace_path: str, split: str, cancel=None) -> dict:
    """Run the active model over the confirmed labels of ``split`` (runs in the Runner's pool), through the same
    core service as ``loupe evaluate``."""
    from app.widgets.reader_metrics import reader_followup
    from core.errors import ModelError
    from core.models.service import score_split
    from core.models.versions import load_version
    from core.workspace import Workspace

    with Workspace.open(workspace_path) as ws:
        loaded = load_version(ws)
        if loaded.multilabel:
            raise ModelError("the metrics panel shows multi-class models; use `loupe evaluate` for multi-label ones")
        scores = score_split(ws, split=split, cancel=cancel, loaded=loaded)
        reader = reader_followup(ws, loaded, scores.true_grades, scores.severity_logits)
    y = scores.y_true
    return {"classes": list(loaded.classes), "y_true": y, "probs": scores.probs,
            "thresholds": {c: loaded.thresholds.get(c) for c in loaded.classes},
            "version": loaded.version.version, "split": split, "reader": reader,
            "title": f"{loaded.version.version} on '{split}' ({len(y)} images"
                     + (f", {len(scores.failed)} unreadable)" if scores.failed else ")")}


class MetricsPanel(QWidget):
    """Confusion matrix, ROC, reliability, per-class table and a live operating threshold.

    ``MetricsPanel(runner, workspace_path)``. ``evaluation`` holds the shown
    :func:`core.models.metrics.evaluate` dict (CIs once the bootstrap is back);
    ``confusion`` the drawn counts; ``thresholds`` the current per-class thresholds.
    Emits ``evaluation_changed(dict)`` whenever the shown evaluation changes.
    """

    evaluation_changed = Signal(object)
    #: a site threshold was saved for this model version: its predictions must be re-decided
    thresholds_saved = Signal(str)

    def __init__(self, runner, workspace_path: str | Path, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.runner = runner
        self.workspace_path = str(workspace_path)
        self.classes: list[str] = []
        self.y_true = np.zeros(0, dtype=np.int64)
        self.probs = np.zeros((0, 0))
        self.thresholds: dict[str, Optional[float]] = {}
        self.version: Optional[str] = None  # the evaluated model version (None for a plain set_evaluation)
        self.split_name: Optional[str] = None
        self._initial_thresholds: dict[str, Optional[float]] = {}
        self.evaluation: Optional[dict] = None
        self.confusion: Optional[np.ndarray] = None
        self.ci_pending = False
        self._key = 0
        self._roc: list[dict] = []
        self._settle = QTimer(self, singleShot=True, interval=SETTLE_MS)
        self._settle.timeout.connect(self._start_bootstrap)
        self._build()
        self._show_message("No evaluation yet: evaluate the active model on a labelled split.")

    # --- layout ----------------------------------------------------------------------------

    def _build(self) -> None:
        self.title_label = QLabel("Metrics")
        self.title_label.setStyleSheet("font-weight: bold; font-size: 11pt;")
        self.split = QComboBox()
        self.split.addItems(["test", "val"])
        self.evaluate_button = QPushButton("Evaluate active model")
        self.evaluate_button.clicked.connect(lambda: self.evaluate_active(self.split.currentText()))
        self.status_label = QLabel("", objectName="muted")
        top = QHBoxLayout()
        top.addWidget(self.title_label, 1)
        top.addWidget(self.status_label)
        top.addWidget(QLabel("Split"))
        top.addWidget(self.split)
        top.addWidget(self.evaluate_button)

        self.summary_label = QLabel("", wordWrap=True)
        self.canvas = PlotCanvas(ncols=3, width=12.0, height=3.8)

        self.class_box = QComboBox()
        self.class_box.setSizeAdjustPolicy(QComboBox.AdjustToContents)
        self.class_box.currentIndexChanged.connect(self._on_class_selected)
        self.slider = QSlider(Qt.Horizontal, minimum=0, maximum=SLIDER_STEPS)
        self.spin = QDoubleSpinBox(minimum=0.0, maximum=1.0, decimals=3, singleStep=0.01)
        self.slider.valueChanged.connect(lambda v: self.spin.setValue(v / SLIDER_STEPS))
        self.spin.valueChanged.connect(self._on_threshold_changed)
        self.reset_button = QPushButton("Reset")
        self.reset_button.setToolTip("Back to the model's own operating thresholds")
        self.reset_button.clicked.connect(self.reset_thresholds)
        self.save_button = QPushButton("Use at this site")
        self.save_button.setToolTip("Save this threshold for the evaluated model version in this workspace "
                                    "(audited); predictions are re-decided with it")
        self.save_button.clicked.connect(self.save_threshold)
        self.save_button.setEnabled(False)
        thr = QHBoxLayout()
        thr.addWidget(QLabel("Operating threshold for"))
        thr.addWidget(self.class_box)
        thr.addWidget(self.slider, 1)
        thr.addWidget(self.spin)
        thr.addWidget(self.reset_button)
        thr.addWidget(self.save_button)
        self.tradeoff_label = QLabel("", wordWrap=True)
        self.rule_label = QLabel("The table and confusion matrix use the app's decision rule: a class at or above "
                                 "its threshold wins, otherwise the most probable class.", wordWrap=True,
                                 objectName="muted")

        self.table = QTableWidget(0, len(TABLE_COLUMNS))
        self.table.setHorizontalHeaderLabels(TABLE_COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.warning_label = QLabel("", wordWrap=True)
        self.warning_label.setStyleSheet("color: #d9a441;")

        content = QWidget()
        body = QVBoxLayout(content)
        body.setContentsMargins(0, 0, 0, 0)
        body.addWidget(self.summary_label)
        body.addWidget(self.canvas, 3)
        body.addLayout(thr)
        body.addWidget(self.tradeoff_label)
        body.addWidget(self.rule_label)
        body.addWidget(self.table)
        body.addWidget(self.warning_label)
        from app.widgets.reader_metrics import ReaderMetricsView

        self.reader_view = ReaderMetricsView()  # severity κ, audit miss rate per version, flagged cases
        body.addWidget(self.reader_view)
        self.message_label = QLabel("", alignment=Qt.AlignCenter, wordWrap=True, objectName="muted")
        self.stack = QStackedWidget()
        self.stack.addWidget(self.message_label)
        self.stack.addWidget(content)
        outer = QVBoxLayout(self)
        outer.addLayout(top)
        outer.addWidget(self.stack, 1)

    def _show_message(self, text: str) -> None:
        self._settle.stop()
        self.status_label.setText("")
        self.message_label.setText(text)
        self.stack.setCurrentIndex(0)

    @property
    def showing_message(self) -> Optional[str]:
        """The text shown instead of the metrics (e.g. "Not enough data …"), or None."""
        return self.message_label.text() if self.stack.currentIndex() == 0 else None

    # --- data ------------------------------------------------------------------------------

    def set_evaluation(self, classes: Sequence[str], y_true, probs, thresholds: Optional[dict] = None,
                       title: str = "") -> None:
        """Show the metrics of ``probs`` (n, k) against class indices ``y_true`` (n,)."""
        from core.models.calibration import reliability_curve
        from core.models.metrics import roc_points

        self._settle.stop()
        self._key += 1
        self.classes = [str(c) for c in classes]
        self.title_label.setText(title or "Metrics")
        try:
            y = np.asarray(y_true, dtype=np.int64).ravel()
            p = np.asarray(probs, dtype=np.float64).reshape(len(y), len(self.classes)) if len(y) else \
                np.zeros((0, len(self.classes)))
        except ValueError as exc:
            self.evaluation, self.confusion = None, None
            self._show_message(f"Cannot show these results: {exc}")
            return
        if len(y) and (y.min() < 0 or y.max() >= len(self.classes)):
            self.evaluation, self.confusion = None, None
            self._show_message(f"Cannot show these results: class indices must lie in 0..{len(self.classes) - 1}")
            return
        self.y_true, self.probs = y, p
        present = np.unique(y)
        if len(y) == 0 or len(present) < 2 or len(self.classes) < 2:
            which = "no cases" if len(y) == 0 else (
                f"{len(y)} case{'s' if len(y) != 1 else ''}, all '{self.classes[present[0]]}'"
                if len(present) == 1 and len(self.classes) else f"{len(y)} cases")
            self.evaluation, self.confusion = None, None
            self._show_message(f"Not enough data to evaluate: {which}. "
                               "Cases of at least two classes are needed.")
            return
        self.thresholds = {c: (thresholds or {}).get(c) for c in self.classes}
        self._initial_thresholds = dict(self.thresholds)
        self._roc = [roc_points(y, p, i) for i in range(len(self.classes))]
        self._reliability = reliability_curve(y, p)
        self.class_box.blockSignals(True)
        self.class_box.clear()
        self.class_box.addItems(self.classes)
        with_thr = [i for i, c in enumerate(self.classes) if self.thresholds[c] is not None]
        self.class_box.setCurrentIndex(with_thr[0] if with_thr else len(self.classes) - 1)
        self.class_box.blockSignals(False)
        self.stack.setCurrentIndex(1)
        self._sync_controls()
        self._recompute()

    def set_threshold(self, class_name: str, value: float) -> None:
        """Set one class's operating threshold (as the slider does) and update everything."""
        self.class_box.setCurrentIndex(self.classes.index(class_name))
        self.spin.setValue(float(value))

    def save_threshold(self, actor: str = "metrics panel") -> None:
        """Save the selected class's current threshold for the evaluated version (in the background)."""
        c = self.selected_class
        if c is None or self.version is None or self.evaluation is None or self.thresholds.get(c) is None:
            return
        row = self.evaluation["per_class"].get(c, {})
        evidence = {"split": self.split_name, "cases": int(len(self.y_true)),
                    "sensitivity": row.get("sensitivity"), "specificity": row.get("specificity")}
        value, version = float(self.thresholds[c]), self.version
        self.save_button.setEnabled(False)

        def done(message: str) -> None:
            self.save_button.setEnabled(True)
            self._initial_thresholds[c] = value
            self.status_label.setText(message)
            self.thresholds_saved.emit(version)

        def failed(message: str) -> None:
            self.save_button.setEnabled(True)
            self.status_label.setText(f"not saved: {message}")

        self.runner.submit("threshold", _save_threshold_job, self.workspace_path, version, c, value, actor, evidence,
                           on_done=done, on_error=failed)

    def reset_thresholds(self) -> None:
        """Restore the thresholds given to :meth:`set_evaluation`."""
        self.thresholds = dict(self._initial_thresholds)
        self._sync_controls()
        self._recompute()

    def _on_class_selected(self, _index: int) -> None:
        self._sync_controls()
        self._update_tradeoff()
        self._draw()

    def _sync_controls(self) -> None:
        c = self.selected_class
        value = self.thresholds.get(c) if c else None
        value = 0.5 if value is None else value
        for w in (self.slider, self.spin):
            w.blockSignals(True)
        self.spin.setValue(value)
        self.slider.setValue(int(round(value * SLIDER_STEPS)))
        for w in (self.slider, self.spin):
            w.blockSignals(False)
        self._update_tradeoff()

    @property
    def selected_class(self) -> Optional[str]:
        """The class whose threshold the slider moves."""
        return self.class_box.currentText() or None

    def _on_threshold_changed(self, value: float) -> None:
        c = self.selected_class
        if c is None or self.evaluation is None:
            return
        self.slider.blockSignals(True)
        self.slider.setValue(int(round(value * SLIDER_STEPS)))
        self.slider.blockSignals(False)
        self.thresholds[c] = float(value)
        self._recompute()

    def _recompute(self) -> None:
        """Instant metrics without bootstrap; CIs follow from the Runner once the threshold settles."""
        from core.models.metrics import evaluate

        self._key += 1
        self.evaluation = evaluate(self.y_true, self.probs, self.classes, thresholds=self.thresholds, n_boot=0)
        self.confusion = np.asarray(self.evaluation["confusion"], dtype=np.int64)
        self.ci_pending = True
        self._settle.start()
        self._update_tradeoff()
        self._fill_table()
        self._draw()
        self.evaluation_changed.emit(self.evaluation)

    def _start_bootstrap(self) -> None:
        if self.evaluation is None or self.runner is None:
            return
        self.status_label.setText("computing 95% intervals…")
        self.runner.submit("metrics-ci", _bootstrap_job, self.y_true, self.probs, list(self.classes),
                           dict(self.thresholds), self._key, on_done=self._on_bootstrap,
                           on_error=lambda msg: self.status_label.setText(f"intervals failed: {msg}"))

    def _on_bootstrap(self, result) -> None:
        key, evaluation = result
        if key != self._key:  # the threshold moved meanwhile; a newer job is coming
            return
        self.evaluation = evaluation
        self.ci_pending = False
        self.status_label.setText("")
        self._fill_table()
        self.evaluation_changed.emit(self.evaluation)

    # --- display ---------------------------------------------------------------------------

    def tradeoff(self) -> Optional[dict]:
        """One-vs-rest rates of the selected class at the slider's threshold (what the readout shows)."""
        c = self.selected_class
        if c is None or self.evaluation is None:
            return None
        return one_vs_rest_rates(self.y_true, self.probs, self.classes.index(c), self.spin.value())

    def _update_tradeoff(self) -> None:
        r = self.tradeoff()
        if r is None:
            self.tradeoff_label.setText("")
            return
        c, t = self.selected_class, self.spin.value()
        self.tradeoff_label.setText(
            f"Flag <b>{c}</b> when p ≥ {t:.3f}: sensitivity <b>{_f(r['sensitivity'])}</b> "
            f"({r['tp']}/{r['tp'] + r['fn']} found), specificity <b>{_f(r['specificity'])}</b> "
            f"({r['tn']}/{r['tn'] + r['fp']} cleared), precision {_f(r['precision'])} — "
            f"{r['fn']} missed, {r['fp']} false alarm{'' if r['fp'] == 1 else 's'}.")

    def _fill_table(self) -> None:
        ev = self.evaluation
        self.table.setRowCount(len(self.classes))
        warnings = []
        for r, name in enumerate(self.classes):
            pc = ev["per_class"][name]
            ci = pc.get("ci95", {}) if not self.ci_pending else {}
            pend = "pending" if self.ci_pending else None
            cells = (name, f"{pc['n']} / {pc['n_negative']}",
                     _with_ci(pc["sensitivity"], pend or ci.get("sensitivity")),
                     _with_ci(pc["specificity"], pend or ci.get("specificity")),
                     _f(pc["precision"]), _f(pc["f1"]), _with_ci(pc["auc"], pend or ci.get("auc")), _f(pc["ap"]),
                     _f(pc["threshold"]) if pc["threshold"] is not None else "argmax",
                     "small n" if pc["warning"] else "")
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c == len(cells) - 1 and pc["warning"]:
                    item.setToolTip(pc["warning"])
                    item.setForeground(QColor("#d9a441"))
                if 0 < c < len(cells) - 1:
                    item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                self.table.setItem(r, c, item)
            if pc["warning"]:
                warnings.append("⚠ " + pc["warning"])
        self.table.resizeRowsToContents()
        height = self.table.horizontalHeader().height() + sum(self.table.rowHeight(i) for i in range(min(len(self.classes), 8)))
        self.table.setFixedHeight(height + 2 * self.table.frameWidth() + 2)
        self.warning_label.setText("\n".join(warnings))
        self.warning_label.setVisible(bool(warnings))
        self.summary_label.setText(
            f"{ev['n']} cases · accuracy {_f(ev['accuracy'])} · balanced accuracy {_f(ev['balanced_accuracy'])} · "
            f"macro AUC {_f(ev['macro_auc'])} · Cohen's κ {_f(ev['kappa'])} · ECE {_f(ev['ece'])}")

    def _draw(self) -> None:
        if self.evaluation is None or self.confusion is None:
            return
        ax_cm, ax_roc, ax_rel = self.canvas.axes
        draw_confusion(ax_cm, self.confusion, self.classes)
        marker = None
        r = self.tradeoff()
        if r is not None and r["sensitivity"] is not None and r["specificity"] is not None:
            marker = (self.classes.index(self.selected_class), 1.0 - r["specificity"], r["sensitivity"])
        draw_roc(ax_roc, self._roc, self.classes, marker)
        draw_reliability(ax_rel, self._reliability, self.evaluation["ece"])
        self.canvas.redraw()

    # --- evaluating the active model -------------------------------------------------------

    def evaluate_active(self, split: str = "test") -> None:
        """Evaluate the active model on the labelled images of ``split`` in the background."""
        self.evaluate_button.setEnabled(False)
        self.status_label.setText(f"evaluating the active model on '{split}'…")
        self.runner.submit("metrics-evaluate", _evaluate_active_job, self.workspace_path, split,
                           on_done=self._on_evaluated, on_error=self._on_evaluate_failed)

    def _on_evaluated(self, data: dict) -> None:
        self.evaluate_button.setEnabled(True)
        self.status_label.setText("")
        self.version, self.split_name = data.get("version"), data.get("split")
        self.set_evaluation(data["classes"], data["y_true"], data["probs"], data["thresholds"], data["title"])
        self.reader_view.set_data(data.get("reader"), self.version)
        self.save_button.setEnabled(self.version is not None and self.evaluation is not None)

    def _on_evaluate_failed(self, message: str) -> None:
        self.evaluate_button.setEnabled(True)
        self.status_label.setText("")
        self._show_message(f"Could not evaluate the active model: {message}")
