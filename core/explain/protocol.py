"""The one entry point: ``explain(model_version, image, method, target, **params) -> Explanation``.

Steps: load the image the way the model sees it (:func:`core.imaging.model_input`),
preprocess with the version's :class:`InputSpec` (recording the geometry),
resolve the target (a class name, an index, or the predicted class), run the
method on the private model copy, scale the map to [0, 1], and undo the
model's padding and resize so the map lies exactly over the rendered image.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Optional, Union

import numpy as np
import torch

from core.errors import ModelError
from core.explain.base import ExplainContext, get_method, normalise, using_copy
from core.progress import CancelToken, ProgressCallback
from core.types import Explanation

logger = logging.getLogger(__name__)

ImageLike = Union[np.ndarray, str, "os.PathLike[str]"]


def default_batch_size(device: str) -> int:
    """Images per forward pass when the caller gives none: 16 on the CPU, 32 on a GPU."""
    return 16 if device == "cpu" else 32


def resolve_target(classes, target: Union[str, int, None]) -> Optional[int]:
    """Class name or index → index; None stays None (the predicted class). ModelError when unknown."""
    if target is None or (isinstance(target, str) and target in ("", "predicted")):
        return None
    if isinstance(target, (int, np.integer)):
        if not 0 <= int(target) < len(classes):
            raise ModelError(f"target index {target} is outside the model's {len(classes)} classes")
        return int(target)
    if target in classes:
        return list(classes).index(target)
    raise ModelError(f"the model has no class {target!r}; its classes are: {', '.join(classes)}")


def resolve_params(method: str, size: int, params: dict) -> dict:
    """The method's defaults for an S-pixel input, updated with ``params``; ModelError for unknown names."""
    m = get_method(method)
    resolved = m.defaults(int(size))
    unknown = set(params) - set(resolved)
    if unknown:
        raise ModelError(f"{m.title} has no parameter(s) {', '.join(sorted(unknown))}; "
                         f"it takes: {', '.join(sorted(resolved)) or 'none'}")
    resolved.update(params)
    return resolved


def _load_image(image: ImageLike) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return image
    from core.imaging import model_input

    return model_input(image)


def _device(device: Optional[str]) -> str:
    from core.models.device import choose_device

    return choose_device(device or "auto").device


