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


def test_one_row_read_per_image_matches_the_whole_worklist(workspace, tmp_path):
    """worklist_row (per-image queries, run after every label) gives exactly the row worklist_rows lists,
    for every status: labelled, flagged, queued, queued then labelled, damaged, unlabelled, with predictions,
    and under double reading (a queued case stays until its second read; a blind model hides predictions)."""
    from core.types import ModelVersion
    from core.worklist import worklist_row

    records = [ImageRecord(key=f"sha256:{i}", path=str(tmp_path / f"{i}.png"), kind="photo", modality="XC",
                           rows=8, columns=8) for i in range(7)]
    ids, _ = workspace.add_images(records)
    workspace.add_model(ModelVersion("v1", "resnet18", ("a", "b"), str(tmp_path / "m.pt"), status="active",
                                     file_hash="h1"))
    workspace.add_predictions("v1", [Prediction(i, "v1", {"a": 0.3, "b": 0.7}, "b") for i in ids[:5]])
    workspace.add_label(ids[0], ["a"], "reader")
    workspace.add_label(ids[1], ["b"], "reader", flag_wrong=True)
    workspace.replace_queue([QueueItem(image_id=i, score=0.9 - k / 10, rank=k + 1, strategy="entropy")
                             for k, i in enumerate([ids[2], ids[3], ids[5]])])
    workspace.add_label(ids[3], ["b"], "reader")  # queued, then labelled: it left the queue
    workspace.mark_damaged(ids[4], "truncated pixel data")

    def same_rows():
        rows = {r.ref.id: r for r in worklist_rows(workspace)}
        for i in ids:
            assert worklist_row(workspace, i) == rows[i], i
        return rows

    rows = same_rows()
    assert [rows[i].status for i in ids] == ["disagreement", "flagged", "queued", "labelled", "damaged", "queued",
                                             "unlabelled"]
    assert rows[ids[2]].queue_rank == 1 and rows[ids[3]].queue_rank is None and rows[ids[5]].queue_rank == 3
    assert rows[ids[4]].damaged == "truncated pixel data" and rows[ids[0]].prediction.predicted == "b"
    assert workspace.queue_rank(ids[6]) is None and workspace.damaged_reason(ids[0]) is None
    assert workspace.prediction("v1", ids[6]) is None and workspace.prediction("v2", ids[0]) is None
    workspace.set_double_reading(True, blind_model=True)
    workspace.add_label(ids[2], ["a"], "first reader")  # one read of two: still waiting for the second
    rows = same_rows()
    assert rows[ids[2]].queue_rank == 1 and rows[ids[0]].prediction is None
