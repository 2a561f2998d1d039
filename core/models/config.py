"""Training options (no torch import: the app builds a config without loading the model stack)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from core.errors import ModelError

MODES = ("frozen", "finetune", "gradual")


@dataclass
class TrainConfig:
    """Hyperparameters of one training run (all recorded with the new version)."""

    epochs: int = 10
    mode: str = "frozen"
    loss: str = "weighted"
    sampler: str = "none"  # none | balanced
    batch_size: int = 32
    lr: float = 1e-3  # head learning rate; the backbone uses lr * backbone_lr_factor
    backbone_lr_factor: float = 0.1
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | plateau
    patience: int = 3
    val_fraction: float = 0.2
    seed: int = 0
    augment: float = 1.0
    allow_flip: bool = False
    device: str = "auto"
    parent: Optional[str] = None  # version to start from; the active one by default
    severity_weight: float = 0.5  # β in loss = α·finding + β·severity
    finding_weight: float = 1.0  # α
    target_sensitivity: float = 0.9
    # The rare class's threshold keeps the target as the one-sided lower confidence bound of the validation
    # sensitivity (None: the point estimate, which new data often falls short of).
    threshold_confidence: Optional[float] = 0.95
    rare_class: Optional[str] = None  # default: the class with the fewest training labels
    workers: int = 2
    n_boot: int = 500
    actor: str = "training"
    # Loss weight of a case flagged "model was wrong"; None: the workspace's flagged_weight setting (default 2),
    # resolved by the training process's entry point.
    flagged_weight: Optional[float] = None

    def validate(self) -> None:
        """Raise ModelError for an option outside its choices."""
        if self.mode not in MODES:
            raise ModelError(f"unknown training mode {self.mode!r}; choose frozen, finetune or gradual")
        if self.sampler not in ("none", "balanced"):
            raise ModelError(f"unknown sampler {self.sampler!r}; choose none or balanced")
        if self.schedule not in ("cosine", "plateau"):
            raise ModelError(f"unknown schedule {self.schedule!r}; choose cosine or plateau")
        if self.epochs < 1 or self.batch_size < 1:
            raise ModelError("epochs and batch size must be at least 1")
