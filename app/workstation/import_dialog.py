"""File → Import…: folders and files, what non-DICOM pictures are, progress with cancel, and the rejected-files report.

The import runs off the UI thread through ``core.importer.import_paths``; the report lists every file that was not
imported with its reason and what to do about it, and can be saved as a CSV.
"""

from __future__ import annotations

import csv
import inspect
import logging
from pathlib import Path
from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QButtonGroup, QComboBox, QDialogButtonBox, QFileDialog, QHBoxLayout, QHeaderView, QLabel,
                               QLineEdit, QListWidget, QPushButton, QRadioButton, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

from app.workstation.job_dialog import JobDialog

logger = logging.getLogger(__name__)

#: (words in the reason, what the person can do) — first match wins.
ADVICE = (
    ("labels CSV", "fix that line of the labels CSV (class names, split, path) and import again"),
    ("truncated", "the file was cut off (interrupted copy or download): copy it again from the source"),
    ("ends early", "the file was cut off (interrupted copy or download): copy it again from the source"),
    ("no decoder", "install the decoder named in the reason, or export the study uncompressed from the PACS"),
    ("cannot decode", "export the study from the PACS in an uncompressed or JPEG transfer syntax"),
    ("transfer syntax", "export the study from the PACS in an uncompressed or JPEG transfer syntax"),
    ("no pixel", "the file holds no image (a report or structured document): nothing to do"),
    ("not DICOM", "not an image Loupe reads: leave it out, or convert it to DICOM, PNG or JPEG"),
    ("not an image", "not an image Loupe reads: leave it out, or convert it to DICOM, PNG or JPEG"),
    ("not supported", "convert it to PNG, JPEG, TIFF or DICOM"),
    ("permission denied", "ask for read access to the file or folder, or copy it somewhere you can read"),
    ("not found", "the file was moved or deleted while importing: check the path and import again"),
    ("no such file", "the file was moved or deleted while importing: check the path and import again"),
    ("empty", "the file is empty: copy it again from the source"),
    ("corrupt", "the file is damaged: copy it again from the source, or leave it out"),
    ("SOP Instance UID", "the DICOM header lacks the image's identity: re-export it from the PACS"),
    ("UTF-8", "rename the file with plain characters"),
    ("loops back", "nothing to do: the linked folder was imported once"),
)


def advice_for(reason: str) -> str:
    """What a person can do about a rejected file, from its reason."""
    low = reason.lower()
    for words, advice in ADVICE:
        if words.lower() in low:
            return advice
    return "check the file; if it should import, send it with the log file to support"


def write_report(path: str | Path, errors) -> Path:
    """Save the rejected files (``path``, ``reason``, ``what to do``) as a CSV; returns the path."""
    out = Path(path)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "reason", "what to do"])
        for issue in errors:
            writer.writerow([issue.path, issue.reason, advice_for(issue.reason)])
    return out


def run_import(workspace, paths: list[str], labels_csv: Optional[str], as_modality: Optional[str], actor: str = "app",
               progress=None, cancel=None):
    """Background job: import ``paths``; non-DICOM pictures are ``as_modality`` (CR/DX radiographs, XC photographs).

    Raises LoupeError when radiographs are asked for but this Loupe's importer cannot mark pictures as radiographs.
    """
    from core.errors import LoupeError
    from core.importer import import_paths

    kwargs = {}
    if as_modality and as_modality != "XC":
        if "as_modality" not in inspect.signature(import_paths).parameters:
            raise LoupeError("this version of Loupe cannot import pictures as radiographs yet; import them as "
                             "photographs or update Loupe")
        kwargs["as_modality"] = as_modality
    return import_paths(workspace, paths, labels_csv=labels_csv, actor=actor, progress=progress, cancel=cancel,
                        **kwargs)


