"""The small reading panels on their own: prediction, labelling, queue, worklist."""

from __future__ import annotations

import pytest

from core.types import Prediction, QueueItem
from core.worklist import worklist_rows


def test_prediction_panel_shows_calibrated_probabilities_and_threshold_flag(qtbot):
    from app.widgets.prediction_panel import PredictionPanel

    panel = PredictionPanel()
    qtbot.addWidget(panel)
    pred = Prediction(image_id="a", version="v3", probs={"normal": 0.31, "pneumonia": 0.69}, predicted="pneumonia")
    panel.show_prediction(pred, {"normal": 0.25}, "v3")
    texts = [w.text() for w in panel._widgets if hasattr(w, "text") and callable(w.text) and w.text()]
    assert texts[0].startswith("pneumonia: 69.0%") and "normal: 31.0%  (threshold 0.25 — FLAG)" in texts
    assert "v3" in panel.title.text()
    panel.show_prediction(None, None, "v3")
    assert panel._widgets == [] and "Not predicted yet by v3" in panel.title.text()
    panel.show_similar([("x1", "normal", 0.12)])
    assert panel.similar.count() == 1 and "normal" in panel.similar.item(0).text()
    with qtbot.waitSignal(panel.similar_activated) as sig:
        panel.similar.itemActivated.emit(panel.similar.item(0))
    assert sig.args == ["x1"]


@pytest.fixture
def session(qtbot, labelled_workspace):
    from app.session import Reader, ReviewSession

    s = ReviewSession(labelled_workspace, Reader("reader"), poll_ms=0)
    yield s
    s.shutdown(5)


def test_label_panel_multilabel_severity_note_and_history(qtbot, labelled_workspace, session):
    from app.widgets.label_panel import LabelPanel

    ws = labelled_workspace
    panel = LabelPanel(session)
    qtbot.addWidget(panel)
    panel.set_classes(["effusion", "nodule", "normal"], multilabel=True)
    image_id = ws.images()[-1].id
    panel.show_image(image_id)
    panel.choose(0)
    panel.choose(1)
    assert panel.chosen() == ["effusion", "nodule"]
    panel.severity.setCurrentIndex(3)
    panel.note.setText("left base")
    panel.flag.setChecked(True)
    with qtbot.waitSignal(panel.saved, timeout=20000) as saved:
        assert panel.commit()
        assert panel.state.text() == "saving…"
    assert panel.state.text() == "saved: effusion;nodule"
    stored = ws.current_label(image_id)
    assert saved.args[1].classes == stored.classes == ("effusion", "nodule")
    assert (stored.severity, stored.note, stored.flag_wrong, stored.annotator) == (2, "left base", True, "reader")
    panel.show_image(image_id)
    qtbot.waitUntil(lambda: panel.history.count() >= 1, timeout=20000)
    assert panel.chosen() == ["effusion", "nodule"]
    assert "effusion;nodule" in panel.history.item(0).text()


def test_label_panel_severity_choices_are_the_findings_grades(qtbot, labelled_workspace, session):
    """The severity drop-down names the findings' grades (read with the workspace state), and the grade chosen
    is the one stored."""
    from app.widgets.label_panel import SEVERITIES, LabelPanel
    from core.workspace.findings import Findings

    ws = labelled_workspace
    classes = list(ws.classes())
    ws.set_findings(Findings(classes=tuple(classes), severity=("absent", "small", "large")), actor="test")
    panel = LabelPanel(session)
    qtbot.addWidget(panel)
    panel.set_classes(classes)
    assert [panel.severity.itemText(i) for i in range(panel.severity.count())] == list(SEVERITIES)
    with qtbot.waitSignal(session.model_changed, timeout=20000):
        session.reload()
    assert session.severity == ("absent", "small", "large")
    panel.set_severity_scale(session.severity)
    assert [panel.severity.itemText(i) for i in range(panel.severity.count())] == ["—", "0 absent", "1 small",
                                                                                  "2 large"]
    image_id = ws.images()[0].id
    panel.show_image(image_id)
    panel.choose(0)
    panel.severity.setCurrentIndex(3)
    with qtbot.waitSignal(panel.saved, timeout=20000):
        assert panel.commit()
    assert ws.current_label(image_id).severity == 2
    panel.set_severity_scale(())
    assert panel.severity.count() == len(SEVERITIES)


