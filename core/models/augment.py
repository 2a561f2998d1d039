"""Modality-aware training augmentation.

Radiographs get small geometric and contrast changes and *no* left-right flip
by default (the heart is on the left; a flipped chest film is a different
image). Dermatoscopy photographs have no canonical orientation, so they get
flips, free rotations, colour jitter and cutout. Augmentation applies to float
tensors in [0, 1] of shape (3, H, W), before normalisation.
"""

from __future__ import annotations

import logging

import torch
from torchvision.transforms import v2

from core.types import PHOTO_MODALITY

logger = logging.getLogger(__name__)


def augmentation_for(modality: str, strength: float = 1.0, allow_flip: bool = False) -> v2.Transform:
    """The training augmentation for images of ``modality`` (DICOM code, "XC" for photographs).

    ``strength`` scales every magnitude (0 disables augmentation);
    ``allow_flip`` permits left-right flips of radiographs.
    """
    if strength <= 0:
        return v2.Identity()
    if modality == PHOTO_MODALITY:
        return v2.Compose([
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomRotation(180 * min(strength, 1.0)),
            v2.ColorJitter(brightness=0.2 * strength, contrast=0.2 * strength,
                           saturation=0.2 * strength, hue=0.03 * strength),
            v2.RandomErasing(p=0.25 * min(strength, 1.0), scale=(0.02, 0.08), value=0.0),
        ])
    steps: list[v2.Transform] = [
        v2.RandomAffine(degrees=7 * strength, translate=(0.04 * strength, 0.04 * strength),
                        scale=(1 - 0.08 * strength, 1 + 0.08 * strength)),
        v2.ColorJitter(brightness=0.15 * strength, contrast=0.15 * strength),
    ]
    if allow_flip:
        steps.insert(0, v2.RandomHorizontalFlip())
    return v2.Compose(steps)


def apply(transform: v2.Transform, batch: torch.Tensor) -> torch.Tensor:
    """Apply ``transform`` independently to each image of a (N, 3, H, W) batch, clamped to [0, 1]."""
    return torch.stack([transform(img) for img in batch]).clamp_(0.0, 1.0)
