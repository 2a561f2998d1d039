"""Workspace storage guarantees: pragmas, durability, migrations, audit chain, busy lock."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import sys

import pytest

from core.errors import WorkspaceBusy, WorkspaceError
from core.types import ImageRecord, Prediction
from core.workspace import Workspace, schema


def record(n: int) -> ImageRecord:
    return ImageRecord(key=f"1.2.3.{n}", path=f"/data/img{n}.dcm", kind="dicom", modality="DX",
                       rows=8, columns=8, patient_id="P", study_uid="S", series_uid="SE")


def test_wal_foreign_keys_and_full_sync(workspace):
    db = workspace._pool.get()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000
    raw = sqlite3.connect(workspace.path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file
    raw.close()
    with pytest.raises(WorkspaceError, match="FOREIGN KEY"):
        workspace.add_predictions("v1", [Prediction("nosuchimage1", "v1", {"a": 1.0}, "a")])
    assert workspace.integrity_check()


def test_label_is_committed_when_add_label_returns(workspace):
    (image_id,), _ = workspace.add_images([record(1)])
    label = workspace.add_label(image_id, ["a"], "ann")
    other = Workspace.open(workspace.path)
    try:
        assert other.current_label(image_id) == label
    finally:
        other.close()
    raw = sqlite3.connect(workspace.path)
    assert raw.execute("SELECT classes, annotator FROM labels").fetchall() == [('["a"]', "ann")]
    raw.close()


def _label_then_die(path: str, image_id: str) -> None:
    ws = Workspace.open(path)
    ws.add_label(image_id, ["survivor"], "killed")
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no atexit, no flush


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_label_survives_a_kill_right_after_the_call(workspace):
    (image_id,), _ = workspace.add_images([record(1)])
    proc = multiprocessing.get_context("spawn").Process(target=_label_then_die, args=(str(workspace.path), image_id))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    assert workspace.current_label(image_id).classes == ("survivor",)


# --- migrations ----------------------------------------------------------------------------


def _v2_add_review_flag(db):
    db.execute("ALTER TABLE images ADD COLUMN reviewed INTEGER NOT NULL DEFAULT 0")
    db.execute("CREATE TABLE review_notes (image_id TEXT REFERENCES images(id), note TEXT)")


def test_opening_an_older_file_migrates_it(tmp_path, monkeypatch):
    path = tmp_path / "ws.sqlite"
    with Workspace.open(path) as ws:
        base = len(schema.MIGRATIONS)
        assert ws.schema_version == base
        (image_id,), _ = ws.add_images([record(1)])
        ws.add_label(image_id, ["a"], "ann")

    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, _v2_add_review_flag])
    with Workspace.open(path) as ws:
        assert ws.schema_version == base + 1
        assert ws.current_label(image_id).classes == ("a",)
        assert ws.verify_audit() == (True, None)
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT reviewed FROM images").fetchall() == [(0,)]
    assert raw.execute("PRAGMA user_version").fetchone()[0] == base + 1
    raw.close()


def test_a_failing_migration_changes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "ws.sqlite"
    Workspace.open(path).close()

    def broken(db):
        db.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("migration bug")

    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, broken])
    with pytest.raises(RuntimeError, match="migration bug"):
        Workspace.open(path)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == len(schema.MIGRATIONS) - 1
    assert raw.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half_done'").fetchone()[0] == 0
    raw.close()


def test_a_newer_file_is_refused(tmp_path):
    path = tmp_path / "ws.sqlite"
    Workspace.open(path).close()
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(WorkspaceError, match=rf"newer version of Loupe \(schema 99; .* up to {len(schema.MIGRATIONS)}\)"):
        Workspace.open(path)


def test_a_file_that_is_not_a_workspace_is_refused(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_bytes(b"this is not SQLite at all, just some text" * 100)
    with pytest.raises(WorkspaceError, match="not a Loupe workspace"):
        Workspace.open(path)


# --- audit chain ---------------------------------------------------------------------------


def _audited(workspace) -> list[int]:
    (image_id,), _ = workspace.add_images([record(1)])
    workspace.add_label(image_id, ["a"], "ann1")
    workspace.add_label(image_id, ["b"], "ann2")
    workspace.audit("ann2", "export.csv", "/tmp/out.csv", {"rows": 1, "deidentified": True})
    return [entry["id"] for entry in workspace.audit_log()]


def test_audit_chain_verifies(workspace):
    assert workspace.verify_audit() == (True, None)  # empty log
    ids = _audited(workspace)
    assert ids == [4, 3, 2, 1]
    log = workspace.audit_log(limit=2)
    assert [e["action"] for e in log] == ["export.csv", "label.add"]
    assert log[0]["detail"] == {"rows": 1, "deidentified": True} and log[0]["prev_hash"] == log[1]["hash"]
    assert workspace.verify_audit() == (True, None)


def _tamper(path, *statements):
    raw = sqlite3.connect(path)
    raw.execute("DROP TRIGGER audit_no_update")
    raw.execute("DROP TRIGGER audit_no_delete")
    for statement in statements:
        raw.execute(statement)
    raw.commit()
    raw.close()


def test_audit_detects_an_edited_entry(workspace):
    _audited(workspace)
    _tamper(workspace.path, """UPDATE audit_log SET detail = '{"classes":["z"]}' WHERE id = 2""")
    assert workspace.verify_audit() == (False, 2)


def test_audit_detects_a_rehashed_entry_and_a_deleted_one(workspace):
    _audited(workspace)
    _tamper(workspace.path, "UPDATE audit_log SET actor = 'mallory', hash = 'f00d' WHERE id = 3")
    assert workspace.verify_audit() == (False, 3)


def test_audit_detects_a_deleted_entry(workspace):
    _audited(workspace)
    _tamper(workspace.path, "DELETE FROM audit_log WHERE id = 2")
    assert workspace.verify_audit() == (False, 3)


def test_the_audit_log_refuses_edits_through_sql(workspace):
    _audited(workspace)
    raw = sqlite3.connect(workspace.path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute("UPDATE audit_log SET actor = 'x'")
    raw.close()


# --- locking -------------------------------------------------------------------------------


def test_workspace_busy_when_another_writer_holds_the_lock(tmp_path):
    path = tmp_path / "ws.sqlite"
    ws = Workspace.open(path, timeout=0.2)
    (image_id,), _ = ws.add_images([record(1)])
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(WorkspaceBusy, match="the workspace is busy: another Loupe process is writing; try again"):
            ws.add_label(image_id, ["a"], "ann")
        assert ws.image(image_id).id == image_id  # readers are not blocked (WAL)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert ws.add_label(image_id, ["a"], "ann").classes == ("a",)
    assert ws.label_count() == 1
    ws.close()
