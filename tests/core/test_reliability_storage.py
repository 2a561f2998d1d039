"""Disk full and read-only workspaces: a plain message, nothing half-saved, nothing corrupted.

Where the tests may mount file systems (root on Linux), they use a real tiny
tmpfs: it fills up for real, and ``remount,ro`` makes it read-only even for
root. Elsewhere the disk-full path is driven through SQLite's own limit
(``PRAGMA max_page_count`` fails writes with SQLITE_FULL exactly like a full
disk) and the read-only path through file permissions (which root ignores, so
that variant skips under root).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import ModelError, WorkspaceError
from core.types import ImageRecord
from core.workspace import Workspace
from tests.core.test_reliability_kill import check_workspace, child_env, cli, ROOT


def records(n: int, start: int = 0) -> list[ImageRecord]:
    return [ImageRecord(key=f"1.2.826.{i}", path=f"/data/{i}.dcm", kind="dicom", modality="CR", rows=8, columns=8,
                        patient_id=f"P{i % 7}", study_uid=f"S{i}", series_uid=f"SE{i}")
            for i in range(start, start + n)]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def tmpfs(folder: Path, size: str):
    """Mount a tmpfs of ``size`` on ``folder`` (skips the test where mounting is not allowed)."""
    folder.mkdir(parents=True, exist_ok=True)
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root on Linux")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def remount(folder: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], check=True, capture_output=True)


def run_cli(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli(workspace, *args), cwd=ROOT, env=child_env(), capture_output=True, text=True,
                          timeout=120)


# --- disk full ---------------------------------------------------------------------------------


def test_sqlite_full_is_a_plain_error_and_rolls_back(workspace):
    """SQLITE_FULL (here from max_page_count) → WorkspaceError 'the disk is full', batch all-or-nothing."""
    ids, _ = workspace.add_images(records(3))
    label = workspace.add_label(ids[0], ["a"], "ann")
    db = workspace._pool.get()
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(WorkspaceError, match=r"^the disk is full: .*nothing was saved") as info:
        workspace.add_images(records(400, start=100))
    assert "OperationalError" not in str(info.value) and "database or disk" not in str(info.value)
    with pytest.raises(WorkspaceError, match="the disk is full"):
        workspace.add_label(ids[1], ["b" * 50_000], "ann", note="n" * 200_000)
    assert len(workspace.images()) == 3  # the failed batch left nothing behind
    assert workspace.current_label(ids[0]) == label and workspace.current_label(ids[1]) is None
    db.execute("PRAGMA max_page_count = 1073741823")  # space freed
    workspace.add_images(records(400, start=100))
    assert len(workspace.images()) == 403
    assert workspace.integrity_check() and workspace.verify_audit() == (True, None)


def test_labelling_until_a_real_disk_is_full_loses_nothing_acknowledged(tmp_path):
    with tmpfs(tmp_path / "small", "1m") as disk:
        path = disk / "ws.sqlite"
        ws = Workspace.open(path)
        ids, _ = ws.add_images(records(4))
        acked = []
        with pytest.raises(WorkspaceError, match=r"^the disk is full: .*nothing was saved"):
            for i in range(100_000):
                acked.append(ws.add_label(ids[i % 4], [f"c{i % 3}"], "ann", note="x" * 1500))
        assert len(acked) >= 2
        ws.close()
        remount(disk, "size=8m")  # the person frees space
        with Workspace.open(path) as ws:
            assert ws.integrity_check() and ws.verify_audit() == (True, None)
            stored = {l.id for i in ids for l in ws.label_history(i)}
            assert {l.id for l in acked} <= stored
            ws.add_label(ids[0], ["after"], "ann")  # writable again


def test_cli_on_a_full_disk_says_so_in_one_line(tmp_path):
    with tmpfs(tmp_path / "small", "400k") as disk:
        path = disk / "ws.sqlite"
        with Workspace.open(path) as ws:
            ids, _ = ws.add_images(records(2))
        filler = disk / "filler"
        with contextlib.suppress(OSError), open(filler, "wb") as fh:  # take every free byte
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
        done = run_cli(path, "label", ids[0], "--class", "pneumonia", "--annotator", "ann", "--json")
        assert done.returncode == 1, done.stdout + done.stderr
        assert done.stdout == ""
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("loupe: the disk is full"), done.stderr
        filler.unlink()
        state = check_workspace(path, [])
        assert state["lost"] == []


def test_model_save_on_a_full_disk_keeps_the_active_version(tmp_path):
    """resnet18 is ~45 MB: a 64 MB disk holds v1 but not v2; v1 stays active and intact, no temp file left."""
    pytest.importorskip("torch")
    from core.models.versions import create_version, load_version, models_dir

    with tmpfs(tmp_path / "small", "64m") as disk:
        path = disk / "ws.sqlite"
        with Workspace.open(path) as ws:
            v1 = create_version(ws, "resnet18", ["neg", "pos"], pretrained="none", input_size=32)
            with pytest.raises(ModelError, match=r"^the disk is full .*nothing was saved"):
                create_version(ws, "resnet18", ["neg", "pos"], pretrained="none", input_size=32)
            assert [m.version for m in ws.models()] == ["v1"]
            assert ws.active_model().version == "v1"
            assert sorted(os.listdir(models_dir(path))) == ["v1.pt"]
            assert load_version(ws).version.file_hash == v1.file_hash
        assert check_workspace(path, [])["versions"] == 1


# --- read-only ---------------------------------------------------------------------------------


def _labelled_workspace(path: Path) -> tuple[list[str], int]:
    with Workspace.open(path) as ws:
        ids, _ = ws.add_images(records(3))
        ws.add_label(ids[0], ["a"], "ann")
        ws.add_label(ids[1], ["b"], "ann")
        return ids, ws.label_count()


def _check_readonly(path: Path, ids: list[str], n_labels: int) -> None:
    before = sha(path)
    with Workspace.open(path) as ws:
        assert ws.label_count() == n_labels  # opens for reading
        assert ws.current_label(ids[0]).classes == ("a",)
        assert ws.integrity_check() and ws.verify_audit() == (True, None)
        with pytest.raises(WorkspaceError, match=r"is read-only .*nothing was saved"):
            ws.add_label(ids[2], ["c"], "ann")
        with pytest.raises(WorkspaceError, match="read-only"):
            ws.add_images(records(2, start=50))
    assert sha(path) == before


def test_workspace_on_a_read_only_disk_opens_for_reading(tmp_path):
    with tmpfs(tmp_path / "media", "4m") as disk:
        path = disk / "ws.sqlite"
        ids, n = _labelled_workspace(path)
        assert not Path(f"{path}-wal").exists()  # closed cleanly: only the main file is left
        remount(disk, "ro")
        _check_readonly(path, ids, n)
        listing = run_cli(path, "list", "--json")
        assert listing.returncode == 0, listing.stderr
        assert len(json.loads(listing.stdout)) == 3
        done = run_cli(path, "label", ids[2], "--class", "c", "--annotator", "ann", "--json")
        assert done.returncode == 1 and done.stdout == ""
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "read-only" in lines[0] and "Traceback" not in done.stderr


def test_read_only_file_and_folder_by_permissions(tmp_path):
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("root ignores file permissions; the read-only disk test covers this case")
    folder = tmp_path / "shared"
    folder.mkdir()
    path = folder / "ws.sqlite"
    ids, n = _labelled_workspace(path)
    path.chmod(0o444)
    folder.chmod(0o555)
    try:
        _check_readonly(path, ids, n)
    finally:
        folder.chmod(0o755)
        path.chmod(0o644)


def test_new_workspace_in_a_read_only_folder_is_a_plain_error(tmp_path):
    with tmpfs(tmp_path / "media", "1m") as disk:
        remount(disk, "ro")
        with pytest.raises(WorkspaceError) as info:
            Workspace.open(disk / "new" / "ws.sqlite")
        assert "Read-only file system" in str(info.value) or "read-only" in str(info.value)
