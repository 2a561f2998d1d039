"""The `loupe` command line: import, list, render and the CLI.md contract (exit codes, JSON)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from app.cli import main
from tests.app.cli_helpers import run
from tests.conftest import shared_path


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "derm" / "visit1"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 255, (30, 30), dtype=np.uint8)).save(folder / "b.jpg")
    (folder / "garbage.bin").write_bytes(b"\x00\x01not an image at all" * 10)
    good = folder / "a.png"
    (folder / "truncated.png").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    return folder


def test_import_list_render_round_trip(tmp_path, capsys, photos):
    ws = str(tmp_path / "ws.sqlite")
    code, out, err = run(capsys, "--workspace", ws, "import", str(photos), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["imported"] == 2 and report["skipped"] == 0
    rejected = {e["path"].rsplit("/", 1)[-1]: e["reason"] for e in report["errors"]}
    assert set(rejected) == {"garbage.bin", "truncated.png"}
    assert all(reason and "Traceback" not in reason for reason in rejected.values())

    code, out, _ = run(capsys, "--workspace", ws, "import", str(photos), "--json")
    assert json.loads(out)["imported"] == 0 and json.loads(out)["skipped"] == 2

    code, out, _ = run(capsys, "--workspace", ws, "list", "--json")
    listing = json.loads(out)
    assert len(listing) == 2
    for row in listing:
        assert {"id", "path", "modality", "patient_id", "study_uid", "label", "split"} <= set(row)
    assert len({row["study_uid"] for row in listing}) == 1  # a folder of photographs is one study

    colour = next(r for r in listing if r["path"].endswith("a.png"))
    out_png = tmp_path / "render.png"
    code, out, _ = run(capsys, "--workspace", ws, "render", colour["id"], "--out", str(out_png), "--json")
    assert code == 0 and json.loads(out)["shape"] == [40, 60]
    assert np.array_equal(np.asarray(Image.open(out_png)), np.asarray(Image.open(photos / "a.png")))
    # IMAGE may also be the imported file's path
    code, _, _ = run(capsys, "--workspace", ws, "render", str(photos / "b.jpg"), "--out", str(tmp_path / "b.png"))
    assert code == 0 and Image.open(tmp_path / "b.png").mode == "L"


def test_labels_csv_import_is_idempotent(tmp_path, capsys, photos):
    ws = str(tmp_path / "ws.sqlite")
    csv = photos / "labels.csv"
    csv.write_text("path,label,split,severity\na.png,melanoma,train,2\nb.jpg,naevus;seborrhoeic,test,\n"
                   "missing.png,naevus,train,\n")
    code, out, err = run(capsys, "--workspace", ws, "import", str(photos), "--labels", str(csv), "--json")
    report = json.loads(out)
    assert code == 0 and report["imported"] == 2 and report["labels_added"] == 2
    assert any("missing.png" in e["path"] and "no imported image" in e["reason"] for e in report["errors"])
    code, out, _ = run(capsys, "--workspace", ws, "list", "--json")
    by_name = {r["path"].rsplit("/", 1)[-1]: r for r in json.loads(out)}
    assert by_name["a.png"]["label"] == "melanoma" and by_name["a.png"]["split"] == "train"
    assert by_name["b.jpg"]["label"] == "naevus;seborrhoeic" and by_name["b.jpg"]["split"] == "test"
    code, out, _ = run(capsys, "--workspace", ws, "import", str(photos), "--labels", str(csv), "--json")
    assert json.loads(out)["labels_added"] == 0


def test_failures_are_one_plain_line_with_exit_1(tmp_path, capsys, photos):
    ws = str(tmp_path / "ws.sqlite")
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("filename,diagnosis\nx,y\n")
    code, out, err = run(capsys, "--workspace", ws, "import", str(photos), "--labels", str(bad_csv))
    assert code == 1 and out == "" and "Traceback" not in err and "'label' column" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "--workspace", ws, "render", "nosuchimage", "--out", str(tmp_path / "x.png"))
    assert code == 1 and "no imported image matches" in err
    code, _, err = run(capsys, "--workspace", ws, "import", str(tmp_path / "does-not-exist"))
    assert code == 1 and "does not exist" in err


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["render"])
    assert exc.value.code == 2


def test_workspace_from_environment(tmp_path, capsys, photos, monkeypatch):
    monkeypatch.setenv("LOUPE_WORKSPACE", str(tmp_path / "env.sqlite"))
    code, _, _ = run(capsys, "import", str(photos))
    assert code == 0 and (tmp_path / "env.sqlite").exists()


def test_real_dicom_folder_imports_and_renders(tmp_path, capsys):
    source = shared_path("dicom")
    folder = tmp_path / "studies"
    shutil.copytree(source, folder)
    ws = str(tmp_path / "ws.sqlite")
    code, out, err = run(capsys, "--workspace", ws, "import", str(folder), "--json")
    report = json.loads(out)
    assert code == 0 and report["imported"] == len(list(source.iterdir())) and report["errors"] == []
    code, out, _ = run(capsys, "--workspace", ws, "list", "--json")
    listing = json.loads(out)
    assert {r["modality"] for r in listing} >= {"CR", "DX"}
    assert all(r["study_uid"] for r in listing)
    # CR-MONO1-10-chest carries no Patient ID; every other file groups under its patient
    assert sum(r["patient_id"] is None for r in listing) <= 1
    mono1 = folder / "CR-MONO1-10-chest.dcm"
    out_png = tmp_path / "mono1.png"
    code, _, err = run(capsys, "--workspace", ws, "render", str(mono1), "--out", str(out_png))
    assert code == 0, err
    default = np.asarray(Image.open(out_png))
    code, _, _ = run(capsys, "--workspace", ws, "render", str(mono1), "--out", str(out_png), "--window", "500", "100")
    narrow = np.asarray(Image.open(out_png))
    assert default.shape == narrow.shape and not np.array_equal(default, narrow)


def test_demo_command_imports_bundled_studies(tmp_path, capsys):
    ws = str(tmp_path / "demo.sqlite")
    code, out, err = run(capsys, "--workspace", ws, "demo", "--no-train", "--json")
    report = json.loads(out)
    assert code == 0, err
    assert report["imported"] == report["images"] == 404 and report["errors"] == []
    assert report["labels_added"] == 140


def test_identical_copies_are_stored_once_and_their_label_rows_explained(tmp_path, capsys, photos):
    ws = str(tmp_path / "ws.sqlite")
    (photos / "copy_of_a.png").write_bytes((photos / "a.png").read_bytes())
    csv = photos / "labels.csv"
    csv.write_text("path,label\na.png,naevus\ncopy_of_a.png,melanoma\n")
    code, out, _ = run(capsys, "--workspace", ws, "import", str(photos), "--labels", str(csv), "--json")
    report = json.loads(out)
    assert report["imported"] == 2 and report["skipped"] == 1 and report["labels_added"] == 1
    dup = [e for e in report["errors"] if e["path"].endswith("copy_of_a.png")]
    assert len(dup) == 1 and "same content as the already imported" in dup[0]["reason"]
