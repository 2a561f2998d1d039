"""``loupe explain`` end to end: map, overlay, JSON contract, cache, and a new version never showing an old map."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.app.cli_helpers import run


@pytest.fixture
def ws_with_model(tmp_path, capsys):
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(rng.integers(0, 255, (40, 56), dtype=np.uint8)).save(folder / "a.png")
    ws = str(tmp_path / "ws.sqlite")
    assert run(capsys, "--workspace", ws, "import", str(folder), "--json")[0] == 0
    code, out, err = run(capsys, "--workspace", ws, "model", "create", "--arch", "resnet18", "--classes", "neg,pos",
                         "--pretrained", "none", "--input-size", "32", "--json")
    assert code == 0, err
    image_id = json.loads(run(capsys, "--workspace", ws, "list", "--json")[1])[0]["id"]
    return ws, image_id, folder / "a.png"


def test_explain_writes_map_overlay_and_json(tmp_path, capsys, ws_with_model):
    ws, image_id, path = ws_with_model
    npy, png = tmp_path / "m.npy", tmp_path / "o.png"
    code, out, err = run(capsys, "--workspace", ws, "explain", image_id, "--method", "gradcam", "--out", str(npy),
                         "--png", str(png), "--faithfulness", "--sanity", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert {"method", "target", "shape", "seconds", "cached", "version"} <= set(doc)
    assert doc["shape"] == [40, 56] and doc["cached"] is False and doc["method"] == "gradcam"
    assert {"deletion_auc", "insertion_auc"} <= set(doc["faithfulness"]) and "spearman" in doc["sanity"]
    m = np.load(npy)
    assert m.dtype == np.float32 and m.shape == (40, 56) and 0 <= m.min() and m.max() <= 1
    assert np.asarray(Image.open(png)).shape == (40, 56, 3)

    code, out, _ = run(capsys, "--workspace", ws, "explain", str(path), "--method", "gradcam", "--json")
    again = json.loads(out)
    assert again["cached"] is True and again["target"] == doc["target"]

    # A new model version must never be served the old version's map.
    run(capsys, "--workspace", ws, "model", "create", "--arch", "resnet18", "--classes", "neg,pos",
        "--pretrained", "none", "--input-size", "32", "--json")
    code, out, _ = run(capsys, "--workspace", ws, "explain", image_id, "--method", "gradcam", "--json")
    new = json.loads(out)
    assert new["cached"] is False and new["version"] != doc["version"]


def test_explain_bad_input_is_a_plain_error(capsys, ws_with_model):
    ws, image_id, _ = ws_with_model
    code, _, err = run(capsys, "--workspace", ws, "explain", image_id, "--target", "cat")
    assert code == 1 and "no class" in err and "Traceback" not in err
    code, _, err = run(capsys, "--workspace", ws, "explain", image_id, "--method", "occlusion", "--samples", "9")
    assert code == 2
    code, out, err = run(capsys, "--workspace", ws, "explain", image_id, "--method", "lime", "--samples", "16",
                         "--json")
    assert code == 0 and json.loads(out)["params"]["n_samples"] == 16


def test_explain_layercam_from_the_command_and_the_window_list(tmp_path, capsys, ws_with_model):
    """LayerCAM (beyond CLI.md's five methods) is reachable from ``loupe explain`` and the overlay's method list."""
    from app.widgets.overlay_panel import METHODS

    ws, image_id, _ = ws_with_model
    npy = tmp_path / "l.npy"
    code, out, err = run(capsys, "--workspace", ws, "explain", image_id, "--method", "layercam", "--out", str(npy),
                         "--faithfulness", "--sanity", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["method"] == "layercam" and doc["shape"] == [40, 56]
    # LayerCAM's own ``layers`` parameter must not be taken for the randomisation check's scope (it was)
    assert doc["faithfulness"]["randomisation"]["layers"] == "all" and "spearman" in doc["sanity"]
    m = np.load(npy)
    assert m.shape == (40, 56) and 0 <= m.min() and m.max() <= 1
    assert ("LayerCAM", "layercam") in METHODS
