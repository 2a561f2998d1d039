"""Fast reading mode: the gated version of the active teacher predicts the pool; the reader sees its predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.errors import ModelError
from core.models.fast_mode import (gated_fast_version, is_gated, predict_pool, reading_model, reading_predictions,
                                   set_fast_reading)
from core.types import ModelVersion
from tests.core.conftest import all_convs, flipped_copy, tiny_model

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def fast(small):
    """``small`` with an INT8 copy of v1 registered as v2: every convolution is kept in float, so the copy reads
    as the teacher does and genuinely passes the three checks."""
    from core.models.fast_reading import quantize_version

    version, checks = quantize_version(small, keep_float=all_convs(small), actor="test")
    assert version.version == "v2" and all(c["passed"] for c in checks)
    return small


def _record(version, teacher, passed=(True, True), status="candidate", kind="int8"):
    checks = [{"check": f"c{i}", "passed": p} for i, p in enumerate(passed)]
    return ModelVersion(version=version, arch="resnet18", classes=("neg", "pos"), path="x", parent=teacher,
                        status=status, params={"compression": {"kind": kind, "teacher": teacher, "checks": checks}})


def test_is_gated_by_hand():
    assert is_gated(_record("v5", "v4"), "v4")
    assert not is_gated(_record("v5", "v4"), "v3")  # a copy of another teacher
    assert not is_gated(_record("v5", "v4", passed=(True, False)), "v4")  # one check failed
    assert not is_gated(_record("v5", "v4", status="rejected"), "v4")
    plain = ModelVersion(version="v4", arch="resnet18", classes=("neg", "pos"), path="x")
    assert not is_gated(plain)  # a full model is no fast reading version


def test_ranked_by_note_by_hand():
    from core.models.fast_mode import ReadingModel, ranked_by_note

    on = ReadingModel("v4", "v5", "INT8", True, "v5").to_json()
    assert ranked_by_note("v4", on) == " Ranked by the full model v4; fast reading predicts with v5."
    assert ranked_by_note("v5", on) == "" and ranked_by_note(None, on) == ""
    assert ranked_by_note("v4", ReadingModel("v4", None, "", False, "v5").to_json()) == ""
    assert ranked_by_note("v4", None) == ""


def test_no_gated_version_means_the_full_model_predicts_and_says_why(small):
    assert gated_fast_version(small) is None
    reading = reading_model(small, fast=True)
    assert reading.version == "v1" and not reading.on and "v1" in reading.unavailable
    with pytest.raises(ModelError, match="no fast reading version of v1"):
        predict_pool(small, fast=True)
    with pytest.raises(ModelError, match="not available"):
        set_fast_reading(small, True)


def test_fast_reading_predicts_the_pool_with_the_gated_copy_and_the_reader_sees_it(fast):
    from core.worklist import worklist_rows

    ws = fast
    assert gated_fast_version(ws).version == "v2"
    # off (the default): the active model's predictions, as before
    off = reading_model(ws)
    assert not off.requested and off.version == "v1" and off.available == "v2" and off.describe() == ""
    predict_pool(ws)
    assert {p.version for p in reading_predictions(ws).values()} == {"v1"}
    # on: the INT8 copy predicts the whole pool, stored under its own version
    on = set_fast_reading(ws, True, actor="test")
    assert on.version == "v2" and on.teacher == "v1"
    assert on.describe() == "Fast reading: INT8 v2 of v1"
    assert on.explanation_note() == "Explanation from the full model v1 (fast reading predicts with v2)"
    reading, preds, failed = predict_pool(ws)
    assert reading.fast == "v2" and len(preds) == 40 and not failed
    assert set(ws.predictions("v2")) == {r.id for r in ws.images()}
    rows = worklist_rows(ws)
    assert {r.prediction.version for r in rows} == {"v2"}
    # the copy agrees with its teacher on these images (it passed the gate)
    v1, v2 = ws.predictions("v1"), ws.predictions("v2")
    agree = np.mean([v1[i].predicted == v2[i].predicted for i in v1])
    assert agree >= 0.98
    # back off: the full model's predictions again, nothing deleted
    set_fast_reading(ws, False, actor="test")
    assert {r.prediction.version for r in worklist_rows(ws)} == {"v1"} and len(ws.predictions("v2")) == 40


def test_explanations_of_the_predicted_class_explain_what_the_fast_copy_shows(fast):
    from core.models.fast_mode import explanation_target

    ws = fast
    image_id = ws.images()[0].id
    assert explanation_target(ws, image_id) is None  # off: the full model's own predicted class
    set_fast_reading(ws, True)
    assert explanation_target(ws, image_id) is None  # on, but the copy has not read it yet
    predict_pool(ws, [image_id])
    assert explanation_target(ws, image_id) == ws.predictions("v2")[image_id].predicted


def test_an_image_not_yet_read_by_the_fast_copy_keeps_the_full_models_prediction(fast):
    ws = fast
    ids = [r.id for r in ws.images()]
    predict_pool(ws, fast=False)
    set_fast_reading(ws, True)
    predict_pool(ws, ids[:5])
    seen = reading_predictions(ws)
    assert {seen[i].version for i in ids[:5]} == {"v2"} and {seen[i].version for i in ids[5:]} == {"v1"}
    _, preds, _ = predict_pool(ws, only_missing=True)
    assert sorted(p.image_id for p in preds) == sorted(ids[5:])  # only the ones the copy had not read


def test_a_new_teacher_leaves_the_old_copy_unused(fast):
    ws = fast
    set_fast_reading(ws, True)
    tiny_model(ws, seed=1)  # v3 becomes active: v2 is a copy of v1, not of v3
    assert ws.active_model().version == "v3"
    assert gated_fast_version(ws) is None
    reading = reading_model(ws)
    assert reading.requested and not reading.on and reading.version == "v3" and "v3" in reading.unavailable
    predict_pool(ws)
    assert {p.version for p in reading_predictions(ws).values()} == {"v3"}
    ws.activate_model("v1", actor="test")  # the old teacher is back: its copy applies again
    assert reading_model(ws).fast == "v2"


def test_export_names_the_version_that_predicted(fast, tmp_path):
    from core.export.exporter import export_workspace

    ws = fast
    set_fast_reading(ws, True)
    predict_pool(ws)
    out = tmp_path / "export.json"
    export_workspace(ws, out, "json")
    data = json.loads(out.read_text())
    rows = data["images"] if isinstance(data, dict) else data
    assert {r["model_version"] for r in rows if r.get("predicted")} == {"v2"}


def test_settings_key(small):
    from core.active.settings import SettingsError, read_settings, write_setting

    assert read_settings(small)["fast_reading"] == "off"
    write_setting(small, "fast_reading", "on")
    assert read_settings(small)["fast_reading"] == "on" and reading_model(small).requested
    with pytest.raises(SettingsError):
        write_setting(small, "fast_reading", "sometimes")


def test_cli_predict_fast(fast, capsys):
    from tests.app.cli_helpers import run

    ws = str(fast.path)
    code, out, _ = run(capsys, "--workspace", ws, "predict", "--all", "--json")
    rows = json.loads(out)
    assert code == 0 and {r["version"] for r in rows} == {"v1"} and not any(r["fast"] for r in rows)
    code, out, _ = run(capsys, "--workspace", ws, "predict", "--all", "--fast", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 40
    assert {r["version"] for r in rows} == {"v2"} and all(r["fast"] and r["teacher"] == "v1" for r in rows)
    code, _, err = run(capsys, "--workspace", ws, "predict", "--all", "--fast", "--version", "v1")
    assert code == 2 and "--version" in err


def test_cli_predict_fast_without_a_gated_version_exits_1(small, capsys):
    from tests.app.cli_helpers import run

    code, out, err = run(capsys, "--workspace", str(small.path), "predict", "--all", "--fast")
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 1 and out == "" and len(lines) == 1 and "no fast reading version of v1" in lines[0]
    assert "Traceback" not in err
    code, out, _ = run(capsys, "--workspace", str(small.path), "settings", "set", "fast_reading", "on")
    assert code == 0
    code, out, _ = run(capsys, "--workspace", str(small.path), "settings", "--json")
    assert json.loads(out)["fast_reading"] == "on"


def test_build_result_in_words(fast, monkeypatch):
    from core.models import fast_reading
    from core.models.fast_build import run_build

    ok = run_build(fast, "int8", keep_float=all_convs(fast))
    assert ok.registered and ok.version == "v3" and ok.teacher == "v1"
    assert "v3 of v1 registered" in ok.summary()

    monkeypatch.setattr(fast_reading, "quantize_int8", flipped_copy)
    bad = run_build(fast, "int8")
    assert not bad.registered and "top-class agreement" in bad.failed
    assert "failed" in bad.summary() and "top-class agreement" in bad.summary()
    assert [m.version for m in fast.models()] == ["v3", "v2", "v1"]  # nothing registered


def test_build_in_a_child_process(fast):
    from core.models.fast_build import FastBuildResult, build_fast_version

    result = build_fast_version(str(fast.path), "int8", keep_float=all_convs(fast), nice=0)
    assert isinstance(result, FastBuildResult) and result.registered, result.message
    assert result.teacher == "v1" and fast.model(result.version).parent == "v1"
    assert gated_fast_version(fast).version == result.version  # the newest passing copy serves


def _texts(ds):
    for item in ds.get("ContentSequence", []):
        if "TextValue" in item:
            yield str(item.TextValue)
        yield from _texts(item)


def test_the_dicom_sr_names_the_fast_version_as_the_algorithm_that_predicted(fast, tmp_path):
    import pydicom

    from core.export.exporter import export_workspace

    ws = fast
    set_fast_reading(ws, True)
    predict_pool(ws)
    export_workspace(ws, tmp_path / "sr", "dicom-sr")
    sr = pydicom.dcmread(sorted((tmp_path / "sr").glob("SR-*.dcm"))[0])
    texts = set(_texts(sr))
    assert "Loupe v2" in texts and "v2" in texts and "Loupe v1" not in texts


def test_a_distilled_student_serves_fast_reading(small):
    from core.models.fast_build import run_build

    ws = small
    # a resnet18 student distilled for one epoch from the untrained teacher's soft labels: on these images it
    # picks the teacher's top class everywhere, so it genuinely passes the checks
    result = run_build(ws, "distilled", student="resnet18", epochs=1, pretrained="none")
    assert result.registered, result.summary()
    reading = set_fast_reading(ws, True)
    assert reading.describe() == f"Fast reading: distilled resnet18 {result.version} of v1"
    _, preds, failed = predict_pool(ws)
    assert len(preds) == 40 and not failed and {p.version for p in preds} == {result.version}


def test_row_refresh_does_not_scan_the_registry_when_fast_reading_is_off(fast):
    """The worklist row (re-read after every label) reads only the active version while fast reading is off; the
    registry (every version, for a gated fast copy) is scanned only when fast reading is on."""
    from core.worklist import worklist_row, worklist_rows

    ws = fast
    ids = [r.id for r in ws.images()]
    predict_pool(ws, fast=False)
    calls = []
    scan = ws.models

    def counted():
        calls.append(1)
        return scan()

    ws.models = counted
    try:
        row = worklist_row(ws, ids[0])
        rows = worklist_rows(ws)
        assert calls == []  # off (the default): no registry scan
        assert row.prediction == ws.predictions("v1")[ids[0]]
        assert {r.prediction.version for r in rows} == {"v1"}
        # the same as the full reading_model path gives
        assert reading_predictions(ws, ids[:3]) == reading_predictions(ws, ids[:3], reading=reading_model(ws))
        set_fast_reading(ws, True)
        predict_pool(ws, ids[:1])
        calls.clear()
        row = worklist_row(ws, ids[0])
        assert calls  # on: the gated copy is looked up
        assert row.prediction.version == "v2"
    finally:
        del ws.models
