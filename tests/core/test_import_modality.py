"""PNG/JPEG radiographs (--as-modality, the CSV's modality column) and the CSV's patient and group columns."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.importer import import_paths
from core.labels_csv import read_labels_csv
from core.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]


def pictures(folder: Path, n: int = 3, rgb: bool = False) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        arr = np.full((16, 16, 3) if rgb else (16, 16), 40 * (i + 1), dtype=np.uint8)
        path = folder / f"p{i}.png"
        Image.fromarray(arr).save(path)
        out.append(path)
    return out


@pytest.fixture
def ws(tmp_path):
    with Workspace.open(tmp_path / "ws.sqlite") as w:
        yield w


def test_as_modality_cr_stores_a_grayscale_radiograph_with_a_window(ws, tmp_path):
    pictures(tmp_path / "cxr", rgb=True)
    report = import_paths(ws, [tmp_path / "cxr"], as_modality="cr")
    assert report.imported == 3
    for ref in ws.images():
        rec = ref.record
        assert (rec.modality, rec.photometric, rec.samples_per_pixel) == ("CR", "MONOCHROME2", 1)
        assert [(w.center, w.width, w.name) for w in rec.window_presets] == [(128.0, 256.0, "Full range")]


def test_pictures_default_to_photographs_and_dicom_keeps_its_modality(ws, tmp_path):
    pictures(tmp_path / "derm", rgb=True)
    import_paths(ws, [tmp_path / "derm"])
    assert {r.record.modality for r in ws.images()} == {"XC"}
    assert all(r.record.window_presets == () for r in ws.images())


def test_explicit_as_modality_relabels_pictures_imported_before(ws, tmp_path):
    pictures(tmp_path / "cxr")
    import_paths(ws, [tmp_path / "cxr"])
    assert {r.record.modality for r in ws.images()} == {"XC"}
    report = import_paths(ws, [tmp_path / "cxr"], as_modality="DX")
    assert report.imported == 0 and report.skipped == 3
    assert {r.record.modality for r in ws.images()} == {"DX"}
    assert {r.record.photometric for r in ws.images()} == {"MONOCHROME2"}


def test_unknown_modality_is_refused(ws, tmp_path):
    pictures(tmp_path / "x", n=1)
    with pytest.raises(ValueError, match="CR or DX"):
        import_paths(ws, [tmp_path / "x"], as_modality="MR")
    assert ws.images() == []


def test_csv_modality_patient_and_group_columns(ws, tmp_path):
    pictures(tmp_path / "mix", n=3)
    csv = tmp_path / "mix" / "labels.csv"
    csv.write_text("path,label,modality,patient,group\n"
                   "p0.png,a,CR,P1,L1\n"
                   "p1.png,b,xc,P1,\n"
                   "p2.png,a,,,L2\n", encoding="utf-8")
    report = import_paths(ws, [tmp_path / "mix"], labels_csv=csv, as_modality="DX")
    assert report.errors == ()
    by_name = {os.path.basename(r.path): r for r in ws.images()}
    assert by_name["p0.png"].record.modality == "CR"  # the row wins over --as-modality
    assert by_name["p1.png"].record.modality == "XC"
    assert by_name["p2.png"].record.modality == "DX"
    assert by_name["p0.png"].record.patient_id == "P1" and by_name["p1.png"].record.patient_id == "P1"
    assert by_name["p2.png"].record.patient_id is None
    assert (by_name["p0.png"].group, by_name["p1.png"].group, by_name["p2.png"].group) == ("L1", None, "L2")


def test_csv_bad_modality_row_is_rejected(tmp_path):
    csv = tmp_path / "l.csv"
    csv.write_text("path,label,modality\na.png,x,MRI\nb.png,y,dx\n", encoding="utf-8")
    rows, issues = read_labels_csv(csv)
    assert [r.modality for r in rows] == ["DX"]
    assert len(issues) == 1 and "modality must be CR or DX" in issues[0].reason


def test_cli_import_as_modality_lists_cr(tmp_path):
    pictures(tmp_path / "cxr", n=2)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    ws = str(tmp_path / "cli.sqlite")
    run = lambda *a: subprocess.run([sys.executable, "-m", "app.cli", "--workspace", ws, *a, "--json"],
                                    capture_output=True, text=True, env=env, cwd=ROOT)
    done = run("import", str(tmp_path / "cxr"), "--as-modality", "CR")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["imported"] == 2
    listed = run("list")
    assert [r["modality"] for r in json.loads(listed.stdout)] == ["CR", "CR"]


def test_a_png_radiograph_renders_through_the_window_pipeline(ws, tmp_path):
    from core.imaging import loader
    from core.imaging.display import render_array
    from core.imaging.photo import radiograph_frame

    folder = tmp_path / "cxr"
    folder.mkdir()
    arr = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (8, 1))
    Image.fromarray(np.stack([arr] * 3, axis=-1)).save(folder / "rgb.png")
    import_paths(ws, [folder], as_modality="CR")
    ref = ws.images()[0]
    _, raw, _ = loader.decoded_frame(ref.path)
    gray, params = radiograph_frame(raw, ref.record)
    assert gray.shape == (8, 64) and gray.dtype == np.uint8 and np.array_equal(gray, arr)
    assert not params.is_color and params.windows == ref.record.window_presets
    assert np.array_equal(render_array(gray, params), arr)  # the full-range preset shows it as stored
    narrow = render_array(gray, params, window=(128, 64))  # a narrow window raises the contrast
    assert narrow[0, 0] == 0 and narrow[0, -1] == 255 and 120 <= narrow[0, 32] <= 136
