"""View → DICOM tags…: a searchable tree of the current image's header (pixel data left out)."""

from __future__ import annotations

import logging
from typing import Optional

from PySide6.QtWidgets import QDialog, QLabel, QLineEdit, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

logger = logging.getLogger(__name__)

MAX_VALUE = 200


def read_tags(path: str) -> list[tuple]:
    """Background job: the header of the DICOM file at ``path`` as nested rows
    ``(tag "(gggg,eeee)", keyword or name, VR, value text, children)``; raises DicomReadError when unreadable."""
    import pydicom

    from core.errors import DicomReadError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the same for the reader
        raise DicomReadError(f"cannot read the DICOM header: {exc}") from exc

    def rows(dataset) -> list[tuple]:
        out = []
        for elem in dataset:
            tag = f"({elem.tag.group:04X},{elem.tag.element:04X})"
            name = elem.keyword or elem.name
            if elem.VR == "SQ":
                children = [(f"item {i + 1}", "", "", "", rows(item)) for i, item in enumerate(elem.value)]
                out.append((tag, name, "SQ", f"{len(elem.value)} item(s)", children))
                continue
            try:
                text = str(elem.value) if not isinstance(elem.value, bytes) else f"<{len(elem.value)} bytes>"
            except Exception:  # noqa: BLE001
                text = "<unreadable>"
            if len(text) > MAX_VALUE:
                text = text[:MAX_VALUE] + "…"
            out.append((tag, name, str(elem.VR), text, []))
        return out

    meta = [("(0002,0010)", "TransferSyntaxUID", "UI", str(getattr(ds.file_meta, "TransferSyntaxUID", "")), [])] \
        if getattr(ds, "file_meta", None) is not None and "TransferSyntaxUID" in ds.file_meta else []
    return meta + rows(ds)


class TagsDialog(QDialog):
    """The header of one image; the search box keeps rows whose tag, name or value contains the text."""

    def __init__(self, runner, path: str, title: str = "", parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.setWindowTitle(f"DICOM tags — {title or path}")
        self.setObjectName("tags_dialog")
        self.search = QLineEdit(placeholderText="search tag, name or value (e.g. 0028, Window, CHEST)")
        self.search.setObjectName("tags_search")
        self.search.setClearButtonEnabled(True)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Tag", "Name", "VR", "Value"])
        self.tree.setAlternatingRowColors(True)
        self.state = QLabel("reading the header…", objectName="muted")
        layout = QVBoxLayout(self)
        layout.addWidget(self.search)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.state)
        self.search.textChanged.connect(self.filter)
        self.resize(820, 620)
        runner.submit("tags", read_tags, path, on_done=self._show, on_error=self.state.setText)

    def _show(self, rows) -> None:
        def add(parent, items) -> None:
            for tag, name, vr, value, children in items:
                node = QTreeWidgetItem([tag, name, vr, value])
                node.setToolTip(3, value)
                parent.addChild(node) if isinstance(parent, QTreeWidgetItem) else parent.addTopLevelItem(node)
                add(node, children)

        self.tree.clear()
        add(self.tree, rows)
        for col in range(3):
            self.tree.resizeColumnToContents(col)
        self.state.setText(f"{self.tree.topLevelItemCount()} elements")
        self.filter(self.search.text())

    def filter(self, text: str) -> int:
        """Show only rows matching ``text`` (and their parents); returns how many top-level rows stay visible."""
        needle = text.strip().lower()

        def visit(node: QTreeWidgetItem) -> bool:
            own = not needle or any(needle in node.text(c).lower() for c in range(4))
            child_hit = False
            for i in range(node.childCount()):
                child_hit = visit(node.child(i)) or child_hit
            node.setHidden(not (own or child_hit))
            if needle and child_hit:
                node.setExpanded(True)
            return own or child_hit

        shown = 0
        for i in range(self.tree.topLevelItemCount()):
            shown += visit(self.tree.topLevelItem(i))
        return shown
