"""Acceptance (issue 13): a folder of intact files, cut-off copies in every syntax, a non-image and an exact
duplicate imports the intact images only, says why for every other file, and prints no traceback.

`loupe` runs as a subprocess so that what reaches the terminal (stderr) is what a person would see.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.core import codestreams

ROOT = Path(__file__).resolve().parents[2]

#: One intact seed per decoded syntax (plus a multi-frame one).
SEEDS = [("native", 1), ("jpeg_baseline", 1), ("jpeg_extended", 1), ("jpeg_lossless_sv1", 1), ("jpeg_lossless", 3),
         ("jpegls", 1), ("jpegls_near", 1), ("j2k", 1), ("j2k_lossy", 1), ("rle", 1)]
NOISE = ("Traceback", "panicked", "pydicom", "pylibjpeg", "openjpeg", "Warning", "RUST_BACKTRACE")


def _cut_codestream_keep_marker(data: bytes, frames: int) -> bytes:
    """The file with frame 1's codestream cut at half and its end marker put back, in intact fragments."""
    import pydicom
    from pydicom.encaps import encapsulate, generate_frames

    ds = pydicom.dcmread(io.BytesIO(data))
    streams = list(generate_frames(ds.PixelData, number_of_frames=frames))
    first = streams[0].rstrip(b"\x00")
    streams[0] = first[:len(first) // 2] + b"\xff\xd9"
    ds.PixelData = encapsulate([s + b"\x00" * (len(s) % 2) for s in streams], has_bot=frames > 1)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def build_folder(folder: Path, intact_first: bool) -> dict:
    """Write the acceptance folder; returns what each file is. Name prefixes decide the scan order."""
    folder.mkdir(parents=True)
    first, second = ("a", "b") if intact_first else ("b", "a")
    kinds: dict[str, str] = {}
    for kind, frames in SEEDS:
        data = codestreams.file_bytes(kind, frames)
        name = f"{kind}_{frames}"
        (folder / f"{first}_{name}.dcm").write_bytes(data)
        kinds[f"{first}_{name}.dcm"] = "intact"
        span = codestreams.codestream_span(data)
        start = span[0] if span else data.rfind(b"\xe0\x7f\x10\x00") + 12
        (folder / f"{second}_{name}_cut.dcm").write_bytes(data[:start + (len(data) - start) * 6 // 10])
        kinds[f"{second}_{name}_cut.dcm"] = "truncated"
        if span and kind.startswith("jpeg"):
            (folder / f"{second}_{name}_cutstream.dcm").write_bytes(_cut_codestream_keep_marker(data, frames))
            kinds[f"{second}_{name}_cutstream.dcm"] = "truncated"
    (folder / "m_notes.bin").write_bytes(b"\x00\x01 these bytes are not an image" * 8)
    kinds["m_notes.bin"] = "not an image"
    dup_name = ("0_" if not intact_first else "z_") + "copy_of_rle.dcm"
    (folder / dup_name).write_bytes(codestreams.file_bytes("rle", 1))
    kinds[dup_name] = "duplicate"
    return kinds


def loupe(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["LOUPE_LOG_DIR"] = str(workspace.parent / "logs")
    return subprocess.run([sys.executable, "-m", "app.cli", "--workspace", str(workspace), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _check_quiet(proc: subprocess.CompletedProcess) -> None:
    assert not any(word in proc.stderr for word in NOISE), proc.stderr


@pytest.mark.parametrize("intact_first", [True, False], ids=["intact-first", "truncated-first"])
def test_folder_with_damaged_copies_imports_only_intact_images(tmp_path, intact_first):
    folder = tmp_path / "incoming"
    kinds = build_folder(folder, intact_first)
    ws = tmp_path / "ws.sqlite"
    proc = loupe(ws, "import", str(folder), "--json")
    assert proc.returncode == 0, proc.stderr
    _check_quiet(proc)
    report = json.loads(proc.stdout)
    assert {"imported", "skipped", "errors", "skipped_files"} <= set(report)
    rejected = {Path(e["path"]).name: e["reason"] for e in report["errors"]}
    skipped = {Path(e["path"]).name: e["reason"] for e in report["skipped_files"]}
    # every file is accounted for exactly once
    assert not set(rejected) & set(skipped)
    n_intact = sum(1 for k in kinds.values() if k == "intact")
    assert report["imported"] == n_intact
    assert report["imported"] + len(rejected) + len(skipped) == len(kinds)
    for name, kind in kinds.items():
        if kind == "truncated":
            assert name in rejected, f"{name} was not rejected"
            reason = rejected[name]
            assert "damaged" in reason or "truncated" in reason, reason
            assert "is imported" in reason, reason  # named as a damaged copy of the intact file
        elif kind == "not an image":
            assert rejected[name].startswith("not an image"), rejected[name]
    dup = [n for n, k in kinds.items() if k == "duplicate"][0]
    original = [n for n in kinds if n.endswith("_rle_1.dcm")][0]
    copy = dup if intact_first else original  # the one scanned second is the identical copy
    assert skipped[copy].startswith("identical copy of"), skipped
    assert all(reason.strip() and "Traceback" not in reason for reason in [*rejected.values(), *skipped.values()])

    listing = json.loads(loupe(ws, "list", "--json").stdout)
    assert len(listing) == n_intact
    listed = {Path(r["path"]).name for r in listing}
    assert not any(kinds.get(name) == "truncated" for name in listed)

    # every listed image renders, nothing on the terminal
    for row in listing[:3]:
        proc = loupe(ws, "render", row["id"], "--out", str(tmp_path / f"{row['id']}.png"))
        assert proc.returncode == 0, proc.stderr
        _check_quiet(proc)

    # the log file has the reasons
    log = (tmp_path / "logs" / "loupe.log").read_text(encoding="utf-8")
    assert "import rejected" in log and "import skipped" in log


def test_damaged_and_intact_copies_in_two_imports_either_order(tmp_path):
    data = codestreams.file_bytes("jpeg_lossless_sv1", 1)
    cut = _cut_codestream_keep_marker(data, 1)
    (tmp_path / "intact").mkdir()
    (tmp_path / "damaged").mkdir()
    (tmp_path / "intact" / "img.dcm").write_bytes(data)
    (tmp_path / "damaged" / "img.dcm").write_bytes(cut)

    ws = tmp_path / "one.sqlite"  # damaged first: rejected, then the intact one is imported
    first = json.loads(loupe(ws, "import", str(tmp_path / "damaged"), "--json").stdout)
    assert first["imported"] == 0 and len(first["errors"]) == 1
    second = json.loads(loupe(ws, "import", str(tmp_path / "intact"), "--json").stdout)
    assert second["imported"] == 1 and second["errors"] == []

    ws = tmp_path / "two.sqlite"  # intact first: the damaged copy is rejected and named as a copy of it
    first = json.loads(loupe(ws, "import", str(tmp_path / "intact"), "--json").stdout)
    assert first["imported"] == 1
    proc = loupe(ws, "import", str(tmp_path / "damaged"), "--json")
    _check_quiet(proc)
    second = json.loads(proc.stdout)
    assert second["imported"] == 0
    (err,) = second["errors"]
    assert "damaged copy of" in err["reason"] and str(tmp_path / "intact" / "img.dcm") in err["reason"]

    # importing the intact file again: skipped, with its reason
    again = json.loads(loupe(ws, "import", str(tmp_path / "intact"), "--json").stdout)
    assert again["imported"] == 0 and again["skipped"] == 1
    assert again["skipped_files"] == [{"path": str(tmp_path / "intact" / "img.dcm"), "reason": "already imported"}]


def test_render_refuses_a_damaged_image_in_one_line_and_remembers_it(tmp_path):
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / "cut.dcm"
    path.write_bytes(_cut_codestream_keep_marker(codestreams.file_bytes("jpeg_lossless_sv1", 1), 1))
    ws = tmp_path / "ws.sqlite"
    # without the trial decode the import cannot tell; the display can
    report = json.loads(loupe(ws, "import", str(tmp_path / "in"), "--trial-decode-limit", "0", "--json").stdout)
    assert report["imported"] == 1
    proc = loupe(ws, "render", str(path), "--out", str(tmp_path / "out.png"))
    assert proc.returncode == 1
    _check_quiet(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("loupe: ") and "damaged and was not rendered" in lines[0], lines
    assert not (tmp_path / "out.png").exists()
    (row,) = json.loads(loupe(ws, "list", "--json").stdout)
    assert "ends before the image is complete" in row["damaged"]
