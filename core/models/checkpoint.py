"""Model files: atomic writes, content hashes and safe loading.

A checkpoint is a plain dict of tensors and JSON-like values saved with
``torch.save``; it is always loaded with ``weights_only=True`` (no pickled code
runs) and checked against the sha256 the registry recorded, so a tampered or
truncated file is refused, never half-used.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

from core.errors import ModelError

logger = logging.getLogger(__name__)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> str:
    """Write ``payload`` to ``path`` atomically and return its sha256.

    The bytes go to a temporary file in the same folder, are fsynced, then
    renamed over ``path``: a crash leaves either the old file or the new one,
    never a half-written checkpoint. Raises ModelError when the disk refuses.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        # Before the temporary file is removed, while the space it took is still taken.
        full = isinstance(exc, (OSError, RuntimeError)) and _disk_full(exc, path.parent)
        # Never leave a temporary file behind, whatever stopped the write.
        Path(tmp).unlink(missing_ok=True)
        if full:
            reason = getattr(exc, "strerror", None) or "No space left on device"
            raise ModelError(f"the disk is full ({reason}): could not write model file {path}; nothing was "
                             f"saved, free some space and try again") from exc
        if isinstance(exc, (OSError, RuntimeError)):  # torch.save reports a full disk as RuntimeError
            raise ModelError(f"could not write model file {path}: {getattr(exc, 'strerror', None) or exc}") from exc
        raise
    return file_sha256(path)


def load_checkpoint(path: str | Path, expected_sha256: Optional[str] = None) -> dict[str, Any]:
    """Load a checkpoint dict with ``weights_only=True``.

    When ``expected_sha256`` is given the file's hash must match it. Raises
    ModelError (naming the file's actual hash) for a missing, tampered,
    truncated or unsafe file.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file is missing: {path}")
    actual = file_sha256(path)
    if expected_sha256 and actual != expected_sha256:
        raise ModelError(f"model file {path.name} was modified or truncated: sha256 {actual[:16]}… "
                         f"does not match the registered {expected_sha256[:16]}…; refusing to load it")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for bad files
        raise ModelError(f"model file {path.name} (sha256 {actual[:16]}…) cannot be loaded safely: {exc}") from exc
    if not isinstance(payload, dict):
        raise ModelError(f"model file {path.name} (sha256 {actual[:16]}…) is not a Loupe checkpoint")
    return payload


def _disk_full(exc: BaseException, folder: Path) -> bool:
    """True when a write failed for lack of space: ENOSPC/EDQUOT, or (torch words it as
    "unexpected pos" or "file write failed") a folder with less than 1 MiB left."""
    if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc).lower()
    if "no space left" in text or "quota exceeded" in text:
        return True
    try:
        return shutil.disk_usage(folder).free < (1 << 20)
    except OSError:
        return False


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
