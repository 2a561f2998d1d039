"""Model input preprocessing: image array in [0, 1] → normalised tensor, and back.

The :class:`InputSpec` travels with every model version, so inference and
explanations preprocess exactly as training did.

Geometry choice: the image is **padded to a square** (centred, with
``spec.pad_value``, black by default) and then resized to ``spec.size`` ×
``spec.size`` with antialiased bilinear interpolation. Padding keeps the
aspect ratio, so a round lesion stays round and a chest keeps its proportions,
and nothing at the borders is cropped away. The transform is recorded as a
:class:`Geometry`, and :func:`undo_geometry` maps a model-space map (for
example a Grad-CAM heat map of shape (size, size)) back onto the original
image's (height, width). ``resize="stretch"`` resizes without padding (aspect
ratio not kept); it is invertible the same way.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import ModelError

logger = logging.getLogger(__name__)

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
RESIZE_MODES = ("pad", "stretch")
SPEC_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class InputSpec:
    """How images are turned into model input.

    Attributes:
        size: side of the square model input in pixels.
        mean, std: per-channel normalisation applied to values in [0, 1].
        channels: 3 (grayscale is replicated) or 1 (colour is averaged to gray).
        resize: ``"pad"`` (pad to square, then resize; keeps aspect ratio) or
            ``"stretch"`` (resize straight to the square).
        pad_value: value in [0, 1] used for the padding (before normalisation).
    """

    size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channels: int = 3
    resize: str = "pad"
    pad_value: float = 0.0

    def __post_init__(self) -> None:
        # Lists (from JSON) become tuples so the spec stays hashable and frozen.
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if int(self.size) < 8:
            raise ModelError(f"Input size must be at least 8 pixels, got {self.size}.")
        if self.channels not in (1, 3):
            raise ModelError(f"Input channels must be 1 or 3, got {self.channels}.")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ModelError(
                f"mean and std need {self.channels} values each, got {len(self.mean)} and {len(self.std)}."
            )
        if any(s <= 0 for s in self.std):
            raise ModelError(f"std values must be positive, got {self.std}.")
        if self.resize not in RESIZE_MODES:
            raise ModelError(f"Unknown resize mode {self.resize!r}; use one of {', '.join(RESIZE_MODES)}.")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (with a schema version) for storing with a model version."""
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        d["schema_version"] = SPEC_SCHEMA_VERSION
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "InputSpec":
        """Rebuild a spec from :meth:`to_dict` output; unknown keys are ignored, missing ones defaulted.

        Raises:
            ModelError: the stored values are invalid.
        """
        known = {"size", "mean", "std", "channels", "resize", "pad_value"}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class Geometry:
    """Where the original image lies in model input space.

    The original (height, width) image is placed at ``pad`` (top, left) inside
    a ``padded_shape`` canvas, which is then resized to ``size`` × ``size``.
    """

    original_shape: tuple[int, int]
    padded_shape: tuple[int, int]
    pad: tuple[int, int]
    size: int
    scale: tuple[float, float] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "scale", (self.size / self.padded_shape[0], self.size / self.padded_shape[1])
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "original_shape": list(self.original_shape),
            "padded_shape": list(self.padded_shape),
            "pad": list(self.pad),
            "size": self.size,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Geometry":
        """Inverse of :meth:`to_dict`."""
        return cls(
            original_shape=tuple(d["original_shape"]),
            padded_shape=tuple(d["padded_shape"]),
            pad=tuple(d["pad"]),
            size=int(d["size"]),
        )


