"""Choosing the compute device: CUDA, then Apple MPS, else the CPU — with the reason."""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class DeviceChoice:
    """The device to run on and, in words, why (shown in the status bar and stored with runs)."""

    device: str  # torch device string
    name: str  # GPU name or "CPU"
    reason: str

    @property
    def is_gpu(self) -> bool:
        """True for CUDA and MPS devices."""
        return self.device != "cpu"


def choose_device(preference: str = "auto") -> DeviceChoice:
    """Pick a device for ``preference`` in :data:`DEVICE_CHOICES`.

    ``auto`` takes CUDA, then MPS, then the CPU. An explicit GPU that is not
    available falls back to the CPU with the reason recorded rather than failing.
    """
    import torch

    if preference not in DEVICE_CHOICES:
        raise ValueError(f"unknown device {preference!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if preference == "cpu":
        return DeviceChoice("cpu", "CPU", "CPU requested")
    if preference in ("auto", "cuda"):
        if torch.cuda.is_available():
            return DeviceChoice("cuda", torch.cuda.get_device_name(0), "CUDA GPU available")
        cuda_reason = "no CUDA GPU found" if torch.version.cuda else "this PyTorch build has no CUDA support"
        if preference == "cuda":
            return DeviceChoice("cpu", "CPU", f"CUDA requested but {cuda_reason}; using the CPU")
    mps = getattr(torch.backends, "mps", None)
    if preference in ("auto", "mps") and mps is not None and mps.is_available():
        return DeviceChoice("mps", "Apple GPU (MPS)", "Apple GPU available")
    if preference == "mps":
        return DeviceChoice("cpu", "CPU", "MPS requested but not available; using the CPU")
    return DeviceChoice("cpu", "CPU", f"no GPU available ({cuda_reason}); using the CPU")
