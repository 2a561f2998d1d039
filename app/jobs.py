"""Functions the window runs in background threads (``Runner.submit``); none touches a widget.

Each takes the workspace (thread-safe: one SQLite connection per thread) and
returns plain data for the UI thread. Torch is imported only inside the jobs
that need it, so the window appears before any model loads.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

from core.progress import CancelToken
from core.worklist import WorklistRow, status_of, worklist_rows

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
    from core.models.severity import severity_scale

    config = active.params.get("config", {})
    return {"version": active.version, "arch": active.arch, "classes": list(active.classes),
            "multilabel": config.get("head") == "multilabel", "thresholds": active.params.get("thresholds", {}),
            "metrics": active.metrics, "reason": active.reason,
            "severity_grades": severity_scale(workspace, int(config.get("severity_levels") or 0))}


def load_worklist(workspace) -> tuple[list[WorklistRow], Optional[dict]]:
    """Worklist rows with the active model's predictions, and the model summary."""
    return worklist_rows(workspace), model_summary(workspace)


def one_row(workspace, image_id: str) -> WorklistRow:
    """The worklist row of one image, freshly read."""
    ref = workspace.image(image_id)
    active = workspace.active_model()
    hidden = workspace.model_hidden()  # blinded double reading: no prediction reaches the reader
    prediction = workspace.predictions(active.version, [image_id]).get(image_id) if active and not hidden else None
    label = workspace.current_label(image_id)
    queued = any(item.image_id == image_id for item in workspace.queue())
    why = workspace.damaged_images().get(image_id)
    return WorklistRow(ref, status_of(label, prediction, queued, why is not None), label, prediction, damaged=why)


def mark_damaged(workspace, image_id: str, reason: str) -> WorklistRow:
    """Record that the viewer found the image damaged (audited); returns its refreshed worklist row."""
    workspace.mark_damaged(image_id, reason, actor="viewer")
    return one_row(workspace, image_id)


def predict_all(workspace, progress=None, cancel: Optional[CancelToken] = None) -> str:
    """Predict every image with the active model (probabilities and embeddings cached per version).

    Reports Progress events through ``progress``; returns a one-line summary.
    """
    from core.active.loop import model_outputs

    limit_torch_threads()
    outputs, failed = model_outputs(workspace, progress=progress, cancel=cancel)
    text = f"predicted {len(outputs.image_ids)} images with {outputs.version}"
    return text + (f"; {len(failed)} could not be read" if failed else "")


def similar_cases(workspace, image_id: str, k: int = 5) -> list[tuple[str, str, float]]:
    """Nearest labelled neighbours of ``image_id`` by the active model's cached embeddings."""
    from core.active.cache import load_outputs
    from core.active.loop import confirmed_labels
    from core.active.similar import similar_cases as nearest

    active = workspace.active_model()
    outputs = load_outputs(workspace.path, active.version) if active else None
    if outputs is None or image_id not in outputs.index():
        return []
    query = outputs.emb[outputs.index()[image_id]]
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


def should_retrain(workspace, n_new: int) -> bool:
    """Whether enough new confirmed labels arrived to fine-tune in the background."""
    from core.active.loop import should_retrain as due

    return workspace.active_model() is not None and due(workspace, n_new)


def explain_image(workspace, image_id: str, method: str, target: Optional[str] = None,
                  progress=None, cancel: Optional[CancelToken] = None):
    """The method's map for ``image_id`` by the active model (from the workspace cache when present)."""
    from core.explain import explain_image as explain

    return explain(workspace, image_id, method, target, cancel=cancel, progress=progress)


def faithfulness(workspace, image_id: str, method: str, target: Optional[str] = None,
                 cancel: Optional[CancelToken] = None):
    """The same request as :func:`explain_image` with deletion/insertion AUC computed and stored with the map."""
    from core.explain import explain_image as explain

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
