"""Functions the window runs in background threads (``Runner.submit``); none touches a widget.

Each takes the workspace (thread-safe: one SQLite connection per thread) and
returns plain data for the UI thread. Torch is imported only inside the jobs
that need it, so the window appears before any model loads.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Optional

from core.progress import CancelToken
from core.worklist import WorklistRow, worklist_row, worklist_rows

logger = logging.getLogger(__name__)


def limit_torch_threads() -> None:
    """Leave one core to the UI thread: model work in this process uses the others (at least one)."""
    import torch

    wanted = max(1, (os.cpu_count() or 2) - 1)
    if torch.get_num_threads() > wanted:
        torch.set_num_threads(wanted)


def model_summary(workspace) -> Optional[dict]:
    """What the UI needs about the active model, read from the registry (no torch)."""
    active = workspace.active_model()
    if active is None:
        return None
    from core.models.fast_mode import reading_model
    from core.models.severity import severity_scale

    config = active.params.get("config", {})
    return {"version": active.version, "arch": active.arch, "classes": list(active.classes),
            "multilabel": config.get("head") == "multilabel", "thresholds": active.params.get("thresholds", {}),
            "metrics": active.metrics, "reason": active.reason,
            "severity_grades": severity_scale(workspace, int(config.get("severity_levels") or 0)),
            "reading": reading_model(workspace).to_json()}  # fast reading: which version predicts for the reader


def load_worklist(workspace) -> tuple[list[WorklistRow], Optional[dict]]:
    """Worklist rows with the active model's predictions, and the model summary."""
    return worklist_rows(workspace), model_summary(workspace)


@dataclass(frozen=True)
class ReviewState:
    """Everything the window shows about the workspace, read in one worker call."""

    rows: list
    model: Optional[dict]
    queue: list
    progress: object  # core.active.counters.LabellingProgress
    classes: list  # the model's classes, else the workspace's
    severity: tuple = ()  # the findings' severity grade names, mildest first (empty: no scale)


@dataclass(frozen=True)
class CommitResult:
    """What a label commit hands back: the stored label, its row and the queue still waiting
    (the counters are read in a second, cheaper-to-delay job: :func:`progress`)."""

    image_id: str
    label: object  # core.types.Label
    row: WorklistRow
    queue: list


def load_state(workspace) -> ReviewState:
    """Worklist rows, model summary, the queue still waiting and the counters (one consistent read)."""
    from core.active.counters import labelling_progress

    rows = worklist_rows(workspace)
    model = model_summary(workspace)
    classes = list(model["classes"]) if model else list(workspace.classes())
    return ReviewState(rows, model, workspace.queue(), labelling_progress(workspace, rows), classes,
                       tuple(workspace.findings().severity))


def queue_state(workspace) -> tuple[list, object]:
    """The queue still waiting and the counters (after a label, or another process's write)."""
    from core.active.counters import labelling_progress

    return workspace.queue(), labelling_progress(workspace)


def commit_label(workspace, image_id: str, classes: list[str], annotator: str, severity: Optional[int] = None,
                 note: str = "", flag_wrong: bool = False) -> CommitResult:
    """Write one confirmed label (committed before returning), then read back what it changed.

    The case leaves the queue by the workspace's own rule (a confirmed label), so
    every process sees the same queue. Raises what ``Workspace.add_label`` raises.
    """
    label = workspace.add_label(image_id, classes, annotator, severity=severity, note=note, flag_wrong=flag_wrong)
    return CommitResult(image_id, label, one_row(workspace, image_id), workspace.queue())


def undo_label(workspace, image_id: str, annotator: str) -> CommitResult:
    """Restore the image's previous label (an undo row), then read back what it changed."""
    label = workspace.undo_label(image_id, annotator)
    return CommitResult(image_id, label, one_row(workspace, image_id), workspace.queue())


def label_history(workspace, image_id: str, reader: str = "") -> tuple[str, list]:
    """(image id, the label rows ``reader`` may see, newest first: only their own under double reading)."""
    return image_id, workspace.visible_history(image_id, reader)


