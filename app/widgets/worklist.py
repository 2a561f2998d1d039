"""The worklist: patients → studies → images with status, prediction, confidence and label."""

from __future__ import annotations

import logging
from typing import Optional

from PySide6.QtCore import QModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QLineEdit, QTreeView, QVBoxLayout, QWidget

from app.theme import COLORS
from core.worklist import STATUSES, WorklistRow

logger = logging.getLogger(__name__)

COLUMNS = ("Case", "Status", "Prediction", "Conf.", "Label")
ID_ROLE = Qt.UserRole + 1
STATUS_ROLE = Qt.UserRole + 2
RANK_ROLE = Qt.UserRole + 3
READER_ROLE = Qt.UserRole + 4  # who wrote the image's current label (None: unlabelled)
ALL_READERS = "All readers"



def summary_text(images: int, statuses: dict) -> str:
    """The footer line, in the reading panel's terms: every labelled image counts as labelled, and how many of
    them the model disagrees with (or were flagged "model was wrong") is said within, so the two never differ."""
    from core.active.counters import LABELLED_STATUSES, labelled_count

    labelled = labelled_count(statuses)
    within = [f"{statuses[s]} {word}" for s, word in (("disagreement", "disagree with the model"),
                                                      ("flagged", "flagged model wrong")) if statuses.get(s)]
    parts = [f"{statuses[s]} {s}" for s in ("unlabelled", "queued") if statuses.get(s)]
    if labelled:
        parts.append(f"{labelled} labelled" + (f" ({', '.join(within)})" if within else ""))
    parts += [f"{n} {s}" for s, n in statuses.items()
              if n and s not in ("unlabelled", "queued", *LABELLED_STATUSES)]
    return " · ".join([f"{images} images", *parts])


