"""Workspace behaviour: images, grouping, labels, queue, models, cache, settings."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from core.errors import NotFound, WorkspaceError
from core.types import ImageRecord, ModelVersion, Prediction, QueueItem, WindowPreset
from core.workspace import Workspace, image_id_for_key


def record(tmp_path: Path, n: int, patient="P1", study="S1", series="SE1", **kw) -> ImageRecord:
    """A hand-made DICOM-like record; patient/study/series None gives a photograph."""
    kind = "dicom" if patient else "photo"
    return ImageRecord(
        key=f"1.2.840.{n}" if kind == "dicom" else f"sha256:{n:064x}",
        path=str(tmp_path / f"img{n:03d}.{'dcm' if kind == 'dicom' else 'png'}"),
        kind=kind,
        modality="CR" if kind == "dicom" else "XC",
        rows=64,
        columns=48,
        photometric="MONOCHROME2" if kind == "dicom" else "RGB",
        patient_id=patient,
        patient_name=f"Name^{patient}" if patient else None,
        study_uid=study if patient else None,
        study_date="20240101" if patient else None,
        series_uid=series if patient else None,
        **kw,
    )


@pytest.fixture
def three(workspace, tmp_path):
    """Three images in one study: returns their ids in path order."""
    new, _ = workspace.add_images([record(tmp_path, n) for n in (2, 0, 1)])
    return sorted(new, key=lambda i: workspace.image(i).path)


# --- images --------------------------------------------------------------------------------


def test_add_images_is_idempotent_and_updates_moved_paths(workspace, tmp_path):
    recs = [record(tmp_path, n) for n in range(3)]
    new, existing = workspace.add_images(recs)
    assert new == [image_id_for_key(r.key) for r in recs] and existing == []
    new, existing = workspace.add_images(recs)
    assert new == [] and existing == [image_id_for_key(r.key) for r in recs]
    assert workspace.image_count() == 3

    moved = ImageRecord(**{**recs[0].__dict__, "path": str(tmp_path / "moved" / "a.dcm")})
    new, existing = workspace.add_images([moved])
    assert new == [] and len(existing) == 1
    assert workspace.image(existing[0]).path == str(tmp_path / "moved" / "a.dcm")
    assert workspace.image_count() == 3
    imports = workspace.audit_log(action="images.import")
    assert [e["detail"]["added"] for e in imports] == [0, 3]  # newest first; the no-op import is not logged


def test_image_round_trips_its_record(workspace, tmp_path):
    rec = record(tmp_path, 7, window_presets=(WindowPreset(40.0, 400.0, "soft"), WindowPreset(-600.0, 1500.0)),
                 transfer_syntax="1.2.840.10008.1.2.1", body_part="CHEST", view_position="PA")
    (image_id,), _ = workspace.add_images([rec])
    ref = workspace.image(image_id)
    assert ref.record == rec
    assert ref.id == image_id and ref.split is None and ref.label is None
    with pytest.raises(NotFound):
        workspace.image("000000000000")


def test_images_are_ordered_and_grouped(workspace, tmp_path):
    recs = [
        record(tmp_path, 5, patient="P2", study="S3", series="SE4"),
        record(tmp_path, 1, patient="P1", study="S2", series="SE2"),
        record(tmp_path, 0, patient="P1", study="S1", series="SE1"),
        record(tmp_path, 2, patient="P1", study="S1", series="SE1"),
        record(tmp_path, 3, patient="P1", study="S1", series="SE3"),
        record(tmp_path, 9, patient=None),  # a photograph: no patient, study or series
    ]
    workspace.add_images(recs)
    order = [Path(ref.path).name for ref in workspace.images()]
    assert order == ["img000.dcm", "img002.dcm", "img003.dcm", "img001.dcm", "img005.dcm", "img009.png"]

    tree = workspace.studies()
    assert [p["patient_id"] for p in tree] == ["P1", "P2", None]
    p1 = tree[0]
    assert p1["patient_name"] == "Name^P1"
    assert [s["study_uid"] for s in p1["studies"]] == ["S1", "S2"]
    s1 = p1["studies"][0]
    assert s1["n_images"] == 3 and s1["date"] == "20240101"
    assert [se["series_uid"] for se in s1["series"]] == ["SE1", "SE3"]
    assert [Path(r.path).name for r in s1["series"][0]["images"]] == ["img000.dcm", "img002.dcm"]
    photo = tree[2]["studies"][0]
    assert photo["study_uid"] is None and photo["series"][0]["images"][0].record.kind == "photo"


def test_find_image_by_id_and_by_path(workspace, tmp_path, monkeypatch, three):
    ref = workspace.image(three[1])
    assert workspace.find_image(three[1]).id == three[1]
    assert workspace.find_image(ref.path).id == three[1]
    monkeypatch.chdir(tmp_path)
    assert workspace.find_image(os.path.basename(ref.path)).id == three[1]
    assert workspace.find_image(Path("sub") / ".." / os.path.basename(ref.path)).id == three[1]
    with pytest.raises(NotFound, match=r"no imported image matches 'nope.dcm'; run `loupe list`"):
        workspace.find_image("nope.dcm")


def test_splits(workspace, three):
    workspace.set_split(three[0], "train")
    workspace.set_splits({three[1]: "val", three[2]: "test"})
    assert [r.id for r in workspace.images(split="train")] == [three[0]]
    assert workspace.image(three[2]).split == "test"
    workspace.set_split(three[2], None)
    assert workspace.image(three[2]).split is None
    with pytest.raises(ValueError):
        workspace.set_split(three[0], "training")
    with pytest.raises(NotFound):
        workspace.set_split("000000000000", "train")


# --- classes and labels --------------------------------------------------------------------


def test_classes_keep_order_and_are_idempotent(workspace):
    assert workspace.classes() == []
    assert workspace.add_classes(["normal", "pneumonia"]) == ["normal", "pneumonia"]
    assert workspace.add_classes(["effusion", "normal"]) == ["normal", "pneumonia", "effusion"]
    assert workspace.add_classes("normal;nodule") == ["normal", "pneumonia", "effusion", "nodule"]


def test_labels_are_never_overwritten(workspace, three):
    first = workspace.add_label(three[0], ["normal"], "ann1")
    second = workspace.add_label(three[0], "pneumonia;effusion", "ann2", severity=2, note="RLL", flag_wrong=True)
    assert second.id > first.id
    history = workspace.label_history(three[0])
    assert [l.classes for l in history] == [("pneumonia", "effusion"), ("normal",)]
    current = workspace.current_label(three[0])
    assert current == second
    assert (current.severity, current.note, current.flag_wrong, current.annotator) == (2, "RLL", True, "ann2")
    assert current.created_at.endswith("Z") and len(current.created_at) == len("2024-01-01T00:00:00.000Z")
    assert workspace.classes() == ["normal", "pneumonia", "effusion"]
    assert workspace.image(three[0]).label == "pneumonia;effusion"
    assert set(workspace.current_labels()) == {three[0]}
    assert workspace.current_label(three[1]) is None
    with pytest.raises(NotFound):
        workspace.add_label("000000000000", ["normal"], "ann1")
    with pytest.raises(ValueError):
        workspace.add_label(three[0], [], "ann1")
    with pytest.raises(ValueError):
        workspace.add_label(three[0], ["normal"], "ann1", source="guess")


def test_database_refuses_to_change_labels(workspace, three):
    workspace.add_label(three[0], ["normal"], "ann1")
    conn = sqlite3.connect(workspace.path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE labels SET classes = '[\"x\"]'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM labels")
    conn.close()
    assert workspace.current_label(three[0]).classes == ("normal",)


def test_undo_appends_rows_and_walks_back(workspace, three):
    workspace.add_label(three[0], ["a"], "ann")
    workspace.add_label(three[0], ["b"], "ann")
    workspace.add_label(three[0], ["c"], "ann")
    undo = workspace.undo_label(three[0], "ann")
    assert undo.source == "undo" and undo.classes == ("b",)
    assert workspace.current_label(three[0]).classes == ("b",)
    assert workspace.undo_label(three[0], "ann").classes == ("a",)
    assert workspace.undo_label(three[0], "ann").classes == ()
    assert workspace.current_label(three[0]) is None
    assert workspace.image(three[0]).label is None
    assert three[0] not in workspace.current_labels()
    with pytest.raises(NotFound):
        workspace.undo_label(three[0], "ann")
    assert len(workspace.label_history(three[0])) == 6  # 3 labels + 3 undo rows, nothing deleted
    workspace.add_label(three[0], ["d"], "ann")
    assert workspace.undo_label(three[0], "ann").classes == ()


def test_add_labels_batch_is_one_transaction(workspace, three):
    labels = workspace.add_labels([
        {"image_id": three[0], "classes": "a", "annotator": "import", "source": "import", "severity": 1},
        (three[1], ["b", "c"], "import", "import"),
    ])
    assert [l.classes for l in labels] == [("a",), ("b", "c")]
    assert workspace.current_label(three[0]).severity == 1
    with pytest.raises(NotFound):
        workspace.add_labels([(three[2], "a", "import"), ("000000000000", "a", "import")])
    assert workspace.current_label(three[2]) is None  # rolled back as a whole
    assert [e["action"] for e in workspace.audit_log()][:1] == ["labels.add_batch"]


# --- queue ---------------------------------------------------------------------------------


def test_queue_excludes_labelled_images(workspace, three):
    items = [QueueItem(image_id=i, score=1.0 - r / 10, rank=r, strategy="entropy", why={"entropy": 0.5}, version="v1")
             for r, i in enumerate(reversed(three))]
    assert workspace.replace_queue(items) == 3
    assert [q.image_id for q in workspace.queue()] == list(reversed(three))
    assert workspace.queue(1)[0].why == {"entropy": 0.5}
    workspace.add_label(three[2], ["a"], "ann")
    workspace.add_label(three[1], ["a"], "model", source="model")  # a model label does not count
    assert [q.image_id for q in workspace.queue()] == [three[1], three[0]]
    workspace.undo_label(three[2], "ann")  # undone to unlabelled: back in the queue
    assert [q.image_id for q in workspace.queue(2)] == [three[2], three[1]]
    assert workspace.dequeue(three[2]) and not workspace.dequeue(three[2])
    workspace.replace_queue([])
    assert workspace.queue() == []


# --- models and predictions ----------------------------------------------------------------


def model(version: str, parent=None, status="candidate") -> ModelVersion:
    return ModelVersion(version=version, arch="resnet18", classes=("a", "b"), path=f"/m/{version}.pt",
                        parent=parent, status=status, params={"lr": 0.001}, metrics={"macro_auc": 0.9})


def test_model_activation_and_rollback(workspace):
    workspace.add_model(model("v1", status="active"))
    workspace.add_model(model("v2", parent="v1"))
    workspace.add_model(model("v3", parent="v2"))
    assert [m.version for m in workspace.models()] == ["v3", "v2", "v1"]
    assert workspace.model("v1").params == {"lr": 0.001} and workspace.model("v1").classes == ("a", "b")
    assert workspace.active_model().version == "v1"

    workspace.activate_model("v2", "ann", "better AUC")
    workspace.activate_model("v3", "ann", "better again")
    statuses = {m.version: m.status for m in workspace.models()}
    assert statuses == {"v1": "retired", "v2": "retired", "v3": "active"}

    assert workspace.rollback("ann", "v3 misses nodules").version == "v2"
    assert workspace.active_model().version == "v2" and workspace.model("v3").status == "retired"
    assert workspace.rollback("ann", "again").version == "v1"
    with pytest.raises(NotFound):
        workspace.rollback("ann", "nothing before v1")

    workspace.set_model_status("v2", "rejected", "bad calibration")
    workspace.activate_model("v3", "ann", "")
    assert workspace.rollback("ann", "skip rejected").version == "v1"  # v2 was rejected
    assert workspace.model("v2").reason == "bad calibration"
    actions = [e["action"] for e in workspace.audit_log(action="model")]
    assert actions.count("model.rollback") == 3 and "model.status" in actions
    assert workspace.verify_audit() == (True, None)

    assert workspace.update_model_metrics("v1", {"kappa": 0.5}).metrics == {"macro_auc": 0.9, "kappa": 0.5}
    with pytest.raises(NotFound):
        workspace.model("v9")
    with pytest.raises(WorkspaceError):
        workspace.add_model(model("v1"))


def test_rollback_falls_back_to_parent(workspace):
    workspace.add_model(model("base"))
    workspace.add_model(model("child", parent="base", status="active"))
    assert workspace.rollback("ann", "regression").version == "base"
    workspace.set_model_status("base", "retired", "")
    assert workspace.active_model() is None
    with pytest.raises(NotFound, match="no model is active"):
        workspace.rollback("ann", "none active")


def test_predictions_round_trip(workspace, three):
    workspace.add_predictions("v1", [Prediction(i, "v1", {"a": 0.25, "b": 0.75}, "b") for i in three])
    workspace.add_predictions("v1", [Prediction(three[0], "v1", {"a": 0.9, "b": 0.1}, "a")])
    preds = workspace.predictions("v1")
    assert set(preds) == set(three)
    assert preds[three[0]].probs == {"a": 0.9, "b": 0.1} and preds[three[0]].predicted == "a"
    assert list(workspace.predictions("v1", [three[1]])) == [three[1]]
    assert workspace.predictions("v2") == {}


# --- explanation cache and settings --------------------------------------------------------


def test_explanation_cache_round_trip(workspace, three):
    data = bytes(range(256)) * 4
    workspace.put_explanation("k1", three[0], "v1", "gradcam", "a", {"layer": "layer4"}, data, {"shape": [64, 48]})
    workspace.put_explanation("k2", three[0], "v2", "lime", "a", {}, b"x", {})
    got = workspace.get_explanation("k1")
    assert got["data"] == data and got["meta"] == {"shape": [64, 48]} and got["params"] == {"layer": "layer4"}
    assert (got["image_id"], got["version"], got["method"], got["target"]) == (three[0], "v1", "gradcam", "a")
    assert workspace.get_explanation("missing") is None
    assert workspace.drop_explanations("v1") == 1
    assert workspace.get_explanation("k1") is None and workspace.get_explanation("k2") is not None
    assert workspace.drop_explanations() == 1


def test_settings(workspace):
    assert workspace.get_setting("x", default=5) == 5
    workspace.set_setting("x", {"window": [40, 400], "ok": True})
    workspace.set_setting("y", None)
    assert workspace.get_setting("x") == {"window": [40, 400], "ok": True}
    assert workspace.get_setting("y", default="d") is None


def test_integrity_and_close(tmp_path):
    with Workspace.open(tmp_path / "deep" / "folder" / "ws.sqlite") as ws:
        assert ws.path.exists() and ws.integrity_check()
    with pytest.raises(WorkspaceError, match="closed"):
        ws.classes()


def test_workspace_imports_without_qt():
    import subprocess
    import sys

    code = "import sys; sys.modules['PySide6'] = None; import core.workspace; print('ok')"
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "ok", result.stderr
