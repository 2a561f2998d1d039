"""Typed messages from the training process to whoever follows it (the app, the CLI).

The training process writes one JSON object per line (``{"event": KIND, ...}``);
:func:`from_json` turns each into a frozen dataclass, so followers match on the
type (``isinstance(ev, Done)``) instead of string keys in several places, and
:meth:`TrainingEvent.to_json` writes the same line back. Fields a newer process
adds that a class does not know are kept in ``extra`` rather than dropped, and a
kind nobody knows becomes :class:`Unknown`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingEvent:
    """Base class; ``kind`` is the JSON ``event`` value."""

    kind: ClassVar[str] = ""
    extra: dict = field(default_factory=dict, compare=False)

    def to_json(self) -> dict:
        """The JSON object the training process writes (``{"event": kind, **fields}``)."""
        out: dict[str, Any] = {"event": self.kind}
        for f in dataclasses.fields(self):
            if f.name != "extra":
                out[f.name] = getattr(self, f.name)
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class Start(TrainingEvent):
    """The run began: data sizes, label counts, device, rare class and the TrainConfig fields."""

    kind: ClassVar[str] = "start"
    parent: str = ""
    n_train: int = 0
    n_val: int = 0
    counts: dict = field(default_factory=dict)
    skipped: Any = None
    device: str = ""
    device_reason: str = ""
    rare_class: Optional[str] = None
    config: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Decode(TrainingEvent):
    """Images decoded so far."""

    kind: ClassVar[str] = "decode"
    done: int = 0
    total: int = 0


@dataclass(frozen=True)
class Embed(TrainingEvent):
    """Frozen-backbone embeddings are being computed."""

    kind: ClassVar[str] = "embed"
    message: str = ""


@dataclass(frozen=True)
class Step(TrainingEvent):
    """A training step (every tenth)."""

    kind: ClassVar[str] = "step"
    epoch: int = 0
    step: int = 0
    steps: int = 0
    loss: Optional[float] = None


@dataclass(frozen=True)
class Oom(TrainingEvent):
    """Out of memory: the batch size was halved."""

    kind: ClassVar[str] = "oom"
    batch_size: int = 0
    message: str = ""


@dataclass(frozen=True)
class Epoch(TrainingEvent):
    """One epoch ended, with its losses and validation AUC."""

    kind: ClassVar[str] = "epoch"
    epoch: int = 0
    epochs: int = 0
    train_loss: Optional[float] = None
    val_loss: Optional[float] = None
    val_auc: Optional[float] = None
    batch_size: Optional[int] = None


@dataclass(frozen=True)
class EarlyStop(TrainingEvent):
    """Validation loss stopped improving."""

    kind: ClassVar[str] = "early_stop"
    epoch: int = 0
    best_epoch: int = 0


@dataclass(frozen=True)
class Evaluate(TrainingEvent):
    """Calibrating and evaluating on the validation images."""

    kind: ClassVar[str] = "evaluate"
    message: str = ""


@dataclass(frozen=True)
class Done(TrainingEvent):
    """The run ended with a saved version, promoted or kept as a candidate, and why."""

    kind: ClassVar[str] = "done"
    version: str = ""
    promoted: bool = False
    reason: str = ""
    metrics: dict = field(default_factory=dict)
    seconds: Optional[float] = None
    device: str = ""


@dataclass(frozen=True)
class Error(TrainingEvent):
    """The run failed; ``message`` says why in words."""

    kind: ClassVar[str] = "error"
    message: str = "training failed"


@dataclass(frozen=True)
class Cancelled(TrainingEvent):
    """The run was cancelled; nothing was saved."""

    kind: ClassVar[str] = "cancelled"
    message: str = "training cancelled"


@dataclass(frozen=True)
class Unknown(TrainingEvent):
    """A kind this version does not know (a newer process); its fields are in ``extra``."""

    kind: ClassVar[str] = "unknown"
    event: str = ""

    def to_json(self) -> dict:
        return {"event": self.event, **self.extra}


KINDS: dict[str, type[TrainingEvent]] = {c.kind: c for c in (Start, Decode, Embed, Step, Oom, Epoch, EarlyStop,
                                                            Evaluate, Done, Error, Cancelled)}


def from_json(obj: dict) -> TrainingEvent:
    """The typed event for one JSON object of the training process; never raises on unknown fields or kinds."""
    kind = str(obj.get("event", ""))
    cls = KINDS.get(kind)
    if cls is None:
        return Unknown(event=kind, extra={k: v for k, v in obj.items() if k != "event"})
    names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    known = {k: v for k, v in obj.items() if k in names}
    extra = {k: v for k, v in obj.items() if k not in names and k != "event"}
    return cls(extra=extra, **known)
