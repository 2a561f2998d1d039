"""`loupe train --nproc N`: the command launches the data-parallel ranks itself; cancel reaches every rank."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from core.importer import import_paths
from core.models.jobs import TrainingJob
from core.models.train_process import EXIT_CANCELLED
from tests.core.conftest import fast_config, model_files, tiny_model, write_dataset

pytestmark = pytest.mark.usefixtures("single_thread")


def _children_of(pid: int) -> set[int]:
    """Every live descendant process id of ``pid`` (from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, frontier = set(), {pid}
    while frontier:
        nxt = {p for p, pp in parents.items() if pp in frontier} - out
        out |= nxt
        frontier = nxt
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def ddp_workspace(workspace, tmp_path):
    folder = tmp_path / "photos"
    labels = write_dataset(folder, n=29, splits=["val"] * 8 + ["train"] * 21)
    import_paths(workspace, [folder], labels)
    tiny_model(workspace)
    return workspace


def test_loupe_train_nproc_2_trains_on_two_gloo_ranks_and_registers_one_version(ddp_workspace, capsys):
    from tests.app.cli_helpers import run

    ws = ddp_workspace
    code, out, err = run(capsys, "--workspace", str(ws.path), "train", "--nproc", "2", "--epochs", "1",
                         "--mode", "finetune", "--device", "cpu", "--batch-size", "5", "--json")
    assert code == 0, err[-3000:]
    result = json.loads(out)
    assert result["version"] == "v2"
    assert [m.version for m in ws.models()] == ["v2", "v1"]  # rank 0 alone registered
    assert model_files(ws) == ["v1.pt", "v2.pt"]
    record = ws.model("v2")
    assert record.params["train"]["mode"] == "finetune"


def test_cancel_reaches_every_rank(ddp_workspace):
    ws = ddp_workspace
    job = TrainingJob(ws.path, fast_config(mode="finetune", epochs=1000, patience=1000, batch_size=5), nproc=2)
    ranks: set[int] = set()
    deadline = time.monotonic() + 240
    events = []
    for event in job.events():
        events.append(event)
        if event["event"] == "step" and not ranks:
            ranks = {p for p in _children_of(job.pid)
                     if "core.models.train_process" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")}
            assert len(ranks) == 2, ranks
            job.cancel(grace=60)
        assert time.monotonic() < deadline, "two-rank training did not stop"
    assert job.wait(timeout=60) == EXIT_CANCELLED, events[-3:]
    assert events[-1]["event"] == "cancelled"
    for pid in ranks:
        end = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < end:
            time.sleep(0.2)
        assert not _alive(pid), f"rank process {pid} still running after cancel"
    assert [m.version for m in ws.models()] == ["v1"]  # nothing saved
