"""Frozen-backbone embeddings of a MedMNIST-style npz, computed once and cached on disk.

The simulation (``core.active.simulate``) trains only a classification head per
round, which is what Loupe's ``frozen`` training mode does; the backbone's
embeddings of every image are therefore computed once per (npz content, arch,
weights, input size) and kept as ``.npz`` in a cache folder the caller chooses.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from core.errors import LoupeError
from core.progress import CancelToken, ProgressCallback, report

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def file_digest(path: str | Path) -> str:
    """First 16 hex digits of the SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The ``{split}_images`` / ``{split}_labels`` arrays of a MedMNIST npz (labels flattened to (N,)).

    Raises LoupeError when the file is missing or lacks ``train_*``/``test_*`` keys.
    """
    path = Path(path)
    if not path.exists():
        raise LoupeError(f"no such file: {path}")
    try:
        with np.load(path) as data:
            out = {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError) as exc:
        raise LoupeError(f"{path} is not a readable npz file: {exc}") from exc
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        if key not in out:
            raise LoupeError(f"{path} has no '{key}' array (MedMNIST keys expected)")
    for split in SPLITS:
        if f"{split}_labels" in out:
            labels = out[f"{split}_labels"]
            out[f"{split}_labels"] = labels.reshape(len(labels), -1)[:, 0].astype(np.int64)
    return out


def embed_arrays(images: np.ndarray, arch: str = "efficientnet_lite0", pretrained: str = "default",
                 size: int = 224, batch_size: int = 128, torch_cache_dir: Optional[str] = None,
                 progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None) -> np.ndarray:
    """Pooled backbone embeddings (N, D) float32 of uint8 images (N, H, W) or (N, H, W, 3).

    Uses the same preprocessing as Loupe's inference (``preprocess.to_tensor``).
    """
    import torch

    from core.models.architectures import build_model, default_input_spec
    from core.models.preprocess import to_tensor

    net, weights = build_model(arch, 2, pretrained=pretrained, torch_cache_dir=torch_cache_dir)
    net.eval()
    spec = default_input_spec(arch, size)
    logger.info("embedding %d images with %s (%s) at %d px", len(images), arch, weights, size)
    out = []
    for start in range(0, len(images), batch_size):
        if cancel is not None:
            cancel.check()
        chunk = images[start:start + batch_size]
        x = torch.stack([to_tensor(np.asarray(im, dtype=np.float32) / 255.0, spec) for im in chunk])
        with torch.inference_mode():
            out.append(net.embed(x).float().numpy())
        report(progress, min(start + batch_size, len(images)), len(images), "embedding")
    return np.concatenate(out) if out else np.zeros((0, net.embedding_dim), np.float32)


def npz_embeddings(npz_path: str | Path, cache_dir: str | Path, arch: str = "efficientnet_lite0",
                   pretrained: str = "default", size: int = 224, torch_cache_dir: Optional[str] = None,
                   progress: Optional[ProgressCallback] = None) -> dict[str, np.ndarray]:
    """``{split}_emb`` and ``{split}_labels`` (and ``{split}_groups`` when the npz has them) for the train and
    test (and val) splits, cached.

    The cache file name carries the npz digest, arch, weights choice and size, so
    a changed file never reuses stale embeddings.
    """
    if not Path(npz_path).exists():
        raise LoupeError(f"no such file: {npz_path}")
    key = f"{file_digest(npz_path)}-{arch}-{Path(str(pretrained)).name}-{size}"
    cache = Path(cache_dir) / f"sim-emb-{key}.npz"
    if cache.exists():
        with np.load(cache) as cached:
            logger.info("simulation embeddings from cache %s", cache)
            return {k: cached[k] for k in cached.files}
    data = load_npz(npz_path)
    out: dict[str, np.ndarray] = {}
    for split in SPLITS:
        if f"{split}_images" not in data:
            continue
        out[f"{split}_emb"] = embed_arrays(data[f"{split}_images"], arch, pretrained, size,
                                           torch_cache_dir=torch_cache_dir, progress=progress)
        out[f"{split}_labels"] = data[f"{split}_labels"]
        if f"{split}_groups" in data:  # lesion or patient ids: a split keeps each group on one side
            out[f"{split}_groups"] = np.asarray(data[f"{split}_groups"]).astype(str)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(cache)
    return out
