"""File → Export…: CSV, JSON or DICOM SR (with the explanation maps as secondary captures), de-identified or not,
to a chosen destination, with progress; and Help → Verify audit log."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout,
                               QLineEdit, QMessageBox, QPushButton, QVBoxLayout, QWidget)

from app.workstation.job_dialog import JobDialog

logger = logging.getLogger(__name__)

FORMATS = (("DICOM SR + explanation maps (secondary captures), a folder", "dicom-sr"),
           ("CSV, one file", "csv"), ("JSON, one file", "json"))


def run_export(workspace, out: str, fmt: str, deidentify: bool, actor: str = "app", progress=None, cancel=None):
    """Background job: :func:`core.export.export_workspace`; returns the ExportReport."""
    from core.export import export_workspace

    return export_workspace(workspace, out, fmt, deidentify=deidentify, progress=progress, cancel=cancel,
                            actor=actor)


def verify_audit(workspace) -> tuple[bool, Optional[int], int]:
    """Background job: ``(intact, first broken entry id, number of entries)``."""
    ok, first_bad = workspace.verify_audit()
    return ok, first_bad, len(workspace.audit_log())


def audit_message(result) -> tuple[bool, str]:
    """The person-readable outcome of :func:`verify_audit`."""
    ok, first_bad, n = result
    if ok:
        return True, f"The audit log is intact: {n} entries, every one chained to the one before."
    return False, (f"The audit log's hash chain is broken at entry {first_bad}: that entry or the one before it "
                   f"was changed, removed or reordered after it was written. Keep a copy of this workspace file "
                   f"and tell whoever is responsible for it.")


class ExportDialog(JobDialog):
    """Choose format, de-identification and destination; export with progress; emits ``exported(report)``."""

    exported = Signal(object)
    verb = "export"

    def __init__(self, window, parent: Optional[QWidget] = None):
        super().__init__(window, parent)
        self.setWindowTitle("Export")
        self.setObjectName("export_dialog")
        self.format = QComboBox()
        self.format.setObjectName("export_format")
        for text, key in FORMATS:
            self.format.addItem(text, key)
        self.deidentify = QCheckBox("&De-identify (DICOM PS3.15 Basic Profile: pseudonymous ids, new UIDs, "
                                    "shifted dates, no file paths or notes)")
        self.deidentify.setChecked(True)
        self.out = QLineEdit()
        self.out.setObjectName("export_out")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.out, 1)
        row.addWidget(browse)
        form = QFormLayout()
        form.addRow("&Format", self.format)
        form.addRow("", self.deidentify)
        form.addRow("D&estination", row)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        self.buttons.button(QDialogButtonBox.Ok).setText("Export")
        self.go_button = self.buttons.button(QDialogButtonBox.Ok)
        self.buttons.accepted.connect(self.start)
        self.buttons.rejected.connect(self.cancel)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.progress)
        layout.addWidget(self.state)
        layout.addWidget(self.buttons)
        self.format.currentIndexChanged.connect(lambda _i: self._suggest())
        self._suggest()
        self.resize(680, self.sizeHint().height())

    def _suggest(self) -> None:
        fmt = self.format.currentData()
        base = Path(self.workspace.path).parent
        name = {"dicom-sr": "loupe-export-sr", "csv": "loupe-export.csv", "json": "loupe-export.json"}[fmt]
        current = self.out.text().strip()
        if not current or Path(current).name.startswith("loupe-export"):
            self.out.setText(str(base / name))

    def _browse(self) -> None:
        if self.format.currentData() == "dicom-sr":
            folder = QFileDialog.getExistingDirectory(self, "Parent folder for the export")
            if folder:
                self.out.setText(str(Path(folder) / "loupe-export-sr"))
        else:
            path, _ = QFileDialog.getSaveFileName(self, "Export to", self.out.text())
            if path:
                self.out.setText(path)

    def start(self) -> None:
        """Export in the background (refused plainly when the destination exists)."""
        out = self.out.text().strip()
        if not out:
            self.state.setText("Choose a destination.")
            return
        if Path(out).exists():
            self.state.setText(f"{out} already exists: choose a new name so nothing is overwritten.")
            return
        self._run_job("export", run_export, self.workspace, out, self.format.currentData(),
                      self.deidentify.isChecked(), self.actor())

    def _on_done(self, report) -> None:
        counts = ", ".join(f"{v} {k}" for k, v in report.counts.items()) or "nothing to export"
        skipped = f"; skipped {len(report.skipped)}" if report.skipped else ""
        self.state.setText(f"exported{' (de-identified)' if report.deidentified else ''} to {report.out}: "
                           f"{counts}{skipped}")
        self.buttons.button(QDialogButtonBox.Ok).hide()
        self.buttons.button(QDialogButtonBox.Cancel).setText("Close")
        self.exported.emit(report)


def show_audit_result(parent, result) -> QMessageBox:
    """A non-modal message box with the outcome of the audit check."""
    ok, text = audit_message(result)
    box = QMessageBox(QMessageBox.Information if ok else QMessageBox.Critical, "Audit log", text, parent=parent)
    box.setObjectName("audit_result")
    box.setModal(False)
    box.show()
    return box
