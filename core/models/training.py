"""The training engine: fine-tune a model version on confirmed labels.

``train(workspace, config, emit, cancel)`` is the whole run: data, split,
transfer mode (frozen feature extractor / full fine-tune / gradual unfreezing),
imbalance handling, early stopping, temperature scaling, operating thresholds,
evaluation against the active version on the same validation images, the
promotion gate, and the atomic save. It runs in its own process (see
:mod:`core.models.train_process`), reports progress as plain dict events
through ``emit`` and stops cooperatively when ``cancel`` is set.

The recipe (measured against a plain PyTorch loop in bench/train_bench.py): images are decoded once to
[0, 1] tensors; each batch is augmented on the training device by each image's own modality
(:mod:`core.models.augment`); AdamW at the mode's learning rate (``finetune``: the whole network at one
rate), decoupled weight decay on weights only (not biases or BatchNorm), a cosine schedule (optional linear
warm-up); the epoch with the lowest validation loss is kept. On CUDA batches are channels-last and the
forward pass runs in bfloat16.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from core.errors import ModelError
from core.models import augment as aug
from core.models.data import decode_all, labelled_set, normalise, train_val_split
from core.models.device import choose_device
from core.models.losses import coral_loss, make_loss
from core.models.sample_weights import DEFAULT_FLAGGED_WEIGHT, flagged_weights, weighted_finding_loss
from core.models.config import MODES, TrainConfig  # noqa: F401  (re-exported)
from core.progress import CancelToken

logger = logging.getLogger(__name__)

Emit = Callable[[dict], None]
#: Validation size below which temperature scaling is not fitted (T stays 1).
MIN_CALIBRATION_CASES = 30
MIN_CALIBRATION_PER_CLASS = 5
#: Rare-class validation positives needed before an operating threshold is chosen.
MIN_THRESHOLD_POSITIVES = 10


def seed_everything(seed: int) -> None:
    """Fix Python, NumPy and torch seeds for a repeatable run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


class _Trainable(nn.Module):
    """What the optimiser updates: the whole net, or only its heads over cached embeddings."""

    def __init__(self, net, heads_only: bool):
        super().__init__()
        self.net = net
        self.heads_only = heads_only

    def forward(self, x):
        if self.heads_only:
            emb = x
            sev = self.net.severity_head(emb) if self.net.severity_head is not None else None
            return self.net.head(emb), sev
        out = self.net.forward_all(x)
        return out["logits"], out["severity_logits"]


def _sampler_weights(targets: np.ndarray, n_classes: int) -> torch.Tensor:
    strata = targets if targets.ndim == 1 else targets.argmax(axis=1)
    counts = np.bincount(strata, minlength=n_classes).astype(np.float64)
    return torch.tensor(1.0 / np.maximum(counts[strata], 1.0), dtype=torch.float64)


def _batches(n: int, batch_size: int, sampler: str, targets: np.ndarray, n_classes: int, rank: int, world: int,
             generator: torch.Generator):
    """Index batches for one epoch: shuffled, or class-balanced with replacement; sharded across DDP ranks."""
    if sampler == "balanced":
        order = torch.multinomial(_sampler_weights(targets, n_classes), n, replacement=True, generator=generator)
    else:
        order = torch.randperm(n, generator=generator)
    if world > 1 and len(order) % world:
        # Pad (as DistributedSampler does) so every rank runs the same number of steps: an
        # uneven shard leaves one rank waiting in an all-reduce its peers never join.
        order = torch.cat([order, order[:world - len(order) % world]])
    order = order[rank::world]
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        # BatchNorm cannot train on one sample when the last feature map is 1x1 (small inputs)
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


def train(workspace, config: TrainConfig, emit: Emit = lambda e: None, cancel: Optional[CancelToken] = None,
          rank: int = 0, world: int = 1) -> Optional[dict]:
    """:func:`_train` under the workspace's training lock (one run at a time, even across workstations).

    Raises :class:`~core.errors.WorkspaceBusy` when another run holds it; see :func:`_train`.
    """
    lock = getattr(workspace, "training_lock", None)
    if rank != 0 or lock is None:
        return _train(workspace, config, emit, cancel, rank, world)
    with lock():
        return _train(workspace, config, emit, cancel, rank, world)


