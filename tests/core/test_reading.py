"""Readers with roles, blinded double reading, adjudication and the truth rule; kappa with its interval."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from core.errors import LoupeError, NotFound
from core.readers import cohen_kappa_ci, team_report, wilson_interval
from core.types import ImageRecord, Prediction, QueueItem
from core.workspace.reading import ADJUDICATED, AGREED, AWAITING, DISPUTED


def _photo(tmp_path: Path, n: int) -> ImageRecord:
    return ImageRecord(key=f"sha256:{n:064x}", path=str(tmp_path / f"img{n:03d}.png"), kind="photo",
                       modality="XC", rows=8, columns=8, photometric="RGB")


@pytest.fixture
def team(workspace, tmp_path):
    """A workspace with 6 images (ids in path order), classes neg/pos, readers ann, bob, adj."""
    new, _ = workspace.add_images([_photo(tmp_path, n) for n in range(6)])
    ids = sorted(new, key=lambda i: workspace.image(i).path)
    workspace.add_classes(["neg", "pos"])
    workspace.add_reader("ann", "reader")
    workspace.add_reader("bob", "annotator")
    workspace.add_reader("adj", "adjudicator")
    return workspace, ids


def test_roles_are_stored_on_every_label(team):
    ws, ids = team
    assert [(r.name, r.role) for r in ws.readers()] == [("adj", "adjudicator"), ("ann", "reader"),
                                                        ("bob", "annotator")]
    assert ws.add_label(ids[0], "pos", "ann").role == "reader"
    assert ws.add_label(ids[1], "pos", "someone").role == ""
    assert ws.label_history(ids[0])[0].role == "reader"
    with pytest.raises(ValueError, match="unknown role"):
        ws.add_reader("eve", "boss")
    ws.add_reader("bob", "reader")  # role change
    assert ws.reader("bob").role == "reader"
    assert [e["action"] for e in ws.audit_log(action="reader.set")][:1] == ["reader.set"]


def test_single_reader_rule_is_unchanged_when_off(team):
    ws, ids = team
    ws.add_label(ids[0], "pos", "ann")
    ws.add_label(ids[0], "neg", "bob")
    assert ws.current_label(ids[0]).classes == ("neg",)  # newest wins, as before
    assert ws.double_reading().enabled is False


def test_truth_needs_two_agreeing_reads(team):
    ws, ids = team
    ws.add_label(ids[5], "pos", "old")  # before double reading: stays a truth
    ws.set_double_reading(True)
    ws.add_label(ids[0], "pos", "ann")
    # one read: no truth, and bob cannot see ann's read
    assert ws.current_label(ids[0]) is None and ids[0] not in ws.current_labels()
    assert ws.reader_label(ids[0], "bob") is None and ws.reader_label(ids[0], "ann").classes == ("pos",)
    assert ws.case_reads()[ids[0]].status == AWAITING
    assert ws.visible_history(ids[0], "bob") == [] and len(ws.visible_history(ids[0], "ann")) == 1
    ws.add_label(ids[0], "pos", "bob")
    truth = ws.current_label(ids[0])
    assert truth.classes == ("pos",) and truth.annotator == "ann+bob" and truth.role == "consensus"
    assert ws.case_reads()[ids[0]].status == AGREED
    assert ws.current_labels()[ids[5]].classes == ("pos",)
    # a reader relabelling counts once (their newest read), not as a second reader
    ws.add_label(ids[1], "neg", "ann")
    ws.add_label(ids[1], "pos", "ann")
    assert ws.case_reads()[ids[1]].status == AWAITING
    assert [r.classes for r in ws.case_reads()[ids[1]].reads] == [("pos",)]


def test_disagreement_goes_to_adjudication(team):
    ws, ids = team
    ws.set_double_reading(True)
    ws.add_label(ids[2], "pos", "ann")
    ws.add_label(ids[2], "neg", "bob")
    assert ws.current_label(ids[2]) is None
    assert [c.image_id for c in ws.adjudication_queue()] == [ids[2]]
    with pytest.raises(LoupeError, match="not an adjudicator"):
        ws.adjudicate(ids[2], "pos", "ann")
    with pytest.raises(LoupeError, match="not disputed"):
        ws.adjudicate(ids[3], "pos", "adj")
    label = ws.adjudicate(ids[2], "pos", "adj")
    assert label.role == "adjudicator"
    case = ws.case_reads()[ids[2]]
    assert case.status == ADJUDICATED and case.truth.id == label.id
    assert [r.annotator for r in case.reads] == ["ann", "bob"]
    assert ws.current_label(ids[2]).classes == ("pos",) and ws.adjudication_queue() == []
    assert ws.audit_log(action="label.adjudicate")[0]["detail"]["reads"] == [r.id for r in case.reads]
    assert ws.verify_audit() == (True, None)


def test_undo_walks_back_only_the_readers_own_read(team):
    ws, ids = team
    ws.set_double_reading(True)
    ws.add_label(ids[0], "pos", "ann")
    ws.add_label(ids[0], "neg", "bob")
    ws.undo_label(ids[0], "bob")
    case = ws.case_reads()[ids[0]]
    assert [r.annotator for r in case.reads] == ["ann"] and case.status == AWAITING
    with pytest.raises(NotFound):
        ws.undo_label(ids[0], "bob")


def test_queue_keeps_a_case_until_its_second_read(team):
    ws, ids = team
    ws.replace_queue([QueueItem(image_id=i, score=1.0 - k / 10, rank=k, strategy="t") for k, i in enumerate(ids[:3])])
    ws.set_double_reading(True)
    ws.add_label(ids[0], "pos", "ann")
    assert ws.dequeue(ids[0]) is False
    assert [q.image_id for q in ws.queue()] == ids[:3]
    assert [q.image_id for q in ws.reading_queue("ann")] == ids[1:3]
    assert [q.image_id for q in ws.reading_queue("bob")] == ids[:3]
    ws.add_label(ids[0], "pos", "bob")
    assert [q.image_id for q in ws.queue()] == ids[1:3]
    # a new queue keeps the case still waiting for its second read in front
    ws.add_label(ids[1], "neg", "ann")
    ws.replace_queue([QueueItem(image_id=ids[4], score=0.5, rank=0, strategy="t")])
    assert [q.image_id for q in ws.queue()] == [ids[1], ids[4]]


def test_training_set_uses_only_truths(team):
    from core.models.data import labelled_set

    ws, ids = team
    ws.set_double_reading(True)
    ws.add_label(ids[0], "pos", "ann")
    ws.add_label(ids[0], "pos", "bob")   # agreed
    ws.add_label(ids[1], "neg", "ann")   # pending
    ws.add_label(ids[2], "neg", "ann")
    ws.add_label(ids[2], "pos", "bob")   # disputed
    assert labelled_set(ws, ["neg", "pos"]).image_ids == [ids[0]]
    ws.adjudicate(ids[2], "neg", "adj")
    data = labelled_set(ws, ["neg", "pos"])
    assert sorted(data.image_ids) == sorted([ids[0], ids[2]])
    assert dict(zip(data.image_ids, data.targets.tolist())) == {ids[0]: 1, ids[2]: 0}


def test_kappa_and_its_interval_by_hand():
    # 20 pairs: 7 pos/pos, 8 neg/neg, 3 pos/neg, 2 neg/pos
    pairs = [("pos", "pos")] * 7 + [("neg", "neg")] * 8 + [("pos", "neg")] * 3 + [("neg", "pos")] * 2
    result = cohen_kappa_ci(pairs)
    # po = 15/20 = 0.75; A says pos 10/20, B 9/20: pe = .5*.45 + .5*.55 = 0.5; kappa = .25/.5
    assert result.observed == pytest.approx(0.75) and result.expected == pytest.approx(0.5)
    assert result.kappa == pytest.approx(0.5)
    # Fleiss-Cohen-Everitt variance worked by hand: (.18671875 + .06140625 - .0625) / (20 * .25)
    assert result.se == pytest.approx(math.sqrt(0.037125))
    lo, hi = result.ci95
    assert lo == pytest.approx(0.5 - 1.959964 * math.sqrt(0.037125), abs=1e-6) and hi > 0.5
    assert cohen_kappa_ci([("a", "a")] * 4).kappa is None  # one category only: undefined, not 1
    assert cohen_kappa_ci([]).n == 0


def test_wilson_interval():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 0) is None


def test_team_report_per_reader_and_model(team):
    ws, ids = team
    ws.set_double_reading(True)
    truth = ["pos", "pos", "neg", "neg", "pos", "neg"]
    bob = ["pos", "neg", "neg", "neg", "pos", "pos"]       # disagrees on ids 1 and 5
    for i, image_id in enumerate(ids):
        ws.add_label(image_id, truth[i], "ann")
        ws.add_label(image_id, bob[i], "bob")
    for i in (1, 5):
        ws.adjudicate(ids[i], truth[i], "adj")
    from core.types import ModelVersion

    ws.add_model(ModelVersion(version="v1", arch="resnet18", classes=("neg", "pos"), path="m.pt", status="active"))
    model = ["pos", "neg", "neg", "pos", "pos", "neg"]
    ws.add_predictions("v1", [Prediction(image_id=i, version="v1", probs={}, predicted=model[k])
                              for k, i in enumerate(ids)])
    report = team_report(ws).to_json()
    assert report["cases"] == {ADJUDICATED: 2, AGREED: 4}
    # kappa of ann vs bob: 4 agree of 6; ann pos 3/6, bob pos 3/6: pe = .5, kappa = (4/6 - .5)/.5 = 1/3
    assert report["agreement"]["kappa"] == pytest.approx(1 / 3)
    assert report["pairs"]["ann & bob"]["kappa"] == pytest.approx(1 / 3)
    pos = report["per_reader"]["bob"]["per_class"]["pos"]
    assert pos["sensitivity"] == pytest.approx(2 / 3) and pos["specificity"] == pytest.approx(2 / 3)
    assert report["per_reader"]["ann"]["per_class"]["pos"]["sensitivity"] == 1.0
    model_pos = report["per_reader"]["bob"]["model"]["per_class"]["pos"]
    assert model_pos["sensitivity"] == pytest.approx(2 / 3) and model_pos["specificity"] == pytest.approx(2 / 3)
    assert report["per_reader"]["bob"]["role"] == "annotator"


def test_migration_from_schema_1(tmp_path):
    """A schema-1 file gains the readers tables and the role column, keeping its labels."""
    import sqlite3

    from core.workspace import Workspace
    from core.workspace import schema

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    import sqlite_utils

    sdb = sqlite_utils.Database(db)
    schema.migrate(sdb, path, schema.MIGRATIONS[:1])
    db.execute("INSERT INTO images (id, key, path, kind, rows, columns, added_at) "
               "VALUES ('a', 'k', '/x.png', 'photo', 1, 1, 'now')")
    db.execute("INSERT INTO labels (image_id, classes, annotator, created_at, source) "
               "VALUES ('a', '[\"pos\"]', 'ann', 'now', 'human')")
    db.commit()
    db.close()
    with Workspace.open(path) as ws:
        assert ws.schema_version == len(schema.MIGRATIONS)
        assert ws.current_label("a").classes == ("pos",) and ws.current_label("a").role == ""
        assert ws.readers() == []


def test_kappa_does_not_depend_on_who_read_first(team):
    """Pairs are oriented by reader, not by reading order (found when two processes raced on PostgreSQL)."""
    ws, ids = team
    ws.set_double_reading(True)
    ann = ["pos", "pos", "pos", "neg", "neg", "neg"]
    bob = ["pos", "neg", "neg", "neg", "neg", "neg"]
    for k, image_id in enumerate(ids):
        order = [("ann", ann[k]), ("bob", bob[k])]
        for name, cls in (order if k % 2 else order[::-1]):
            ws.add_label(image_id, cls, name)
    # ann pos 3/6, bob pos 1/6: po = 4/6, pe = .5*(1/6) + .5*(5/6) = .5, kappa = (2/3 - .5)/.5 = 1/3
    assert team_report(ws).agreement.kappa == pytest.approx(1 / 3)


def test_blind_to_the_model_hides_predictions_from_the_worklist(team):
    from core.types import ModelVersion
    from core.worklist import worklist_rows

    ws, ids = team
    ws.add_model(ModelVersion(version="v1", arch="resnet18", classes=("neg", "pos"), path="m.pt", status="active"))
    ws.add_predictions("v1", [Prediction(image_id=ids[0], version="v1", probs={"pos": 0.9}, predicted="pos")])
    assert any(r.prediction is not None for r in worklist_rows(ws))
    ws.set_double_reading(True, blind_model=False)
    assert not ws.model_hidden() and any(r.prediction is not None for r in worklist_rows(ws))
    ws.set_double_reading(True, blind_model=True)
    assert ws.model_hidden() and all(r.prediction is None for r in worklist_rows(ws))
