"""Fast reading versions: an INT8 or distilled copy of a teacher, registered only if it reads as well.

``loupe model quantize`` and ``loupe model distill`` call :func:`quantize_version`
and :func:`distill_version`. Both build the compressed model from the active
version (the teacher), score teacher and candidate on the validation images (each PNG read through
``run_inference``, exactly as a fast reading reads it), and
register the candidate — linked to its teacher (``parent``, ``params["compression"]``)
and left a candidate, not active — only when all three checks pass
(:func:`gate_checks`):

1. macro ROC-AUC within :data:`MAX_AUC_DROP` (1 point) of the teacher's;
2. rare-class sensitivity at the teacher's operating threshold not lower;
3. top-class agreement with the teacher ≥ :data:`MIN_AGREEMENT` (98 %), on the validation images and up to
   :data:`AGREEMENT_POOL` unlabelled pool images (agreement needs no label).

Otherwise :class:`GateFailed` names the failed check(s) and nothing is saved.

An INT8 version's file holds the quantized state dict and its recipe (engine,
layers kept in float); :func:`rebuild_int8` re-creates the quantized graph from
the float architecture and loads it, so ``load_version`` serves it like any other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from core.errors import ModelError
from core.progress import CancelToken, ProgressCallback, report

logger = logging.getLogger(__name__)

MAX_AUC_DROP = 0.01
MIN_AGREEMENT = 0.98
#: Unlabelled pool images on which top-class agreement is also measured (it needs no label): a handful of
#: validation images alone cannot show 98 % agreement (on the demo, 8 of them passed a copy that agrees with
#: its teacher on 90 % of the pool).
AGREEMENT_POOL = 512
#: Below these counts the AUC and sensitivity checks still run but say that their evidence is weak.
FEW_VALIDATION_IMAGES = 50
FEW_RARE_CASES = 10
#: Training images used to calibrate the INT8 activation ranges.
CALIBRATION_IMAGES = 256
#: Backbone modules of an architecture kept in float by Loupe's INT8 recipe, where they differ from the
#: default (:func:`core.models.compress.default_keep_float`: the stem convolution; see docs/benchmarks.md).
KEEP_FLOAT: dict[str, tuple[str, ...]] = {}


class GateFailed(ModelError):
    """A compressed model failed one of the fast-reading checks; ``checks`` holds all of them, and
    ``candidate`` the refused model as ``{"net", "spec", "temperature", "threshold"}`` (for a report)."""

    def __init__(self, message: str, checks: list[dict], candidate: Optional[dict] = None):
        super().__init__(message)
        self.checks = checks
        self.candidate = candidate


@dataclass
class GateData:
    """Validation images (decoded, un-normalised) with their labels, and calibration images from training."""

    image_ids: list[str]
    x_val: torch.Tensor
    y_val: np.ndarray
    x_calib: torch.Tensor
    extra: dict = field(default_factory=dict)


_SAME = object()


def gate_checks(y, teacher_probs, cand_probs, classes: Sequence[str], rare: Optional[str],
                threshold: Optional[float], candidate_threshold=_SAME, pool_probs=None) -> list[dict]:
    """The three fast-reading checks of a candidate against its teacher on the same validation images.

    ``y``: class indices; ``*_probs``: (N, K) calibrated probabilities; ``rare``: the
    rare class (its operating ``threshold``, or None for the argmax rule). The candidate
    is read at ``candidate_threshold`` when it has an operating point of its own (a
    distilled student), else at the teacher's. ``pool_probs``: ``(teacher, candidate)`` probabilities on
    unlabelled images, counted with the validation images in the agreement check. Returns
    ``[{"check", "passed", "teacher", "candidate", "rule"}]``.
    """
    from core.models.metrics import evaluate

    classes = list(classes)
    c_threshold = threshold if candidate_threshold is _SAME else candidate_threshold
    thresholds = [threshold if c == rare else None for c in classes]
    t_ev = evaluate(y, teacher_probs, classes, thresholds=thresholds, n_boot=0)
    c_ev = evaluate(y, cand_probs, classes, thresholds=[c_threshold if c == rare else None for c in classes],
                    n_boot=0)
    checks = []
    t_auc, c_auc = t_ev["macro_auc"], c_ev["macro_auc"]
    few = " — few images, weak evidence" if len(y) < FEW_VALIDATION_IMAGES else ""
    checks.append({"check": "macro AUC", "teacher": t_auc, "candidate": c_auc, "n": len(y),
                   "rule": f"within {MAX_AUC_DROP * 100:.0f} point of the teacher, on {len(y)} labelled validation "
                           f"images{few}",
                   "passed": t_auc is not None and c_auc is not None and c_auc >= t_auc - MAX_AUC_DROP - 1e-12})
    if rare is not None and rare in classes:
        t_s, c_s = t_ev["per_class"][rare]["sensitivity"], c_ev["per_class"][rare]["sensitivity"]
        def where(t):
            return f"threshold {t:.3f}" if t is not None else "argmax rule"

        at = where(threshold) if c_threshold == threshold else f"{where(c_threshold)}; teacher's {where(threshold)}"
        n_rare = int(np.sum(np.asarray(y) == classes.index(rare)))
        checks.append({"check": f"{rare} sensitivity", "teacher": t_s, "candidate": c_s, "n": n_rare,
                       "rule": f"not lower than the teacher's at the operating point ({at}), on {n_rare} "
                               f"{rare} validation cases" + (" — few cases, weak evidence"
                                                             if n_rare < FEW_RARE_CASES else ""),
                       "passed": t_s is None or (c_s is not None and c_s >= t_s - 1e-12)})
    same = list(np.asarray(teacher_probs).argmax(1) == np.asarray(cand_probs).argmax(1)) if len(y) else []
    n_pool = 0
    if pool_probs is not None and len(pool_probs[0]):
        pool_same = np.asarray(pool_probs[0]).argmax(1) == np.asarray(pool_probs[1]).argmax(1)
        same += list(pool_same)
        n_pool = len(pool_same)
    agree = float(np.mean(same)) if same else None
    where = f"{len(y)} validation images" + (f" and {n_pool} unlabelled pool images" if n_pool else "")
    checks.append({"check": "top-class agreement", "teacher": 1.0, "candidate": agree,
                   "rule": f"at least {MIN_AGREEMENT:.0%} of {where}", "n": len(same),
                   "passed": agree is not None and agree >= MIN_AGREEMENT})
    return checks


def describe_failures(checks: list[dict]) -> str:
    """One line naming every failed check with the figures."""
    def f(v):
        return "n/a" if v is None else f"{v:.4f}"

    bad = [c for c in checks if not c["passed"]]
    return "; ".join(f"{c['check']} {f(c['candidate'])} vs teacher {f(c['teacher'])} ({c['rule']})" for c in bad)


def gate_data(workspace, teacher, n_calib: int = CALIBRATION_IMAGES, workers: int = 2,
              cancel: Optional[CancelToken] = None) -> GateData:
    """Validation images (split ``val``, else the training engine's validation split) and calibration
    images from the training side, decoded at the teacher's input size. Raises ModelError when there is
    no validation image."""
    from core.models.data import decode_all, labelled_set, train_val_split

    if teacher.multilabel:
        raise ModelError("fast reading versions support multi-class models only")
    data = labelled_set(workspace, list(teacher.classes))
    train_set, val_set = train_val_split(workspace, data, 0.2, 0)
    if len(val_set) == 0:
        raise ModelError("no labelled validation images to check a fast reading version on; "
                         "label more images or mark some as split 'val'")
    x_val, ok = decode_all(val_set.paths, teacher.spec, workers, cancel=cancel)
    val_set = val_set.subset(ok)
    rng = np.random.default_rng(0)
    pick = sorted(rng.choice(len(train_set), size=min(n_calib, len(train_set)), replace=False).tolist()) \
        if len(train_set) else []
    x_calib, _ = decode_all([train_set.paths[i] for i in pick], teacher.spec, workers, cancel=cancel) \
        if pick else (x_val[:min(len(x_val), 32)], [])
    return GateData(val_set.image_ids, x_val, val_set.targets, x_calib,
                    {"val_paths": list(val_set.paths), "pool": agreement_pool(workspace)})


def agreement_pool(workspace, n: int = AGREEMENT_POOL, seed: int = 0) -> list[tuple[str, str]]:
    """Up to ``n`` unlabelled, undamaged images ``(id, path)``, a seeded random pick: where a fast reading
    copy will be used, so where its agreement with the teacher matters."""
    labelled = set(workspace.current_labels())
    damaged = set(workspace.damaged_images())
    items = [(r.id, r.path) for r in workspace.images() if r.id not in labelled and r.id not in damaged]
    if len(items) > n:
        pick = np.random.default_rng(seed).choice(len(items), size=n, replace=False)
        items = [items[i] for i in sorted(pick.tolist())]
    return items


def _read_probs(loaded, net, spec, temperature: float, kind: Optional[str], data: GateData,
                pool: bool = False) -> np.ndarray:
    """Calibrated probabilities on the validation images exactly as the reader gets them: each PNG decoded
    and run through :func:`core.models.inference.run_inference` (its layout and preprocessing), so the
    gate checks the very numbers a fast reading shows. (An INT8 network near the gate's edge changes
    its answer with a rounding as small as decoding to float16.)"""
    import dataclasses

    from core.models.inference import run_inference

    params = {**loaded.version.params, "compression": {"kind": kind}} if kind else loaded.version.params
    stand_in = dataclasses.replace(loaded, net=net, spec=spec, temperature=temperature,
                                   version=dataclasses.replace(loaded.version, params=params))
    items = list(data.extra.get("pool", ())) if pool else list(zip(data.image_ids, data.extra["val_paths"]))
    if not items:
        return np.zeros((0, len(loaded.classes)), dtype=np.float32)
    result = run_inference(stand_in, items, with_embeddings=False, workers=2)
    if pool:  # an unreadable pool image is left out for both models alike (same ids, same order)
        return result.probs
    if result.failed:
        raise ModelError(f"{len(result.failed)} validation image(s) no longer read: {result.failed[0][1]}")
    order = {image_id: k for k, image_id in enumerate(result.image_ids)}
    return result.probs[[order[i] for i in data.image_ids]]


def _pool_probs(teacher, net, spec, temperature: float, kind: str, data: GateData):
    """``(teacher, candidate)`` probabilities on the agreement pool (empty arrays when there is none)."""
    return (_read_probs(teacher, teacher.net, teacher.spec, teacher.temperature, None, data, pool=True),
            _read_probs(teacher, net, spec, temperature, kind, data, pool=True))


def _probs(net, spec, x01, temperature: float) -> np.ndarray:
    from core.models.compress import batched_logits
    from core.models.inference import calibrated_probs

    return calibrated_probs(batched_logits(net, x01, spec, 64), temperature, False)


def _rare_and_threshold(teacher) -> tuple[Optional[str], Optional[float]]:
    rare = teacher.version.params.get("rare_class")
    if rare not in teacher.classes:
        rare = next((c for c, t in teacher.thresholds.items() if t is not None), None)
    return rare, (teacher.thresholds.get(rare) if rare else None)


def quantize_int8(teacher, x_calib01: torch.Tensor, keep_float: Optional[Sequence[str]] = None):
    """The teacher's network statically quantized with Loupe's recipe, calibrated on real images.

    ``keep_float``: backbone modules left in float; None: the recipe's (:data:`KEEP_FLOAT` for the
    architecture, else :func:`core.models.compress.default_keep_float`, the stem convolution).
    Returns ``(quantized net, the modules kept in float)``. Raises ModelError for a name the backbone
    does not have.
    """
    from core.models.compress import default_keep_float, quantize_static_int8
    from core.models.data import normalise

    if keep_float is None:
        keep_float = KEEP_FLOAT.get(teacher.net.arch) or default_keep_float(teacher.net.backbone)
    keep = tuple(keep_float)
    names = dict(teacher.net.backbone.named_modules())
    unknown = [k for k in keep if k not in names]
    if unknown:
        convs = [n for n, m in names.items() if isinstance(m, torch.nn.Conv2d)]
        raise ModelError(f"no layer named {', '.join(unknown)} in the {teacher.net.arch} backbone "
                         f"(its convolutions are named like {', '.join(convs[:3])})")
    batches = [normalise(x_calib01[i:i + 32], teacher.spec) for i in range(0, len(x_calib01), 32)]
    return quantize_static_int8(teacher.net, batches, keep_float=keep), keep


def rebuild_int8(payload: dict):
    """A quantized LoupeNet from an INT8 version file's payload (float architecture + recipe + INT8 state)."""
    from core.models.architectures import build_model
    from core.models.compress import quantize_static_int8

    net, _ = build_model(pretrained="none", **payload["config"])
    recipe = payload["compression"]
    size = int(payload["input_spec"]["size"])
    channels = int(payload["input_spec"].get("channels", 3))
    dummy = [torch.zeros(2, channels, size, size)]
    q = quantize_static_int8(net.eval(), dummy, backend=recipe.get("engine"), keep_float=recipe.get("keep_float", ()),
                             bias_correction=False)  # the saved state dict holds the corrected biases
    try:
        q.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ModelError(f"INT8 model file does not match its recipe: {exc}") from exc
    return q.eval()