def explain(model_version, image: ImageLike, method: str, target: Union[str, int, None] = None, *,
            device: Optional[str] = None, batch_size: Optional[int] = None,
            cancel: Optional[CancelToken] = None, progress: Optional[ProgressCallback] = None,
            faithfulness: bool = False, net=None, image_id: Optional[str] = None, **params: Any) -> Explanation:
    """Explain one image's score for ``target`` with ``method``.

    Args:
        model_version: a :class:`~core.models.versions.LoadedModel` (network, input spec, classes).
        image: a path to an image file, or the model's view of it (float32 [0, 1], (H, W) or (H, W, 3)
            as :func:`core.imaging.model_input` returns; it shares the rendered image's geometry).
        method: ``gradcam``, ``lime``, ``ig``, ``gradshap`` or ``occlusion``.
        target: class (or, for multi-label models, finding) name or index; None = the predicted class.
        device: ``auto`` (a GPU when present), ``cpu``, ``cuda`` or ``mps``.
        batch_size: most images per forward pass; bounds memory (IG's internal batch, GradientShap's
            chunk, LIME's and occlusion's perturbations per pass).
        cancel: checked between batches; raises :class:`~core.errors.Cancelled` when set.
        progress: receives :class:`~core.progress.Progress` events (forward batches done / total).
        faithfulness: also compute deletion and insertion AUC, the flat-map check
            (:mod:`core.explain.faithfulness`) and the model-randomisation check
            (:mod:`core.explain.sanity`); the badge and its reasons in words go with them.
        net: run this network instead of ``model_version.net`` (the sanity check's randomised copy).
        image_id: workspace id recorded on the result.
        **params: method parameters (see each method's defaults, e.g. ``n_samples``, ``layer``).

    Returns:
        An :class:`~core.types.Explanation`: map in [0, 1] with the image's (H, W), signed map for
        signed methods, resolved target and parameters, seconds taken.

    Raises:
        ModelError: unknown method, parameter or target, or the method failed on this model.
        Cancelled: the cancel token was set.
        ImageReadError: ``image`` is a path that cannot be read.
    """
    from core.models.preprocess import to_tensor_with_geometry, undo_geometry

    m = get_method(method)
    spec = model_version.spec
    resolved = resolve_params(m.name, spec.size, params)
    dev = _device(device)
    bs = max(1, int(batch_size or default_batch_size(dev)))
    arr = _load_image(image)
    t0 = time.perf_counter()
    x, geometry = to_tensor_with_geometry(arr, spec)
    target_index = resolve_target(model_version.classes, target)
    multilabel = getattr(model_version.net, "head_type", "multiclass") == "multilabel"
    with using_copy(net if net is not None else model_version.net, dev) as model:
        x = x[None].to(dev)
        score = None
        if target_index is None and not m.resolves_target:
            with torch.no_grad():
                probs = _probs(model(x), multilabel)[0]
            target_index = int(probs.argmax())
            score = float(probs[target_index])
        ctx = ExplainContext(model, x, target_index, resolved, bs, dev, spec, cancel, progress)
        try:
            raw = m.run(ctx)
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"{m.title} failed on this model: {exc}") from exc
        target_index = ctx.target if ctx.target is not None else ctx.resolved_target
        if score is None and ctx.score is not None:  # the method scored the target in its own forward
            score = ctx.score
        model_map, signed = normalise(raw.detach().float().cpu().numpy(), m.signed)
        faith = {}
        if faithfulness:
            from core.explain.faithfulness import deletion_insertion

            faith = deletion_insertion(model, x, model_map, target_index, multilabel=multilabel,
                                       batch_size=bs, cancel=cancel)
        if score is None:
            with torch.no_grad():
                score = float(_probs(model(x), multilabel)[0, target_index])
    seconds = time.perf_counter() - t0
    out_map = np.clip(undo_geometry(model_map, geometry), 0.0, 1.0)
    out_signed = None if signed is None else np.clip(undo_geometry(signed, geometry), -1.0, 1.0)
    if faith and net is None:
        faith = add_randomisation(faith, model_version, arr, m.name, int(target_index), out_map, device=device,
                                  batch_size=bs, cancel=cancel, **params)
    if faith:
        faith["seconds"] = round(faith.get("seconds", 0.0), 4)
    logger.info("%s for %s on %s: %.3f s", m.name, model_version.classes[target_index],
                model_version.version.version, seconds)
    return Explanation(map=out_map.astype(np.float32), signed=None if out_signed is None else out_signed.astype(np.float32),
                       method=m.name, target=model_version.classes[target_index], target_index=int(target_index),
                       version=model_version.version.version, seconds=seconds, params=resolved,
                       faithfulness=faith, score=score, image_id=image_id)


def add_randomisation(faith: dict, model_version, image: np.ndarray, method: str, target: int, image_map: np.ndarray,
                      **kwargs: Any) -> dict:
    """``faith`` with the model-randomisation check added and the badge re-decided.

    ``image_map`` is the trained model's map in the image's geometry; ``kwargs`` are
    :func:`explain`'s (method parameters, device, batch size, cancel). Returns a new dict.
    """
    from core.explain.faithfulness import verdict
    from core.explain.sanity import model_randomisation

    t0 = time.perf_counter()
    rnd = model_randomisation(model_version, image, method, target, trained_map=image_map, **kwargs)
    from core.explain.faithfulness import flatness

    out = dict(faith)
    out["flat"] = flatness(image_map)  # in the image's own geometry: the model's padding is not part of the map
    out["randomisation"] = {k: rnd[k] for k in ("spearman", "passed", "threshold", "reason", "layers")}
    out.update(verdict(out))
    out["seconds"] = out.get("seconds", 0.0) + time.perf_counter() - t0
    return out


def _probs(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)


def explain_findings(model_version, image: ImageLike, method: str, findings=None, **kwargs) -> dict[str, Explanation]:
    """One explanation per finding of a multi-label model (every class by default).

    Takes the arguments of :func:`explain` plus ``findings`` (names or indices);
    returns {finding name: Explanation}.
    """
    arr = _load_image(image)
    names = list(findings) if findings is not None else list(model_version.classes)
    out = {}
    for f in names:
        e = explain(model_version, arr, method, f, **kwargs)
        out[e.target] = e
    return out
