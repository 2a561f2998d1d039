"""Worklist statuses and rows."""

from core.types import ImageRecord, Label, Prediction, QueueItem
from core.worklist import status_of, worklist_rows


def label(classes, flag=False):
    return Label(image_id="x", classes=tuple(classes), annotator="a", created_at="t", flag_wrong=flag)


def pred(name):
    return Prediction(image_id="x", version="v1", probs={"a": 0.8, "b": 0.2}, predicted=name)


def test_status_precedence():
    assert status_of(None, None, False) == "unlabelled"
    assert status_of(None, pred("a"), True) == "queued"
    assert status_of(label(["a"]), pred("a"), True) == "labelled"
    assert status_of(label(["a"]), pred("b"), False) == "disagreement"
    assert status_of(label(["a"], flag=True), pred("b"), False) == "flagged"
    assert status_of(label([]), None, False) == "unlabelled"  # an undo back to unlabelled


def test_rows_from_workspace(workspace, tmp_path):
    records = [ImageRecord(key=f"sha256:{i}", path=str(tmp_path / f"{i}.png"), kind="photo", modality="XC",
                           rows=8, columns=8) for i in range(4)]
    ids, _ = workspace.add_images(records)
    workspace.add_label(ids[0], ["a"], "reader")
    workspace.add_label(ids[1], ["b"], "reader", flag_wrong=True)
    workspace.replace_queue([QueueItem(image_id=ids[2], score=0.9, rank=1, strategy="entropy")])
    rows = {r.ref.id: r for r in worklist_rows(workspace)}
    assert [rows[i].status for i in ids] == ["labelled", "flagged", "queued", "unlabelled"]
    assert rows[ids[2]].queue_rank == 1 and rows[ids[0]].prediction is None and rows[ids[0]].confidence is None
