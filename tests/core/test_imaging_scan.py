"""Import scan (one issue per bad file, never raising) and the decoded-frame cache."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from PIL import Image

from core.errors import Cancelled, ImageReadError
from core.imaging import FRAME_CACHE, read_image_header, render, scan_paths
from core.imaging.cache import FrameCache, frame_key
from core.progress import CancelToken
from tests.core.dicom_factory import write_dicom, write_text_file

IMG = np.array([[0, 100], [200, 300]], dtype=np.uint16)


@pytest.fixture
def mixed_folder(tmp_path):
    root = tmp_path / "import"
    sub = root / "sub"
    sub.mkdir(parents=True)
    write_dicom(root / "good.dcm", IMG, sop_uid="1.2.3.100")
    write_dicom(root / "nopix.dcm", pixel_data=False)
    write_dicom(root / "trunc.dcm", np.zeros((32, 32), np.uint16), truncate=50)
    write_dicom(root / "unknown_ts.dcm", IMG, transfer_syntax="1.2.3.4.5.6.7")
    write_text_file(root / "notes.bin", "hello, I am text\n")
    write_text_file(root / "labels.csv", "path,label\n")
    write_text_file(root / "README.md")
    write_text_file(root / "DICOMDIR", "x")
    write_text_file(root / ".hidden", "x")
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(sub / "photo.png")
    write_dicom(sub / "good2.dcm", IMG, sop_uid="1.2.3.101", preamble=False)
    return root


def test_scan_reports_each_bad_file_and_imports_good_ones(mixed_folder):
    result = scan_paths([mixed_folder])
    assert sorted(os.path.basename(r.path) for r in result.records) == ["good.dcm", "good2.dcm", "photo.png"]
    reasons = {os.path.basename(e.path): e.reason for e in result.errors}
    assert set(reasons) == {"nopix.dcm", "trunc.dcm", "unknown_ts.dcm", "notes.bin"}
    assert reasons["nopix.dcm"].startswith("no pixel data")
    assert reasons["trunc.dcm"].startswith("file is truncated: the pixel data stops at ")
    assert reasons["unknown_ts.dcm"] == "unknown transfer syntax 1.2.3.4.5.6.7: cannot decode its pixels"
    assert reasons["notes.bin"].startswith("not an image")


def test_scan_is_deterministic_and_reports_progress(mixed_folder):
    events = []
    first = scan_paths([mixed_folder], progress=events.append)
    second = scan_paths([str(mixed_folder)])
    assert [r.path for r in first.records] == [r.path for r in second.records]
    assert [e.path for e in first.errors] == [e.path for e in second.errors]
    assert events[-1].done == events[-1].total == 7


def test_scan_cancel(mixed_folder):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        scan_paths([mixed_folder], cancel=token)


def test_scan_single_file_and_missing_path(mixed_folder, tmp_path):
    result = scan_paths([mixed_folder / "good.dcm", tmp_path / "nope"])
    assert [r.key for r in result.records] == ["1.2.3.100"]
    assert [e.reason for e in result.errors] == ["no such file or folder"]


def test_symlink_loop_reported_once(tmp_path):
    root = tmp_path / "loop"
    (root / "a").mkdir(parents=True)
    write_dicom(root / "a" / "x.dcm", IMG)
    os.symlink(root, root / "a" / "back")
    result = scan_paths([root])
    assert len(result.records) == 1
    assert len(result.errors) == 1 and "loops" in result.errors[0].reason


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")
def test_unreadable_folder_reported(tmp_path):
    root = tmp_path / "perm"
    locked = root / "locked"
    locked.mkdir(parents=True)
    write_dicom(root / "ok.dcm", IMG)
    locked.chmod(0)
    try:
        result = scan_paths([root])
    finally:
        locked.chmod(0o755)
    assert len(result.records) == 1
    assert [e.reason for e in result.errors] == ["cannot open folder: permission denied"]


def test_text_file_is_not_an_image(tmp_path):
    with pytest.raises(ImageReadError, match="not an image"):
        read_image_header(write_text_file(tmp_path / "a.dcm", "just text pretending to be DICOM\n"))


def test_cache_lru_by_bytes():
    cache = FrameCache(max_bytes=3000)
    for i in range(3):
        cache.put(i, np.zeros(1000, np.uint8))
    assert len(cache) == 3 and cache.nbytes == 3000
    cache.get(0)  # 0 becomes most recent; 1 is now the oldest
    cache.put(3, np.zeros(1000, np.uint8))
    assert 1 not in cache and 0 in cache and 3 in cache
    cache.put("big", np.zeros(5000, np.uint8))  # larger than the budget: returned, not kept
    assert "big" not in cache and cache.nbytes <= 3000
    with pytest.raises(ValueError):
        cache.get(0)[0] = 1  # cached arrays are read-only


def test_cache_threads():
    cache = FrameCache(max_bytes=50_000)

    def work(t):
        for i in range(200):
            cache.get_or_load((t, i % 30), lambda: np.zeros(1000, np.uint8))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert cache.nbytes <= 50_000 and cache.nbytes == len(cache) * 1000


def test_cache_key_changes_when_file_changes(tmp_path):
    path = write_dicom(tmp_path / "c.dcm", IMG)
    before = render(path).copy()
    key = frame_key(path)
    write_dicom(path, IMG[::-1].copy())
    os.utime(path, ns=(key[1] + 10**9, key[1] + 10**9))
    assert frame_key(path) != key
    assert np.array_equal(render(path), before[::-1])
    assert len(FRAME_CACHE) >= 1


def test_permission_denied_folder_simulated(tmp_path, monkeypatch):
    # Root ignores permissions, so simulate the error os.scandir raises.
    root = tmp_path / "perm2"
    locked = root / "locked"
    locked.mkdir(parents=True)
    write_dicom(root / "ok.dcm", IMG)
    write_dicom(locked / "hidden_from_us.dcm", IMG)
    real_scandir = os.scandir

    def scandir(path):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result = scan_paths([root])
    assert [os.path.basename(r.path) for r in result.records] == ["ok.dcm"]
    assert [(e.path, e.reason) for e in result.errors] == [(str(locked), "cannot open folder: permission denied")]