class ImportDialog(JobDialog):
    """Choose folders/files, say what pictures are, import with progress and cancel, read and save the report.

    Emits ``imported(report)`` when an import finished.
    """

    imported = Signal(object)
    verb = "import"

    def __init__(self, window, paths: Optional[list[str]] = None, parent: Optional[QWidget] = None):
        super().__init__(window, parent)
        self.setWindowTitle("Import studies")
        self.setObjectName("import_dialog")
        self.paths = QListWidget()
        self.paths.setObjectName("import_paths")
        self.paths.setMaximumHeight(120)
        add_folder = QPushButton("Add &folder…")
        add_files = QPushButton("Add fil&es…")
        remove = QPushButton("&Remove")
        add_folder.clicked.connect(self._add_folder)
        add_files.clicked.connect(self._add_files)
        remove.clicked.connect(lambda: [self.paths.takeItem(self.paths.row(i)) for i in self.paths.selectedItems()])
        row = QHBoxLayout()
        for b in (add_folder, add_files, remove):
            row.addWidget(b)
        row.addStretch(1)
        self.photos = QRadioButton("&Photographs (skin, colour pictures: XC)")
        self.radiographs = QRadioButton("R&adiographs: grayscale, window/level, no flips or rotations")
        self.photos.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.photos)
        group.addButton(self.radiographs)
        self.modality = QComboBox()
        self.modality.addItem("CR — computed radiography", "CR")
        self.modality.addItem("DX — digital radiography", "DX")
        self.modality.setEnabled(False)
        self.radiographs.toggled.connect(self.modality.setEnabled)
        self.labels_csv = QLineEdit(placeholderText="optional labels CSV (path, label, split, …)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._pick_csv)
        csv_row = QHBoxLayout()
        csv_row.addWidget(self.labels_csv, 1)
        csv_row.addWidget(browse)
        self.rejected = QTableWidget(0, 3)
        self.rejected.setObjectName("import_rejected")
        self.rejected.setHorizontalHeaderLabels(["File", "Reason", "What to do"])
        header = self.rejected.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.Interactive)
        header.setSectionResizeMode(2, QHeaderView.Stretch)
        self.rejected.setColumnWidth(1, 300)
        self.rejected.setWordWrap(True)
        self.rejected.verticalHeader().setVisible(False)
        self.rejected.setEditTriggers(QTableWidget.NoEditTriggers)
        self.rejected.hide()
        self.save_report = QPushButton("&Save report…")
        self.save_report.clicked.connect(self._save_report)
        self.save_report.hide()
        self.import_button = QPushButton("&Import", objectName="primary")
        self.import_button.setDefault(True)
        self.import_button.clicked.connect(self.start)
        self.go_button = self.import_button
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QDialogButtonBox()
        buttons.addButton(self.import_button, QDialogButtonBox.AcceptRole)
        buttons.addButton(self.save_report, QDialogButtonBox.ActionRole)
        buttons.addButton(self.cancel_button, QDialogButtonBox.RejectRole)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Folders and files to import (folders are searched recursively; DICOM files keep "
                                "their own modality):", wordWrap=True))
        layout.addWidget(self.paths)
        layout.addLayout(row)
        layout.addWidget(QLabel("Pictures that are not DICOM (PNG, JPEG, TIFF) are:"))
        layout.addWidget(self.photos)
        mod_row = QHBoxLayout()
        mod_row.addWidget(self.radiographs)
        mod_row.addWidget(self.modality)
        layout.addLayout(mod_row)
        layout.addLayout(csv_row)
        layout.addWidget(self.progress)
        layout.addWidget(self.state)
        layout.addWidget(self.rejected, 1)
        layout.addWidget(buttons)
        self.resize(720, 520)
        for p in paths or []:
            self.paths.addItem(p)

    # --- inputs ---------------------------------------------------------------------------------

    def _last_folder(self) -> str:
        settings = getattr(self.window, "settings", None)
        return str(settings.get("last_folder", "")) if settings is not None else ""

    def _remember(self, folder: str) -> None:
        settings = getattr(self.window, "settings", None)
        if settings is not None:
            settings.set("last_folder", folder)

    def _add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of studies", self._last_folder())
        if folder:
            self._remember(folder)
            self.paths.addItem(folder)

    def _add_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Files to import", self._last_folder(),
                                                "Images (*.dcm *.DCM *.png *.jpg *.jpeg *.tif *.tiff);;All files (*)")
        for f in files:
            self.paths.addItem(f)
        if files:
            self._remember(str(Path(files[0]).parent))

    def _pick_csv(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Labels CSV", self._last_folder(), "CSV (*.csv)")
        if path:
            self.labels_csv.setText(path)

    def chosen_paths(self) -> list[str]:
        """The folders and files listed."""
        return [self.paths.item(i).text() for i in range(self.paths.count())]

    def chosen_modality(self) -> str:
        """XC for photographs, else the radiograph modality chosen (CR or DX)."""
        return self.modality.currentData() if self.radiographs.isChecked() else "XC"

    # --- running --------------------------------------------------------------------------------

    def start(self) -> None:
        """Import in the background with a progress bar; Cancel stops it between files."""
        paths = self.chosen_paths()
        if not paths:
            self.state.setText("Add a folder or files first.")
            return
        labels = self.labels_csv.text().strip() or None
        self.rejected.hide()
        self.save_report.hide()
        self._run_job("import", run_import, self.workspace, paths, labels, self.chosen_modality(), self.actor())

    def _on_done(self, report) -> None:
        self.cancel_button.setText("Close")
        errors = list(report.errors)
        self.state.setText(f"imported {report.imported}, already present {report.skipped}, rejected {len(errors)}"
                           + (f", labels {report.labels_added}" if report.labels_added else ""))
        self.rejected.setRowCount(len(errors))
        for r, issue in enumerate(errors):
            for c, text in enumerate((Path(issue.path).name, issue.reason, advice_for(issue.reason))):
                item = QTableWidgetItem(text)
                item.setToolTip(issue.path if c == 0 else text)
                self.rejected.setItem(r, c, item)
        self.rejected.resizeRowsToContents()
        self.rejected.setVisible(bool(errors))
        self.save_report.setVisible(bool(errors))
        self.imported.emit(report)

    def _save_report(self) -> None:
        if self.report is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save the rejected-files report", "rejected_files.csv",
                                              "CSV (*.csv)")
        if path:
            write_report(path, self.report.errors)
            self.state.setText(f"report saved to {path}")
