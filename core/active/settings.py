"""The queue and retraining settings, stored in the workspace: one definition for `loupe settings` and the window.

Each key (``strategy``, ``batch``, ``rare_share``, ``audit_share``, ``retrain_after``, ``train.*``) maps onto the
workspace setting the loop already reads (``min_rare_share``, ``audit_share``, ``retrain_after_labels``, …), so
the queue and the automatic retrain use exactly the values shown and set here. Changes are audited.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional

from core.active.acquire import AcquisitionConfig
from core.active.loop import DEFAULT_RETRAIN_AFTER, RETRAIN_SETTING
from core.active.names import STRATEGIES
from core.errors import LoupeError

logger = logging.getLogger(__name__)

#: workspace setting holding the automatic retrain's TrainConfig fields
TRAIN_CONFIG_SETTING = "auto_train_config"


class SettingsError(LoupeError):
    """A setting name or value that cannot be used (the message lists the choices)."""


def _choice(options) -> Callable[[Any], str]:
    def parse(value) -> str:
        text = str(value).strip()
        if text not in options:
            raise SettingsError(f"choose one of: {', '.join(options)} (got {text!r})")
        return text
    return parse


def _int_range(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(value) -> int:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise SettingsError(f"a whole number from {lo} to {hi} is needed, got {value!r}") from None
        if not lo <= number <= hi:
            raise SettingsError(f"a whole number from {lo} to {hi} is needed, got {number}")
        return number
    return parse


def _float_range(lo: float, hi: float, open_low: bool = False) -> Callable[[Any], float]:
    def parse(value) -> float:
        try:
            number = float(str(value).strip())
        except ValueError:
            raise SettingsError(f"a number from {lo} to {hi} is needed, got {value!r}") from None
        if not (lo < number if open_low else lo <= number) or not number <= hi:
            raise SettingsError(f"a number {'above' if open_low else 'from'} {lo} to {hi} is needed, got {number}")
        return number
    return parse


@dataclass(frozen=True)
class SettingSpec:
    """One user-facing setting: its key, where it is stored, its default, parser and a one-line description."""

    key: str
    stored: str  # workspace setting name; "train.X" keys live inside TRAIN_CONFIG_SETTING
    default: Any
    parse: Callable[[Any], Any]
    help: str
    choices: tuple = ()


SPECS: tuple[SettingSpec, ...] = (
    SettingSpec("strategy", "queue_strategy", "default", _choice(STRATEGIES),
                "how the queue picks cases (default = uncertainty + rare-class cost + diversity + audit slice)",
                STRATEGIES),
    SettingSpec("batch", "queue_batch", 50, _int_range(1, 1000), "cases per queue refresh"),
    SettingSpec("rare_share", "min_rare_share", AcquisitionConfig.min_rare_share, _float_range(0.0, 1.0),
                "minimum share of the queue that is likely rare"),
    SettingSpec("audit_share", "audit_share", AcquisitionConfig.audit_share, _float_range(0.0, 0.5),
                "share of the queue drawn at random from confident cases, to measure missed findings"),
    SettingSpec("retrain_after", RETRAIN_SETTING, DEFAULT_RETRAIN_AFTER, _int_range(1, 100000),
                "fine-tune automatically after this many new confirmed labels since the last training started"),
    SettingSpec("train.mode", "train.mode", "frozen", _choice(("frozen", "finetune", "gradual")),
                "automatic retrain: frozen backbone, full fine-tune or gradual unfreezing",
                ("frozen", "finetune", "gradual")),
    SettingSpec("train.epochs", "train.epochs", 10, _int_range(1, 500), "automatic retrain: epochs"),
    SettingSpec("train.loss", "train.loss", "weighted", _choice(("weighted", "ce", "focal")),
                "automatic retrain: loss", ("weighted", "ce", "focal")),
    SettingSpec("train.sampler", "train.sampler", "none", _choice(("none", "balanced")),
                "automatic retrain: sampler", ("none", "balanced")),
    SettingSpec("train.batch_size", "train.batch_size", 32, _int_range(1, 4096), "automatic retrain: batch size"),
    SettingSpec("train.lr", "train.lr", 1e-3, _float_range(0.0, 1.0, open_low=True),
                "automatic retrain: learning rate"),
    SettingSpec("train.device", "train.device", "auto", _choice(("auto", "cpu", "cuda", "mps")),
                "automatic retrain: device", ("auto", "cpu", "cuda", "mps")),
    SettingSpec("fast_reading", "fast_reading", "off", _choice(("on", "off")),
                "predict the whole pool with the active model's gated INT8/distilled copy when one exists "
                "(explanations still come from the full model)", ("on", "off")),
)
BY_KEY = {s.key: s for s in SPECS}


def spec(key: str) -> SettingSpec:
    """The spec of ``key``; :class:`SettingsError` listing the known keys."""
    try:
        return BY_KEY[key]
    except KeyError:
        raise SettingsError(f"unknown setting {key!r}; the settings are: {', '.join(BY_KEY)}") from None


def read_settings(ws) -> dict[str, Any]:
    """Every setting's value in effect (stored, else the default), by key."""
    train = ws.get_setting(TRAIN_CONFIG_SETTING, {}) or {}
    out: dict[str, Any] = {}
    for s in SPECS:
        if s.key.startswith("train."):
            value = train.get(s.key.split(".", 1)[1], s.default)
        else:
            value = ws.get_setting(s.stored, s.default)
        out[s.key] = s.default if value is None else value
    return out


def write_setting(ws, key: str, value: Any, actor: str = "system") -> Any:
    """Parse and store one setting (audited as ``settings.set``); returns the stored value.

    Raises :class:`SettingsError` for an unknown key or a value out of range.
    """
    s = spec(key)
    try:
        parsed = s.parse(value)
    except SettingsError as error:
        raise SettingsError(f"{key}: {error}") from None
    before = read_settings(ws)[key]
    if key.startswith("train."):
        train = dict(ws.get_setting(TRAIN_CONFIG_SETTING, {}) or {})
        train[key.split(".", 1)[1]] = parsed
        ws.set_setting(TRAIN_CONFIG_SETTING, train)
    else:
        ws.set_setting(s.stored, parsed)
    ws.audit(actor, "settings.set", key, {"value": parsed, "before": before})
    logger.info("setting %s = %r (was %r) by %s", key, parsed, before, actor)
    return parsed


def write_settings(ws, values: dict[str, Any], actor: str = "system") -> dict[str, Any]:
    """Store several settings (each audited); only changed values are written. Returns the settings in effect."""
    current = read_settings(ws)
    for key, value in values.items():
        if spec(key).parse(value) != current.get(key):
            write_setting(ws, key, value, actor)
    return read_settings(ws)


def auto_train_config(ws, actor: str = "app", **overrides):
    """The :class:`~core.models.config.TrainConfig` of the automatic retrain, from the stored settings.

    The rare class of the findings (first rare class) is the one whose sensitivity guards promotion.
    """
    from core.models.config import TrainConfig

    values = read_settings(ws)
    fields = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("train.")}
    rare: Optional[str] = ws.get_setting("rare_class")
    if rare:
        fields.setdefault("rare_class", rare)
    fields.update(actor=actor, **overrides)
    return TrainConfig(**fields)