def _train(workspace, config: TrainConfig, emit: Emit = lambda e: None, cancel: Optional[CancelToken] = None,
           rank: int = 0, world: int = 1) -> Optional[dict]:
    """Fine-tune ``config.parent`` (default: the active version) on the workspace's confirmed labels.

    Returns ``{"version", "promoted", "reason", "metrics", ...}`` on rank 0
    (None on other DDP ranks). Raises ModelError when there is nothing to train
    on, Cancelled when cancelled (nothing is saved then).
    """
    from core.models.architectures import freeze_backbone, param_groups, unfreeze_stage
    from core.models.versions import load_version

    config.validate()
    cancel = cancel or CancelToken()
    started = time.monotonic()
    parent = load_version(workspace, config.parent)
    # Seed after loading: building an uncached model draws from the global RNG, so seeding
    # first would make dropout and augmentation depend on whether the parent was cached.
    seed_everything(config.seed)
    classes, spec, multilabel = list(parent.classes), parent.spec, parent.multilabel
    data = labelled_set(workspace, classes, multilabel)
    train_set, val_set = train_val_split(workspace, data, config.val_fraction, config.seed)
    if len(train_set) == 0:
        raise ModelError("no confirmed labels to train on: label some images first (or import a labels CSV)")
    counts = train_set.class_counts(len(classes))
    if not multilabel and sum(1 for c in counts if c > 0) < 2:
        raise ModelError(f"training needs confirmed labels of at least two classes; have {dict(zip(classes, counts))}")
    rare = config.rare_class if config.rare_class in classes else classes[int(np.argmin(counts))]
    choice = choose_device(config.device)
    device = torch.device(choice.device)
    emit({"event": "start", "parent": parent.version.version, "n_train": len(train_set), "n_val": len(val_set),
          "counts": dict(zip(classes, counts)), "skipped": data.skipped, "device": choice.name,
          "device_reason": choice.reason, "rare_class": rare, "config": asdict(config)})

    x_train, ok_train = decode_all(train_set.paths, spec, config.workers, cancel=cancel,
                                   progress=lambda p: emit({"event": "decode", "done": p.done, "total": p.total}))
    train_set = train_set.subset(ok_train)
    x_val, ok_val = (decode_all(val_set.paths, spec, config.workers, cancel=cancel) if len(val_set)
                     else (torch.zeros((0,) + tuple(x_train.shape[1:]), dtype=torch.float16), []))
    val_set = val_set.subset(ok_val)

    net = copy.deepcopy(parent.net).to(device)
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    heads_only = config.mode == "frozen"
    lr = config.head_lr
    groups = param_groups(net, lr, config.mode)
    for g in groups:
        if g.get("name") != "head" and config.mode != "gradual":
            g["lr"] = lr * config.backbone_factor
    groups = _decay_groups(groups, config.weight_decay)
    if heads_only:
        freeze_backbone(net, True)
        emit({"event": "embed", "message": "computing frozen-backbone embeddings"})
        feats_train = _embed(net, x_train, spec, device, config.batch_size * 2, cancel)
        feats_val = _embed(net, x_val, spec, device, config.batch_size * 2, cancel)
    elif config.mode == "gradual":
        unfreeze_stage(net, 0)
    model = _Trainable(net, heads_only)
    ddp_model = model
    if world > 1:
        ddp_model = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    optimiser = torch.optim.AdamW([g for g in groups if g["params"]])
    finding_loss = make_loss(config.loss, counts, multilabel).to(device)
    # Chosen per image from its own modality when applied: a photograph never gets radiograph augmentation.
    augmentation = aug.augmentation_for(strength=config.augment, allow_flip=config.allow_flip, size=spec.size)
    kinds = aug.kinds_of(train_set.modalities)
    batch_size = config.batch_size
    steps_per_epoch = math.ceil(len(train_set) / max(world, 1) / batch_size)
    if config.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimiser, warmup_cosine(config.epochs * steps_per_epoch, round(config.warmup_epochs * steps_per_epoch)))
    else:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=0.3, patience=1)
    gen = torch.Generator().manual_seed(config.seed)
    aug_gen = torch.Generator().manual_seed(config.seed + 1)
    targets_t = torch.as_tensor(train_set.targets)
    sev_t = torch.as_tensor(train_set.severities)
    # Per-sample loss weights (N,): "model was wrong" flags count flagged_weight times, times any weights
    # the labelled set carries; every weight 1 gives exactly the unweighted loss.
    flag_factor = DEFAULT_FLAGGED_WEIGHT if config.flagged_weight is None else float(config.flagged_weight)
    sample_w = torch.as_tensor(flagged_weights(train_set.image_ids, workspace.current_labels(), flag_factor))
    extra = getattr(train_set, "sample_weights", None)
    if extra is not None:
        sample_w = sample_w * torch.as_tensor(extra, dtype=torch.float32)
    emit({"event": "sample_weights", "flagged": int((sample_w != 1).sum()), "weight": flag_factor})
    best = (math.inf, None, 0)
    history = []
    amp = device.type == "cuda"
    epoch = 0
    while epoch < config.epochs:
        cancel.check()
        if config.mode == "gradual":
            unfreeze_stage(net, epoch + 1)
            if world > 1:
                # DDP all-reduces only the parameters that required grad when it was built;
                # re-wrap after unfreezing, or the newly trainable stages drift apart per rank.
                ddp_model = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
        model.train()
        losses = []
        try:
            batches = _batches(len(train_set), batch_size, config.sampler, train_set.targets, len(classes), rank,
                               world, gen)
            for step, idx in enumerate(batches):
                cancel.check()
                if heads_only:
                    xb = feats_train[idx].to(device)
                else:
                    # augmented as a batch on the training device (the GPU when there is one)
                    xb = normalise(augmentation(x_train[idx].to(device, non_blocking=True), kinds[idx], aug_gen),
                                   spec)
                    if device.type == "cuda":
                        xb = xb.contiguous(memory_format=torch.channels_last)
                yb, sb = targets_t[idx].to(device), sev_t[idx].to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits, sev_logits = ddp_model(xb)
                    loss = config.finding_weight * weighted_finding_loss(finding_loss, logits.float(), yb,
                                                                         sample_w[idx])
                    if sev_logits is not None:
                        loss = loss + config.severity_weight * coral_loss(sev_logits.float(), sb)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                if config.schedule == "cosine":
                    scheduler.step()
                losses.append(float(loss.detach()))
                if step % 10 == 0:
                    emit({"event": "step", "epoch": epoch + 1, "step": step + 1, "steps": len(batches),
                          "loss": losses[-1]})
        except RuntimeError as exc:
            if not _is_oom(exc) or batch_size == 1:
                raise
            batch_size = max(1, batch_size // 2)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            emit({"event": "oom", "batch_size": batch_size, "message": "out of memory: halving the batch size"})
            continue
        val_logits = _logits(net, feats_val if heads_only else x_val, spec, device, heads_only, 64)
        val_loss = (float(finding_loss(val_logits.to(device), torch.as_tensor(val_set.targets).to(device)))
                    if len(val_set) else float(np.mean(losses)))
        if config.schedule == "plateau":
            scheduler.step(val_loss)
        record = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else None, "val_loss": val_loss,
                  "val_auc": _quick_auc(val_set.targets, val_logits, multilabel), "batch_size": batch_size}
        history.append(record)
        emit({"event": "epoch", **record, "epochs": config.epochs})
        if val_loss < best[0] - 1e-4:
            best = (val_loss, copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()}), epoch + 1)
        elif epoch + 1 - best[2] >= config.patience:
            emit({"event": "early_stop", "epoch": epoch + 1, "best_epoch": best[2]})
            break
        epoch += 1
    if rank != 0:
        return None
    if best[1] is not None:
        net.load_state_dict(best[1])
    net = net.to("cpu").eval()
    if device.type == "cuda":
        net = net.to(memory_format=torch.contiguous_format)
    return _finish(workspace, parent, net, spec, classes, multilabel, config, val_set, x_val, rare, history,
                   best[2], started, choice, counts, emit)