def _register(workspace, net, spec, teacher, kind: str, checks: list[dict], temperature: float, extra: dict,
              actor: str, thresholds: Optional[dict] = None):
    from core.models.versions import save_version

    teacher_v = teacher.version.version
    reason = (f"fast reading version of {teacher_v} ({kind}): passed "
              + ", ".join(f"{c['check']} {c['candidate']:.4f} (teacher {c['teacher']:.4f})" for c in checks
                          if c["candidate"] is not None))
    params = {"compression": {"kind": kind, "teacher": teacher_v, "checks": checks, **extra},
              "rare_class": teacher.version.params.get("rare_class")}
    return save_version(workspace, net, spec, list(teacher.classes), weights=f"{kind} of {teacher_v}",
                        parent=teacher_v, params=params, status="candidate", reason=reason,
                        temperature=temperature,
                        thresholds=dict(teacher.file_thresholds if thresholds is None else thresholds), actor=actor,
                        payload_extra=extra.get("payload"))


def quantize_version(workspace, keep_float: Optional[Sequence[str]] = None, actor: str = "system",
                     progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None):
    """INT8 version of the active model, registered only if it passes the checks.

    Returns ``(ModelVersion, checks)``. Raises GateFailed naming the failed
    check(s) (nothing saved), or ModelError.
    """
    from core.models.versions import load_version

    teacher = load_version(workspace)
    if teacher.version.params.get("compression"):
        raise ModelError(f"{teacher.version.version} is already a fast reading version; activate its teacher first")
    report(progress, 0, 3, "decoding validation and calibration images")
    data = gate_data(workspace, teacher, cancel=cancel)
    report(progress, 1, 3, f"quantizing on {len(data.x_calib)} calibration images")
    q, keep = quantize_int8(teacher, data.x_calib, keep_float)
    report(progress, 2, 3, f"checking on {len(data.image_ids)} validation and {len(data.extra['pool'])} pool images")
    rare, threshold = _rare_and_threshold(teacher)
    checks = gate_checks(data.y_val, _read_probs(teacher, teacher.net, teacher.spec, teacher.temperature, None, data),
                         _read_probs(teacher, q, teacher.spec, teacher.temperature, "int8", data), teacher.classes,
                         rare, threshold, pool_probs=_pool_probs(teacher, q, teacher.spec, teacher.temperature,
                                                                 "int8", data))
    if not all(c["passed"] for c in checks):
        raise GateFailed(f"INT8 version not registered: {describe_failures(checks)}", checks,
                         {"net": q, "spec": teacher.spec, "temperature": teacher.temperature, "threshold": threshold,
                          "keep_float": list(keep)})
    engine = torch.backends.quantized.engine
    version = _register(workspace, q, teacher.spec, teacher, "int8", checks, teacher.temperature,
                        {"engine": engine, "keep_float": list(keep), "calibration_images": len(data.x_calib),
                         "payload": {"compression": {"kind": "int8", "engine": engine, "keep_float": list(keep)}}},
                        actor)
    report(progress, 3, 3, "registered")
    return version, checks


