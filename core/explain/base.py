"""What every explanation method shares: the method registry, the run context and the private model copy.

A method is a small module that registers a :class:`Method`: its name, whether
its attributions are signed, its default parameters for a given input size,
and ``run(ctx)`` returning a model-space (S, S) map. Methods never touch the
shared, cached network of :func:`core.models.versions.load_version`: they run
on a private deep copy (eval mode, parameters frozen), held under a lock while
one explanation runs; the copy is checked for leftover hooks and gradients
after every run.
"""

from __future__ import annotations

import copy
import logging
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn as nn

from core.errors import ModelError
from core.progress import CancelToken, ProgressCallback, report

logger = logging.getLogger(__name__)

#: Parameters that change how fast a map is computed but never its values (kept out of cache keys).
RUNTIME_PARAMS = frozenset({"batch_size", "device"})


@dataclass
class ExplainContext:
    """Everything a method needs for one run.

    Attributes:
        net: the private model copy (eval mode, on ``device``, parameters frozen).
        x: the preprocessed input, (1, C, S, S) on ``device``.
        target: class index to explain, or None when the method resolves the predicted class itself.
        params: resolved method parameters.
        batch_size: most images per forward pass (bounds memory).
        device: torch device string.
        cancel: checked before every forward pass.
        progress: called with (done, total) forward batches when the total is known.
        spec: the model's :class:`~core.models.preprocess.InputSpec`.
    """

    net: nn.Module
    x: torch.Tensor
    target: Optional[int]
    params: dict
    batch_size: int
    device: str
    spec: Any
    cancel: Optional[CancelToken] = None
    progress: Optional[ProgressCallback] = None
    resolved_target: Optional[int] = None
    #: the target's probability when the method got it from its own forward pass (saves one forward)
    score: Optional[float] = None
    forward_calls: int = 0
    expected_calls: int = 0

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The network's logits, checking the cancel token first (cooperative cancel between batches)."""
        if self.cancel is not None:
            self.cancel.check()
        out = self.net(inputs)
        self.forward_calls += 1
        if self.expected_calls:
            report(self.progress, min(self.forward_calls, self.expected_calls), self.expected_calls, "explaining")
        return out

    def check(self) -> None:
        """Raise :class:`~core.errors.Cancelled` when cancellation was requested."""
        if self.cancel is not None:
            self.cancel.check()

    def baseline(self, kind: str) -> torch.Tensor:
        """A reference input of ``x``'s shape: ``black`` (pixel 0), ``mean`` (0 after normalisation),
        ``blur`` (the image blurred with a Gaussian of sigma S/16) or ``pad`` (the padding value)."""
        mean = torch.tensor(self.spec.mean, dtype=self.x.dtype, device=self.x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.spec.std, dtype=self.x.dtype, device=self.x.device).view(1, -1, 1, 1)
        if kind == "mean":
            return torch.zeros_like(self.x)
        if kind == "black":
            return ((0.0 - mean) / std).expand_as(self.x).contiguous()
        if kind == "pad":
            return ((float(self.spec.pad_value) - mean) / std).expand_as(self.x).contiguous()
        if kind == "blur":
            return gaussian_blur(self.x, max(1.0, self.x.shape[-1] / 16))
        raise ModelError(f"unknown baseline {kind!r}; use black, mean, blur or pad")


