"""Explanation overlays: method, target class, opacity, side by side, and the faithfulness badge.

Maps are computed in the background (one live request: a newer image or
method supersedes a pending one) and cached in the workspace per model
version, so switching back is instant and a new model never shows an old map.
"""

from __future__ import annotations

import logging
from typing import Optional

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QLabel, QPushButton, QSlider, QVBoxLayout,
                               QWidget)

from app import jobs
from app.theme import COLORS

logger = logging.getLogger(__name__)

METHODS = (("None", None), ("Grad-CAM", "gradcam"), ("LIME", "lime"), ("Integrated Gradients", "ig"),
           ("Gradient SHAP", "gradshap"), ("Occlusion", "occlusion"), ("LayerCAM", "layercam"))
COLORMAPS = ("jet", "inferno", "viridis")


class OverlayPanel(QWidget):
    """Controls of the viewer's explanation overlay for the current image."""

    def __init__(self, runner, workspace, viewer, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.runner, self.workspace, self.viewer = runner, workspace, viewer
        self.ref = None
        self.model: Optional[dict] = None
        self.last = None  # the Explanation on screen
        self.method = QComboBox()
        for name, key in METHODS:
            self.method.addItem(name, key)
        self.method.setToolTip("Which explanation to overlay (O toggles it)")
        self.target = QComboBox()
        self.target.setToolTip("Class the map explains; the predicted class by default")
        self.opacity = QSlider(Qt.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(45)
        self.colormap = QComboBox()
        self.colormap.addItems(COLORMAPS)
        self.side_by_side = QCheckBox("Side by side (original | overlay)")
        self.faith_button = QPushButton("Check faithfulness")
        self.faith_button.setToolTip("Three checks: is the map flat? Does hiding the highlighted pixels change "
                                     "the model's output more than hiding others (deletion/insertion)? Does a "
                                     "model with random weights give a different map (randomisation)?")
        self.state = QLabel("", objectName="muted")
        self.state.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Method", self.method)
        form.addRow("Target", self.target)
        form.addRow("Opacity", self.opacity)
        form.addRow("Colours", self.colormap)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(form)
        layout.addWidget(self.side_by_side)
        layout.addWidget(self.faith_button)
        layout.addWidget(self.state)
        layout.addStretch(1)
        self.method.currentIndexChanged.connect(lambda _i: self.request())
        self.target.currentIndexChanged.connect(lambda _i: self.request())
        self.opacity.valueChanged.connect(lambda v: self.viewer.set_overlay_opacity(v / 100.0))
        self.colormap.currentIndexChanged.connect(lambda _i: self._show(self.last))
        self.side_by_side.toggled.connect(self.viewer.set_side_by_side)
        self.faith_button.clicked.connect(self.check_faithfulness)

    def set_model(self, model: Optional[dict]) -> None:
        """Use the active model's classes; without a model, overlays are unavailable."""
        self.model = model
        self.target.blockSignals(True)
        self.target.clear()
        self.target.addItem("predicted class", None)
        for name in (model or {}).get("classes", []):
            self.target.addItem(name, name)
        self.target.blockSignals(False)
        self.setEnabled(model is not None)
        note = ((model or {}).get("reading") or {}).get("explanation")
        self.state.setText(note if note else "" if model else "no model yet: create or train one to see explanations")

    def show_image(self, ref) -> None:
        """The viewer moved to another image: drop the old map and request one for this image."""
        self.ref = ref
        self.last = None
        self.viewer.set_overlay(None)
        self.viewer.set_badge("", "")
        self.request()

    def request(self) -> None:
        """Compute (or fetch from the cache) the selected map for the current image in the background."""
        method = self.method.currentData()
        if method is None or self.ref is None or self.model is None:
            self.viewer.set_overlay(None)
            self.viewer.set_busy(None)
            return
        self.viewer.set_busy(f"computing {self.method.currentText()}…")
        self.state.setText(f"computing {self.method.currentText()}…")
        self.runner.submit("explain", jobs.explain_image, self.workspace, self.ref.id, method,
                           self.target.currentData(), on_done=self._on_map, on_error=self._on_error)

    def _on_map(self, explanation) -> None:
        self.viewer.set_busy(None)
        if self.ref is None or explanation.image_id != self.ref.id:
            return
        self.last = explanation
        self._show(explanation)
        how = "from cache" if explanation.cached else f"{explanation.seconds:.1f} s"
        what = f"{self.method.currentText()} for '{explanation.target}'"
        note = ((self.model or {}).get("reading") or {}).get("explanation")  # fast reading: say where maps come from
        self.state.setText(f"{note}: {what} ({how})" if note and explanation.version == self.model["reading"]["teacher"]
                           else f"{what} by {explanation.version} ({how})")
        self._badge(explanation)

    def _show(self, explanation) -> None:
        if explanation is None:
            return
        self.viewer.set_overlay(explanation.map, self.colormap.currentText(), self.opacity.value() / 100.0)

    def _on_error(self, message: str) -> None:
        self.viewer.set_busy(None)
        self.state.setText(f"no map: {message}")

    def check_faithfulness(self) -> None:
        """Flat-map, deletion/insertion and model-randomisation checks of the map on screen, stored with it;
        shown as a badge naming what failed, the sentence behind it below the panel's state line."""
        if self.last is None:
            self.state.setText("choose a method first")
            return
        self.viewer.set_busy("checking faithfulness…")
        self.runner.submit("faithfulness", jobs.faithfulness, self.workspace, self.last.image_id, self.last.method,
                           self.target.currentData(), on_done=self._on_faith, on_error=self._on_error)

    def _on_faith(self, explanation) -> None:
        self.viewer.set_busy(None)
        if self.ref is not None and explanation.image_id == self.ref.id:
            self.last = explanation
            self._badge(explanation)

    def _badge(self, explanation) -> None:
        verdict = jobs.faithfulness_verdict(explanation)
        if verdict is None:
            self.viewer.set_badge("", "")
            return
        text, level = verdict
        self.viewer.set_badge(text, COLORS[level])
        self.state.setText(self.state.text().split("\n")[0] + f"\n{jobs.faithfulness_summary(explanation)}")
