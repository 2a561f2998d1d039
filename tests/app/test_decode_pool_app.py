"""The window's compressed-DICOM decodes go to the decode worker process: spawned in the background once the
worklist shows such images, used by the viewer (damaged files still get the banner), stopped with the session."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6")

from app.session import Reader, ReviewSession  # noqa: E402
from app.widgets.image_view import ImageView  # noqa: E402
from core.imaging import clear_cache, decode_pool, dicom_io  # noqa: E402
from core.imaging.integrity import IntegrityOptions  # noqa: E402
from core.importer import import_paths  # noqa: E402
from tests.app.test_damaged_view import _cut_stream  # noqa: E402
from tests.core import codestreams  # noqa: E402


def test_session_spawns_the_decode_worker_the_viewer_uses_it_and_shutdown_stops_it(qtbot, tmp_path, workspace,
                                                                                     monkeypatch):
    monkeypatch.setattr(decode_pool, "_POOL", None)  # independent of any session another test left open
    monkeypatch.setattr(decode_pool, "_USERS", 0)
    clear_cache()
    folder = tmp_path / "images"
    folder.mkdir()
    jls = codestreams.write(codestreams.build("jpegls"), folder / "chest_jls.dcm")
    cut = folder / "cut.dcm"
    cut.write_bytes(_cut_stream(codestreams.file_bytes("jpeg_lossless_sv1", 1)))
    assert import_paths(workspace, [folder], integrity=IntegrityOptions(trial_decode=False)).imported == 2
    refs = {ref.path: ref for ref in workspace.images()}

    assert decode_pool.current() is None
    session = ReviewSession(workspace, Reader("reader"), poll_ms=0)
    pool = session.decode_pool
    try:
        assert decode_pool.current() is pool and not pool.ready  # nothing spawned before the worklist is read
        with qtbot.waitSignal(session.rows_changed, timeout=20000):
            session.reload()
        assert pool.wait_ready(120)  # warm_up saw compressed DICOM and spawned the worker

        view = ImageView(session.interactive)
        qtbot.addWidget(view)
        view.resize(320, 240)
        view.show()
        with qtbot.waitSignal(view.image_loaded, timeout=20000):
            view.set_image(str(jls), refs[str(jls)].record)
        assert pool.offloaded == 1 and pool.fallbacks == 0
        assert np.asarray(view._frame.raw).tobytes() == dicom_io.decode_frame(jls)[0].tobytes()

        with qtbot.waitSignal(view.image_damaged, timeout=20000) as sig:
            view.set_image(str(cut), refs[str(cut)].record)
        assert pool.offloaded == 2
        assert "JPEG image data ends before the image is complete" in sig.args[1]
        assert view._qimage is None and view._status[0].startswith("DAMAGED IMAGE — NOT SHOWN")
    finally:
        session.shutdown(5)
    assert decode_pool.current() is None and pool.pids() == []
    clear_cache()
