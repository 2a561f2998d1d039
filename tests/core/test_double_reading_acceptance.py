"""Acceptance: two readers double-read 20 queued cases from two processes, 5 disagree, an adjudicator
settles them, training uses exactly the 20 truths, and the kappa `loupe readers` shows equals the hand value."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.types import QueueItem
from tests.core.conftest import fast_config, tiny_model, write_dataset

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _loupe(ws_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", "--workspace", str(ws_path), *args],
                          capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)


def test_double_reading_two_processes(workspace, tmp_path, single_thread):
    run_acceptance(workspace, tmp_path)


def run_acceptance(workspace, tmp_path) -> None:
    """The whole acceptance on ``workspace`` (SQLite here, PostgreSQL in test_workspace_pg)."""
    from core.importer import import_paths
    from core.models.data import labelled_set
    from core.models.training import train

    folder = tmp_path / "photos"
    write_dataset(folder, n=24)
    (folder / "labels.csv").unlink()  # the cases come unlabelled: the team labels them
    assert import_paths(workspace, [folder]).imported == 24
    refs = sorted(workspace.images(), key=lambda r: r.path)
    truth = {r.id: ("pos" if i % 2 else "neg") for i, r in enumerate(refs)}
    queued = [r.id for r in refs[:20]]
    workspace.add_classes(["neg", "pos"])
    for name, role in (("ann", "reader"), ("bob", "reader"), ("adj", "adjudicator")):
        workspace.add_reader(name, role)
    workspace.set_double_reading(True)
    workspace.replace_queue([QueueItem(image_id=i, score=1.0, rank=k, strategy="test") for k, i in enumerate(queued)])

    # bob disagrees on 5 cases: 3 true positives he calls neg, 2 true negatives he calls pos
    pos = [i for i in queued if truth[i] == "pos"]
    neg = [i for i in queued if truth[i] == "neg"]
    flipped = pos[:3] + neg[:2]
    bob = {i: ({"pos": "neg", "neg": "pos"}[truth[i]] if i in flipped else truth[i]) for i in queued}
    answers = {"ann": {i: truth[i] for i in queued}, "bob": bob}
    procs = []
    for name in ("ann", "bob"):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(answers[name]))
        procs.append(subprocess.Popen([sys.executable, "-m", "tests.core.double_reader", str(workspace.path), name,
                                       str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=_env(), cwd=REPO))
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [int(o[0]) for o in outs] == [20, 20]

    cases = workspace.case_reads()
    assert sorted(cases) == sorted(queued)
    assert all(len(c.reads) == 2 for c in cases.values())
    assert sorted(c.image_id for c in workspace.adjudication_queue()) == sorted(flipped)
    assert workspace.queue() == []  # every case read twice
    # before adjudication training would see only the 15 agreed truths
    assert sorted(labelled_set(workspace, ["neg", "pos"]).image_ids) == sorted(set(queued) - set(flipped))

    listed = json.loads(_loupe(workspace.path, "adjudicate", "--json").stdout)
    assert sorted(c["id"] for c in listed) == sorted(flipped)
    for image_id in flipped:
        result = _loupe(workspace.path, "--verbose", "adjudicate", image_id, "--class", truth[image_id],
                        "--reader", "adj", "--json")
        assert result.returncode == 0, result.stderr
    assert workspace.adjudication_queue() == []

    data = labelled_set(workspace, ["neg", "pos"])
    assert sorted(data.image_ids) == sorted(queued)
    assert {i: ["neg", "pos"][t] for i, t in zip(data.image_ids, data.targets.tolist())} == \
        {i: truth[i] for i in queued}
    tiny_model(workspace)
    events = []
    train(workspace, fast_config(), emit=events.append)
    start = next(e for e in events if e["event"] == "start")
    assert start["n_train"] + start["n_val"] == 20 and start["counts"]["neg"] + start["counts"]["pos"] == start["n_train"]

    # Hand: ann pos 10 (bob pos 7, neg 3), ann neg 10 (bob neg 8, pos 2): po = 15/20, pe = .5*.45 + .5*.55 = .5
    kappa_by_hand = (0.75 - 0.5) / (1 - 0.5)
    shown = json.loads(_loupe(workspace.path, "readers", "--json").stdout)
    assert shown["agreement"]["kappa"] == pytest.approx(kappa_by_hand)
    assert shown["agreement"]["n"] == 20
    lo, hi = shown["agreement"]["ci95"]
    assert lo < kappa_by_hand < hi
    assert shown["per_reader"]["bob"]["per_class"]["pos"]["sensitivity"] == pytest.approx(7 / 10)
    assert shown["per_reader"]["ann"]["per_class"]["pos"]["sensitivity"] == 1.0
    assert workspace.verify_audit() == (True, None)