def test_label_panel_without_a_reader_refuses_without_a_dialog(qtbot, labelled_workspace, session):
    from PySide6.QtWidgets import QApplication, QDialog

    from app.widgets.label_panel import LabelPanel

    session.reader = None
    panel = LabelPanel(session)
    qtbot.addWidget(panel)
    panel.set_classes(["neg", "pos"])
    image_id = labelled_workspace.images()[-1].id
    panel.show_image(image_id)
    panel.choose(1)
    asked = []
    panel.annotator_needed.connect(lambda: asked.append(True))
    assert panel.commit() is False and asked == [True]
    assert "who is labelling" in panel.state.text()
    assert not [w for w in QApplication.topLevelWidgets() if isinstance(w, QDialog) and w.isVisible()]
    session.wait()
    assert labelled_workspace.current_label(image_id) is None


def test_queue_panel_lists_names_reasons_and_drops_labelled_cases(qtbot, labelled_workspace, session):
    from app.widgets.queue_panel import QueuePanel, why_text

    ws = labelled_workspace
    free = [r.ref.id for r in worklist_rows(ws) if r.status == "unlabelled"][:2]
    ws.replace_queue([QueueItem(image_id=i, score=0.9 - k * 0.1, rank=k + 1, strategy="default",
                                why={"entropy": 0.61, "reason": "uncertain / costly"}) for k, i in enumerate(free)])
    panel = QueuePanel(session)
    qtbot.addWidget(panel)
    panel.names = {free[0]: "first.png"}
    panel.reload()
    qtbot.waitUntil(lambda: panel.list.count() == 2, timeout=20000)
    assert "first.png" in panel.list.item(0).text()
    assert "uncertain / costly" in panel.list.item(0).text()
    assert panel.next_id() == free[0]
    panel.show_reason(free[0])
    assert panel.reason.text() == "#1 · " + why_text({"entropy": 0.61, "reason": "uncertain / costly"})
    # another process labels the top case: the queue is the workspace's, so it drops out on the next read
    ws.add_label(free[0], ["neg"], "someone else")
    panel.reload()
    qtbot.waitUntil(lambda: panel.list.count() == 1, timeout=20000)
    assert panel.next_id() == free[1]


def test_worklist_widget_steps_through_visible_images(qtbot, labelled_workspace):
    from app.widgets.worklist import WorklistWidget

    widget = WorklistWidget()
    qtbot.addWidget(widget)
    rows = worklist_rows(labelled_workspace)
    widget.set_rows(rows)
    seen = []
    widget.image_selected.connect(seen.append)
    first = widget.step(0)
    second = widget.step(1)
    assert first == rows[0].ref.id and second == rows[1].ref.id and seen[-1] == second
    widget.status_filter.setCurrentText("Labelled")
    assert all(r.status == "labelled" for r in rows if r.ref.id in widget.visible_ids())
    assert len(widget.visible_ids()) == 16


def test_worklist_filters_by_the_reader_who_labelled(qtbot, labelled_workspace):
    from app.widgets.worklist import ALL_READERS, WorklistWidget

    ws = labelled_workspace
    free = [r.ref.id for r in worklist_rows(ws) if r.status == "unlabelled"]
    ws.add_label(free[0], ["neg"], "alice")
    ws.add_label(free[1], ["pos"], "alice")
    ws.add_label(free[2], ["neg"], "bob")
    widget = WorklistWidget()
    qtbot.addWidget(widget)
    widget.set_rows(worklist_rows(ws))
    choices = [widget.reader_filter.itemText(i) for i in range(widget.reader_filter.count())]
    assert choices[0] == ALL_READERS and {"alice", "bob", "import"} <= set(choices[1:])
    widget.reader_filter.setCurrentText("alice")
    assert sorted(widget.visible_ids()) == sorted(free[:2])
    # a new label by bob moves the case out of alice's view at once (the row is edited in place)
    ws.add_label(free[1], ["neg"], "bob")
    widget.update_row(next(r for r in worklist_rows(ws) if r.ref.id == free[1]))
    assert widget.visible_ids() == [free[0]]
    widget.set_rows(worklist_rows(ws))  # a reload keeps the chosen reader
    assert widget.reader_filter.currentText() == "alice" and widget.visible_ids() == [free[0]]
    widget.reader_filter.setCurrentText(ALL_READERS)
    assert len(widget.visible_ids()) == len(worklist_rows(ws))
