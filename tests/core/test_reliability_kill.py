"""Crash safety: SIGKILL the CLI (and a labelling process) mid-write, then check nothing acknowledged was lost.

Every kill is a real ``kill -9`` of a real process: a tight labelling loop on the
Workspace API, ``loupe label``, ``loupe import`` of a folder and ``loupe train``
(with its training child, the whole process group). After each kill the
workspace is reopened and must pass :func:`check_workspace`: SQLite integrity,
an intact audit chain, every acknowledged label present, and every registered
model version (the active one above all) loadable with its recorded hash.

A label counts as *acknowledged* only once the child printed it: the labelling
loop prints after ``add_label`` returned, ``loupe label --json`` prints after
its commit. The helpers here are reused by ``bench/soak.py`` for the long run.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

from core.workspace import Workspace

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and process groups are POSIX")

#: A child that labels random images as fast as it can and prints each label once add_label returned.
LABEL_LOOP = r"""
import json, random, sys
from core.workspace import Workspace
ws = Workspace.open(sys.argv[1])
ids = sorted(r.id for r in ws.images())
annotator, rng = sys.argv[2], random.Random(int(sys.argv[3]))
print(json.dumps({"ready": True}), flush=True)
while True:
    image, cls = rng.choice(ids), rng.choice(["neg", "pos"])
    label = ws.add_label(image, [cls], annotator, note="x" * rng.randrange(0, 3000))
    print(json.dumps({"label_id": label.id, "id": image, "classes": [cls], "annotator": annotator}), flush=True)
"""


@dataclass(frozen=True)
class Ack:
    """A label a child process reported as saved."""

    label_id: int
    image_id: str
    classes: tuple[str, ...]
    annotator: str


@dataclass
class KillResult:
    """What happened to one child: whether it was killed before it ended, and what it acknowledged."""

    killed: bool
    returncode: Optional[int]
    acks: list[Ack] = field(default_factory=list)
    stdout: str = ""
    stderr: str = ""


def child_env() -> dict[str, str]:
    """Environment for child processes: repo on the path, one compute thread (2-core CI machines)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    return env


def cli(workspace: Path, *args: str) -> list[str]:
    """The argv of ``loupe --workspace W ARGS...`` run with this interpreter."""
    return [sys.executable, "-m", "app.cli", "--workspace", str(workspace), *args]


def run_and_kill(cmd: list[str], delay: float, timeout: float = 120.0, after_output: bool = False,
                 after_lines: int = 1) -> KillResult:
    """Start ``cmd`` in its own process group, SIGKILL the whole group after ``delay`` seconds.

    With ``after_output`` the delay counts from the child's ``after_lines``-th
    output line (its start-up time varies a lot on a loaded machine), else from the start.
    Returns a KillResult; ``killed`` is False when the command ended on its own
    first. stdout is drained after the kill, so every line the child wrote
    before it died is kept (a cut-off last line is dropped by the parsers).
    """
    proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    chunks: dict[str, list[bytes]] = {"out": [], "err": []}

    def drain(stream, key: str) -> None:
        for block in iter(lambda: stream.read1(65536), b""):
            chunks[key].append(block)

    readers = [threading.Thread(target=drain, args=(proc.stdout, "out"), daemon=True),
               threading.Thread(target=drain, args=(proc.stderr, "err"), daemon=True)]
    for reader in readers:
        reader.start()
    killed = False
    if after_output:
        ready = time.monotonic() + timeout
        while (b"".join(chunks["out"]).count(b"\n") < after_lines and proc.poll() is None
               and time.monotonic() < ready):
            time.sleep(0.02)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the CLI and any training child it started
            killed = True
        except ProcessLookupError:
            pass
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:  # pragma: no cover - a hung child is itself a failure
        os.killpg(proc.pid, signal.SIGKILL)
        code = proc.wait()
    for reader in readers:
        reader.join(10)
    return KillResult(killed=killed and code == -signal.SIGKILL, returncode=code,
                      stdout=b"".join(chunks["out"]).decode("utf-8", "replace"),
                      stderr=b"".join(chunks["err"]).decode("utf-8", "replace"))


def parse_loop_acks(stdout: str) -> list[Ack]:
    """Acknowledged labels from :data:`LABEL_LOOP`'s output (complete lines only)."""
    acks = []
    for line in stdout.splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # cut off by the kill: never acknowledged
        doc = json.loads(line)
        if "label_id" in doc:
            acks.append(Ack(doc["label_id"], doc["id"], tuple(doc["classes"]), doc["annotator"]))
    return acks


