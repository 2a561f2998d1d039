"""The model commands of `loupe` against the CLI.md contract: create, train, evaluate, models, predict."""

from __future__ import annotations

import json

import pytest

from tests.app.cli_helpers import run
from tests.core.conftest import write_dataset

PER_CLASS_KEYS = {"n", "sensitivity", "specificity", "precision", "f1", "auc", "ap", "ci95"}
METRIC_KEYS = {"n", "accuracy", "macro_auc", "kappa", "ece", "confusion", "classes", "per_class"}


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def ws_with_data(tmp_path, capsys):
    """A workspace path with 20 labelled images imported: 12 train, 4 val, 4 test."""
    folder = tmp_path / "photos"
    labels = write_dataset(folder, n=20, splits=["train"] * 12 + ["val"] * 4 + ["test"] * 4)
    ws = str(tmp_path / "ws.sqlite")
    code, out, err = run(capsys, "--workspace", ws, "import", str(folder), "--labels", str(labels), "--json")
    assert code == 0, err
    assert json.loads(out)["imported"] == 20
    return ws


def _create(capsys, ws):
    code, out, err = run(capsys, "--workspace", ws, "model", "create", "--arch", "resnet18", "--classes", "neg,pos",
                         "--pretrained", "none", "--input-size", "32", "--json")
    assert code == 0, err
    return json.loads(out)


def test_model_create_json_and_listing(tmp_path, capsys):
    ws = str(tmp_path / "ws.sqlite")
    created = _create(capsys, ws)
    assert {"version", "arch", "weights"} <= set(created)
    assert created["version"] == "v1" and created["arch"] == "resnet18"
    assert created["weights"] == "none (random init)"
    code, out, _ = run(capsys, "--workspace", ws, "models", "--json")
    rows = json.loads(out)
    assert code == 0 and [(r["version"], r["status"]) for r in rows] == [("v1", "active")]
    code, out, _ = run(capsys, "--workspace", ws, "models")
    assert code == 0 and "v1" in out and "active" in out


