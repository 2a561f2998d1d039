"""Dark matplotlib canvases for the panels, and the drawing functions they share.

Charts use matplotlib's QtAgg canvas (QtCharts is not part of PySide6
Essentials). Colours follow the reading-room theme of :mod:`app.theme`:
dark background, light grey text, muted grid. Drawing functions take an
``Axes`` and plain data so they can be tested without a window.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from PySide6.QtWidgets import QSizePolicy

from app.theme import COLORS, SERIES

logger = logging.getLogger(__name__)

BG = "#1b1d21"
PANEL = "#1f2126"
TEXT = "#d6d8dc"
MUTED = "#8a8f97"
GRID = "#30343b"
#: Line colours for series and classes, readable on the dark background.
HEATMAP = LinearSegmentedColormap.from_list("loupe_dark", ["#23262b", "#24436e", "#3b7dd8", "#9cc3ff"])


def style_axes(ax, title: str = "", xlabel: str = "", ylabel: str = "") -> None:
    """Apply the dark style (background, spines, ticks, grid) and the titles to ``ax``."""
    ax.set_facecolor(PANEL)
    for spine in ax.spines.values():
        spine.set_color(GRID)
    ax.tick_params(colors=TEXT, labelsize=8)
    ax.xaxis.label.set_color(TEXT)
    ax.yaxis.label.set_color(TEXT)
    ax.grid(True, color=GRID, linewidth=0.6, alpha=0.8)
    ax.set_axisbelow(True)
    if title:
        ax.set_title(title, color=TEXT, fontsize=9.5)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=8.5)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=8.5)


def style_legend(ax, **kwargs) -> None:
    """A legend with a dark frame and light text (only when something is labelled)."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    legend = ax.legend(fontsize=7.5, facecolor=BG, edgecolor=GRID, labelcolor=TEXT, framealpha=0.9, **kwargs)
    legend.get_frame().set_linewidth(0.6)


class PlotCanvas(FigureCanvasQTAgg):
    """A dark matplotlib figure as a Qt widget, with ``ncols`` side-by-side axes.

    ``redraw()`` lays the figure out and schedules a repaint (``draw_idle``
    coalesces several requests into one paint, so per-event updates stay cheap).
    """

    def __init__(self, ncols: int = 1, width: float = 6.0, height: float = 3.0, parent=None):
        self.figure = Figure(figsize=(width, height), dpi=100, facecolor=BG)
        super().__init__(self.figure)
        self.setParent(parent)
        self.axes = [self.figure.add_subplot(1, ncols, i + 1) for i in range(ncols)]
        for ax in self.axes:
            style_axes(ax)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setMinimumHeight(int(height * 60))

    def redraw(self) -> None:
        """Re-layout and repaint when the event loop is next idle."""
        try:
            self.figure.tight_layout(pad=0.8, w_pad=1.6)
        except (ValueError, RuntimeError):  # a degenerate size during start-up; the next draw fixes it
            logger.debug("tight_layout skipped", exc_info=True)
        self.draw_idle()


def draw_confusion(ax, confusion: np.ndarray, classes: Sequence[str]) -> None:
    """Heatmap of the confusion matrix (rows true, columns predicted) with counts and row percentages."""
    ax.clear()
    cm = np.asarray(confusion, dtype=np.int64)
    k = len(classes)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, np.maximum(rows, 1), dtype=np.float64)
    ax.imshow(frac, cmap=HEATMAP, vmin=0.0, vmax=1.0, aspect="auto")
    style_axes(ax, "Confusion matrix", "Predicted", "True")
    ax.grid(False)
    ax.set_xticks(range(k), labels=list(classes), fontsize=8)
    ax.set_yticks(range(k), labels=list(classes), fontsize=8)
    small = k > 6
    for i in range(k):
        for j in range(k):
            colour = "#0d1117" if frac[i, j] > 0.7 else "#f2f4f7"
            text = f"{cm[i, j]}" if small else f"{cm[i, j]}\n{100 * frac[i, j]:.0f}%"
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=7 if small else 9,
                    gid=f"cell-{i}-{j}")


