"""A damaged image in the app: a blocking banner instead of the picture, persisted, reason in the worklist row."""

from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("PySide6")
from PySide6.QtGui import QImage  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app import jobs  # noqa: E402
from app.widgets.image_view import ImageView  # noqa: E402
from app.widgets.worklist import WorklistWidget  # noqa: E402
from app.workers import Runner  # noqa: E402
from core.imaging import clear_cache  # noqa: E402
from core.imaging.integrity import IntegrityOptions  # noqa: E402
from core.importer import import_paths  # noqa: E402
from core.worklist import worklist_rows  # noqa: E402
from tests.core import codestreams  # noqa: E402


def _cut_stream(data: bytes) -> bytes:
    """The JPEG Lossless file with its codestream cut at 40 % and its end marker put back (intact fragments)."""
    import pydicom
    from pydicom.encaps import encapsulate, generate_frames

    ds = pydicom.dcmread(io.BytesIO(data))
    (stream,) = list(generate_frames(ds.PixelData, number_of_frames=1))
    body = stream.rstrip(b"\x00")
    cut = body[:len(body) * 4 // 10] + b"\xff\xd9"
    ds.PixelData = encapsulate([cut + b"\x00" * (len(cut) % 2)])
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.fixture
def runner(qapp):
    r = Runner(qapp)
    yield r
    r.cancel_all()
    assert r.wait(10000), "a job was still running"
    r.deleteLater()


def test_damaged_image_shows_a_banner_is_persisted_and_leaves_the_worklist_flow(qtbot, runner, tmp_path, workspace):
    clear_cache()
    path = tmp_path / "mammo_cut.dcm"
    path.write_bytes(_cut_stream(codestreams.file_bytes("jpeg_lossless_sv1", 1)))
    # imported without the trial decode (as a file over the size limit would be): only the display can tell
    report = import_paths(workspace, [path], integrity=IntegrityOptions(trial_decode=False))
    assert report.imported == 1
    (ref,) = workspace.images()

    view = ImageView(runner)
    qtbot.addWidget(view)
    view.resize(320, 240)
    view.show()
    with qtbot.waitSignal(view.image_damaged, timeout=15000) as sig:
        view.set_image(str(path), ref.record)
    assert sig.args[0] == str(path)
    assert "JPEG image data ends before the image is complete" in sig.args[1]
    assert view._qimage is None and view._frame is None  # nothing of the picture is drawn
    assert view._status[0].startswith("DAMAGED IMAGE — NOT SHOWN")
    QApplication.processEvents()
    shot = view.grab().toImage().convertToFormat(QImage.Format_RGB888)
    assert not shot.isNull()

    done = []
    runner.submit("damaged", jobs.mark_damaged, workspace, ref.id, sig.args[1], on_done=done.append)
    qtbot.waitUntil(lambda: bool(done), timeout=10000)
    row = done[0]
    assert row.status == "damaged" and row.damaged == sig.args[1]
    assert workspace.damaged_images() == {ref.id: sig.args[1]}
    assert workspace.audit_log(action="images.damaged")[0]["subject"] == ref.id

    rows = worklist_rows(workspace)
    assert rows[0].status == "damaged"
    widget = WorklistWidget()
    qtbot.addWidget(widget)
    widget.set_rows(rows)
    model = widget.proxy.sourceModel() if hasattr(widget, "proxy") else None
    texts = []
    if model is not None:
        def walk(parent):
            for r in range(model.rowCount(parent)):
                for c in range(model.columnCount(parent)):
                    index = model.index(r, c, parent)
                    texts.append((index.data() or "", index.data(3) or ""))  # display, tooltip
                walk(model.index(r, 0, parent))
        from PySide6.QtCore import QModelIndex

        walk(QModelIndex())
    assert any(t == "damaged — not shown" and "JPEG image data ends" in tip for t, tip in texts), texts
    clear_cache()


def test_intact_image_still_shows(qtbot, runner, tmp_path):
    clear_cache()
    path = tmp_path / "intact.dcm"
    path.write_bytes(codestreams.file_bytes("jpeg_lossless_sv1", 1))
    view = ImageView(runner)
    qtbot.addWidget(view)
    view.resize(320, 240)
    view.show()
    with qtbot.waitSignal(view.image_loaded, timeout=15000):
        view.set_image(str(path))
    assert view._qimage is not None and view._status is None
    assert np.asarray(view._frame.raw).shape == (64, 64)
