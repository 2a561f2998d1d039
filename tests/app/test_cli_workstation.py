"""The workstation's command-line additions: relative workspace paths (training included), model create
without --arch, findings and settings (contract: ../shared/CLI.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.app.cli_helpers import run
from tests.core.conftest import write_dataset

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("single_thread")


def _loupe(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    """Run the real `loupe` in its own process from ``cwd`` (this worktree's code first on the path)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "app.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_relative_workspace_path_works_for_every_command_training_included(tmp_path):
    work = tmp_path / "reader"
    labels = write_dataset(work / "photos", n=16, splits=["train"] * 10 + ["val"] * 4 + ["test"] * 2)
    done = _loupe(work, "--workspace", "rel.sqlite", "import", "photos", "--labels", str(labels.relative_to(work)),
                  "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["imported"] == 16
    done = _loupe(work, "--workspace", "rel.sqlite", "model", "create", "--arch", "resnet18", "--classes", "neg,pos",
                  "--pretrained", "none", "--input-size", "32", "--json")
    assert done.returncode == 0, done.stderr
    done = _loupe(work, "--workspace", "rel.sqlite", "train", "--epochs", "1", "--batch-size", "8", "--device",
                  "cpu", "--json")
    assert done.returncode == 0, done.stderr  # before the fix: "no model is active" (the child opened another file)
    assert json.loads(done.stdout)["version"] == "v2"
    assert (work / "rel.sqlite").is_file()
    assert not (ROOT / "rel.sqlite").exists()  # the child did not create a second workspace in its own folder
    done = _loupe(work, "--workspace", "rel.sqlite", "models", "--json")
    assert sorted(r["version"] for r in json.loads(done.stdout)) == ["v1", "v2"]