def _finish(workspace, parent, net, spec, classes, multilabel, config, val_set, x_val, rare, history, best_epoch,
            started, choice, counts, emit) -> dict:
    """Calibrate, evaluate candidate and active on the same validation images, gate, save."""
    from core.models.calibration import fit_temperature
    from core.models.inference import calibrated_probs
    from core.models.metrics import evaluate, operating_thresholds
    from core.models.versions import promotion_decision, save_version

    emit({"event": "evaluate", "message": "calibrating and evaluating on the validation images"})
    metrics, temperature, thresholds = {}, 1.0, {}
    active_metrics = act_probs = probs = None
    if len(val_set):
        logits = _logits(net, x_val, spec, torch.device("cpu"), False, 64).numpy()
        val_counts = val_set.class_counts(len(classes))
        # A calibration fitted on a handful of cases overfits (a separable set drives T to its floor and
        # every probability to 0 or 1), so small validation sets keep T = 1 and no operating threshold.
        if len(val_set) >= MIN_CALIBRATION_CASES and min(val_counts) >= MIN_CALIBRATION_PER_CLASS:
            temperature = float(fit_temperature(logits, val_set.targets, multilabel=multilabel))
        probs = calibrated_probs(logits, temperature, multilabel)
        rare_positives = val_counts[classes.index(rare)]
        if not multilabel and rare_positives >= MIN_THRESHOLD_POSITIVES:
            table = operating_thresholds(val_set.targets, probs, classes, config.target_sensitivity,
                                         config.threshold_confidence)
            thresholds = {rare: table.get(rare)}
        metrics = evaluate(val_set.targets, probs, classes, thresholds=[thresholds.get(c) for c in classes],
                           n_boot=config.n_boot, seed=config.seed, multilabel=multilabel)
        active = workspace.active_model()
        if active is not None:
            from core.models.versions import load_version

            current = load_version(workspace, active.version)
            if list(current.classes) == list(classes):
                act_logits = _logits(current.net, x_val, current.spec, torch.device("cpu"), False, 64).numpy()
                act_probs = calibrated_probs(act_logits, current.temperature, multilabel)
                act_thr = [current.thresholds.get(c) for c in classes]
                active_metrics = evaluate(val_set.targets, act_probs, classes, thresholds=act_thr,
                                          n_boot=config.n_boot, seed=config.seed, multilabel=multilabel)
                _match_operating_point(active_metrics, metrics, act_probs, val_set.targets, classes, rare,
                                       multilabel)
    from core.models.audit_slice import audit_comparison

    audit = audit_comparison(workspace, val_set.image_ids, probs, act_probs, classes, rare) if metrics else None
    promoted, reason = (promotion_decision(metrics, active_metrics, rare, audit=audit) if metrics
                        else (False, "no validation images: kept as candidate"))
    seconds = time.monotonic() - started
    params = {"train": {**asdict(config), "lr": config.head_lr, "backbone_lr_factor": config.backbone_factor},
              "label_counts": dict(zip(classes, counts)), "n_val": len(val_set),
              "history": history, "best_epoch": best_epoch, "seconds": round(seconds, 1), "device": choice.name,
              "device_reason": choice.reason, "rare_class": rare,
              "active_metrics": _summary(active_metrics, rare) if active_metrics else None, "audit": audit}
    saved = save_version(workspace, net, spec, classes, weights=f"fine-tuned from {parent.version.version}",
                         parent=parent.version.version, params=params, metrics=metrics, reason=reason,
                         temperature=temperature, thresholds=thresholds, actor=config.actor)
    if promoted:
        workspace.activate_model(saved.version, actor=config.actor, reason=reason)
    else:
        workspace.set_model_status(saved.version, "candidate", reason=reason, actor=config.actor)
    result = {"version": saved.version, "promoted": promoted, "reason": reason, "metrics": metrics,
              "seconds": round(seconds, 1), "device": choice.name}
    emit({"event": "done", **result})
    return result


