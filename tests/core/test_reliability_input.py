"""Bad input at import and model load: clear reasons for the bad parts, the rest imported.

Oversized images (headers claiming 10k x 10k), zero-size files, symlink loops,
non-UTF-8 file names, a labels CSV with unknown classes or missing files, and
tampered or truncated model files.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from core.errors import ModelError
from core.importer import import_paths
from core.workspace import Workspace
from tests.core.conftest import write_dataset
from tests.core.dicom_factory import write_dicom
from tests.core.test_reliability_kill import ROOT, child_env, cli


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` with a tiny (wrong) IDAT and a proper IEND."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_oversized_headers_are_rejected_or_accepted_without_decoding(tmp_path, workspace):
    folder = tmp_path / "big"
    folder.mkdir()
    png_header_only(folder / "huge.png", 10_000, 10_000)  # 100 Mpx: over Pillow's bomb limit's warning level
    png_header_only(folder / "bomb.png", 100_000, 100_000)  # 10 Gpx: a decompression bomb
    dcm = write_dicom(folder / "huge.dcm", np.zeros((8, 8), np.uint16))
    data = bytearray(dcm.read_bytes())
    # Rows/Columns 8 → 10000 (US, little endian), the pixel data stays 128 bytes: truncated
    for tag in (b"\x28\x00\x10\x00", b"\x28\x00\x11\x00"):
        at = data.index(tag)
        data[at + 8:at + 10] = struct.pack("<H", 10_000)
    dcm.write_bytes(bytes(data))
    write_dataset(folder / "ok", n=2)
    report = import_paths(workspace, [folder])
    reasons = {Path(e.path).name: e.reason for e in report.errors}
    assert report.imported == 2  # the good ones still came in
    assert "bomb.png" in reasons and "bomb" in reasons["bomb.png"].lower()
    assert reasons["huge.dcm"].startswith("file is truncated")
    if "huge.png" in reasons:  # rejected as a bomb, or accepted from its header (decoding then fails plainly)
        assert reasons["huge.png"].strip()
    else:
        ref = next(r for r in workspace.images() if r.path.endswith("huge.png"))
        assert (ref.record.rows, ref.record.columns) == (10_000, 10_000)


def test_zero_size_and_unreadable_entries(tmp_path, workspace):
    folder = tmp_path / "odd"
    write_dataset(folder, n=2)
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "empty.png").write_bytes(b"")
    os.symlink(folder / "missing-target.png", folder / "dangling.png")
    report = import_paths(workspace, [folder])
    reasons = {Path(e.path).name: e.reason for e in report.errors}
    assert report.imported == 2
    assert reasons["empty.dcm"] == reasons["empty.png"] == "not an image: the file is empty"
    assert "not found" in reasons["dangling.png"]


def test_symlink_loops_are_reported_once_and_not_followed(tmp_path, workspace):
    folder = tmp_path / "loops"
    write_dataset(folder / "a", n=2)
    os.symlink(folder, folder / "a" / "back-to-top")  # a folder loop
    os.symlink(folder / "self.png", folder / "self.png")  # a file link to itself (ELOOP)
    report = import_paths(workspace, [folder])
    assert report.imported == 2
    reasons = {Path(e.path).name: e.reason for e in report.errors}
    assert "loops back" in reasons["back-to-top"]
    assert reasons["self.png"].strip() and "self.png" in {Path(e.path).name for e in report.errors}


@pytest.mark.skipif(sys.platform != "linux", reason="byte file names are a POSIX (Linux) matter")
def test_non_utf8_file_names_import_and_report_cleanly(tmp_path):
    folder = tmp_path / "names"
    write_dataset(folder, n=2)
    raw = os.fsencode(folder) + b"/caf\xe9-latin1.png"
    os.rename(os.fsencode(folder / "img000.png"), raw)
    bad = os.fsencode(folder) + b"/bad\xff\xfe.dcm"
    with open(bad, "wb") as fh:
        fh.write(b"not dicom at all")
    ws_path = tmp_path / "ws.sqlite"
    with Workspace.open(ws_path) as ws:
        report = import_paths(ws, [folder])
        assert report.imported == 1  # the rest came in
        reasons = sorted(e.reason for e in report.errors)
        assert len(reasons) == 2 and all("not valid UTF-8" in r for r in reasons)
        assert all("\ufffd" in e.path for e in report.errors)  # printable, bytes shown as U+FFFD
        json.dumps(report.to_json(), ensure_ascii=False).encode("utf-8")
    # the CLI prints one valid JSON document, never a UnicodeEncodeError
    done = subprocess.run(cli(ws_path, "import", str(folder), "--json"), cwd=ROOT, env=child_env(),
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
    doc = json.loads(done.stdout)
    assert doc["skipped"] == 1 and len(doc["errors"]) == 2


def test_labels_csv_with_unknown_classes_and_missing_files(tmp_path, workspace):
    """Unknown classes are stored (training skips them, saying how many); missing files are listed; the rest applies."""
    pytest.importorskip("torch")
    from tests.core.conftest import tiny_model

    folder = tmp_path / "photos"
    write_dataset(folder, n=6)
    tiny_model(workspace)  # a model with fixed classes neg/pos
    csv_path = folder / "extra.csv"
    csv_path.write_text("path,label\nimg000.png,neg\nimg001.png,melanoma\nnot-there.png,pos\nimg002.png,\n")
    report = import_paths(workspace, [folder], csv_path)
    assert report.imported == 6
    reasons = {e.path: e.reason for e in report.errors}
    assert any("not-there.png" in p and "no imported image at this path" in r for p, r in reasons.items())
    assert any("empty label" in r for r in reasons.values())
    labels = {Path(workspace.image(i).path).name if hasattr(workspace, "image") else i: l.classes
              for i, l in workspace.current_labels().items()}
    assert ("melanoma",) in labels.values()  # stored as given, never silently dropped
    assert "melanoma" in workspace.classes()


def test_tampered_or_truncated_checkpoint_is_refused_with_its_hash(workspace):
    pytest.importorskip("torch")
    from core.models import versions
    from core.models.checkpoint import file_sha256, load_checkpoint
    from tests.core.conftest import tiny_model

    v1 = tiny_model(workspace)
    path = Path(v1.path)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # truncated
    actual = file_sha256(path)
    versions._cache.clear()
    with pytest.raises(ModelError, match=actual[:16]) as info:
        versions.load_version(workspace)
    assert "refusing to load" in str(info.value)
    tampered = bytearray(good)
    tampered[len(tampered) // 3] ^= 0xFF
    path.write_bytes(bytes(tampered))
    with pytest.raises(ModelError, match=file_sha256(path)[:16]):
        load_checkpoint(path, v1.file_hash)
    # a pickle that would run code is refused by weights_only loading, hash or not
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path.write_bytes(pickle.dumps({"format": "loupe-model", "x": Evil()}))
    with pytest.raises(ModelError, match="cannot be loaded safely"):
        load_checkpoint(path)
    path.write_bytes(good)
    versions._cache.clear()
    assert versions.load_version(workspace).version.file_hash == v1.file_hash