def test_model_create_default_weights_without_a_cache_names_the_options(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    ws = str(tmp_path / "ws.sqlite")
    code, out, err = run(capsys, "--workspace", ws, "model", "create", "--arch", "resnet50", "--classes", "a,b",
                         "--pretrained", "default", "--json")
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    message = lines[0]
    assert message.startswith("loupe: ") and "resnet50" in message and "Traceback" not in message
    for option in ("--pretrained PATH", "--pretrained none", "efficientnet_lite0"):
        assert option in message
    code, out, _ = run(capsys, "--workspace", ws, "models", "--json")
    assert json.loads(out) == []  # nothing half-registered


def test_model_create_without_classes_is_a_plain_failure(tmp_path, capsys):
    code, out, err = run(capsys, "--workspace", str(tmp_path / "ws.sqlite"), "model", "create", "--arch", "resnet18",
                         "--pretrained", "none")
    assert code == 1 and "--classes" in err and len(err.strip().splitlines()) == 1


def test_train_evaluate_models_predict_round_trip(ws_with_data, capsys):
    ws = ws_with_data
    _create(capsys, ws)

    code, out, err = run(capsys, "--workspace", ws, "train", "--epochs", "1", "--batch-size", "8", "--device",
                         "cpu", "--json")
    assert code == 0, err
    trained = json.loads(out)  # exactly one JSON document on stdout; progress went to stderr
    assert {"version", "promoted", "reason", "metrics"} <= set(trained)
    assert trained["version"] == "v2" and isinstance(trained["promoted"], bool) and trained["reason"]
    assert METRIC_KEYS <= set(trained["metrics"])
    assert trained["metrics"]["n"] == 4  # validated on the images marked val
    assert "training from v1 on 12 images (val 4)" in err

    code, out, err = run(capsys, "--workspace", ws, "evaluate", "--version", "v2", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert METRIC_KEYS | {"version", "split"} <= set(result)
    assert result["version"] == "v2" and result["split"] == "test" and result["n"] == 4
    assert result["classes"] == ["neg", "pos"] and len(result["confusion"]) == 2
    assert sum(map(sum, result["confusion"])) == 4
    for name in ("neg", "pos"):
        pc = result["per_class"][name]
        assert PER_CLASS_KEYS <= set(pc) and pc["n"] == 2
        assert {"sensitivity", "auc"} <= set(pc["ci95"])
        for key in ("sensitivity", "auc"):
            interval = pc["ci95"][key]
            assert interval is None or (len(interval) == 2 and interval[0] <= interval[1])
    code, out, _ = run(capsys, "--workspace", ws, "evaluate", "--split", "val", "--json")
    assert code == 0 and json.loads(out)["split"] == "val" and json.loads(out)["n"] == 4

    code, out, _ = run(capsys, "--workspace", ws, "models", "--json")
    rows = {r["version"]: r for r in json.loads(out)}
    assert set(rows) == {"v1", "v2"} and rows["v2"]["parent"] == "v1"
    assert rows["v2"]["status"] == ("active" if trained["promoted"] else "candidate")
    assert rows["v2"]["macro_auc"] == trained["metrics"]["macro_auc"]

    # activate by hand, then roll back to what was active before
    assert run(capsys, "--workspace", ws, "models", "activate", "v2", "--json")[0] == 0
    code, out, _ = run(capsys, "--workspace", ws, "models", "activate", "v1", "--json")
    assert code == 0 and json.loads(out) == {"version": "v1", "status": "active"}
    code, out, _ = run(capsys, "--workspace", ws, "models", "rollback", "--reason", "v1 misses lesions", "--json")
    assert code == 0 and json.loads(out) == {"version": "v2", "status": "active"}
    code, out, _ = run(capsys, "--workspace", ws, "models", "--json")
    statuses = {r["version"]: r["status"] for r in json.loads(out)}
    assert statuses == {"v1": "retired", "v2": "active"}
    code, out, err = run(capsys, "--workspace", ws, "models", "activate", "v9")
    assert code == 1 and "v9" in err and len(err.strip().splitlines()) == 1

    code, out, err = run(capsys, "--workspace", ws, "predict", "--all", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 20
    for row in rows:
        assert set(row) >= {"id", "version", "probs", "predicted"}
        assert row["version"] == "v2" and set(row["probs"]) == {"neg", "pos"}
        assert sum(row["probs"].values()) == pytest.approx(1.0, abs=1e-5)
        assert row["predicted"] in ("neg", "pos")
    code, out, _ = run(capsys, "--workspace", ws, "list", "--json")
    first = json.loads(out)[0]
    code, out, _ = run(capsys, "--workspace", ws, "predict", first["path"], "--version", "v1", "--json")
    assert code == 0 and [(r["id"], r["version"]) for r in json.loads(out)] == [(first["id"], "v1")]


def test_predict_needs_images_or_all(ws_with_data, capsys):
    code, _, err = run(capsys, "--workspace", ws_with_data, "predict")
    assert code == 2 and "--all" in err


def test_predict_and_train_without_a_model_fail_plainly(ws_with_data, capsys):
    for argv in (["predict", "--all", "--json"], ["train", "--epochs", "1", "--json"],
                 ["evaluate", "--json"]):
        code, out, err = run(capsys, "--workspace", ws_with_data, *argv)
        assert code == 1 and out == "", argv
        assert len(err.strip().splitlines()) == 1 and "no model is active" in err, (argv, err)


def test_evaluate_without_test_labels_fails_plainly(tmp_path, capsys):
    folder = tmp_path / "photos"
    labels = write_dataset(folder, n=4)
    ws = str(tmp_path / "ws.sqlite")
    run(capsys, "--workspace", ws, "import", str(folder), "--labels", str(labels))
    _create(capsys, ws)
    code, out, err = run(capsys, "--workspace", ws, "evaluate", "--json")
    assert code == 1 and out == "" and "marked 'test'" in err