@dataclass(frozen=True)
class Method:
    """One registered explanation method.

    ``defaults(size)`` gives the default parameters for an S-pixel model input;
    ``run(ctx)`` returns the (S, S) model-space map (signed when ``signed``).
    ``resolves_target`` methods accept ``ctx.target = None`` and set
    ``ctx.resolved_target`` from the same forward pass (saves one forward).
    ``random`` methods take a ``seed`` parameter.
    """

    name: str
    title: str
    signed: bool
    defaults: Callable[[int], dict]
    run: Callable[[ExplainContext], torch.Tensor]
    resolves_target: bool = False
    random: bool = False
    aliases: tuple[str, ...] = field(default_factory=tuple)


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` (under its name and aliases); returns it."""
    for name in (method.name,) + method.aliases:
        METHODS[name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method called ``name``; ModelError listing the choices otherwise."""
    import core.explain  # noqa: F401  (registers the built-in methods)

    try:
        return METHODS[name]
    except KeyError:
        names = sorted({m.name for m in METHODS.values()})
        raise ModelError(f"unknown explanation method {name!r}; choose one of: {', '.join(names)}") from None


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of an (N, C, H, W) tensor (reflect padding); sigma in pixels."""
    radius = max(1, int(round(3 * sigma)))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    y = torch.nn.functional.pad(x, (radius, radius, 0, 0), mode="reflect")
    y = torch.nn.functional.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = torch.nn.functional.pad(y, (0, 0, radius, radius), mode="reflect")
    return torch.nn.functional.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def normalise(raw: np.ndarray, signed: bool) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Model-space attribution → (map in [0, 1], signed map in [-1, 1] or None).

    Signed attributions are scaled by the 99.5th percentile of their magnitude
    (one hot pixel must not flatten the rest) and clipped; the [0, 1] map is
    their positive part. Unsigned maps (Grad-CAM, already ReLU'd) are scaled by
    their maximum. An all-zero map stays zero.
    """
    raw = np.nan_to_num(np.asarray(raw, dtype=np.float32))
    if not signed:
        top = float(raw.max()) if raw.size else 0.0
        out = np.clip(raw / top, 0.0, 1.0) if top > 0 else np.zeros_like(raw)
        return out.astype(np.float32), None
    mag = np.abs(raw)
    nz = mag[mag > 0]
    scale = float(np.percentile(nz, 99.5)) if nz.size else 0.0
    if scale <= 0:
        z = np.zeros_like(raw)
        return z, z.copy()
    s = np.clip(raw / scale, -1.0, 1.0).astype(np.float32)
    return np.clip(s, 0.0, 1.0).astype(np.float32), s


# --- the private model copy ------------------------------------------------------------------

_copies_lock = threading.Lock()
_copies: "weakref.WeakKeyDictionary[nn.Module, dict[str, tuple[nn.Module, threading.Lock]]]" = (
    weakref.WeakKeyDictionary()
)


def _hook_dicts(module: nn.Module) -> tuple[dict, ...]:
    return tuple(getattr(module, name, {}) or {} for name in
                 ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"))


def hook_count(net: nn.Module) -> int:
    """Forward, forward-pre, backward and backward-pre hooks registered on any module of ``net``."""
    return sum(len(d) for m in net.modules() for d in _hook_dicts(m))


_HOOK_ATTRS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_modules_of: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _scrub(net: nn.Module) -> None:
    """Remove any hook a method left behind (a bug; logged) and every parameter gradient.

    The module and parameter lists of a private copy are gathered once (its structure never
    changes), so the check costs microseconds per explanation, not a walk of the module tree.
    """
    cached = _modules_of.get(net)
    if cached is None:
        # Without the root: a value that referred to its weak key would keep the copy alive for ever.
        cached = (tuple(m for m in net.modules() if m is not net), tuple(net.parameters()))
        _modules_of[net] = cached
    modules, params = (net,) + cached[0], cached[1]
    if any(getattr(m, a, None) for m in modules for a in _HOOK_ATTRS):
        logger.warning("an explanation left %d hook(s) on the model copy; removing them", hook_count(net))
        for m in modules:
            for d in _hook_dicts(m):
                d.clear()
    for p in params:
        if p.grad is not None:
            p.grad = None


def private_copy(net: nn.Module, device: str) -> tuple[nn.Module, threading.Lock]:
    """The private explanation copy of ``net`` on ``device`` and the lock guarding it.

    Made once per (network object, device) by deep copy; eval mode, every
    parameter frozen (``requires_grad = False``), so no gradient is ever
    accumulated on weights and backward passes stop at the input or the hooked
    layer. Copies are forgotten with their original network.
    """
    with _copies_lock:
        per_device = _copies.setdefault(net, {})
        if device not in per_device:
            clone = copy.deepcopy(net).to(device).eval()
            for p in clone.parameters():
                p.requires_grad_(False)
            _scrub(clone)
            per_device[device] = (clone, threading.Lock())
        return per_device[device]


@contextmanager
def using_copy(net: nn.Module, device: str) -> Iterator[nn.Module]:
    """Hold the private copy of ``net`` for one explanation; hooks and gradients are scrubbed on exit."""
    clone, lock = private_copy(net, device)
    with lock:
        try:
            yield clone
        finally:
            _scrub(clone)
            if clone.training or any(m.training for m in _modules_of[clone][0]):
                clone.eval()
