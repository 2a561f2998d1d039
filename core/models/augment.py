"""Modality-aware training augmentation, batched on tensors, chosen per image.

Every image of a batch gets the augmentation of *its own* modality, so a mixed
workspace never augments a photograph as a radiograph or the reverse:

- **Radiographs** (every modality but ``XC``: CR, DX, DICOM …) get small
  geometric changes (rotation, shift, zoom) and a brightness/contrast change
  applied equally to all channels (the image stays grayscale), and *no* flip by
  default (the heart is on the left; a flipped chest film is a different image).
- **Photographs** (``XC``: dermatoscopy) have no canonical orientation: left-right
  and up-down flips, any rotation, colour jitter (brightness, contrast,
  saturation) and, at input sizes of at least :data:`MIN_ERASE_SIZE`, cutout.

The input size matters: shifts are a fraction of the side, and cutout is left
out of small inputs, where one erased patch hides most of a finding.

The whole batch is transformed at once on the tensors' device (one
``affine_grid``/``grid_sample`` with a matrix per image), so on a GPU the
augmentation costs next to nothing. Inputs are float tensors in [0, 1] of shape
(N, C, H, W), before normalisation; outputs are clamped to [0, 1].
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from core.types import PHOTO_MODALITY

logger = logging.getLogger(__name__)

#: Inputs smaller than this (pixels) get no cutout.
MIN_ERASE_SIZE = 96
RADIOGRAPH, PHOTOGRAPH = 0, 1


def kind_of(modality: str) -> int:
    """:data:`PHOTOGRAPH` for the photograph modality (XC), :data:`RADIOGRAPH` for every other one."""
    return PHOTOGRAPH if (modality or "").upper() == PHOTO_MODALITY else RADIOGRAPH


def kinds_of(modalities: Sequence[str]) -> torch.Tensor:
    """Per-image augmentation kinds (int64 tensor) for a list of modality codes."""
    return torch.tensor([kind_of(m) for m in modalities], dtype=torch.int64)


@dataclass(frozen=True)
class Augmentation:
    """Magnitudes of the per-kind augmentation (scaled by ``strength``; 0 turns everything off)."""

    strength: float = 1.0
    allow_flip: bool = False  # left-right flips of radiographs
    size: int = 224
    # radiographs
    xr_degrees: float = 7.0
    xr_translate: float = 0.04
    xr_scale: float = 0.08
    xr_brightness: float = 0.15
    xr_contrast: float = 0.15
    # photographs
    photo_degrees: float = 180.0
    photo_scale: float = 0.08
    photo_brightness: float = 0.2
    photo_contrast: float = 0.2
    photo_saturation: float = 0.2
    photo_erase_p: float = 0.25
    photo_erase_scale: tuple[float, float] = (0.02, 0.08)

    def __call__(self, x: torch.Tensor, kinds: torch.Tensor, generator: Optional[torch.Generator] = None
                 ) -> torch.Tensor:
        """Augment the (N, C, H, W) batch ``x`` in [0, 1]; ``kinds[i]`` is image i's kind (0 radiograph, 1 photo).

        Random draws come from ``generator`` (CPU) so a seeded run repeats; returns a new tensor.
        """
        return augment_batch(x, kinds, self, generator)


def _uniform(n: int, lo: float | torch.Tensor, hi: float | torch.Tensor, gen) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def augment_batch(x: torch.Tensor, kinds: torch.Tensor, a: Augmentation,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """See :meth:`Augmentation.__call__`."""
    s = float(a.strength)
    if s <= 0 or x.shape[0] == 0:
        return x.float().clamp(0.0, 1.0)
    n, c = x.shape[0], x.shape[1]
    dev = x.device
    photo = kinds.to(torch.bool).cpu()
    gen = generator
    # --- geometry: one affine matrix per image, drawn from its kind's ranges ----------------------------
    xr_deg, ph_deg = a.xr_degrees * s, min(a.photo_degrees * s, 180.0)
    deg = torch.where(photo, _uniform(n, -ph_deg, ph_deg, gen), _uniform(n, -xr_deg, xr_deg, gen))
    scale_r = torch.where(photo, torch.full((n,), a.photo_scale * s), torch.full((n,), a.xr_scale * s))
    zoom = 1.0 + (2 * torch.rand(n, generator=gen) - 1) * scale_r
    shift = a.xr_translate * s * 2  # grid units: the side spans 2
    tx = torch.where(photo, torch.zeros(n), _uniform(n, -shift, shift, gen))
    ty = torch.where(photo, torch.zeros(n), _uniform(n, -shift, shift, gen))
    flip_lr = torch.rand(n, generator=gen) < 0.5
    flip_ud = torch.rand(n, generator=gen) < 0.5
    flip_x = torch.where(photo | torch.tensor(a.allow_flip), flip_lr, torch.zeros(n, dtype=torch.bool))
    flip_y = photo & flip_ud
    rad = deg * (math.pi / 180.0)
    cos, sin = torch.cos(rad) / zoom, torch.sin(rad) / zoom
    sx = torch.where(flip_x, -1.0, 1.0)
    sy = torch.where(flip_y, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = cos * sx, -sin * sy, tx
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = sin * sx, cos * sy, ty
    xf = x.float()
    grid = F.affine_grid(theta.to(dev), list(xf.shape), align_corners=False)
    out = F.grid_sample(xf, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # --- intensity -----------------------------------------------------------------------------------------
    b_r = torch.where(photo, torch.full((n,), a.photo_brightness * s), torch.full((n,), a.xr_brightness * s))
    c_r = torch.where(photo, torch.full((n,), a.photo_contrast * s), torch.full((n,), a.xr_contrast * s))
    bright = 1.0 + (2 * torch.rand(n, generator=gen) - 1) * b_r
    contrast = 1.0 + (2 * torch.rand(n, generator=gen) - 1) * c_r
    out = out * bright.to(dev).view(n, 1, 1, 1)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast.to(dev).view(n, 1, 1, 1) + mean
    if c == 3 and bool(photo.any()):
        sat = torch.where(photo, 1.0 + (2 * torch.rand(n, generator=gen) - 1) * a.photo_saturation * s,
                          torch.ones(n))
        gray = (0.299 * out[:, 0:1] + 0.587 * out[:, 1:2] + 0.114 * out[:, 2:3])
        out = (out - gray) * sat.to(dev).view(n, 1, 1, 1) + gray
    # --- cutout (photographs, large enough inputs) -----------------------------------------------------------
    h, w = out.shape[2], out.shape[3]
    if min(h, w) >= MIN_ERASE_SIZE and a.photo_erase_p > 0 and bool(photo.any()):
        erase = photo & (torch.rand(n, generator=gen) < a.photo_erase_p * min(s, 1.0))
        if bool(erase.any()):
            area = _uniform(n, a.photo_erase_scale[0], a.photo_erase_scale[1], gen) * h * w
            side = area.sqrt()
            eh, ew = side.clamp(1, h - 1), side.clamp(1, w - 1)
            top = torch.rand(n, generator=gen) * (h - eh)
            left = torch.rand(n, generator=gen) * (w - ew)
            ys = torch.arange(h).view(1, h, 1)
            xs = torch.arange(w).view(1, 1, w)
            box = ((ys >= top.view(n, 1, 1)) & (ys < (top + eh).view(n, 1, 1))
                   & (xs >= left.view(n, 1, 1)) & (xs < (left + ew).view(n, 1, 1)) & erase.view(n, 1, 1))
            out = out.masked_fill(box.to(dev).unsqueeze(1), 0.0)
    return out.clamp_(0.0, 1.0)


def augmentation_for(modality: str = "", strength: float = 1.0, allow_flip: bool = False,
                     size: int = 224) -> Augmentation:
    """The batched augmentation (per-image kinds decide radiograph or photograph ranges).

    ``modality`` is accepted for callers of the older per-modality API and ignored: the kind is
    chosen per image when the augmentation is applied. ``strength`` scales every magnitude (0 disables
    augmentation); ``allow_flip`` permits left-right flips of radiographs; ``size`` is the input side.
    """
    return Augmentation(strength=float(strength), allow_flip=bool(allow_flip), size=int(size))