def parse_cli_label_ack(stdout: str) -> list[Ack]:
    """The label ``loupe label --json`` acknowledged, or [] when it died before printing all of it."""
    if not stdout.endswith("\n"):
        return []
    doc = json.loads(stdout)
    return [Ack(doc["label_id"], doc["id"], tuple(doc["classes"]), doc["annotator"])]


def label_loop(workspace: Path, annotator: str, delay: float, seed: int, after_lines: int = 1) -> KillResult:
    """Run :data:`LABEL_LOOP` on ``workspace`` and kill it ``delay`` seconds after its ``after_lines``-th line."""
    result = run_and_kill([sys.executable, "-c", LABEL_LOOP, str(workspace), annotator, str(seed)], delay,
                          after_output=True, after_lines=after_lines)
    result.acks = parse_loop_acks(result.stdout)
    return result


def cli_label(workspace: Path, image_id: str, cls: str, annotator: str, delay: float) -> KillResult:
    """``loupe label IMAGE --class CLS --annotator A --json``, killed after ``delay`` seconds unless done."""
    result = run_and_kill(cli(workspace, "label", image_id, "--class", cls, "--annotator", annotator, "--json"),
                          delay)
    result.acks = parse_cli_label_ack(result.stdout)
    if not result.killed:
        assert result.returncode == 0, result.stderr
        assert result.acks, result.stdout
    return result


def check_workspace(path: Path, acks: list[Ack]) -> dict:
    """Reopen the workspace after a crash and check every guarantee.

    Returns ``{"lost": [acks missing], "versions": n, "orphans": [temporary
    model files left by a kill]}``; raises AssertionError when the file fails
    its integrity check, the audit chain is broken, a registered version's file
    is not complete and intact, or a temporary file is registered as a version.
    """
    from core.models.checkpoint import load_checkpoint
    from core.models.versions import models_dir

    with Workspace.open(path) as ws:
        assert ws.integrity_check(), f"{path} failed PRAGMA integrity_check after a kill"
        assert ws.verify_audit() == (True, None), f"{path}: audit chain broken after a kill"
        lost = []
        histories: dict[str, set] = {}
        for ack in acks:
            if ack.image_id not in histories:
                histories[ack.image_id] = {(l.id, l.classes, l.annotator) for l in ws.label_history(ack.image_id)}
            if (ack.label_id, ack.classes, ack.annotator) not in histories[ack.image_id]:
                lost.append(ack)
        versions = ws.models()
        active = [v for v in versions if v.status == "active"]
        assert len(active) <= 1, f"{len(active)} active model versions"
        for version in versions:
            assert not version.path.endswith(".tmp"), f"temporary file registered as {version.version}"
            # weights_only load with the registered hash: a half-written file is refused here
            payload = load_checkpoint(version.path, version.file_hash)
            assert payload["classes"] == list(version.classes)
    folder = models_dir(path)
    orphans = sorted(p.name for p in folder.glob("*.tmp")) if folder.exists() else []
    return {"lost": lost, "versions": len(versions), "orphans": orphans}


def make_workspace(folder: Path, n_images: int = 24, model: bool = False) -> Path:
    """A workspace with ``n_images`` synthetic PNGs imported with labels; with ``model``, a tiny active resnet18."""
    from core.importer import import_paths
    from tests.core.conftest import write_dataset

    csv_path = write_dataset(folder / "photos", n=n_images)
    path = folder / "ws.sqlite"
    with Workspace.open(path) as ws:
        report = import_paths(ws, [folder / "photos"], csv_path)
        assert report.imported == n_images and not report.errors
        if model:
            import torch

            from core.models.versions import create_version

            torch.manual_seed(0)
            create_version(ws, "resnet18", ["neg", "pos"], pretrained="none", input_size=32)
    return path


def _rng(request) -> random.Random:
    """A random source whose seed is printed, so a failing kill timing can be replayed (LOUPE_KILL_SEED)."""
    seed = int(os.environ.get("LOUPE_KILL_SEED", random.randrange(1 << 30)))
    print(f"{request.node.name}: LOUPE_KILL_SEED={seed}")
    return random.Random(seed)


# --- the tests ---------------------------------------------------------------------------------