def geometry_for(shape: tuple[int, ...], spec: InputSpec) -> Geometry:
    """Geometry of the transform :func:`to_tensor` applies to an image of ``shape`` ((H, W) or (H, W, C))."""
    h, w = int(shape[0]), int(shape[1])
    if spec.resize == "stretch":
        return Geometry((h, w), (h, w), (0, 0), spec.size)
    side = max(h, w)
    return Geometry((h, w), (side, side), ((side - h) // 2, (side - w) // 2), spec.size)


def _as_chw(arr: np.ndarray, channels: int) -> torch.Tensor:
    a = np.asarray(arr)
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif not np.issubdtype(a.dtype, np.floating):
        raise ModelError(
            f"Model input must be a float array with values in [0, 1] (or uint8), got dtype {a.dtype}."
        )
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None]
        return t.expand(channels, -1, -1) if channels == 3 else t
    if a.ndim == 3 and a.shape[2] == 3:
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)
        return t if channels == 3 else t.mean(dim=0, keepdim=True)
    raise ModelError(f"Model input must be (H, W) grayscale or (H, W, 3) colour, got shape {a.shape}.")


def to_tensor_with_geometry(arr01: np.ndarray, spec: InputSpec | None = None) -> tuple[torch.Tensor, Geometry]:
    """Preprocess one image and return the tensor with the geometry that produced it.

    Args:
        arr01: float array in [0, 1], (H, W) grayscale (replicated to 3 channels)
            or (H, W, 3) RGB. uint8 arrays are divided by 255.
        spec: input spec; the ImageNet default (224 px) when None.

    Returns:
        ``(tensor, geometry)``: float32 tensor (channels, size, size), normalised.

    Raises:
        ModelError: unsupported shape or dtype.
    """
    spec = spec or InputSpec()
    t = _as_chw(arr01, spec.channels)
    geo = geometry_for(t.shape[1:], spec)
    (h, w), (ph, pw), (top, left) = geo.original_shape, geo.padded_shape, geo.pad
    t = t[None]
    if (ph, pw) != (h, w):
        t = F.pad(t, (left, pw - w - left, top, ph - h - top), value=float(spec.pad_value))
    if (ph, pw) != (spec.size, spec.size):
        t = F.interpolate(t, size=(spec.size, spec.size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)
    return ((t - mean) / std)[0].contiguous(), geo


def to_tensor(arr01: np.ndarray, spec: InputSpec | None = None) -> torch.Tensor:
    """Preprocess one image to a normalised (channels, size, size) tensor.

    See :func:`to_tensor_with_geometry` for arguments; use :func:`geometry_for`
    to get the geometry without preprocessing again.
    """
    return to_tensor_with_geometry(arr01, spec)[0]


def batch(arrays: Iterable[np.ndarray], spec: InputSpec | None = None) -> torch.Tensor:
    """Preprocess several images (any mix of sizes) into one (N, channels, size, size) tensor.

    Raises:
        ModelError: no images, or one has an unsupported shape or dtype.
    """
    tensors = [to_tensor(a, spec) for a in arrays]
    if not tensors:
        raise ModelError("Cannot build a batch from zero images.")
    return torch.stack(tensors)


def undo_geometry(map2d: np.ndarray | torch.Tensor, geometry: Geometry) -> np.ndarray:
    """Map a model-space 2-D map back onto the original image.

    Args:
        map2d: (size, size) map in model input space (any (h, w) is accepted and
            treated as covering the whole model input).
        geometry: the :class:`Geometry` of the image's preprocessing.

    Returns:
        float32 array of shape ``geometry.original_shape``; the padding is cut
        away. Bilinear resampling keeps values within the input's range.
    """
    m = torch.as_tensor(np.asarray(map2d, dtype=np.float32) if not torch.is_tensor(map2d) else map2d)
    m = m.detach().to(torch.float32).cpu()
    if m.ndim != 2:
        raise ModelError(f"undo_geometry needs a 2-D map, got shape {tuple(m.shape)}.")
    (h, w), (ph, pw), (top, left) = geometry.original_shape, geometry.padded_shape, geometry.pad
    if tuple(m.shape) != (ph, pw):
        # Antialiasing only matters when shrinking; bilinear does not overshoot.
        shrink = ph < m.shape[0] or pw < m.shape[1]
        m = F.interpolate(m[None, None], size=(ph, pw), mode="bilinear", align_corners=False, antialias=shrink)[0, 0]
    return m[top : top + h, left : left + w].contiguous().numpy().astype(np.float32, copy=False)