def _match_operating_point(active_metrics: dict, metrics: dict, act_probs, targets, classes, rare: str,
                           multilabel: bool) -> None:
    """Add the active model's rare-class sensitivity at the candidate's rare-class specificity.

    The promotion gate compares sensitivities at the same operating point; otherwise an
    untrained model that calls every case rare would look more sensitive than any real one.
    """
    from core.models.metrics import sensitivity_at_specificity

    k = classes.index(rare)
    spec = metrics.get("per_class", {}).get(rare, {}).get("specificity")
    if spec is None:
        return
    y = targets[:, k] if multilabel else (np.asarray(targets) == k).astype(int)
    matched = sensitivity_at_specificity(y, act_probs[:, k], spec)
    if matched is not None:
        active_metrics["per_class"][rare]["sensitivity_at_candidate_specificity"] = matched


def _summary(metrics: dict, rare: Optional[str] = None) -> dict:
    out = {k: metrics.get(k) for k in ("n", "accuracy", "macro_auc", "kappa", "ece")}
    if rare:
        out["rare_sensitivity_at_candidate_specificity"] = (
            metrics.get("per_class", {}).get(rare, {}).get("sensitivity_at_candidate_specificity"))
    return out


def warmup_cosine(total_steps: int, warmup_steps: int = 0) -> Callable[[int], float]:
    """The learning-rate factor at optimiser step ``k``: linear warm-up over ``warmup_steps``, then a cosine
    decay to 0 at ``total_steps`` (without warm-up this is ``CosineAnnealingLR``)."""
    total = max(1, int(total_steps))
    warm = max(0, min(int(warmup_steps), total - 1))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return 0.5 * (1.0 + math.cos(math.pi * t))

    return factor


