"""Typed training events: every kind the training process writes round-trips through from_json/to_json."""

from __future__ import annotations

from core.models import events as E


def test_each_kind_round_trips_and_keeps_its_fields():
    lines = [
        {"event": "start", "parent": "v1", "n_train": 10, "n_val": 4, "counts": {"a": 6, "b": 4}, "skipped": [],
         "device": "CPU", "device_reason": "no GPU", "rare_class": "b", "config": {"epochs": 3}},
        {"event": "decode", "done": 3, "total": 14},
        {"event": "embed", "message": "computing frozen-backbone embeddings"},
        {"event": "step", "epoch": 1, "step": 11, "steps": 20, "loss": 0.5},
        {"event": "oom", "batch_size": 8, "message": "out of memory: halving the batch size"},
        {"event": "epoch", "epoch": 2, "train_loss": 0.4, "val_loss": 0.6, "val_auc": 0.8, "batch_size": 16,
         "epochs": 3},
        {"event": "early_stop", "epoch": 3, "best_epoch": 1},
        {"event": "evaluate", "message": "calibrating"},
        {"event": "done", "version": "v2", "promoted": True, "reason": "better", "metrics": {"auc": 0.9},
         "seconds": 1.5, "device": "CPU"},
        {"event": "error", "message": "training needs two classes"},
        {"event": "cancelled", "message": "training cancelled; nothing was saved"},
    ]
    for line in lines:
        ev = E.from_json(line)
        assert type(ev).kind == line["event"] and not isinstance(ev, E.Unknown)
        assert ev.extra == {}, (line["event"], ev.extra)  # every field the process writes is a known field
        assert ev.to_json() == line
    done = E.from_json(lines[8])
    assert isinstance(done, E.Done) and done.version == "v2" and done.promoted is True
    assert E.from_json(lines[5]).val_auc == 0.8


def test_unknown_fields_and_kinds_are_kept_not_dropped():
    ev = E.from_json({"event": "epoch", "epoch": 1, "lr": 0.01})
    assert isinstance(ev, E.Epoch) and ev.extra == {"lr": 0.01} and ev.to_json()["lr"] == 0.01
    odd = E.from_json({"event": "warmup", "step": 3})
    assert isinstance(odd, E.Unknown) and odd.event == "warmup" and odd.to_json() == {"event": "warmup", "step": 3}


def test_events_are_frozen():
    import dataclasses

    import pytest

    ev = E.Error(message="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.message = "y"
