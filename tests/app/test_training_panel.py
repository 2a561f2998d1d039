"""TrainingController and TrainingPanel: scripted training jobs, the versions table, activate / roll back."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from app.training_controller import TrainingController
from app.widgets.training_panel import TrainingPanel
from core.types import ModelVersion
from core.workspace import Workspace

CPU_REASON = "no GPU available (no CUDA GPU found); using the CPU"


class FakeJob:
    """Yields scripted events; with ``gate`` it pauses after ``pause_after`` events until released or cancelled."""

    def __init__(self, events, returncode=0, pause_after=None):
        self._events = list(events)
        self._final = returncode
        self.returncode = None
        self.pause_after = pause_after
        self.gate = threading.Event()
        self.cancel_calls = []

    def events(self):
        for i, ev in enumerate(self._events):
            if self.pause_after is not None and i == self.pause_after:
                self.gate.wait(10)
                if self.cancel_calls:
                    yield {"event": "cancelled", "message": "training cancelled; nothing was saved"}
                    self.returncode = 3
                    return
            yield ev
        self.returncode = self._final

    def cancel(self, grace=30.0):
        self.cancel_calls.append(grace)
        self.gate.set()


def script(version="v2", promoted=True, reason="promoted: macro ROC-AUC 0.800 → 0.850 (noise ±0.010)"):
    events = [{"event": "start", "parent": "v1", "n_train": 20, "n_val": 4, "counts": [10, 10], "device": "CPU",
               "device_reason": CPU_REASON, "rare_class": "pos", "config": {"epochs": 2}},
              {"event": "decode", "done": 24, "total": 24}]
    for epoch in (1, 2):
        for step in (1, 2):
            events.append({"event": "step", "epoch": epoch, "step": step, "steps": 2, "loss": 0.7 - 0.1 * epoch})
        events.append({"event": "epoch", "epoch": epoch, "epochs": 2, "train_loss": 0.6 / epoch,
                       "val_loss": 0.65 / epoch, "val_auc": 0.7 + 0.1 * epoch, "batch_size": 8})
    events += [{"event": "evaluate", "message": "calibrating"},
               {"event": "done", "version": version, "promoted": promoted, "reason": reason, "metrics": {},
                "seconds": 3.0, "device": "CPU"}]
    return events


@pytest.fixture
def ws_path(tmp_path):
    """A workspace with v1 (active, created) and v2 (candidate with metrics)."""
    path = tmp_path / "ws.sqlite"
    with Workspace.open(path) as ws:
        ws.add_model(ModelVersion("v1", "resnet18", ("neg", "pos"), "/nowhere/v1.pt", status="active",
                                  reason="created (no pretrained weights)"))
        ws.add_model(ModelVersion("v2", "resnet18", ("neg", "pos"), "/nowhere/v2.pt", parent="v1",
                                  params={"rare_class": "pos"},
                                  metrics={"macro_auc": 0.8512, "per_class": {"pos": {"sensitivity": 0.9}}},
                                  reason="not promoted: pos sensitivity would drop"))
    return path


def make_panel(qtbot, ws_path, jobs, **kwargs):
    made = []

    def factory(path, config):
        job = jobs.pop(0)
        made.append((path, config, job))
        return job

    controller = TrainingController(job_factory=factory)
    panel = TrainingPanel(controller, ws_path, **kwargs)
    qtbot.addWidget(panel)
    qtbot.waitUntil(lambda: panel._versions_loaded, timeout=10000)  # the registry is read in the background
    return panel, controller, made


def test_a_run_shows_progress_curves_device_and_the_promotion_reason(qtbot, ws_path):
    panel, controller, made = make_panel(qtbot, ws_path, [FakeJob(script())])
    panel.mode.setCurrentText("finetune")
    panel.epochs_spin.setValue(2)
    finished, changed = [], []
    controller.finished.connect(lambda result, state: finished.append((result, state)))
    panel.model_changed.connect(changed.append)
    with qtbot.waitSignals([controller.finished, panel.model_changed], timeout=20000):
        assert panel.start()
    assert finished == [(made[0][2]._events[-1], "done")]
    assert changed == ["v2"]
    config = made[0][1]
    assert (config.mode, config.epochs, config.loss, config.sampler) == ("finetune", 2, "weighted", "none")
    assert len(panel.curves["step_loss"]) == 4
    assert panel.curves["train_loss"] == [(1.0, 0.6), (2.0, 0.3)]
    assert [p[1] for p in panel.curves["val_auc"]] == pytest.approx([0.8, 0.9])
    loss_lines = panel.loss_chart.series.values()
    assert [len(line.points) for line in loss_lines] == [4, 2, 2]
    assert len(panel.auc_chart.series["validation AUC"].points) == 2
    assert panel.progress.value() == panel.progress.maximum()
    assert panel.state == "done" and "Done" in panel.state_label.text()
    assert panel.device_label.text() == f"CPU: {CPU_REASON}"
    assert "v2 was promoted" in panel.decision_label.text()
    assert "macro ROC-AUC 0.800 → 0.850" in panel.decision_label.text()
    assert not controller.running and panel.start_button.isEnabled()


def test_a_candidate_that_is_not_promoted_says_why_and_keeps_the_model(qtbot, ws_path):
    reason = "not promoted: pos sensitivity would drop from 0.900 to 0.800"
    panel, controller, _ = make_panel(qtbot, ws_path, [FakeJob(script(promoted=False, reason=reason))])
    changed = []
    panel.model_changed.connect(changed.append)
    with qtbot.waitSignal(controller.finished, timeout=20000):
        panel.start()
    assert changed == []
    assert "kept as a candidate" in panel.decision_label.text() and reason in panel.decision_label.text()


def test_second_start_is_refused_while_running_and_cancel_reaches_the_job(qtbot, ws_path):
    job = FakeJob(script(), pause_after=5)  # pauses after the first epoch
    panel, controller, made = make_panel(qtbot, ws_path, [job, FakeJob(script())])
    assert panel.start()
    qtbot.waitUntil(lambda: len(panel.curves["train_loss"]) == 1, timeout=20000)
    assert controller.running and panel.state == "running"
    assert panel.progress.value() == 500  # epoch 1 of 2
    assert not panel.start_button.isEnabled() and panel.cancel_button.isEnabled()
    assert not panel.activate_button.isEnabled()
    with qtbot.waitSignal(controller.refused, timeout=1000):
        assert controller.start(ws_path, panel.config()) is False
    assert panel.start() is False
    assert len(made) == 1
    with qtbot.waitSignal(controller.finished, timeout=20000) as blocker:
        panel.cancel()
    assert job.cancel_calls
    assert blocker.args == [None, "cancelled"]
    assert panel.state == "cancelled" and "nothing was saved" in panel.state_label.text()
    assert not controller.running and panel.start_button.isEnabled()


def test_a_failed_run_shows_the_error_in_words(qtbot, ws_path):
    events = script()[:3] + [{"event": "error", "message": "only one class has labels: neg 24"}]
    panel, controller, _ = make_panel(qtbot, ws_path, [FakeJob(events, returncode=1)])
    with qtbot.waitSignal(controller.finished, timeout=20000) as blocker:
        panel.start()
    assert blocker.args == [None, "failed"]
    assert panel.state == "failed" and "only one class has labels" in panel.state_label.text()


def test_a_process_that_dies_silently_counts_as_failed(qtbot, ws_path):
    panel, controller, _ = make_panel(qtbot, ws_path, [FakeJob(script()[:2], returncode=-9)])
    with qtbot.waitSignal(controller.finished, timeout=20000) as blocker:
        panel.start()
    assert blocker.args[1] == "failed" and "exit code -9" in controller.message


def test_start_without_an_active_model_is_refused_before_any_process(qtbot, tmp_path):
    path = tmp_path / "empty.sqlite"
    Workspace.open(path).close()
    panel, controller, made = make_panel(qtbot, path, [FakeJob(script())])
    assert panel.start() is False
    assert made == [] and panel.state == "failed" and "no model is active" in panel.state_label.text()


def test_versions_table_lists_the_workspace_versions(qtbot, ws_path):
    panel, _, _ = make_panel(qtbot, ws_path, [])
    table = panel.table
    rows = {table.item(r, 0).text(): [table.item(r, c).text() for c in range(table.columnCount())]
            for r in range(table.rowCount())}
    assert set(rows) == {"v1", "v2"}
    assert rows["v1"][1] == "active" and rows["v2"][1] == "candidate"
    assert rows["v2"][2:5] == ["resnet18", "0.851", "pos: 0.900"]
    assert rows["v1"][3:5] == ["—", "—"]
    assert rows["v2"][6] == "not promoted: pos sensitivity would drop"
    with Workspace.open(ws_path) as ws:
        ws.add_model(ModelVersion("v3", "resnet18", ("neg", "pos"), "/nowhere/v3.pt", parent="v2"))
    with qtbot.waitSignal(panel.versions_loaded, timeout=10000):
        panel.refresh_button.click()
    assert table.rowCount() == 3


def _select(panel, version):
    for r in range(panel.table.rowCount()):
        if panel.table.item(r, 0).text() == version:
            panel.table.selectRow(r)
    assert panel.selected_version() == version


def test_activate_and_rollback_ask_for_a_reason_and_go_through_the_workspace(qtbot, ws_path, monkeypatch):
    from PySide6.QtWidgets import QInputDialog

    answers = [("v2 is better on the rare class", True), ("v2 misses subtle cases", True), ("", False)]
    monkeypatch.setattr(QInputDialog, "getText", staticmethod(lambda *a, **k: answers.pop(0)))
    panel, _, _ = make_panel(qtbot, ws_path, [], actor="dr.test")
    _select(panel, "v2")
    with qtbot.waitSignal(panel.model_changed, timeout=10000) as blocker:
        assert panel.activate_selected() == "v2"
    assert blocker.args == ["v2"]
    with Workspace.open(ws_path) as ws:
        assert ws.active_model().version == "v2"
        assert any(e["subject"] == "v2" and e["actor"] == "dr.test"
                   and e["detail"]["reason"] == "v2 is better on the rare class"
                   for e in ws.audit_log(action="model.activate"))
    with qtbot.waitSignal(panel.model_changed, timeout=10000) as blocker:
        assert panel.rollback() is True
    assert blocker.args == ["v1"]
    with Workspace.open(ws_path) as ws:
        assert ws.active_model().version == "v1"
        assert any(e["subject"] == "v1" and e["actor"] == "dr.test" for e in ws.audit_log(action="model.rollback"))
    assert panel.rollback() is False  # dialog cancelled: nothing happens
    with Workspace.open(ws_path) as ws:
        assert ws.active_model().version == "v1"


def _write_pngs(folder, n=24):
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = ["path,label"]
    for i in range(n):
        pixels = rng.integers(0, 60, (32, 32), dtype=np.uint8)
        if i % 2:
            y, x = rng.integers(2, 14, size=2)
            pixels[y:y + 16, x:x + 16] = 230
        Image.fromarray(pixels).save(folder / f"img{i:03d}.png")
        rows.append(f"img{i:03d}.png,{'pos' if i % 2 else 'neg'}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder / "labels.csv"


@pytest.mark.slow
def test_real_training_process_end_to_end(qtbot, tmp_path, monkeypatch):
    """A real tiny training process (resnet18 at 32 px, frozen, 2 epochs) reports done and registers a version."""
    import torch

    from core.importer import import_paths
    from core.models.versions import create_version

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = tmp_path / "real.sqlite"
    labels = _write_pngs(tmp_path / "images")
    torch.manual_seed(0)
    with Workspace.open(path) as ws:
        import_paths(ws, [tmp_path / "images"], labels_csv=labels)
        create_version(ws, "resnet18", ["neg", "pos"], pretrained="none", input_size=32)
    controller = TrainingController()
    panel = TrainingPanel(controller, path, config_defaults={"batch_size": 8, "n_boot": 20, "workers": 1})
    qtbot.addWidget(panel)
    panel.epochs_spin.setValue(2)
    panel.device.setCurrentText("cpu")
    kinds = []
    controller.event.connect(lambda ev: kinds.append(ev["event"]))
    with qtbot.waitSignal(controller.finished, timeout=120_000) as blocker:
        assert panel.start()
    result, state = blocker.args
    assert state == "done", controller.message
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("epoch") >= 1
    with Workspace.open(path) as ws:
        versions = {m.version for m in ws.models()}
    assert result["version"] in versions and len(versions) == 2
    qtbot.waitUntil(lambda: panel.table.rowCount() == 2, timeout=10000)
    assert panel.device_label.text().startswith("CPU: CPU requested")


def test_several_gpus_offer_one_rank_each_and_the_run_gets_them(qtbot, ws_path, monkeypatch):
    import app.widgets.training_panel as tp

    made = []

    def factory(path, config, nproc=1):
        made.append(nproc)
        return FakeJob(script())

    monkeypatch.setattr(tp, "gpu_count", lambda: 1)
    one = TrainingPanel(TrainingController(job_factory=factory), ws_path)
    qtbot.addWidget(one)
    assert not one.ranks.isVisibleTo(one)  # one GPU or none: nothing to choose
    monkeypatch.setattr(tp, "gpu_count", lambda: 4)
    panel = TrainingPanel(TrainingController(job_factory=factory), ws_path)
    qtbot.addWidget(panel)
    assert panel.ranks.isVisibleTo(panel) and panel.ranks.value() == 4 and panel.ranks.maximum() == 4
    panel.ranks.setValue(2)
    assert panel.start()
    assert made == [2]
    qtbot.waitUntil(lambda: not panel.controller.running, timeout=30000)
