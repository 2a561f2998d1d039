"""Model versions on disk: create, save, load, and the promotion gate.

The workspace stores the registry rows; this module owns the model files
(``<workspace stem>-models/<version>.pt`` beside the workspace), their hashes,
and the rule deciding whether a newly trained version may become active.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from core.errors import ModelError
from core.models.checkpoint import load_checkpoint, save_checkpoint
from core.types import ModelVersion

logger = logging.getLogger(__name__)

FORMAT = "loupe-model"
FORMAT_VERSION = 1
#: Smallest macro-AUC drop that counts as real rather than noise.
MIN_AUC_TOLERANCE = 0.005


@dataclass
class LoadedModel:
    """A model version ready for inference: network (eval mode), input spec and calibration."""

    version: ModelVersion
    net: Any  # LoupeNet
    spec: Any  # InputSpec
    classes: tuple[str, ...]
    temperature: float = 1.0
    thresholds: dict[str, Optional[float]] = field(default_factory=dict)  # in effect: the file's + this site's
    file_thresholds: dict[str, Optional[float]] = field(default_factory=dict)  # chosen at training, in the file

    @property
    def multilabel(self) -> bool:
        """True when the head has one sigmoid per finding."""
        return self.net.head_type == "multilabel"


def models_dir(workspace_path: str | Path) -> Path:
    """Folder holding a workspace's model files (beside the workspace file)."""
    path = Path(workspace_path)
    return path.parent / f"{path.stem}-models"


def sweep_orphans(workspace, min_age_s: float = 600.0) -> list[Path]:
    """Delete what killed writers left in the models folder; returns the removed paths.

    A SIGKILL between ``mkstemp`` and the rename leaves a ``.vN.pt.*.tmp`` file, and
    one between the rename and the registry insert leaves a ``vN.pt`` no row names.
    Both are removed once older than ``min_age_s`` (a live writer finishes a file in
    seconds), so a training running in another process is never disturbed.
    Registered files are never touched.
    """
    folder = models_dir(workspace.path)
    if not folder.is_dir():
        return []
    registered = {Path(v.path).resolve() for v in workspace.models()}
    cutoff = time.time() - min_age_s
    removed = []
    for path in [*folder.glob(".*.tmp"), *folder.glob("v*.pt")]:
        try:
            if path.resolve() in registered or path.stat().st_mtime > cutoff:
                continue
            path.unlink()
            removed.append(path)
        except OSError as exc:  # gone already, or a read-only folder: nothing to lose
            logger.debug("could not sweep %s: %s", path, exc)
    if removed:
        logger.info("removed %d orphan model file(s) left by interrupted writes: %s", len(removed),
                    ", ".join(p.name for p in removed))
    return removed


def next_version_name(workspace) -> str:
    """``v<N+1>`` where N is the highest numbered version in the workspace."""
    numbers = [int(m.group(1)) for v in workspace.models() if (m := re.fullmatch(r"v(\d+)", v.version))]
    return f"v{max(numbers, default=0) + 1}"


