"""The training process: JSON events on stdout, cancel on stdin, exit codes, and DDP under torchrun."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.importer import import_paths
from core.models.checkpoint import file_sha256
from core.models.jobs import TrainingJob
from core.models.train_process import EXIT_CANCELLED, EXIT_FAILED, main
from tests.core.conftest import fast_config, model_files, tiny_model, write_dataset

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[2]


def _collect(job: TrainingJob, on_event=None, timeout: float = 180.0) -> list[dict]:
    events = []
    deadline = time.monotonic() + timeout
    for event in job.events():
        events.append(event)
        if on_event is not None:
            on_event(event)
        assert time.monotonic() < deadline, f"training process still running after {timeout} s"
    return events


def test_job_streams_events_and_registers_a_version(trainable):
    ws = trainable
    job = TrainingJob(ws.path, fast_config(epochs=2, patience=5))
    events = _collect(job)
    assert job.wait(timeout=60) == 0 and not job.cancelled
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds.count("epoch") == 2
    epochs = [e for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2] and all(e["epochs"] == 2 for e in epochs)
    done = events[-1]
    assert done == job.last_event and done["version"] == "v2"
    assert {"version", "promoted", "reason", "metrics", "seconds", "device"} <= set(done)
    record = ws.model("v2")  # the child's writes are visible to this process's workspace
    assert file_sha256(record.path) == record.file_hash
    assert record.status == ("active" if done["promoted"] else "candidate")


def test_job_cancel_stops_with_exit_3_and_saves_nothing(trainable):
    ws = trainable
    job = TrainingJob(ws.path, fast_config(mode="finetune", epochs=1000, patience=1000))
    asked = []

    def cancel_on_first_epoch(event):
        if event["event"] == "epoch" and not asked:
            asked.append(event)
            job.cancel(grace=60)

    events = _collect(job, cancel_on_first_epoch)
    assert job.wait(timeout=60) == EXIT_CANCELLED and job.cancelled
    assert asked, "training ended before it could be cancelled"
    assert events[-1]["event"] == "cancelled" and "nothing was saved" in events[-1]["message"]
    assert [e["event"] for e in events].count("epoch") < 5
    assert [m.version for m in ws.models()] == ["v1"]
    assert model_files(ws) == ["v1.pt"]
    job.cancel()  # cancelling a finished job is a no-op


def test_job_with_a_bad_config_reports_an_error_and_exits_1(trainable):
    job = TrainingJob(trainable.path, fast_config(mode="sideways"))
    events = _collect(job)
    assert job.wait(timeout=60) == EXIT_FAILED
    assert [e["event"] for e in events] == ["error"]
    assert "unknown training mode 'sideways'" in events[0]["message"]
    assert [m.version for m in trainable.models()] == ["v1"]


@pytest.mark.parametrize("config, message", [
    ('{"epochs": 1, "colour": "red"}', "colour"),
    ('{"epochs": ', "Expecting value"),
    ('{"epochs": 0}', "at least 1"),
])
def test_process_main_reports_bad_configs(trainable, capsys, config, message):
    code = main(["--workspace", str(trainable.path), "--config", config, "--no-stdin"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == EXIT_FAILED
    assert len(out) == 1
    event = json.loads(out[0])
    assert event["event"] == "error" and message in event["message"]


def test_process_main_without_a_model_fails_plainly(workspace, capsys):
    code = main(["--workspace", str(workspace.path), "--config", "{}", "--no-stdin"])
    event = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == EXIT_FAILED and event == {"event": "error", "message": event["message"]}
    assert "no model is active" in event["message"]


# --- distributed data parallel --------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_ddp_trains_and_rank0_alone_registers_one_version(workspace, tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip(f"torchrun not found beside {sys.executable}")
    folder = tmp_path / "photos"
    # 21 training images: an odd count, so the two ranks' shards only match if the engine pads them
    labels = write_dataset(folder, n=29, splits=["val"] * 8 + ["train"] * 21)
    import_paths(workspace, [folder], labels)
    tiny_model(workspace)

    config = fast_config(mode="gradual", epochs=1, batch_size=5)
    from dataclasses import asdict

    port = _free_port()
    cmd = [str(torchrun), "--nnodes", "1", "--nproc_per_node", "2", "--rdzv-backend", "c10d",
           "--rdzv-endpoint", f"127.0.0.1:{port}", "-m", "core.models.train_process",
           "--workspace", str(workspace.path), "--config", json.dumps(asdict(config)), "--no-stdin"]
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", OMP_NUM_THREADS="1")
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"DDP training hung: {(exc.stderr or b'')[-2000:]!r}")
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    kinds = [e["event"] for e in events]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert kinds.count("start") == 1 and kinds.count("done") == 1  # only rank 0 speaks
    assert kinds.count("epoch") == 1
    start = events[kinds.index("start")]
    assert start["n_train"] == 21 and start["n_val"] == 8 and start["device"] == "CPU"
    steps = {e["steps"] for e in events if e["event"] == "step"}
    assert steps == {2}  # 11 images per rank in batches of 5: 5 + 6 (a lone last image joins the batch before)
    done = events[kinds.index("done")]
    assert [m.version for m in workspace.models()] == ["v2", "v1"]
    assert done["version"] == "v2" and model_files(workspace) == ["v1.pt", "v2.pt"]
    record = workspace.model("v2")
    assert file_sha256(record.path) == record.file_hash and record.params["train"]["mode"] == "gradual"