def test_label_loop_killed_repeatedly_loses_no_acknowledged_label(tmp_path, request):
    rng = _rng(request)
    path = make_workspace(tmp_path, n_images=8)
    acks: list[Ack] = []
    kills = 0
    for round_ in range(6):
        # counted from the child's "ready": kill right at its first writes or well into the stream
        result = label_loop(path, f"ann{round_ % 2}", rng.uniform(0.0, 1.5), rng.randrange(1 << 30))
        kills += result.killed
        acks += result.acks
        state = check_workspace(path, acks)
        assert state["lost"] == [], f"round {round_}: acknowledged labels lost: {state['lost'][:5]}"
    assert kills >= 5
    assert len(acks) > 0


def test_two_label_loops_killed_at_once_lose_nothing(tmp_path, request):
    """Two annotators writing concurrently, both killed mid-stream: no lost update, linear audit chain."""
    rng = _rng(request)
    path = make_workspace(tmp_path, n_images=4)
    results: list[KillResult] = []
    delay = rng.uniform(0.5, 1.5)
    # the kill clock starts once each writer saved its first label: on a loaded CI machine one writer's
    # start-up can otherwise eat the whole delay while the other holds the write lock
    threads = [threading.Thread(target=lambda a=a: results.append(label_loop(path, a, delay, rng.randrange(99),
                                                                             after_lines=2)))
               for a in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    acks = [a for r in results for a in r.acks]
    for r in results:  # a writer that died of a "database is locked" error is a bug, not a kill
        assert r.killed, f"writer ended on its own ({r.returncode}): {r.stderr[-2000:]}"
    assert {a.annotator for a in acks} == {"alice", "bob"}
    assert check_workspace(path, acks)["lost"] == []
    assert len({a.label_id for a in acks}) == len(acks)  # no two writers got the same row


def test_cli_label_killed_at_random_times(tmp_path, request):
    rng = _rng(request)
    path = make_workspace(tmp_path, n_images=4)
    with Workspace.open(path) as ws:
        ids = sorted(r.id for r in ws.images())
    acks: list[Ack] = []
    outcomes = []
    # one run is left to finish; the others die somewhere between start-up and the final print
    for delay in (60.0, rng.uniform(0.5, 3.0), rng.uniform(2.0, 5.0)):
        result = cli_label(path, rng.choice(ids), rng.choice(["neg", "pos"]), "cli", delay)
        outcomes.append(result.killed)
        acks += result.acks
        assert check_workspace(path, acks)["lost"] == []
    assert outcomes[0] is False and len(acks) >= 1


def test_cli_import_killed_then_rerun_imports_everything(tmp_path, request):
    """A killed import leaves all or nothing of its batch; running it again completes it."""
    from tests.core.conftest import write_dataset

    rng = _rng(request)
    csv_path = write_dataset(tmp_path / "photos", n=40, seed=3)
    path = tmp_path / "ws.sqlite"
    result = run_and_kill(cli(path, "import", str(tmp_path / "photos"), "--labels", str(csv_path), "--json"),
                          rng.uniform(1.0, 5.0))
    if path.exists():
        check_workspace(path, [])
    result = run_and_kill(cli(path, "import", str(tmp_path / "photos"), "--labels", str(csv_path), "--json"), 120)
    assert not result.killed and result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["imported"] + report["skipped"] == 40 and report["errors"] == []
    with Workspace.open(path) as ws:
        assert len(ws.images()) == 40
        assert len(ws.current_labels()) == 40
    check_workspace(path, [])


def test_cli_train_killed_leaves_no_half_written_version(tmp_path, request):
    """Kill ``loupe train`` and its training child together; the active version still loads with its hash."""
    from core.models.versions import load_version

    rng = _rng(request)
    path = make_workspace(tmp_path, n_images=24, model=True)
    with Workspace.open(path) as ws:
        before = ws.active_model()
    result = run_and_kill(cli(path, "train", "--epochs", "1", "--device", "cpu", "--json"), rng.uniform(3.0, 9.0))
    state = check_workspace(path, [])
    with Workspace.open(path) as ws:
        active = ws.active_model()
        assert active is not None
        if result.killed:
            # killed before the registry row: v1 stays; after it: the new version is complete (checked above)
            assert active.version in (before.version, "v2")
        loaded = load_version(ws)
        assert loaded.version.file_hash == active.file_hash
    logger.info("train kill: killed=%s, versions=%d, orphans=%s", result.killed, state["versions"], state["orphans"])
