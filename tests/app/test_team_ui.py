"""The reading-team panel and the PACS dialog (pytest-qt, offscreen)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.types import ImageRecord

REPO = Path(__file__).resolve().parents[2]
DICOM = REPO.parent / "shared" / "data" / "dicom"


@pytest.fixture
def read_team(tmp_path):
    from core.workspace import Workspace

    ws = Workspace.open(tmp_path / "ws.sqlite")
    records = [ImageRecord(key=f"sha256:{n:064x}", path=str(tmp_path / f"i{n}.png"), kind="photo", modality="XC",
                           rows=8, columns=8, photometric="RGB") for n in range(4)]
    ids, _ = ws.add_images(records)
    ids = sorted(ids, key=lambda i: ws.image(i).path)
    for name, role in (("ann", "reader"), ("bob", "reader"), ("adj", "adjudicator")):
        ws.add_reader(name, role)
    ws.set_double_reading(True)
    for image_id, a, b in zip(ids, ["pos", "pos", "neg", "neg"], ["pos", "neg", "neg", "neg"]):
        ws.add_label(image_id, a, "ann")
        ws.add_label(image_id, b, "bob")
    yield ws, ids
    ws.close()


def test_team_panel_shows_kappa_and_adjudicates(qtbot, runner, read_team, tmp_path):
    from app.widgets.team_panel import TeamPanel

    ws, ids = read_team
    panel = TeamPanel(runner, ws, adjudicator="adj")
    qtbot.addWidget(panel)
    panel.resize(900, 600)
    panel.show()
    panel.refresh()
    qtbot.waitUntil(lambda: panel.cases.count() == 1, timeout=20000)
    # ann pos 2/4, bob pos 1/4: po = 3/4, pe = .5*.25 + .5*.75 = .5, kappa = .5
    assert panel.kappa.text().startswith("Inter-reader κ 0.500 (95% CI")
    assert ids[1] in panel.cases.item(0).text() and "bob says neg" in panel.cases.item(0).text()
    assert panel.table.rowCount() == 4  # 2 readers x 2 classes
    panel.cases.setCurrentRow(0)
    assert "ann (reader): pos" in panel.reads.text()
    decide_pos = next(b for b in panel.decision_buttons if b.text() == "Decide: pos")
    assert decide_pos.isEnabled()
    qtbot.wait(200)
    panel.grab().save(str(tmp_path / "team_panel.png"))
    with qtbot.waitSignal(panel.adjudicated, timeout=20000):
        decide_pos.click()
    qtbot.waitUntil(lambda: panel.cases.count() == 0 and "adjudicated" in panel.status.text(), timeout=20000)
    assert ws.current_label(ids[1]).classes == ("pos",)


def test_team_panel_refuses_a_non_adjudicator(qtbot, runner, read_team):
    from app.widgets.team_panel import TeamPanel

    ws, _ = read_team
    panel = TeamPanel(runner, ws, adjudicator="ann")
    qtbot.addWidget(panel)
    panel.refresh()
    qtbot.waitUntil(lambda: panel.cases.count() == 1, timeout=20000)
    panel.cases.setCurrentRow(0)
    assert not any(b.isEnabled() for b in panel.decision_buttons)


@pytest.mark.skipif(not DICOM.exists(), reason="../shared/data/dicom is absent")
def test_pacs_dialog_queries_and_retrieves_off_the_ui_thread(qtbot, runner, tmp_path):
    from app.widgets.pacs_dialog import PacsDialog
    from core.workspace import Workspace
    from tests.core.pacs_servers import start_qrscp, stop, storescu

    proc, port = start_qrscp(tmp_path / "qrscp")
    try:
        storescu(port, sorted(DICOM.glob("NIH_DX_chest_*.dcm")))
        with Workspace.open(tmp_path / "ws.sqlite") as ws:
            dialog = PacsDialog(runner, ws)
            qtbot.addWidget(dialog)
            dialog.host.setText("127.0.0.1")
            dialog.port.setValue(port)
            dialog.called_aet.setText("QRSCP")
            dialog.patient_id.setText("Covid0000")
            dialog.show()
            dialog.search()
            qtbot.waitUntil(lambda: dialog.results.rowCount() == 1, timeout=30000)
            assert dialog.results.item(0, 0).text() == "Covid0000" and dialog.retrieve_button.isEnabled()
            dialog.grab().save(str(tmp_path / "pacs_dialog.png"))
            with qtbot.waitSignal(dialog.imported, timeout=60000) as got:
                dialog.retrieve()
            assert got.args[0].imported == 1 and "imported 1" in dialog.status.text()
            assert len(ws.images()) == 1
            dialog.port.setValue(1)
            dialog.aet.setText("")
            dialog.search()
            assert "--aet" in dialog.status.text()  # a bad node is refused before any network call
            runner.wait(30000)
    finally:
        stop(proc)