def draw_roc(ax, curves: Sequence[dict], classes: Sequence[str], marker: Optional[tuple] = None) -> None:
    """ROC curve per class (``curves[i]`` from :func:`core.models.metrics.roc_points`), AUC in the legend.

    ``marker`` = (class index, fpr, tpr) marks the current operating point.
    """
    ax.clear()
    style_axes(ax, "ROC (one class vs rest)", "1 − specificity (false-positive rate)", "Sensitivity")
    ax.plot([0, 1], [0, 1], linestyle=":", color=MUTED, linewidth=0.8)
    styles = ["-", "--", "-.", ":"]
    for i, (name, pts) in enumerate(zip(classes, curves)):
        if not pts["fpr"]:
            continue
        auc = pts["auc"]
        label = f"{name}  AUC {auc:.3f}" if auc is not None else f"{name}  AUC —"
        ax.plot(pts["fpr"], pts["tpr"], color=SERIES[i % len(SERIES)], linewidth=1.4,
                linestyle=styles[(i // len(SERIES)) % len(styles)] if len(classes) > 2 else styles[i % 2],
                label=label)
    if marker is not None:
        c, fpr, tpr = marker
        ax.plot([fpr], [tpr], "o", markersize=7, markerfacecolor="none", markeredgewidth=1.8,
                color=SERIES[c % len(SERIES)], label="operating point", gid="operating-point")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    style_legend(ax, loc="lower right")


def draw_reliability(ax, curve: dict, ece: Optional[float]) -> None:
    """Reliability diagram: accuracy per confidence bin as bars, the diagonal as perfect calibration."""
    ax.clear()
    title = "Reliability" + (f" (ECE {ece:.3f})" if ece is not None else "")
    style_axes(ax, title, "Confidence (top class)", "Accuracy")
    edges = np.asarray(curve["edges"])
    width = np.diff(edges)
    acc = [a if a is not None else 0.0 for a in curve["accuracy"]]
    present = [n > 0 for n in curve["count"]]
    ax.bar(edges[:-1], acc, width=width, align="edge", color=SERIES[0], alpha=0.85,
           edgecolor=BG, linewidth=0.6, label="accuracy")
    conf = [c if c is not None else 0.0 for c in curve["confidence"]]
    gaps = [(e, c, a) for e, c, a, p in zip(edges[:-1], conf, acc, present) if p]
    for k, (left, c, a) in enumerate(gaps):
        ax.bar(left, c - a, bottom=a, width=width[0], align="edge", color=COLORS["bad"], alpha=0.35,
               edgecolor="none", label="gap to confidence" if k == 0 else None)
    ax.plot([0, 1], [0, 1], linestyle="--", color=MUTED, linewidth=0.9, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    style_legend(ax, loc="upper left")


def draw_training_curves(loss_ax, auc_ax, curves: dict, epochs: int = 1) -> None:
    """Loss (per step and per epoch, train and validation) and validation AUC against the epoch (0..``epochs``)."""
    loss_ax.clear()
    auc_ax.clear()
    style_axes(loss_ax, "Loss", "Epoch", "Loss")
    style_axes(auc_ax, "Validation ROC-AUC", "Epoch", "Macro AUC")
    if curves["step_loss"]:
        x, y = zip(*curves["step_loss"])
        loss_ax.plot(x, y, color=SERIES[0], alpha=0.35, linewidth=0.9, label="train (batch)")
    if curves["train_loss"]:
        x, y = zip(*curves["train_loss"])
        loss_ax.plot(x, y, "o-", color=SERIES[0], linewidth=1.6, markersize=4, label="train (epoch)")
    if curves["val_loss"]:
        x, y = zip(*curves["val_loss"])
        loss_ax.plot(x, y, "s-", color=SERIES[1], linewidth=1.6, markersize=4, label="validation")
    if curves["val_auc"]:
        x, y = zip(*curves["val_auc"])
        auc_ax.plot(x, y, "o-", color=SERIES[2], linewidth=1.6, markersize=4, label="validation AUC")
        lo, hi = min(y), max(y)
        auc_ax.set_ylim(max(0.0, min(lo, 0.9) - 0.05), min(1.005, max(hi, 0.95) + 0.02))
    else:
        auc_ax.set_ylim(0.4, 1.005)
    last = max([x for series in curves.values() for x, _ in series], default=0.0)
    for ax in (loss_ax, auc_ax):
        ax.set_xlim(0, max(float(epochs), last, 1.0) + 0.1)
    style_legend(loss_ax, loc="upper right")
