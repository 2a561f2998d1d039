"""Training data from a workspace: confirmed labels, leak-free splits, decoded tensors.

Only confirmed labels train a model: those a person gave (``human``, ``undo``)
or imported as ground truth (``import``); model-made labels never do. Images
split ``test`` are held out; ``train``/``val`` splits given by the user are
respected; otherwise a stratified split is drawn that keeps every patient and
every group (a lesion id from the labels CSV) on one side.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from core.errors import LoupeError, ModelError
from core.models.splits import linked_groups, stratified_group_split
from core.progress import CancelToken, ProgressCallback, report

logger = logging.getLogger(__name__)

CONFIRMED_SOURCES = ("human", "import", "undo")


@dataclass
class LabelledSet:
    """Images with confirmed labels, as class indices (multi-class) or 0/1 rows (multi-label)."""

    image_ids: list[str]
    paths: list[str]
    targets: np.ndarray  # (N,) int64 or (N, K) float32
    severities: np.ndarray  # (N,) int64, -1 where no severity was given
    groups: list[str]  # split unit: images sharing a patient or a group share it (see splits.linked_groups)
    modalities: list[str]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count

    def __len__(self) -> int:
        return len(self.image_ids)

    def subset(self, idx: Sequence[int]) -> "LabelledSet":
        """The rows at ``idx``."""
        idx = list(idx)
        return LabelledSet([self.image_ids[i] for i in idx], [self.paths[i] for i in idx], self.targets[idx],
                           self.severities[idx], [self.groups[i] for i in idx],
                           [self.modalities[i] for i in idx], dict(self.skipped))

    def class_counts(self, n_classes: int) -> list[int]:
        """Labels per class (for multi-label: positives per finding)."""
        if self.targets.ndim == 2:
            return [int(v) for v in self.targets.sum(axis=0)]
        return [int(v) for v in np.bincount(self.targets, minlength=n_classes)]


def labelled_set(workspace, classes: Sequence[str], multilabel: bool = False,
                 splits: Sequence[Optional[str]] = ("train", "val", None)) -> LabelledSet:
    """Collect the workspace's confirmed labels for the model's ``classes``.

    Images whose split is not in ``splits`` are left out. A multi-class model
    skips images labelled with several classes, and any model skips classes it
    does not know; the counts per reason are in ``skipped``.
    """
    index = {c: i for i, c in enumerate(classes)}
    labels = workspace.current_labels()
    ids, paths, targets, sev, patients, groups, modalities = [], [], [], [], [], [], []
    skipped: Counter = Counter()
    damaged = workspace.damaged_images() if hasattr(workspace, "damaged_images") else {}
    for ref in workspace.images():
        label = labels.get(ref.id)
        if label is None or not label.classes or ref.split not in splits:
            continue
        if ref.id in damaged:
            skipped["damaged image (its pixel data is incomplete or broken)"] += 1
            continue
        if label.source not in CONFIRMED_SOURCES:
            skipped["not a confirmed label"] += 1
            continue
        unknown = [c for c in label.classes if c not in index]
        if unknown:
            skipped[f"class not in the model: {', '.join(sorted(unknown))}"] += 1
            continue
        if multilabel:
            row = np.zeros(len(classes), dtype=np.float32)
            row[[index[c] for c in label.classes]] = 1.0
            targets.append(row)
        elif len(label.classes) != 1:
            skipped["several classes on a multi-class model"] += 1
            continue
        else:
            targets.append(index[label.classes[0]])
        ids.append(ref.id)
        paths.append(ref.path)
        sev.append(-1 if label.severity is None else int(label.severity))
        patients.append(ref.record.patient_id)
        groups.append(ref.group)
        modalities.append(ref.record.modality)
    target_arr = (np.stack(targets).astype(np.float32) if multilabel and targets
                  else np.asarray(targets, dtype=np.int64))
    return LabelledSet(ids, paths, target_arr, np.asarray(sev, dtype=np.int64), linked_groups(ids, patients, groups),
                       modalities, dict(skipped))


def train_val_split(workspace, data: LabelledSet, val_fraction: float, seed: int) -> tuple[LabelledSet, LabelledSet]:
    """Train and validation sets: the user's ``train``/``val`` splits when any image is marked ``val``,
    otherwise a stratified split with each patient and each group on one side only."""
    split_of = {ref.id: ref.split for ref in workspace.images()}
    marked_val = [i for i, image_id in enumerate(data.image_ids) if split_of.get(image_id) == "val"]
    if marked_val:
        train_idx = [i for i in range(len(data)) if i not in set(marked_val)]
        return data.subset(train_idx), data.subset(marked_val)
    strata = data.targets if data.targets.ndim == 1 else data.targets.argmax(axis=1)
    train_idx, val_idx = stratified_group_split(strata, data.groups, val_fraction, seed)
    return data.subset(train_idx), data.subset(val_idx)


def decode_all(paths: Sequence[str], spec, workers: int = 2, progress: Optional[ProgressCallback] = None,
               cancel: Optional[CancelToken] = None) -> tuple[torch.Tensor, list[int]]:
    """Decode images to un-normalised (N, C, S, S) float16 tensors in [0, 1] at the spec's size.

    Uses the same model-input path as inference (``core.imaging.model_input`` and
    the spec's pad/resize); normalisation is left to the training step so that
    augmentation can work in [0, 1]. Returns the tensor and the indices that
    decoded; a file that no longer reads is logged and left out.
    """
    from core.imaging import model_input
    from core.models.preprocess import InputSpec, to_tensor

    raw_spec = InputSpec(size=spec.size, mean=(0.0,) * spec.channels, std=(1.0,) * spec.channels,
                         channels=spec.channels, resize=spec.resize, pad_value=spec.pad_value)

    def one(path):
        try:
            return to_tensor(model_input(path), raw_spec).to(torch.float16)
        except (LoupeError, OSError) as exc:
            logger.warning("left out of training, cannot decode %s: %s", path, exc)
            return None

    out, good = [], []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, t in enumerate(pool.map(one, paths)):
            if cancel is not None and i % 64 == 0:
                cancel.check()
            if t is not None:
                out.append(t)
                good.append(i)
            if i % 256 == 0 or i == len(paths) - 1:
                report(progress, i + 1, len(paths), "decoding images")
    if not out:
        raise ModelError("none of the labelled images could be decoded for training")
    return torch.stack(out), good


def normalise(x01: torch.Tensor, spec) -> torch.Tensor:
    """Apply the spec's mean/std to a (N, C, S, S) batch in [0, 1] (float32 out)."""
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=x01.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=x01.device).view(1, -1, 1, 1)
    return (x01.float() - mean) / std