#: Share of the training-side labelled images held out of distillation to set the student's own temperature
#: and operating threshold (the validation split stays the gate's).
STUDENT_CALIBRATION_FRACTION = 0.15


def _held_out(workspace, teacher, exclude: Sequence[str], fraction: float, seed: int = 0):
    """A seeded share of the labelled images outside ``exclude`` (the gate's validation images) and the test
    split: the student's calibration set, kept out of distillation."""
    from core.models.data import labelled_set

    data = labelled_set(workspace, list(teacher.classes), splits=("train", "val", None))
    skip = set(exclude)
    idx = [i for i, image_id in enumerate(data.image_ids) if image_id not in skip]
    rng = np.random.default_rng(seed)
    n = int(round(len(idx) * fraction))
    return data.subset(sorted(rng.choice(idx, size=n, replace=False).tolist())) if n else data.subset([])


def student_operating_point(logits, y, classes: Sequence[str], rare: Optional[str], target_sensitivity: float,
                            confidence: Optional[float]) -> tuple[float, Optional[float]]:
    """(temperature, rare-class threshold) of a student from its logits on held-out labelled images, with the
    rule training uses for a teacher (:func:`core.models.training._finish`): temperature scaling when the set
    is big enough, then the highest threshold whose sensitivity keeps ``target_sensitivity`` (as a one-sided
    lower confidence bound when ``confidence``). The threshold is None without enough rare positives."""
    from core.models.calibration import fit_temperature
    from core.models.inference import calibrated_probs
    from core.models.metrics import operating_thresholds
    from core.models.training import MIN_CALIBRATION_CASES, MIN_CALIBRATION_PER_CLASS, MIN_THRESHOLD_POSITIVES

    classes = list(classes)
    y = np.asarray(y)
    counts = np.bincount(y, minlength=len(classes)) if len(y) else np.zeros(len(classes), int)
    temperature = 1.0
    if len(y) >= MIN_CALIBRATION_CASES and counts.min() >= MIN_CALIBRATION_PER_CLASS:
        temperature = float(fit_temperature(np.asarray(logits), y))
    threshold = None
    if rare in classes and counts[classes.index(rare)] >= MIN_THRESHOLD_POSITIVES:
        probs = calibrated_probs(logits, temperature, False)
        threshold = operating_thresholds(y, probs, classes, target_sensitivity, confidence).get(rare)
    return temperature, threshold