class _Filter(QSortFilterProxyModel):
    """Text search over every column plus a status and a reader filter; parents stay when a child matches."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.status: Optional[str] = None
        self.reader: Optional[str] = None
        self.setRecursiveFilteringEnabled(True)
        self.setFilterCaseSensitivity(Qt.CaseInsensitive)
        self.setFilterKeyColumn(-1)

    def filterAcceptsRow(self, row: int, parent: QModelIndex) -> bool:
        index = self.sourceModel().index(row, 0, parent)
        image_id = index.data(ID_ROLE)
        if image_id is None:  # a patient or study row: shown when one of its images is
            return False
        if self.status and index.data(STATUS_ROLE) != self.status:
            return False
        if self.reader and index.data(READER_ROLE) != self.reader:
            return False
        return super().filterAcceptsRow(row, parent)


class WorklistWidget(QWidget):
    """Tree of cases with a search box and a status filter.

    Signals ``image_selected(str image_id)`` when the person moves to an image.
    """

    image_selected = Signal(str)

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.model = QStandardItemModel(0, len(COLUMNS), self)
        self.model.setHorizontalHeaderLabels(list(COLUMNS))
        self.proxy = _Filter(self)
        self.proxy.setSourceModel(self.model)
        self.search = QLineEdit(placeholderText="Search patient, study, file, label… (Ctrl+F)")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self._on_search)
        self.status_filter = QComboBox()
        self.status_filter.addItems(["All"] + [s.capitalize() for s in STATUSES])
        self.status_filter.currentIndexChanged.connect(self._on_status)
        self.reader_filter = QComboBox()  # cases whose current label a given reader wrote
        self.reader_filter.addItem(ALL_READERS)
        self.reader_filter.setToolTip("Show the cases whose current label this reader wrote")
        self.reader_filter.currentTextChanged.connect(self._on_reader)
        self.view = QTreeView()
        self.view.setModel(self.proxy)
        self.view.setAlternatingRowColors(True)
        self.view.setUniformRowHeights(True)
        self.view.setSortingEnabled(False)
        self.view.setEditTriggers(QTreeView.NoEditTriggers)
        self.view.selectionModel().currentChanged.connect(self._on_current)
        self.summary = QLabel(objectName="muted")
        self.summary.setWordWrap(True)
        self.setMinimumWidth(380)
        top = QHBoxLayout()
        top.addWidget(self.search, 1)
        top.addWidget(self.status_filter)
        top.addWidget(self.reader_filter)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.summary)
        self._items: dict[str, QStandardItem] = {}
        self._order: list[str] = []

    # --- content --------------------------------------------------------------------------------

    def set_rows(self, rows: list[WorklistRow]) -> None:
        """Rebuild the tree from worklist rows, keeping the current image selected."""
        current = self.current_image_id()
        # build the tree in a model the filter does not watch, then swap it in: filled under the recursive
        # filter, every appended image made it re-check its whole study (quadratic: seconds for 400 images)
        model = QStandardItemModel(0, len(COLUMNS), self)
        model.setHorizontalHeaderLabels(list(COLUMNS))
        old, self.model = self.model, model
        self._items.clear()
        self._order = [r.ref.id for r in rows]
        patients: dict[str, QStandardItem] = {}
        studies: dict[tuple[str, str], QStandardItem] = {}
        series: dict[tuple, QStandardItem] = {}
        counts = {s: 0 for s in STATUSES}
        for row in rows:
            counts[row.status] += 1
            patient = patients.get(row.patient_key)
            if patient is None:
                patient = self._group_item(row.patient_key)
                self.model.appendRow([patient] + [self._group_item("") for _ in COLUMNS[1:]])
                patients[row.patient_key] = patient
            key = (row.patient_key, row.study_key)
            study = studies.get(key)
            if study is None:
                study = self._group_item(f"{row.study_key}  [{row.ref.record.modality}]")
                patient.appendRow([study] + [self._group_item("") for _ in COLUMNS[1:]])
                studies[key] = study
            parent = study
            if row.series_key is not None:  # patient → study → series → image
                series_key = key + (row.ref.record.series_uid,)
                parent = series.get(series_key)
                if parent is None:
                    parent = self._group_item(row.series_key)
                    study.appendRow([parent] + [self._group_item("") for _ in COLUMNS[1:]])
                    series[series_key] = parent
            items = self._image_items(row)
            parent.appendRow(items)
            self._items[row.ref.id] = items[0]
        self.proxy.setSourceModel(model)
        old.deleteLater()
        self.view.expandAll() if len(rows) <= 200 else self.view.expandToDepth(0)
        for col, width in enumerate((230, 90, 90, 50)):
            self.view.setColumnWidth(col, width)
        self.summary.setText(summary_text(len(rows), counts))
        self._fill_readers(rows)
        if current:
            self.select(current)

    def _fill_readers(self, rows: list[WorklistRow]) -> None:
        """The reader filter's choices: every reader who wrote a current label (the choice is kept)."""
        names = sorted({row.label.annotator for row in rows if row.label is not None and row.label.annotator})
        chosen = self.reader_filter.currentText()
        self.reader_filter.blockSignals(True)
        self.reader_filter.clear()
        self.reader_filter.addItems([ALL_READERS] + names)
        if chosen in names:
            self.reader_filter.setCurrentText(chosen)
        self.reader_filter.blockSignals(False)
        if chosen != self.reader_filter.currentText():
            self._on_reader(self.reader_filter.currentText())

    def show_progress(self, progress) -> None:
        """The summary line from the session's counters (a :class:`core.active.counters.LabellingProgress`),
        so it moves with every commit, not only when the tree is rebuilt."""
        if progress is None:
            return
        self.summary.setText(summary_text(progress.images, progress.statuses))

    def update_row(self, row: WorklistRow) -> None:
        """Refresh one image's cells (after a label or a prediction) without rebuilding the tree.

        The cells are edited in place: replacing them would make the filter re-check every row of the tree
        (tens of milliseconds on the UI thread per label in a few-hundred-image worklist).
        """
        item = self._items.get(row.ref.id)
        if item is None:
            return
        parent = item.parent() or self.model.invisibleRootItem()
        fresh = self._image_items(row)
        for col, new in enumerate(fresh):
            cell = parent.child(item.row(), col)
            if col == 0 or cell is None:
                if col == 0:
                    item.setData(row.queue_rank, RANK_ROLE)
                    if item.data(STATUS_ROLE) != row.status:
                        item.setData(row.status, STATUS_ROLE)
                    reader = new.data(READER_ROLE)
                    if item.data(READER_ROLE) != reader:
                        item.setData(reader, READER_ROLE)
                        if reader and self.reader_filter.findText(reader) < 0:
                            self.reader_filter.addItem(reader)
                else:
                    parent.setChild(item.row(), col, new)
                continue
            if cell.text() != new.text():
                cell.setText(new.text())
            if cell.foreground() != new.foreground():
                cell.setForeground(new.foreground())

    @staticmethod
    def _group_item(text: str) -> QStandardItem:
        item = QStandardItem(text)
        font = item.font()
        font.setBold(True)
        item.setFont(font)
        return item

    @staticmethod
    def _image_items(row: WorklistRow) -> list[QStandardItem]:
        name = QStandardItem(row.ref.path.rsplit("/", 1)[-1])
        name.setData(row.ref.id, ID_ROLE)
        name.setData(row.status, STATUS_ROLE)
        name.setData(row.label.annotator if row.label is not None else None, READER_ROLE)
        name.setToolTip(row.ref.path)
        status = QStandardItem(row.status)
        status.setForeground(QBrush(QColor(COLORS[row.status])))
        damaged = getattr(row, "damaged", None)
        if damaged:  # the reason, where the reader looks: left out of prediction, queue and training
            status.setText("damaged — not shown")
            status.setToolTip(f"{damaged}\nLeft out of prediction, the queue and training.")
            name.setToolTip(f"{row.ref.path}\nDamaged: {damaged}")
        pred = QStandardItem(row.prediction.predicted if row.prediction else "")
        conf = QStandardItem(f"{row.confidence:.2f}" if row.confidence is not None else "")
        label = QStandardItem(";".join(row.label.classes) if row.label and row.label.classes else "")
        return [name, status, pred, conf, label]

    # --- navigation -------------------------------------------------------------------------------

    def current_image_id(self) -> Optional[str]:
        """The selected image's id, if an image (not a group) is selected."""
        return self.view.currentIndex().siblingAtColumn(0).data(ID_ROLE)

    def select(self, image_id: str) -> bool:
        """Select and show an image; False when it is filtered out or unknown."""
        item = self._items.get(image_id)
        if item is None:
            return False
        index = self.proxy.mapFromSource(item.index())
        if not index.isValid():
            return False
        self.view.setCurrentIndex(index)
        self.view.scrollTo(index)
        return True

    def visible_ids(self) -> list[str]:
        """Image ids in display order that pass the current filters."""
        return [i for i in self._order if i in self._items
                and self.proxy.mapFromSource(self._items[i].index()).isValid()]

    def step(self, delta: int) -> Optional[str]:
        """Move the selection ``delta`` images forward/backward among the visible ones."""
        ids = self.visible_ids()
        if not ids:
            return None
        current = self.current_image_id()
        pos = ids.index(current) + delta if current in ids else 0
        target = ids[max(0, min(len(ids) - 1, pos))]
        self.select(target)
        return target

    def _on_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        image_id = current.siblingAtColumn(0).data(ID_ROLE)
        if image_id:
            self.image_selected.emit(image_id)

    def _on_search(self, text: str) -> None:
        self.proxy.setFilterFixedString(text)
        self.view.expandAll()

    def _on_reader(self, text: str) -> None:
        self.proxy.beginFilterChange()
        self.proxy.reader = None if text in ("", ALL_READERS) else text
        self.proxy.endFilterChange()
        self.view.expandAll()

    def _on_status(self, index: int) -> None:
        self.proxy.beginFilterChange()
        self.proxy.status = None if index == 0 else STATUSES[index - 1]
        self.proxy.endFilterChange()
        self.view.expandAll()