def save_version(workspace, net, spec, classes, *, weights: str, parent: Optional[str] = None,
                 params: Optional[dict] = None, metrics: Optional[dict] = None, status: str = "candidate",
                 reason: str = "", temperature: float = 1.0, thresholds: Optional[dict] = None,
                 actor: str = "system", payload_extra: Optional[dict] = None) -> ModelVersion:
    """Write ``net`` to a new version file atomically and register it.

    The file is complete and hashed before the registry row exists, so a crash
    can leave an orphan file but never a registered, half-written version.
    Returns the registered ModelVersion; raises ModelError when the disk refuses.
    """
    sweep_orphans(workspace)
    version = next_version_name(workspace)
    path = models_dir(workspace.path) / f"{version}.pt"
    state = net.state_dict()
    tensors = OrderedDict((k, v.detach().cpu().contiguous() if hasattr(v, "detach") else v) for k, v in state.items())
    tensors._metadata = getattr(state, "_metadata", None)  # quantized modules read their layout version from it
    payload = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "config": dict(net.config),
        "input_spec": spec.to_dict(), "classes": list(classes), "temperature": float(temperature),
        "thresholds": {k: (None if v is None else float(v)) for k, v in (thresholds or {}).items()},
        "state_dict": tensors,
        **(payload_extra or {}),  # e.g. an INT8 version's recipe (core.models.fast_reading)
    }
    digest = save_checkpoint(path, payload)
    all_params = {"input_spec": spec.to_dict(), "config": dict(net.config), "temperature": float(temperature),
                  "thresholds": payload["thresholds"], **(params or {})}
    record = ModelVersion(version=version, arch=net.arch, classes=tuple(classes), path=str(path), parent=parent,
                          weights=weights, status=status, file_hash=digest, params=all_params,
                          metrics=metrics or {}, reason=reason)
    return workspace.add_model(record, actor=actor)


def create_version(workspace, arch: str, classes: list[str], pretrained: str = "default", input_size: int = 224,
                   torch_cache_dir: Optional[str | Path] = None, head: str = "multiclass",
                   severity_levels: int = 0, actor: str = "system") -> ModelVersion:
    """Build a new model (backbone weights per ``pretrained``) and register it as the active version.

    Raises ModelError for an unknown architecture, fewer than two classes for a
    multi-class head, or weights that are not available offline.
    """
    from core.models.architectures import build_model, default_input_spec

    classes = [c.strip() for c in classes if c.strip()]
    if len(set(classes)) != len(classes):
        raise ModelError(f"class names must be unique, got {', '.join(classes)}")
    net, weights = build_model(arch, len(classes), pretrained=pretrained, torch_cache_dir=torch_cache_dir,
                               head=head, severity_levels=severity_levels)
    spec = default_input_spec(arch, input_size)
    workspace.add_classes(classes)
    return save_version(workspace, net, spec, classes, weights=weights, status="active",
                        reason=f"created ({weights})", params={"created_by": "model create"}, actor=actor)


_cache_lock = threading.Lock()
_cache: dict[tuple[str, str], LoadedModel] = {}


def load_version(workspace, version: Optional[str] = None) -> LoadedModel:
    """Load a registered version (the active one by default), verifying its file hash.

    Loaded models are cached per (file, hash); callers must not modify the
    returned network (explainers work on a private copy). Raises ModelError when
    no model is active, or the file is missing, tampered or unreadable.
    """
    from core.models.architectures import build_model
    from core.models.preprocess import InputSpec

    record = workspace.model(version) if version else workspace.active_model()
    if record is None:
        raise ModelError("no model is active in this workspace; create one with `loupe model create`")
    from core.models.site_thresholds import site_thresholds

    key = (record.path, record.file_hash)
    site = site_thresholds(workspace, record.version)
    with _cache_lock:
        if key in _cache:
            loaded = _cache[key]
            loaded.version = record
            loaded.thresholds = {**loaded.file_thresholds, **site}
            return loaded
    payload = load_checkpoint(record.path, record.file_hash)
    if payload.get("format") != FORMAT:
        raise ModelError(f"{record.path} is not a Loupe model file")
    if (payload.get("compression") or {}).get("kind") == "int8":
        from core.models.fast_reading import rebuild_int8

        net = rebuild_int8(payload)
    else:
        net, _ = build_model(pretrained="none", **payload["config"])
        try:
            net.load_state_dict(payload["state_dict"], strict=True)
        except RuntimeError as exc:
            raise ModelError(f"model file for {record.version} does not match its architecture: {exc}") from exc
    net.eval()
    file_thresholds = dict(payload.get("thresholds", {}))
    loaded = LoadedModel(record, net, InputSpec.from_dict(payload["input_spec"]), tuple(payload["classes"]),
                         float(payload.get("temperature", 1.0)), {**file_thresholds, **site}, file_thresholds)
    with _cache_lock:
        _cache[key] = loaded
    return loaded


