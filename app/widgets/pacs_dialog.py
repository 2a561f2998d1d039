"""The PACS dialog: node settings, a query form, the studies found, and retrieve with progress.

Every network call runs in the :class:`~app.workers.Runner`'s pool (never on the
UI thread); a retrieved study goes through the normal import and
``imported(report)`` is emitted with its :class:`~core.types.ImportReport`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QAbstractItemView, QDialog, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout,
                               QHeaderView, QLabel, QLineEdit, QProgressBar, QPushButton, QSpinBox, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

logger = logging.getLogger(__name__)

RESULT_COLUMNS = ("Patient", "Date", "Modalities", "Instances", "Study UID")
NODE_SETTING = "pacs_node"


def query_job(node, patient_id: str, study_uid: str) -> list:
    """C-FIND / QIDO-RS (runs in the Runner's pool)."""
    from core.pacs import query

    return query(node, patient_id or None, study_uid or None)


def retrieve_job(workspace, node, study_uid: str, store: str, progress=None, cancel=None):
    """Retrieve and import one study (runs in the Runner's pool); returns the ImportReport."""
    from core.pacs import retrieve_and_import

    try:
        return retrieve_and_import(workspace, node, study_uid, Path(store), progress=progress, cancel=cancel)
    finally:
        workspace.release_thread()


class PacsDialog(QDialog):
    """Query a DICOM node or DICOMweb server and retrieve studies into the workspace.

    ``PacsDialog(runner, workspace, settings=None)``: ``settings`` (an
    :class:`app.settings.Settings`) remembers the node between sessions.
    """

    imported = Signal(object)  # ImportReport

    def __init__(self, runner, workspace, settings=None, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.setWindowTitle("Studies from the PACS")
        self.runner, self.workspace, self.settings = runner, workspace, settings
        self.matches: list = []
        saved = (settings.get(NODE_SETTING, {}) if settings is not None else {}) or {}
        self.host = QLineEdit(saved.get("host", ""))
        self.port = QSpinBox()
        self.port.setRange(1, 65535)
        self.port.setValue(int(saved.get("port", 104)))
        self.aet = QLineEdit(saved.get("aet", "LOUPE"))
        self.called_aet = QLineEdit(saved.get("called_aet", "ANY-SCP"))
        self.dicomweb = QLineEdit(saved.get("dicomweb", ""))
        self.dicomweb.setPlaceholderText("http://server/dicom-web (instead of host and port)")
        self.move_port = QSpinBox()
        self.move_port.setObjectName("pacs_move_port")
        self.move_port.setRange(0, 65535)
        self.move_port.setSpecialValueText("off (C-GET)")
        self.move_port.setValue(int(saved.get("move_port", 0) or 0))
        self.move_port.setToolTip("Retrieve with C-MOVE: this workstation listens on this port under our AE title; "
                                  "the PACS must know that AE title, this host and port as a move destination")
        self.timeout = QDoubleSpinBox()
        self.timeout.setRange(1, 600)
        self.timeout.setValue(float(saved.get("timeout", 30)))
        node_box = QGroupBox("Node")
        form = QFormLayout(node_box)
        form.addRow("Host", self.host)
        form.addRow("Port", self.port)
        form.addRow("Our AE title", self.aet)
        form.addRow("Node AE title", self.called_aet)
        form.addRow("DICOMweb URL", self.dicomweb)
        form.addRow("C-MOVE port", self.move_port)
        form.addRow("Timeout (s)", self.timeout)
        self.patient_id = QLineEdit()
        self.study_uid = QLineEdit()
        self.search_button = QPushButton("Search")
        self.search_button.setDefault(True)
        self.search_button.clicked.connect(self.search)
        query_box = QGroupBox("Query")
        qform = QFormLayout(query_box)
        qform.addRow("Patient ID", self.patient_id)
        qform.addRow("Study UID", self.study_uid)
        qform.addRow(self.search_button)
        self.results = QTableWidget(0, len(RESULT_COLUMNS))
        self.results.setHorizontalHeaderLabels(RESULT_COLUMNS)
        self.results.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.results.setSelectionMode(QAbstractItemView.SingleSelection)
        self.results.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.results.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.results.itemSelectionChanged.connect(self._update_buttons)
        self.retrieve_button = QPushButton("Retrieve and import")
        self.retrieve_button.clicked.connect(self.retrieve)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self._job = None
        top = QHBoxLayout()
        top.addWidget(node_box)
        top.addWidget(query_box)
        bottom = QHBoxLayout()
        bottom.addWidget(self.progress, 1)
        bottom.addWidget(self.retrieve_button)
        bottom.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.results, 1)
        layout.addLayout(bottom)
        layout.addWidget(self.status)
        self._update_buttons()

    def node(self):
        """The node the form describes; raises PacsError with a plain message when it is unusable."""
        from core.pacs import PacsNode

        node = PacsNode(host=self.host.text().strip(), port=self.port.value(), aet=self.aet.text().strip(),
                        called_aet=self.called_aet.text().strip(), dicomweb=self.dicomweb.text().strip(),
                        timeout=self.timeout.value(), move_port=self.move_port.value())
        node.validate()
        if self.settings is not None:
            self.settings.set(NODE_SETTING, {**node.to_json(), "timeout": node.timeout})
        return node

    def _busy(self, busy: bool) -> None:
        self.search_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self._update_buttons(busy)

    def _update_buttons(self, busy: Optional[bool] = None) -> None:
        busy = self._job is not None if busy is None else busy
        self.retrieve_button.setEnabled(not busy and bool(self.results.selectedItems()))
        self.cancel_button.setEnabled(busy)

    def _fail(self, message: str) -> None:
        self._job = None
        self._busy(False)
        self.status.setText(message)

    def search(self) -> None:
        """Query the node in the background."""
        from core.pacs import PacsError

        try:
            node = self.node()
        except PacsError as exc:
            self.status.setText(str(exc))
            return
        self.status.setText(f"searching {node.describe()}…")
        self._busy(True)
        self._job = self.runner.submit("pacs", query_job, node, self.patient_id.text().strip(),
                                       self.study_uid.text().strip(), on_done=self.show_matches, on_error=self._fail)

    def show_matches(self, matches: list) -> None:
        """Fill the result list (UI thread)."""
        self._job = None
        self.matches = list(matches)
        self.results.setRowCount(len(self.matches))
        for r, m in enumerate(self.matches):
            for c, value in enumerate((m.patient_id, m.study_date, ",".join(m.modalities), str(m.n_instances),
                                       m.study_uid)):
                self.results.setItem(r, c, QTableWidgetItem(value))
        if self.matches:
            self.results.selectRow(0)
        self.status.setText(f"{len(self.matches)} stud{'y' if len(self.matches) == 1 else 'ies'} found")
        self._busy(False)

    def retrieve(self) -> None:
        """Retrieve the selected study and import it, with progress, in the background."""
        from core.pacs import PacsError

        rows = self.results.selectionModel().selectedRows()
        if not rows:
            return
        match = self.matches[rows[0].row()]
        try:
            node = self.node()
        except PacsError as exc:
            self.status.setText(str(exc))
            return
        store = str(Path(self.workspace.path).parent / "pacs")
        self.progress.setRange(0, max(1, match.n_instances))
        self.progress.setValue(0)
        self.status.setText(f"retrieving {match.study_uid}…")
        self._busy(True)
        self._job = self.runner.submit("pacs", retrieve_job, self.workspace, node, match.study_uid, store,
                                       on_done=self._retrieved, on_error=self._fail, on_progress=self._on_progress)

    def _on_progress(self, event) -> None:
        if getattr(event, "total", 0):
            self.progress.setRange(0, event.total)
            self.progress.setValue(event.done)
        if getattr(event, "message", ""):
            self.status.setText(event.message)

    def _retrieved(self, report) -> None:
        self._job = None
        self._busy(False)
        self.progress.setValue(self.progress.maximum())
        self.status.setText(f"imported {report.imported}, already present {report.skipped}, "
                            f"rejected {len(report.errors)}"
                            + "".join(f"\n{e.path}: {e.reason}" for e in report.errors[:5]))
        self.imported.emit(report)

    def cancel(self) -> None:
        """Stop the running query or retrieve (instances already stored stay)."""
        if self._job is not None:
            self._job.cancel.cancel()
            self._job = None
        self._busy(False)
        self.status.setText("cancelled")