def progress(workspace, rows: Optional[list] = None):
    """The counters (:func:`core.active.counters.labelling_progress`); ``rows``: the worklist rows the window
    holds (kept current per commit), so a label does not cost a read of the whole worklist."""
    from core.active.counters import labelling_progress

    return labelling_progress(workspace, rows)


def queue_ids(workspace) -> list[str]:
    """The ids still waiting in the queue, in rank order (a cheap poll for other processes' labels)."""
    return [item.image_id for item in workspace.queue()]


def one_row(workspace, image_id: str) -> WorklistRow:
    """The worklist row of one image, freshly read (per-image queries: this runs after every label)."""
    return worklist_row(workspace, image_id)


def mark_damaged(workspace, image_id: str, reason: str) -> WorklistRow:
    """Record that the viewer found the image damaged (audited); returns its refreshed worklist row."""
    workspace.mark_damaged(image_id, reason, actor="viewer")
    return one_row(workspace, image_id)


def predict_all(workspace, progress=None, cancel: Optional[CancelToken] = None) -> str:
    """Predict every image with the active model (probabilities and embeddings cached per version), or with its
    gated fast reading copy when fast reading is on (predictions only; the queue's outputs stay the full model's).

    Reports Progress events through ``progress``; returns a one-line summary.
    """
    from core.active.loop import model_outputs
    from core.models.fast_mode import predict_pool, reading_model

    limit_torch_threads()
    if reading_model(workspace).on:  # fast reading: the pool is predicted by the gated INT8/distilled copy
        reading, predictions, failed = predict_pool(workspace, progress=progress, cancel=cancel)
        text = f"predicted {len(predictions)} images with {reading.fast} ({reading.describe()})"
        return text + (f"; {len(failed)} could not be read" if failed else "")
    outputs, failed = model_outputs(workspace, progress=progress, cancel=cancel)
    text = f"predicted {len(outputs.image_ids)} images with {outputs.version}"
    return text + (f"; {len(failed)} could not be read" if failed else "")


_OUTPUTS_MEMO: dict = {}


def cached_outputs(workspace, version: str):
    """The version's cached model outputs, read from disk once per change of the file (the window asks for
    them on every case it opens)."""
    from core.active.cache import _file, load_outputs

    path = _file(workspace.path, version)
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return None
    key = (str(path), stamp)
    if key not in _OUTPUTS_MEMO:
        _OUTPUTS_MEMO.clear()
        outputs = load_outputs(workspace.path, version)
        if outputs is None:
            return None
        _OUTPUTS_MEMO[key] = (outputs, outputs.index())
    return _OUTPUTS_MEMO[key]


def similar_cases(workspace, image_id: str, k: int = 5) -> list[tuple[str, str, float]]:
    """Nearest labelled neighbours of ``image_id`` by the active model's cached embeddings."""
    from core.active.loop import confirmed_labels
    from core.active.similar import similar_cases as nearest

    active = workspace.active_model()
    memo = cached_outputs(workspace, active.version) if active else None
    outputs, index = memo if memo is not None else (None, {})
    if outputs is None or image_id not in index:
        return []
    query = outputs.emb[index[image_id]]
    found = nearest(query, outputs.image_ids, outputs.emb, confirmed_labels(workspace), k=k, exclude=[image_id])
    return [(n.image_id, n.label, n.distance) for n in found]


def import_files(workspace, paths: list[str], labels_csv: Optional[str] = None, cancel: Optional[CancelToken] = None):
    """Import files/folders (and a labels CSV); returns the ImportReport."""
    from core.importer import import_paths

    return import_paths(workspace, paths, labels_csv=labels_csv, actor="app", cancel=cancel)


def device_summary() -> str:
    """"GPU name" or "CPU (why)" for the status bar.

    Also loads the model stack (torch, torchvision, scikit-learn, captum) once, right
    after start-up: loading a compiled extension holds the GIL for a few hundred
    milliseconds, which must not happen later while the reader works.
    """
    import importlib

    for module in ("core.models.inference", "core.models.versions", "core.active.loop", "core.explain",
                   "core.models.training"):
        importlib.import_module(module)
    from core.models.device import choose_device

    limit_torch_threads()
    choice = choose_device("auto")
    return f"device: {choice.name}" + ("" if choice.is_gpu else f" — {choice.reason}")


