"""`loupe queue refresh|next`, `loupe label`, `loupe similar` and `loupe simulate` (CLI.md contract)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.app.cli_helpers import run


@pytest.fixture
def ws_with_model(tmp_path, capsys):
    import torch

    from core.importer import import_paths
    from core.models.versions import create_version
    from core.workspace import Workspace
    from tests.core.conftest import write_dataset

    torch.set_num_threads(1)
    folder = tmp_path / "pool"
    write_dataset(folder, n=12)
    (folder / "labels.csv").unlink()
    path = tmp_path / "ws.sqlite"
    with Workspace.open(path) as ws:
        import_paths(ws, [folder])
        torch.manual_seed(0)
        create_version(ws, "resnet18", ["neg", "pos"], pretrained="none", input_size=32)
    return str(path)


def test_queue_label_similar(ws_with_model, capsys):
    ws = ws_with_model
    code, out, _ = run(capsys, "--workspace", ws, "queue", "refresh", "--n", "4", "--json")
    assert code == 0 and json.loads(out)["n"] == 4
    code, out, _ = run(capsys, "--workspace", ws, "queue", "next", "--n", "2", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 2
    assert all({"id", "score", "why"} <= set(r) and isinstance(r["why"], dict) for r in rows)
    first = rows[0]["id"]
    code, out, _ = run(capsys, "--workspace", ws, "label", first, "--class", "pos", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["classes"] == ["pos"] and doc["new_labels"] == 1 and doc["retrain_due"] is False
    code, out, _ = run(capsys, "--workspace", ws, "queue", "next", "--json")
    assert json.loads(out)[0]["id"] != first  # labelled images leave the queue
    code, out, _ = run(capsys, "--workspace", ws, "similar", rows[1]["id"], "--json")
    assert code == 0 and [r["id"] for r in json.loads(out)] == [first]
    code, _, err = run(capsys, "--workspace", ws, "label", "no-such-image", "--class", "pos")
    assert code == 1 and "Traceback" not in err


def test_simulate_json_contract(tmp_path, capsys):
    rng = np.random.default_rng(0)

    def split(n, rare):
        y = (rng.random(n) > rare).astype(np.uint8)
        x = rng.integers(0, 80, (n, 28, 28)).astype(np.uint8)
        x[y == 1, 8:20, 8:20] = 220
        return x, y.reshape(-1, 1)

    tr, ytr = split(80, 0.2)
    te, yte = split(30, 0.4)
    npz = tmp_path / "tiny.npz"
    np.savez(npz, train_images=tr, train_labels=ytr, test_images=te, test_labels=yte)
    code, out, err = run(capsys, "simulate", "--npz", str(npz), "--strategy", "default", "--seed-size", "10",
                         "--batch", "10", "--rounds", "2", "--arch", "resnet18", "--pretrained", "none",
                         "--input-size", "32", "--cache-dir", str(tmp_path / "cache"), "--classes", "normal,sick",
                         "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["strategy"] == "default" and doc["rare_class"] == "normal"
    assert [p["labels"] for p in doc["curve"]] == [10, 20, 30]
    assert all(set(p) >= {"labels", "macro_auc", "rare_ap", "rare_recall"} for p in doc["curve"])
    code, _, err = run(capsys, "simulate", "--npz", str(tmp_path / "missing.npz"), "--json")
    assert code == 1 and "no such file" in err


def test_simulate_several_rare_classes(tmp_path, capsys):
    rng = np.random.default_rng(1)

    def split(n):
        y = rng.choice(3, size=n, p=[0.7, 0.15, 0.15]).astype(np.uint8)
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        x[y == 1, 4:12, 4:12] = 230
        x[y == 2, 16:26, 16:26] = 230
        return x, y.reshape(-1, 1)

    tr, ytr = split(90)
    te, yte = split(40)
    npz = tmp_path / "three.npz"
    np.savez(npz, train_images=tr, train_labels=ytr, test_images=te, test_labels=yte,
             train_groups=np.array([f"L{i // 2}" for i in range(90)]))
    common = ["simulate", "--npz", str(npz), "--seed-size", "10", "--batch", "10", "--rounds", "2", "--arch",
              "resnet18", "--pretrained", "none", "--input-size", "32", "--cache-dir", str(tmp_path / "cache"),
              "--classes", "nv,df,vasc", "--rare", "df,vasc", "--cost", "df=5,vasc=3", "--seed", "2", "--json"]
    docs = {}
    for strategy in ("random", "default"):
        code, out, err = run(capsys, *common, "--strategy", strategy)
        assert code == 0, err
        docs[strategy] = json.loads(out)
    doc = docs["default"]
    assert doc["rare_classes"] == ["df", "vasc"] and doc["rare_class"] == "df"
    for p in doc["curve"]:
        assert set(p["per_class_ap"]) == {"nv", "df", "vasc"} and isinstance(p["rare_found"], int)
        assert p["rare_ap"] == pytest.approx((p["per_class_ap"]["df"] + p["per_class_ap"]["vasc"]) / 2, abs=1e-3)
    assert docs["random"]["curve"][0] == doc["curve"][0]  # the same seed set for both strategies
    # validation held out of train by lesion (train_groups), since the npz has no val split
    code, out, err = run(capsys, *common, "--strategy", "default", "--eval-split", "val")
    assert code == 0, err
    assert json.loads(out)["eval_split"] == "val"
    code, _, err = run(capsys, *common[:-1], "--rare", "melanoma", "--json")
    assert code == 1 and "unknown rare class 'melanoma'" in err
    code, _, err = run(capsys, *common[:-1], "--cost", "df=lots", "--json")
    assert code == 1 and "--cost" in err