def promotion_decision(candidate: dict, active: Optional[dict], rare_class: Optional[str],
                       audit: Optional[dict] = None) -> tuple[bool, str]:
    """Whether a candidate version may replace the active one, and why, in words.

    Both metric dicts come from :func:`core.models.metrics.evaluate` on the same
    validation images. The candidate is promoted only if the rare class's
    sensitivity at its operating threshold does not drop — compared with the
    active model's sensitivity at the same specificity when the active metrics
    carry ``sensitivity_at_candidate_specificity`` — and macro ROC-AUC does
    not drop by more than the noise: the larger of :data:`MIN_AUC_TOLERANCE` and
    half the mean width of the candidate's per-class AUC 95 % CIs. With
    ``audit`` (``{"candidate": {...}, "active": {...}}`` miss-rate summaries on the
    same audited cases, :func:`core.models.audit_slice.audit_comparison`) it is
    refused when its audited miss rate is significantly worse than the active's.
    """
    if not active:
        return True, "no active model to compare with: promoted"
    if audit:
        from core.models.audit_slice import significantly_worse

        cand_a, act_a = audit.get("candidate"), audit.get("active")
        worse, p_value = significantly_worse(cand_a, act_a)
        if worse:
            return False, (f"not promoted: audited miss rate would rise from {act_a['missed']}/{act_a['n']} to "
                           f"{cand_a['missed']}/{cand_a['n']} confident negatives labelled rare "
                           f"(one-sided Fisher p = {p_value:.3f})")
    cand_auc, act_auc = candidate.get("macro_auc"), active.get("macro_auc")
    if cand_auc is None:
        return False, "validation set has too few cases of each class to compute ROC-AUC: kept as candidate"
    reasons = []
    if rare_class and rare_class in candidate.get("per_class", {}):
        cand = candidate["per_class"][rare_class]
        cand_sens = cand.get("sensitivity")
        act = active.get("per_class", {}).get(rare_class, {})
        # compared at the same operating point when known: the active model's sensitivity at the
        # candidate's specificity (an untrained model calling every case rare is not "more sensitive")
        matched = act.get("sensitivity_at_candidate_specificity")
        act_sens = matched if matched is not None else act.get("sensitivity")
        where = (f" at the same specificity ({cand['specificity']:.3f})"
                 if matched is not None and cand.get("specificity") is not None else "")
        if cand_sens is not None and act_sens is not None:
            if cand_sens + 1e-9 < act_sens:
                return False, (f"not promoted: {rare_class} sensitivity{where} would drop from {act_sens:.3f} "
                               f"to {cand_sens:.3f}")
            reasons.append(f"{rare_class} sensitivity{where} {act_sens:.3f} → {cand_sens:.3f}")
    if act_auc is not None:
        widths = [pc["ci95"]["auc"][1] - pc["ci95"]["auc"][0] for pc in candidate.get("per_class", {}).values()
                  if pc.get("ci95", {}).get("auc")]
        tolerance = max(MIN_AUC_TOLERANCE, 0.5 * (sum(widths) / len(widths)) if widths else MIN_AUC_TOLERANCE)
        if cand_auc < act_auc - tolerance:
            return False, (f"not promoted: macro ROC-AUC would drop from {act_auc:.3f} to {cand_auc:.3f} "
                           f"(more than the noise level {tolerance:.3f})")
        reasons.append(f"macro ROC-AUC {act_auc:.3f} → {cand_auc:.3f} (noise ±{tolerance:.3f})")
    if audit and audit.get("candidate", {}).get("n") and audit.get("active", {}).get("n"):
        reasons.append(f"audited miss rate {audit['active']['missed']}/{audit['active']['n']} → "
                       f"{audit['candidate']['missed']}/{audit['candidate']['n']}")
    return True, "promoted: " + "; ".join(reasons)