def redecide(workspace, progress=None, cancel: Optional[CancelToken] = None) -> str:
    """Re-decide the active model's cached predictions with the thresholds now in effect."""
    from core.active.loop import redecide_predictions

    n = redecide_predictions(workspace)
    return f"re-decided {n} predictions with the site threshold"


def should_retrain(workspace, n_new: Optional[int] = None) -> bool:
    """Whether enough new confirmed labels arrived to fine-tune in the background (counted in the database,
    the same rule ``loupe label`` applies)."""
    from core.active.loop import should_retrain as due

    return workspace.active_model() is not None and due(workspace, n_new)


def refresh_queue(workspace, strategy: str = "default", n: int = 50, progress=None,
                  cancel: Optional[CancelToken] = None):
    """Rebuild the queue (model outputs come from the per-version cache; only missing images are predicted)."""
    from core.active.loop import refresh_queue as rebuild

    limit_torch_threads()
    return rebuild(workspace, strategy, n, progress=progress, cancel=cancel)


def warm_up(workspace) -> bool:
    """Import what a queue refresh needs and load the active model (cached per file and hash), so a later
    :func:`refresh_queue` does not pay for it. True when a model was loaded."""
    import core.active.loop  # noqa: F401 (the acquisition stack: modAL, torchvision, …)

    if workspace.active_model() is None:
        return False
    from core.models.versions import load_version

    limit_torch_threads()
    load_version(workspace)
    return True


def prefetch(path: str, record=None):
    """The image's first frame decoded and rendered with its default window (what the viewer shows first),
    so the case opens without waiting for the file: a :class:`app.widgets.render_job.LoadedFrame`."""
    from app.widgets.render_job import load_frame

    return load_frame(path, 0, None, 0, record)


def explain_image(workspace, image_id: str, method: str, target: Optional[str] = None,
                  progress=None, cancel: Optional[CancelToken] = None):
    """The method's map for ``image_id`` by the active model (from the workspace cache when present).

    Under fast reading "the predicted class" is the one the fast version predicted (what the reader sees); the
    map is still computed by the active (full) model."""
    from core.explain import explain_image as explain
    from core.models.fast_mode import explanation_target

    target = target if target is not None else explanation_target(workspace, image_id)
    return explain(workspace, image_id, method, target, cancel=cancel, progress=progress)


def faithfulness(workspace, image_id: str, method: str, target: Optional[str] = None,
                 cancel: Optional[CancelToken] = None):
    """The same request as :func:`explain_image` with deletion/insertion AUC computed and stored with the map."""
    from core.explain import explain_image as explain
    from core.models.fast_mode import explanation_target

    target = target if target is not None else explanation_target(workspace, image_id)
    return explain(workspace, image_id, method, target, faithfulness=True, cancel=cancel)


FAITH_LEVELS = {"faithful": "ok", "weak": "warn", "unfaithful": "bad"}


def faithfulness_verdict(explanation) -> Optional[tuple[str, str]]:
    """Badge label and colour level from a map's faithfulness checks (None before they were measured).

    The label names what failed (flat map, deletion ≈ insertion, a randomised model giving the same
    map); :func:`faithfulness_summary` gives the sentence behind it.
    """
    faith = explanation.faithfulness or {}
    if "badge" not in faith:
        return None
    from core.explain.faithfulness import verdict

    v = verdict(faith)  # re-decided from the measurements, so an entry cached by an older Loupe is judged alike
    return v["label"], FAITH_LEVELS.get(v["badge"], "warn")


def faithfulness_summary(explanation) -> str:
    """The one-sentence reason for the badge ('' before the checks ran)."""
    faith = explanation.faithfulness or {}
    if "badge" not in faith:
        return ""
    from core.explain.faithfulness import verdict

    return verdict(faith)["summary"]
