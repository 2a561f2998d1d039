"""Model operations the front ends call: predict and store, evaluate a version on a split."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from core.errors import ModelError
from core.models.device import choose_device
from core.progress import CancelToken, ProgressCallback

logger = logging.getLogger(__name__)


def predict_images(workspace, image_ids: Optional[Sequence[str]] = None, version: Optional[str] = None,
                   batch_size: int = 16, device: str = "auto", progress: Optional[ProgressCallback] = None,
                   cancel: Optional[CancelToken] = None):
    """Predict ``image_ids`` (every image when None) with ``version`` (default: active) and store the results.

    Returns (predictions, failures) where failures are (image id, reason)
    pairs for images that could not be decoded. Raises ModelError when no
    model is active.
    """
    from core.models.inference import run_inference, to_predictions
    from core.models.versions import load_version

    loaded = load_version(workspace, version)
    refs = [workspace.image(i) for i in image_ids] if image_ids is not None else workspace.images()
    damaged = workspace.damaged_images()  # a damaged image is never predicted on
    refs = [r for r in refs if r.id not in damaged]
    choice = choose_device(device)
    result = run_inference(loaded, [(r.id, r.path) for r in refs], batch_size=batch_size, device=choice.device,
                           with_embeddings=False, progress=progress, cancel=cancel)
    predictions = to_predictions(loaded, result)
    workspace.add_predictions(loaded.version.version, predictions)
    mark_found_damaged(workspace, result)
    return predictions, result.failed


def mark_found_damaged(workspace, result) -> None:
    """Record the images an inference found damaged, so they leave prediction, the queue and training."""
    reasons = dict(result.failed)
    for image_id in getattr(result, "damaged", ()):
        workspace.mark_damaged(image_id, reasons.get(image_id, "the image data is damaged"), actor="inference")


@dataclass
class SplitScores:
    """A version's outputs on the confirmed labels of one split, row-aligned with their truth."""

    loaded: Any  # core.models.versions.LoadedModel
    split: str
    image_ids: list
    y_true: Any  # (n, classes) targets
    probs: Any  # (n, classes) calibrated probabilities
    true_grades: Any  # (n,) severity grades (-1 where none)
    severity_logits: Any  # (n, levels - 1) or None
    failed: list  # [(image id, reason)] images that could not be read


def score_split(workspace, version: Optional[str] = None, split: str = "test", batch_size: int = 32,
                device: str = "auto", progress: Optional[ProgressCallback] = None,
                cancel: Optional[CancelToken] = None, loaded=None) -> SplitScores:
    """Run ``version`` (default: active; or the already ``loaded`` model) over the confirmed labels of images
    marked ``split``.

    Images found damaged are recorded (they leave prediction, the queue and
    training). Raises ModelError when the split has no labelled images.
    """
    from core.models.data import labelled_set
    from core.models.inference import run_inference
    from core.models.versions import load_version

    loaded = loaded if loaded is not None else load_version(workspace, version)
    data = labelled_set(workspace, loaded.classes, loaded.multilabel, splits=(split,))
    if len(data) == 0:
        raise ModelError(f"no confirmed labels on images marked '{split}'; import a labels CSV with a split column")
    result = run_inference(loaded, list(zip(data.image_ids, data.paths)), batch_size=batch_size,
                           device=choose_device(device).device, with_embeddings=False, progress=progress,
                           cancel=cancel)
    mark_found_damaged(workspace, result)
    keep = {image_id: i for i, image_id in enumerate(data.image_ids)}
    rows = [keep[i] for i in result.image_ids]
    return SplitScores(loaded, split, list(result.image_ids), data.targets[rows], result.probs,
                       data.severities[rows], result.severity_logits, list(result.failed))


def evaluate_version(workspace, version: Optional[str] = None, split: str = "test", batch_size: int = 32,
                     device: str = "auto", n_boot: int = 1000, progress: Optional[ProgressCallback] = None) -> dict:
    """Metrics of ``version`` (default: active) on the confirmed labels of images marked ``split``.

    Uses the version's calibration and operating thresholds, as the app does.
    Returns :func:`core.models.metrics.evaluate`'s dict plus ``version`` and
    ``split``. Raises ModelError when the split has no labelled images.
    """
    from core.models.metrics import evaluate

    scores = score_split(workspace, version, split, batch_size, device, progress)
    loaded = scores.loaded
    metrics = evaluate(scores.y_true, scores.probs, list(loaded.classes),
                       thresholds=[loaded.thresholds.get(c) for c in loaded.classes],
                       n_boot=n_boot, multilabel=loaded.multilabel)
    out = {"version": loaded.version.version, "split": split, **metrics,
           "failed": [{"id": i, "reason": r} for i, r in scores.failed]}
    out.update(reader_metrics(workspace, loaded, scores.true_grades, scores.severity_logits, n_boot))
    return out


def reader_metrics(workspace, loaded, true_grades, severity_logits, n_boot: int = 1000) -> dict:
    """The severity and audit-slice figures ``loupe evaluate`` and the metrics panel add to the metrics.

    ``severity_kappa`` (quadratic-weighted) and ``severity`` (bootstrap interval,
    per-grade confusion; :func:`core.models.severity.evaluate_severity`) when the
    model has a severity head; ``audit`` (``{"n", "missed", "miss_rate", "ci95"}``)
    when the version's audit picks have been labelled.
    """
    from core.models.audit_slice import audit_summary
    from core.models.severity import evaluate_severity, predict_grades, severity_scale

    out: dict = {}
    levels = int(getattr(loaded.net, "severity_levels", 0) or 0)
    if levels and severity_logits is not None:
        grades, _ = predict_grades(severity_logits)
        sev = evaluate_severity(true_grades, grades, levels, severity_scale(workspace, levels), n_boot=n_boot)
        out["severity_kappa"] = sev["kappa"]
        out["severity"] = sev
    audit = audit_summary(workspace, loaded.version.version)
    if audit is not None:
        out["audit"] = audit
    return out