def distill_version(workspace, student_arch: str = "mobilenet_v3_large", epochs: int = 5, actor: str = "system",
                    pretrained: str = "default", torch_cache_dir: Optional[str] = None,
                    calibration_fraction: float = STUDENT_CALIBRATION_FRACTION,
                    progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None):
    """A student distilled from the active model, registered only if it passes the checks.

    The gate's validation images and a held-out share of the other labelled images
    (``calibration_fraction``) stay out of distillation. On that held-out share the student
    gets its own temperature and rare-class operating threshold, by the rule training uses
    for the teacher (same target sensitivity and confidence); the gate reads it at that
    threshold. Returns ``(ModelVersion, checks)``. Raises GateFailed (nothing saved) or
    ModelError.
    """
    from core.models.compress import batched_logits, distill, student_spec
    from core.models.config import TrainConfig
    from core.models.data import decode_all
    from core.models.versions import load_version

    teacher = load_version(workspace)
    if teacher.version.params.get("compression"):
        raise ModelError(f"{teacher.version.version} is already a fast reading version; activate its teacher first")
    data = gate_data(workspace, teacher, n_calib=0, cancel=cancel)
    held = _held_out(workspace, teacher, data.image_ids, calibration_fraction)
    # the validation images stay out of distillation: they are what the student is checked on
    student = distill(teacher, workspace, student_arch, epochs=epochs, pretrained=pretrained,
                      torch_cache_dir=torch_cache_dir, exclude=[*data.image_ids, *held.image_ids],
                      progress=progress, cancel=cancel)
    s_spec = student_spec(teacher.spec, student_arch)
    rare, threshold = _rare_and_threshold(teacher)
    train_cfg = {**vars(TrainConfig()), **(teacher.version.params.get("train") or {})}
    s_temperature, s_threshold = 1.0, None
    if len(held):
        x_held, ok = decode_all(held.paths, teacher.spec, 2, cancel=cancel)
        held = held.subset(ok)
        s_temperature, s_threshold = student_operating_point(
            batched_logits(student, x_held, s_spec, 64), held.targets, teacher.classes, rare,
            float(train_cfg["target_sensitivity"]), train_cfg["threshold_confidence"])
    checks = gate_checks(data.y_val, _read_probs(teacher, teacher.net, teacher.spec, teacher.temperature, None, data),
                         _read_probs(teacher, student, s_spec, s_temperature, "distilled", data), teacher.classes,
                         rare, threshold, candidate_threshold=s_threshold if threshold is not None else None,
                         pool_probs=_pool_probs(teacher, student, s_spec, s_temperature, "distilled", data))
    if not all(c["passed"] for c in checks):
        raise GateFailed(f"distilled {student_arch} not registered: {describe_failures(checks)}", checks,
                         {"net": student, "spec": s_spec, "temperature": s_temperature, "threshold": s_threshold})
    version = _register(workspace, student, s_spec, teacher, "distilled", checks, s_temperature,
                        {"student_arch": student_arch, "epochs": epochs, "calibration_images": len(held),
                         "threshold": s_threshold},
                        actor, thresholds={rare: s_threshold} if rare else {})
    return version, checks
