"""Model → New model…: every backbone with where its weights come from on this machine, input size, transfer mode.

The default is the strongest backbone whose pretrained weights are present (``core.models.architectures``); the
classes, head kind and severity scale come from the findings. The model is built off the UI thread.
"""

from __future__ import annotations

import logging
from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                               QLineEdit, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from app.workstation.access import runner_of, workspace_of

logger = logging.getLogger(__name__)

MODES = (("frozen", "Frozen backbone: train the head only (fast, few labels)"),
         ("finetune", "Fine-tune the whole network (more labels, a GPU helps)"),
         ("gradual", "Gradual unfreezing, block by block"))


def build_new_model(workspace, arch: str, pretrained: str, input_size: int, mode: str, actor: str = "app"):
    """Background job: create the version from the findings, store the transfer mode for the automatic retrain.

    Returns the new :class:`~core.types.ModelVersion`; raises ModelError (no findings, weights unreadable, …).
    """
    from core.active.settings import write_setting
    from core.errors import ModelError
    from core.models.versions import create_version
    from core.models.weights import default_torch_cache_dir

    findings = workspace.findings()
    if not findings.classes:
        raise ModelError("set the findings first (Edit → Findings…): the model needs its classes")
    head = "multilabel" if findings.multilabel else "multiclass"
    version = create_version(workspace, arch, list(findings.classes), pretrained=pretrained, input_size=input_size,
                             torch_cache_dir=default_torch_cache_dir(), head=head,
                             severity_levels=len(findings.severity), actor=actor)
    write_setting(workspace, "train.mode", mode, actor=actor)
    return version


class NewModelDialog(QDialog):
    """Choose backbone (with its weights source), weights, input size and transfer mode; emits ``created(version)``."""

    created = Signal(object)

    def __init__(self, window, parent: Optional[QWidget] = None):
        from core.models.architectures import backbone_choices
        from core.models.weights import default_torch_cache_dir

        super().__init__(parent or window)
        self.window = window
        self.workspace = workspace_of(window)
        self.runner = runner_of(window)
        self.setWindowTitle("New model")
        self.setObjectName("new_model_dialog")
        self.choices = backbone_choices(default_torch_cache_dir())  # file checks only, no weights loaded
        self.arch = QComboBox()
        self.arch.setObjectName("model_arch")
        for c in self.choices:
            top1 = f"ImageNet top-1 {c['top1']:.1f} %" if c["top1"] else ""
            where = {"package": "weights bundled", "torch cache": "weights in torch cache",
                     "none": "no weights here"}[c["kind"]]
            self.arch.addItem(f"{c['arch']}  —  {where}  ({top1})", c["arch"])
        self.source = QLabel("", wordWrap=True, objectName="muted")
        self.weights = QComboBox()
        self.weights.setObjectName("model_weights")
        self.pth = QLineEdit(placeholderText="a .pth state dict for this backbone")
        self.pth.setEnabled(False)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._pick_pth)
        pth_row = QHBoxLayout()
        pth_row.addWidget(self.pth, 1)
        pth_row.addWidget(browse)
        self.size = QSpinBox(minimum=32, maximum=1024, singleStep=16)
        self.size.setObjectName("model_size")
        self.mode = QComboBox()
        for key, text in MODES:
            self.mode.addItem(text, key)
        findings = self.workspace.findings()
        self.classes = QLabel(", ".join(findings.classes) + (" (multi-label)" if findings.multilabel else "")
                              + (f"; severity {', '.join(findings.severity)}" if findings.severity else "")
                              if findings.classes else "no findings yet: set them under Edit → Findings…",
                              wordWrap=True)
        self.state = QLabel("", wordWrap=True)
        form = QFormLayout()
        form.addRow("&Backbone", self.arch)
        form.addRow("", self.source)
        form.addRow("&Weights", self.weights)
        form.addRow("", pth_row)
        form.addRow("&Input size", self.size)
        form.addRow("&Transfer", self.mode)
        form.addRow("Findings", self.classes)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        self.buttons.button(QDialogButtonBox.Ok).setText("Create")
        self.buttons.accepted.connect(self.create)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.state)
        layout.addWidget(self.buttons)
        self.arch.currentIndexChanged.connect(self._on_arch)
        self.weights.currentIndexChanged.connect(lambda _i: self.pth.setEnabled(self.weights.currentData() == "file"))
        self._on_arch(0)  # the first entry is the strongest with weights present
        self.resize(620, 360)

    def _on_arch(self, index: int) -> None:
        choice = self.choices[index]
        self.source.setText(f"Weights: {choice['text']}")
        self.weights.blockSignals(True)
        self.weights.clear()
        if choice["available"]:
            self.weights.addItem(f"ImageNet ({'bundled package' if choice['kind'] == 'package' else 'torch cache'})",
                                 "default")
        self.weights.addItem("A .pth file I pick", "file")
        self.weights.addItem("None — random initialisation (needs many labels)", "none")
        self.weights.blockSignals(False)
        self.pth.setEnabled(self.weights.currentData() == "file")
        self.size.setValue(choice["native_size"])

    def _pick_pth(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Weights file", "", "PyTorch weights (*.pth *.pt);;All files (*)")
        if path:
            self.pth.setText(path)

    def selected(self) -> tuple[str, str, int, str]:
        """``(arch, pretrained, input_size, mode)`` as chosen."""
        weights = self.weights.currentData()
        pretrained = self.pth.text().strip() if weights == "file" else weights
        return self.arch.currentData(), pretrained, self.size.value(), self.mode.currentData()

    def create(self) -> None:
        """Build the model in the background; the dialog closes when the version is registered."""
        arch, pretrained, size, mode = self.selected()
        if not pretrained:
            self.state.setText("Pick the .pth file, or choose other weights.")
            return
        self.buttons.setEnabled(False)
        self.state.setText(f"building {arch}…")
        actor = getattr(getattr(self.window, "settings", None), "annotator", "") or "app"
        self.runner.submit("new_model", build_new_model, self.workspace, arch, pretrained, size, mode, actor,
                           on_done=self._on_created, on_error=self._on_error)

    def _on_error(self, message: str) -> None:
        self.buttons.setEnabled(True)
        self.state.setStyleSheet("color: #d05353")
        self.state.setText(message)

    def _on_created(self, version) -> None:
        self.state.setText(f"created {version.version}: {version.arch}; weights: {version.weights}")
        self.created.emit(version)
        self.accept()