def _decay_groups(groups: list[dict], weight_decay: float) -> list[dict]:
    """Each optimiser group split in two: weights with ``weight_decay``, biases and norm parameters without."""
    out = []
    for g in groups:
        decay = [p for p in g["params"] if p.ndim > 1]
        plain = [p for p in g["params"] if p.ndim <= 1]
        for params, wd in ((decay, weight_decay), (plain, 0.0)):
            if params:
                out.append({**g, "params": params, "weight_decay": wd})
    return out


def _embed(net, x01: torch.Tensor, spec, device, batch_size: int, cancel: CancelToken) -> torch.Tensor:
    """Backbone embeddings of un-normalised images, without gradients (the frozen-mode cache)."""
    net.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(x01), batch_size):
            cancel.check()
            out.append(net.embed(normalise(x01[i:i + batch_size], spec).to(device)).float().cpu())
    return torch.cat(out) if out else torch.zeros((0, net.embedding_dim))


def _logits(net, x, spec, device, heads_only: bool, batch_size: int) -> torch.Tensor:
    """Class logits for validation, in eval mode, without gradients."""
    net.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            chunk = x[i:i + batch_size].to(device)
            out.append((net.head(chunk) if heads_only else net(normalise(chunk, spec))).float().cpu())
    return torch.cat(out) if out else torch.zeros((0, net.num_classes))


def _quick_auc(targets: np.ndarray, logits: torch.Tensor, multilabel: bool) -> Optional[float]:
    """Macro ROC-AUC for the progress curve (None when undefined)."""
    from sklearn.metrics import roc_auc_score

    if len(targets) == 0:
        return None
    try:
        scores = torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)
        if not multilabel and scores.shape[1] == 2:
            return float(roc_auc_score(targets, scores[:, 1].numpy()))
        return float(roc_auc_score(targets, scores.numpy(), multi_class="ovr", average="macro"))
    except ValueError:
        return None
