"""Per-model-version cache of the pool's probabilities and embeddings, as .npz files beside the workspace.

``<workspace stem>-cache/embeddings/<version>.npz`` holds ``ids`` (str), ``probs``
(N, K) float32 and ``emb`` (N, D) float16 (half the disk; k-center and kNN do not
need more precision), plus optional ``mc`` (T, N, K) MC-dropout passes. A model
version's weights never change, so an entry is valid for as long as the version
exists; new images are appended by :func:`merge`. Writes are atomic (temp file +
rename), so a reader never sees half a file.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class ModelOutputs:
    """One version's outputs for a set of images, row-aligned with ``image_ids``."""

    version: str
    image_ids: list[str]
    probs: np.ndarray  # (N, K)
    emb: np.ndarray  # (N, D)
    mc: Optional[np.ndarray] = None  # (T, N, K) MC-dropout passes, when computed

    def index(self) -> dict[str, int]:
        """``{image_id: row}``."""
        return {image_id: i for i, image_id in enumerate(self.image_ids)}

    def subset(self, image_ids: Sequence[str]) -> "ModelOutputs":
        """The rows of ``image_ids`` (each must be present), in that order."""
        idx = self.index()
        rows = [idx[i] for i in image_ids]
        mc = None if self.mc is None else self.mc[:, rows]
        return ModelOutputs(self.version, list(image_ids), self.probs[rows], self.emb[rows], mc)


def cache_dir(workspace_path: str | Path) -> Path:
    """``<workspace stem>-cache/embeddings`` beside the workspace file."""
    path = Path(workspace_path)
    return path.parent / f"{path.stem}-cache" / "embeddings"


def _file(workspace_path: str | Path, version: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", version)
    return cache_dir(workspace_path) / f"{safe}.npz"


def load_outputs(workspace_path: str | Path, version: str) -> Optional[ModelOutputs]:
    """The cached outputs of ``version``, or None when absent or unreadable (logged)."""
    path = _file(workspace_path, version)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            mc = data["mc"] if "mc" in data.files else None
            return ModelOutputs(version, [str(i) for i in data["ids"]], data["probs"].astype(np.float32),
                                data["emb"].astype(np.float32), None if mc is None else mc.astype(np.float32))
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("ignoring unreadable embedding cache %s: %s", path, exc)
        return None


def save_outputs(workspace_path: str | Path, outputs: ModelOutputs) -> Path:
    """Write (replace) the cache file of ``outputs.version`` atomically; returns its path."""
    path = _file(workspace_path, outputs.version)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    arrays = {"ids": np.asarray(outputs.image_ids, dtype=str), "probs": np.asarray(outputs.probs, np.float32),
              "emb": np.asarray(outputs.emb, np.float16)}
    if outputs.mc is not None:
        arrays["mc"] = np.asarray(outputs.mc, np.float16)
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    logger.info("cached %d outputs of %s in %s", len(outputs.image_ids), outputs.version, path)
    return path


def merge(old: Optional[ModelOutputs], new: ModelOutputs) -> ModelOutputs:
    """``old`` with ``new``'s rows added (new rows win); MC passes kept only when both have them."""
    if old is None or not old.image_ids:
        return new
    if not new.image_ids:
        return old
    keep = [i for i, image_id in enumerate(old.image_ids) if image_id not in set(new.image_ids)]
    mc = None
    if old.mc is not None and new.mc is not None and old.mc.shape[0] == new.mc.shape[0]:
        mc = np.concatenate([old.mc[:, keep], new.mc], axis=1)
    return ModelOutputs(new.version, [old.image_ids[i] for i in keep] + list(new.image_ids),
                        np.concatenate([old.probs[keep], new.probs]), np.concatenate([old.emb[keep], new.emb]), mc)


def drop_version(workspace_path: str | Path, version: str) -> bool:
    """Delete a version's cache file; returns whether one existed."""
    path = _file(workspace_path, version)
    if path.exists():
        path.unlink()
        return True
    return False
