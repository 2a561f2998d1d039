"""The shared workspace on a real PostgreSQL server (a throwaway one started here, as 'postgres' when root).

Skipped, with the reason, when the server binaries or psycopg are missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import WorkspaceBusy, WorkspaceError
from core.types import ImageRecord, Prediction, QueueItem
from tests.core.pg_server import PgServer, unavailable

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(bool(unavailable()), reason=unavailable() or "n/a")


@pytest.fixture(scope="module")
def pg_server():
    server = PgServer().start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server, request, tmp_path, monkeypatch):
    """A fresh database on the server for each test; the local cache goes to tmp_path."""
    import psycopg

    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    admin = pg_server.url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    monkeypatch.setenv("LOUPE_CACHE_DIR", str(tmp_path / "cache"))  # for the CLI and training processes
    monkeypatch.setattr("core.workspace.workspace._cache_root", tmp_path / "cache")  # for this one
    return pg_server.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def pg_ws(pg_url):
    from core.workspace import Workspace

    ws = Workspace.open(pg_url)
    yield ws
    ws.close()


def _records(n):
    return [ImageRecord(key=f"sha256:{k:064x}", path=f"/data/img{k:03d}.png", kind="photo", modality="XC",
                        rows=8, columns=8, photometric="RGB") for k in range(n)]


def test_same_schema_rules_and_audit_chain(pg_ws, pg_url):
    import psycopg

    from core.workspace import Workspace
    from core.workspace import schema

    ws = pg_ws
    assert ws.shared and ws.schema_version == len(schema.MIGRATIONS)
    assert ws.location == pg_url and ws.path.suffix == ".pgref"
    ids, existing = ws.add_images(_records(3))
    assert len(ids) == 3 and ws.add_images(_records(3))[0] == []  # idempotent, as on SQLite
    ws.add_classes(["neg", "pos"])
    first = ws.add_label(ids[0], "pos", "ann")
    ws.add_label(ids[0], "neg", "bob")
    assert ws.current_label(ids[0]).classes == ("neg",)
    ws.undo_label(ids[0], "bob")
    assert ws.current_label(ids[0]).classes == ("pos",) and first.id == 1
    ws.set_setting("k", {"a": [1, 2]})
    assert ws.get_setting("k") == {"a": [1, 2]}
    ws.replace_queue([QueueItem(image_id=i, score=0.5, rank=k, strategy="t") for k, i in enumerate(ids)])
    assert [q.image_id for q in ws.queue()] == ids[1:]
    assert ws.verify_audit() == (True, None) and ws.integrity_check()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for sql in ("UPDATE labels SET annotator = 'x'", "DELETE FROM labels", "DELETE FROM audit_log"):
            with pytest.raises(psycopg.Error, match="append-only"):
                conn.execute(sql)
        # tampering with the chain (bypassing the trigger as the owner would) is detected
        conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_no_update")
        conn.execute("UPDATE audit_log SET actor = 'mallory' WHERE id = 2")
    assert ws.verify_audit()[0] is False
    with Workspace.open(ws.path) as again:  # the local .pgref opens the same server
        assert len(again.images()) == 3


def test_predictions_explanations_and_busy(pg_ws):
    ws = pg_ws
    ids, _ = ws.add_images(_records(2))
    ws.add_predictions("v1", [Prediction(image_id=i, version="v1", probs={"pos": 0.7}, predicted="pos") for i in ids])
    ws.add_predictions("v1", [Prediction(image_id=ids[0], version="v1", probs={"pos": 0.2}, predicted="neg")])
    assert ws.predictions("v1")[ids[0]].predicted == "neg"
    ws.put_explanation("key1", ids[0], "v1", "gradcam", "pos", {"a": 1}, b"\x00\xff", {"m": 2})
    ws.put_explanation("key1", ids[0], "v1", "gradcam", "pos", {"a": 1}, b"\x01", {"m": 3})
    got = ws.get_explanation("key1")
    assert got["data"] == b"\x01" and got["meta"] == {"m": 3}


def test_writer_waits_then_busy(pg_url):
    """A writer blocked longer than the timeout gets WorkspaceBusy; nothing half-written remains."""
    from core.workspace import Workspace

    with Workspace.open(pg_url) as holder, Workspace.open(pg_url, timeout=1.0) as other:
        ids, _ = holder.add_images(_records(1))
        with holder._pool.write():
            with pytest.raises(WorkspaceBusy):
                other.add_label(ids[0], "pos", "ann")
        assert other.label_count() == 0
        other.add_label(ids[0], "pos", "ann")
        assert holder.label_count() == 1


def test_one_training_at_a_time(pg_url):
    from core.workspace import Workspace

    with Workspace.open(pg_url) as a, Workspace.open(pg_url) as b:
        with a.training_lock():
            with pytest.raises(WorkspaceBusy, match="another workstation is training"):
                with b.training_lock():
                    pass
        with b.training_lock():
            pass


def test_model_files_in_the_database_cached_by_hash(pg_url, tmp_path, monkeypatch, single_thread):
    from core.models.versions import load_version
    from core.workspace import Workspace
    from tests.core.conftest import tiny_model

    with Workspace.open(pg_url) as ws:
        record = tiny_model(ws)
        digest = record.file_hash
    # another workstation: another cache folder, no model file on its disk
    monkeypatch.setattr("core.workspace.workspace._cache_root", tmp_path / "other-workstation")
    with Workspace.open(pg_url) as ws2:
        active = ws2.active_model()
        assert Path(active.path).name == f"{digest}.pt" and str(tmp_path / "other-workstation") in active.path
        loaded = load_version(ws2)
        assert loaded.classes == ("neg", "pos") and loaded.version.file_hash == digest


def test_bad_url_is_one_plain_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "LOUPE_CACHE_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "app.cli", "--workspace", "postgresql://nobody@127.0.0.1:1/none",
                        "list"], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert r.returncode == 1 and "could not be reached" in r.stderr and "Traceback" not in r.stderr


def test_double_reading_acceptance_on_postgresql(pg_ws, tmp_path, single_thread):
    from tests.core.test_double_reading_acceptance import run_acceptance

    run_acceptance(pg_ws, tmp_path)


def test_two_writers_and_a_training_lose_nothing(pg_ws, tmp_path, single_thread):
    """Two processes label while this one trains: every acknowledged label is there afterwards."""
    from core.importer import import_paths
    from core.models.training import train
    from tests.core.conftest import fast_config, tiny_model, write_dataset

    folder = tmp_path / "photos"
    labels = write_dataset(folder, n=24)
    assert import_paths(pg_ws, [folder], labels).imported == 24
    tiny_model(pg_ws)
    ids = [r.id for r in pg_ws.images()]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    script = ("import sys, json\nfrom core.workspace import Workspace\n"
              "ws = Workspace.open(sys.argv[1], timeout=60)\nids = json.loads(sys.argv[2])\nacked = []\n"
              "for k in range(30):\n    acked.append(ws.add_label(ids[k % len(ids)], 'pos' if k % 2 else 'neg', "
              "sys.argv[3]).id)\nprint(json.dumps(acked))\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(pg_ws.path), json.dumps(ids), name],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
             for name in ("ann", "bob")]
    result = train(pg_ws, fast_config())
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    acked = [i for out, _ in outs for i in json.loads(out)]
    assert len(acked) == 60 and len(set(acked)) == 60
    history = {label.id for image_id in ids for label in pg_ws.label_history(image_id)}
    assert set(acked) <= history and pg_ws.label_count() == 24 + 60
    assert result["version"] and pg_ws.verify_audit() == (True, None)
