"""Smaller, faster models for CPU inference: INT8 quantization and knowledge distillation.

Two ways to shrink a trained :class:`~core.models.architectures.LoupeNet`:

* **Quantization.** :func:`quantize_dynamic_int8` swaps ``nn.Linear`` layers for
  dynamically quantized ones (weights INT8, activations quantized on the fly).
  Dynamic quantization does not cover convolutions, so on a CNN it only touches
  the classifier head and gives little speed. :func:`quantize_static_int8` is
  post-training *static* quantization of the convolutional backbone through
  torch.ao's FX graph mode (``prepare_fx`` → calibration → ``convert_fx``, x86 /
  fbgemm kernels, conv + BatchNorm (+ ReLU) fused, 8-bit activations with 7-bit
  per-channel weights so the AVX2 kernels cannot saturate, empirical bias
  correction), which is where the speed is.
  Both return a copy of the LoupeNet, so ``forward`` (logits), ``forward_all`` and
  ``embed`` keep working and the result can go straight into
  :func:`core.models.inference.run_inference`. Quantized networks are for
  inference only: keep the float version as the saved model version and quantize
  it again after loading.

* **Distillation.** :func:`distill` trains a small student (MobileNetV3 by default)
  to match a trained teacher's softened outputs (KL divergence at temperature T)
  on every non-test image of a workspace, labelled or not, plus cross-entropy on
  the confirmed labels. :func:`compare` puts teacher and student side by side.

No Qt here; everything runs on the CPU unless a device is passed in.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ModelError
from core.progress import CancelToken, ProgressCallback, report

logger = logging.getLogger(__name__)

#: Quantized-kernel backends tried in order. fbgemm first: "x86" sends some convolutions to oneDNN, which on
#: an AVX2 CPU without VNNI ran EfficientNet-Lite0 at 64 px about a quarter slower than fbgemm alone (same run).
STATIC_BACKENDS = ("fbgemm", "x86")


def state_dict_bytes(module: nn.Module) -> int:
    """Size in bytes of ``module``'s state dict as ``torch.save`` writes it (packed INT8 weights included)."""
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    return buf.tell()


@contextlib.contextmanager
def _quiet_ao():
    """torch.ao.quantization warns that it is deprecated in favour of torchao; the API still works here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.ao\..*")
        yield


def quantize_dynamic_int8(net: nn.Module) -> nn.Module:
    """Dynamic INT8 quantization of every ``nn.Linear`` in a copy of ``net`` (CPU inference only).

    Args:
        net: a float model in eval mode (a LoupeNet or any module); it is not modified.

    Returns:
        A copy with quantized Linear layers and the same ``forward(x) -> logits``
        (and, for a LoupeNet, ``forward_all`` / ``embed``). Convolutions stay float.

    Raises:
        ModelError: the installed torch has no quantized CPU kernels.
    """
    from torch.ao.quantization import quantize_dynamic

    if not torch.backends.quantized.supported_engines or torch.backends.quantized.supported_engines == ["none"]:
        raise ModelError("this torch build has no quantized CPU kernels; INT8 inference is not available")
    with _quiet_ao():
        q = quantize_dynamic(copy.deepcopy(net).cpu().eval(), {nn.Linear}, dtype=torch.qint8)
    logger.info("dynamic INT8: %s → %s bytes", state_dict_bytes(net), state_dict_bytes(q))
    return q.eval()


def _pick_backend(backend: Optional[str]) -> str:
    engines = torch.backends.quantized.supported_engines
    for name in ((backend,) if backend else STATIC_BACKENDS):
        if name in engines:
            return name
    raise ModelError(f"no quantized CPU backend among {backend or STATIC_BACKENDS} in this torch build "
                     f"(it has: {', '.join(engines) or 'none'})")


#: Engines whose x86 kernels multiply uint8 activations by int8 weights with ``vpmaddubsw`` (pairs summed in
#: int16) on CPUs without VNNI: activations or weights must give up a bit (:data:`X86_BITS`) or the sums saturate.
REDUCE_RANGE_ENGINES = ("x86", "fbgemm", "onednn")


def _up_to_six_observer():
    from torch.ao.quantization.observer import MinMaxObserver

    class UpToSixObserver(MinMaxObserver):
        """Min/max observer whose range stops at 6: the output of a fused conv + ReLU standing for a ReLU6.

        With the range 0 … 6 the quantized ReLU6 that follows (sharing this scale) clamps at 6 exactly,
        and every level is spent on 0 … 6. (It also observes that convolution's input when it is the
        graph input, whose range is below 6.)
        """

        def calculate_qparams(self):
            return self._calculate_qparams(self.min_val, torch.clamp(self.max_val, max=6.0))

    return UpToSixObserver


class _LazyObserver:
    """Builds the observer class on first use, so importing this module does not import torch.ao."""

    _cls = None

    def with_args(self, **kwargs):
        if _LazyObserver._cls is None:
            _LazyObserver._cls = _up_to_six_observer()
        return _LazyObserver._cls.with_args(**kwargs)


_UpToSixObserver = _LazyObserver()


#: Bits of Loupe's INT8 recipe on the x86 engines (:data:`REDUCE_RANGE_ENGINES`): 8-bit activations (0 … 255)
#: and 7-bit symmetric weights (−63 … 63, per channel), so that a ``vpmaddubsw`` pair sum stays within int16
#: (255·63·2 = 32130 ≤ 32767). "act7": the earlier split, 7-bit activations (0 … 127) and 8-bit weights
#: (127·128·2 = 32512). On the EfficientNet-Lite0 teacher (docs/benchmarks.md) "weight7" with bias
#: correction passed the fast-reading gate where "act7" did not.
X86_BITS = "weight7"
#: Largest weight magnitude, in levels, of the "weight7" split (symmetric: −63 … 63; a −64 … 63 range
#: rounds its extreme weights to ±64, which converts outside the observer's range).
WEIGHT7_MAX = 63
BIT_SPLITS = ("weight7", "act7")


def _activation_observer(engine: str, bits: str, up_to_six: bool = False):
    from torch.ao.quantization.observer import HistogramObserver

    reduce = engine in REDUCE_RANGE_ENGINES and bits == "act7"
    if up_to_six:
        return _UpToSixObserver.with_args(dtype=torch.quint8, reduce_range=reduce)
    return HistogramObserver.with_args(dtype=torch.quint8, reduce_range=reduce)


def _weight_observer(engine: str, bits: str):
    from torch.ao.quantization.observer import PerChannelMinMaxObserver

    seven = engine in REDUCE_RANGE_ENGINES and bits == "weight7"
    return PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                              quant_min=-WEIGHT7_MAX if seven else -128,
                                              quant_max=WEIGHT7_MAX if seven else 127)


def int8_qconfig_mapping(engine: str, keep_float: Sequence[str] = (), relu6_convs: Sequence[str] = (),
                         bits: Optional[str] = None):
    """The FX QConfigMapping of Loupe's INT8 recipe: per-channel symmetric INT8 weights and
    histogram-calibrated activations for every quantizable op, the backbone modules named in ``keep_float``
    left in float, and an output range that stops at 6 for the convolutions whose ReLU6 was made fusable
    (:func:`relu6_for_int8`).

    On the x86 engines (:data:`REDUCE_RANGE_ENGINES`) the AVX2 kernels without VNNI multiply uint8
    activations by int8 weights and sum the pairs in int16, which saturates when both use 8 bits (a 3×3
    convolution then errs by up to 30 output levels). ``bits`` (default :data:`X86_BITS`) picks which side
    gives up one bit: ``"weight7"`` (8-bit activations, weights −63 … 63, per channel) or ``"act7"`` (7-bit
    activations, 8-bit weights). Other engines use 8 bits for both.
    """
    from torch.ao.quantization import QConfig

    bits = bits or X86_BITS
    if bits not in BIT_SPLITS:
        raise ModelError(f"unknown INT8 bit split {bits!r}: choose {' or '.join(BIT_SPLITS)}")
    default = QConfig(activation=_activation_observer(engine, bits), weight=_weight_observer(engine, bits))
    mapping = _default_mapping_with(engine, default)
    if relu6_convs:
        relu6 = QConfig(activation=_activation_observer(engine, bits, up_to_six=True),
                        weight=_weight_observer(engine, bits))
        for name in relu6_convs:
            mapping = mapping.set_module_name(name, relu6)
    for name in keep_float:
        mapping = mapping.set_module_name(name, None)
    return mapping


def _default_mapping_with(engine: str, qconfig):
    """torch's default FX mapping for ``engine`` (fixed-range qconfigs for sigmoid, tanh, … included) with
    ``qconfig`` in place of the engine's default everywhere else."""
    from torch.ao.quantization import get_default_qconfig, get_default_qconfig_mapping

    mapping = get_default_qconfig_mapping(engine)  # a fresh object on every call
    stock = get_default_qconfig(engine)
    mapping.set_global(qconfig)
    table = mapping.object_type_qconfigs
    for key, qc in list(table.items()):
        if qc is not None and _same_qconfig(qc, stock):
            table[key] = qconfig
    return mapping


def _same_qconfig(a, b) -> bool:
    try:
        return repr(a.activation()) == repr(b.activation()) and repr(a.weight()) == repr(b.weight())
    except Exception:  # a qconfig whose observers need arguments: not the stock default
        return False


class _ReLUThenReLU6(nn.Sequential):
    """ReLU then ReLU6 (the same function as ReLU6): the ReLU fuses with the convolution before it, and the
    quantized ReLU6, sharing the fused output's scale, clamps at 6 — so the values stay within the activation
    range the next convolution's kernel needs (:func:`int8_qconfig_mapping`)."""

    def __init__(self):
        super().__init__(nn.ReLU(inplace=False), nn.ReLU6(inplace=False))


def relu6_for_int8(backbone: nn.Module, keep_float: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """Make every ``Conv → BatchNorm → ReLU6`` of ``backbone`` fusable, in place.

    ReLU6 does not fuse with a convolution in torch's x86 recipe, so the
    convolution's output is quantized over its whole pre-activation range (often
    −80 … +60) and the 0 … 6 the ReLU6 keeps gets a handful of the levels:
    EfficientNet-Lite0's embedding then lost most of its information (relative error
    0.8). Each such ReLU6 becomes ReLU → ReLU6 (:class:`_ReLUThenReLU6`, the same
    function): conv + BN + ReLU fuse, the fused output gets a quantization range that
    stops at 6 (:func:`int8_qconfig_mapping`), and the quantized ReLU6 clamps at 6.
    Convolutions kept in float keep their BatchNorm and ReLU6 in float with them.
    Returns (the convs made fusable, the BatchNorm/ReLU6 modules to keep in float
    beside their float convs).
    """
    keep = set(keep_float)
    names, float_relu6 = [], []
    for name, module in backbone.named_modules():
        kids = list(module.named_children())
        prefix = f"{name}." if name else ""
        if kids and isinstance(kids[0][1], nn.Conv2d) and prefix + kids[0][0] in keep:
            # a float conv keeps its BatchNorm and activation in float too (a lone quantized BN is lossy)
            float_relu6 += [prefix + k for k, m in kids[1:3] if isinstance(m, (nn.BatchNorm2d, nn.ReLU6))]
            continue
        if (len(kids) >= 3 and isinstance(kids[0][1], nn.Conv2d) and isinstance(kids[1][1], nn.BatchNorm2d)
                and isinstance(kids[2][1], nn.ReLU6)):
            setattr(module, kids[2][0], _ReLUThenReLU6().train(kids[2][1].training))
            names.append(prefix + kids[0][0])
    return names, float_relu6


def quantize_static_int8(net: nn.Module, calibration_batches: Iterable[torch.Tensor],
                         backend: Optional[str] = None, quantize_head: bool = True,
                         keep_float: Sequence[str] = (), bits: Optional[str] = None,
                         bias_correction: bool = True) -> nn.Module:
    """Post-training static INT8 quantization of a LoupeNet's convolutional backbone (FX graph mode).

    The backbone is traced with ``torch.ao.quantization.quantize_fx.prepare_fx``
    (conv + BatchNorm (+ ReLU) fused, observers inserted), run over
    ``calibration_batches`` to record activation ranges, and converted with
    ``convert_fx``. Its input and output stay float, so the network still takes
    normalised float images. The small head gets dynamic INT8 when
    ``quantize_head``. A few dozen representative images are enough calibration.

    Args:
        net: float LoupeNet (eval mode); not modified.
        calibration_batches: normalised (N, C, S, S) float tensors, as the model gets at inference.
        backend: ``"x86"`` or ``"fbgemm"``; default: the first available. It becomes
            ``torch.backends.quantized.engine`` (process-wide) so the kernels match.
        quantize_head: also quantize the head's Linear dynamically.
        keep_float: backbone module names (as in ``net.backbone.named_modules()``) left in float:
            the layers that do not quantize well.
        bits: which side gives up a bit on the x86 engines (:func:`int8_qconfig_mapping`); default
            :data:`X86_BITS`.
        bias_correction: after conversion, correct each quantized convolution's bias by its mean
            per-channel output error on the calibration images (:func:`correct_int8_bias`).

    Returns:
        A copy of ``net`` whose ``backbone`` is an INT8 ``GraphModule``; ``forward``,
        ``forward_all`` and ``embed`` behave as before. CPU only.

    Raises:
        ModelError: no calibration data, no quantized backend, or a backbone FX cannot trace.
    """
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if not hasattr(net, "backbone"):
        raise ModelError("static quantization expects a LoupeNet (a model with a .backbone)")
    engine = _pick_backend(backend)
    if torch.backends.quantized.engine != engine:
        logger.info("quantized engine %s → %s", torch.backends.quantized.engine, engine)
        torch.backends.quantized.engine = engine
    # A network that ran channels-last (run_inference converts it) computes its float layers with slightly
    # different rounding; quantize a contiguous copy so the same teacher always gives the same INT8 model.
    q = copy.deepcopy(net).cpu().eval().to(memory_format=torch.contiguous_format)
    batches = iter(calibration_batches)
    first = next(batches, None)
    if first is None:
        raise ModelError("static quantization needs at least one calibration batch")
    with _quiet_ao():
        try:
            relu6_convs, float_relu6 = relu6_for_int8(q.backbone, keep_float)
            float_backbone = copy.deepcopy(q.backbone) if bias_correction else None
            prepared = prepare_fx(q.backbone, int8_qconfig_mapping(engine, [*keep_float, *float_relu6], relu6_convs,
                                                                   bits),
                                  (first[:1].float(),))
        except Exception as exc:  # FX tracing fails on data-dependent control flow
            raise ModelError(f"cannot quantize the {getattr(net, 'arch', 'model')} backbone statically: {exc}") from exc
        n = 0
        calib = [first] + list(batches)
        with torch.no_grad():  # observers update their buffers in place
            for xb in calib:
                prepared(xb.float().cpu())
                n += len(xb)
        q.backbone = convert_fx(prepared)
        if bias_correction:
            correct_int8_bias(float_backbone, q.backbone, calib)
        if quantize_head:
            from torch.ao.quantization import quantize_dynamic

            q.head = quantize_dynamic(q.head, {nn.Linear}, dtype=torch.qint8)
            if getattr(q, "severity_head", None) is not None:
                q.severity_head.fc = quantize_dynamic(nn.Sequential(q.severity_head.fc), {nn.Linear},
                                                      dtype=torch.qint8)[0]
    logger.info("static INT8 (%s, %d calibration images): %s → %s bytes", engine, n, state_dict_bytes(net),
                state_dict_bytes(q))
    return q.eval()


class _Stop(Exception):
    """Raised by a forward hook to end a forward pass once the layer it watches has run."""


def correct_int8_bias(float_backbone: nn.Module, q_backbone: nn.Module, batches: Sequence[torch.Tensor]) -> list[dict]:
    """Empirical bias correction (Nagel et al., 2019) of a converted INT8 backbone, in place.

    For each quantized convolution in graph order, the mean per-channel error of its output
    (quantized minus float, with the float output clipped to the quantized output's range, the
    way the quantized layer clips it) over ``batches`` is subtracted from its bias; later layers
    are measured with the earlier ones already corrected. ``float_backbone`` is the float backbone
    as it was traced (BatchNorm still separate); it is not modified. Returns one row per layer
    ``{"layer", "mean_abs_shift"}`` (in output units).
    """
    import torch.ao.nn.intrinsic.quantized as nniq
    import torch.ao.nn.quantized as nnq
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fb = copy.deepcopy(float_backbone).eval()
    qmods = dict(q_backbone.named_modules())
    fmods = dict(fb.named_modules())
    targets = [n for n, m in qmods.items() if isinstance(m, (nnq.Conv2d, nniq.ConvReLU2d)) and n in fmods]
    # fold each target conv's BatchNorm into it in the float copy, so its output is the quantized layer's
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = fmods[parent_name] if parent_name else fb
        kids = list(parent.named_children())
        k = [n for n, _ in kids].index(child)
        if k + 1 < len(kids) and isinstance(kids[k + 1][1], nn.BatchNorm2d):
            setattr(parent, child, fuse_conv_bn_eval(getattr(parent, child), kids[k + 1][1]))
            setattr(parent, kids[k + 1][0], nn.Identity())
    fmods = dict(fb.named_modules())

    def out_range(m):
        lo, hi = (0 - m.zero_point) * m.scale, (255 - m.zero_point) * m.scale
        return (max(lo, 0.0) if isinstance(m, nniq.ConvReLU2d) else lo), hi

    def channel_means(module, layers: dict, stop=None) -> dict:
        """Per-channel mean over ``batches`` of each layer's output (``{layer: (lo, hi) clip or None}``),
        in one forward per batch; with ``stop``, the forward ends after that layer."""
        sums: dict = {}
        counts: dict = {}

        def hook_for(layer, clip):
            def grab(mod, inp, out):
                v = out.dequantize() if out.is_quantized else out.float()
                if clip is not None:
                    v = v.clamp(*clip)
                sums[layer] = sums.get(layer, 0.0) + v.double().sum(dim=(0, 2, 3))
                counts[layer] = counts.get(layer, 0) + v.shape[0] * v.shape[2] * v.shape[3]
                if mod is stop:
                    raise _Stop
            return grab

        handles = [layer.register_forward_hook(hook_for(layer, clip)) for layer, clip in layers.items()]
        try:
            with torch.no_grad():
                for xb in batches:
                    try:
                        module(xb.float())
                    except _Stop:
                        pass
        finally:
            for h in handles:
                h.remove()
        return {layer: sums[layer] / counts[layer] for layer in layers}

    # The float side does not change as biases are corrected: every layer's clipped mean in one pass.
    float_means = channel_means(fb, {fmods[n]: out_range(qmods[n]) for n in targets})
    rows = []
    for name in targets:
        m = qmods[name]
        # The quantized side is measured layer by layer, with the earlier layers already corrected.
        shift = channel_means(q_backbone, {m: None}, stop=m)[m] - float_means[fmods[name]]
        bias = m.bias()
        bias = (torch.zeros(shift.shape[0]) if bias is None else bias.detach().clone()) - shift.float()
        m.set_weight_bias(m.weight(), bias)
        rows.append({"layer": name, "mean_abs_shift": float(shift.abs().mean())})
    return rows


def first_conv(backbone: nn.Module) -> Optional[str]:
    """Name of the backbone's first convolution (the stem), the one that reads the image itself."""
    return next((n for n, m in backbone.named_modules() if isinstance(m, nn.Conv2d)), None)


def default_keep_float(backbone: nn.Module) -> tuple[str, ...]:
    """The layers Loupe's INT8 recipe keeps in float: the stem convolution.

    The stem reads the image itself and is a small share of the compute. With the earlier 7-bit
    activations, keeping it in float lowered EfficientNet-Lite0's logit error most in the per-block
    sensitivity analysis (docs/benchmarks.md); with the present recipe (8-bit activations, 7-bit
    weights, bias correction) the Lite0 teacher passes the fast-reading gate either way, with a higher
    top-class agreement when the stem stays float.
    """
    stem = first_conv(backbone)
    return (stem,) if stem else ()


def int8_units(backbone: nn.Module) -> dict[str, list[str]]:
    """The backbone's quantization units for a sensitivity analysis: ``{unit: [its convolutions]}``.

    A unit is a child module holding convolutions, with plain ``nn.Sequential`` containers
    opened up: EfficientNet's stem, each MBConv block and the head convolution; ResNet's stem
    conv and each residual block.
    """
    units: dict[str, list[str]] = {}

    def walk(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            full = prefix + name
            convs = [f"{full}.{n}" if n else full for n, m in child.named_modules() if isinstance(m, nn.Conv2d)]
            if not convs:
                continue
            if type(child) is nn.Sequential:
                walk(child, full + ".")
            else:
                units[full] = convs

    walk(backbone, "")
    return units


def int8_sensitivity(net: nn.Module, calibration_batches: Sequence[torch.Tensor], check_batches: Sequence[torch.Tensor],
                     units: Optional[dict[str, list[str]]] = None, keep_float: Sequence[str] = (),
                     backend: Optional[str] = None, progress: Optional[ProgressCallback] = None,
                     cancel: Optional[CancelToken] = None) -> list[dict]:
    """How much each unit's quantization costs: the whole backbone quantized, then once per unit with that
    unit (and ``keep_float``) left in float, each scored against the float model on ``check_batches``.

    Use images that neither calibrate nor gate (training images outside the calibration set),
    so the analysis does not tune the recipe to the gate. Returns rows
    ``{"unit", "convs", "agreement", "logit_error", "margin_error"}`` (unit None: nothing more
    kept in float); ``logit_error`` is ‖Δlogits‖ / ‖logits‖ over all check images, ``agreement``
    the share with the same top class, ``margin_error`` the mean absolute change of the top-two
    logit margin.
    """
    units = int8_units(net.backbone) if units is None else units
    cancel = cancel or CancelToken()
    net = net.eval()
    with torch.inference_mode():
        ref = torch.cat([net(b.float()) for b in check_batches])

    def score(unit, convs):
        q = quantize_static_int8(net, calibration_batches, backend=backend, keep_float=[*keep_float, *convs])
        with torch.inference_mode():
            out = torch.cat([q(b.float()) for b in check_batches])
        top2 = ref.topk(min(2, ref.shape[1]), dim=1).indices
        margin = lambda lg: lg.gather(1, top2[:, :1]) - lg.gather(1, top2[:, -1:])  # noqa: E731
        return {"unit": unit, "convs": list(convs), "agreement": agreement(ref, out),
                "logit_error": float((out - ref).norm() / ref.norm().clamp_min(1e-12)),
                "margin_error": float((margin(out) - margin(ref)).abs().mean())}

    rows = [score(None, [])]
    for i, (unit, convs) in enumerate(units.items()):
        cancel.check()
        report(progress, i, len(units), f"sensitivity: {unit} in float")
        rows.append(score(unit, convs))
    report(progress, len(units), len(units), "sensitivity done")
    return rows


# ----------------------------------------------------------------------------- distillation


def student_spec(teacher_spec, student_arch: str):
    """The student's InputSpec: the teacher's size, channels and geometry with the student's normalisation."""
    from core.models.architectures import arch_spec
    from core.models.preprocess import InputSpec

    a = arch_spec(student_arch)
    c = teacher_spec.channels
    mean = a.mean if c == 3 else (float(np.mean(a.mean)),)
    std = a.std if c == 3 else (float(np.mean(a.std)),)
    return InputSpec(size=teacher_spec.size, mean=mean, std=std, channels=c, resize=teacher_spec.resize,
                     pad_value=teacher_spec.pad_value)


def batched_logits(net: nn.Module, x01: torch.Tensor, spec, batch_size: int = 64,
                   device: str | torch.device = "cpu") -> torch.Tensor:
    """Float32 logits of ``net`` over un-normalised [0, 1] images (N, C, S, S), normalised with ``spec``."""
    from core.models.data import normalise

    net.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(x01), batch_size):
            out.append(net(normalise(x01[i:i + batch_size], spec).to(device)).float().cpu())
    return torch.cat(out) if out else torch.zeros((0, getattr(net, "num_classes", 0)))


def _kd_loss(student_logits, teacher_logits, temperature: float, multilabel: bool) -> torch.Tensor:
    """Hinton's soft-target loss, scaled by T² so its gradients keep their size as T changes."""
    t = float(temperature)
    if multilabel:
        soft = torch.sigmoid(teacher_logits / t)
        return F.binary_cross_entropy_with_logits(student_logits / t, soft) * t * t
    return F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True) * t * t


def distill(teacher_loaded, workspace, student_arch: str = "mobilenet_v3_large", *, epochs: int = 5,
            temperature: float = 4.0, alpha: float = 0.7, lr: float = 2e-3, weight_decay: float = 1e-4,
            batch_size: int = 32, pretrained: str = "none", torch_cache_dir: Optional[str] = None,
            workers: int = 2, seed: int = 0, device: str = "cpu", exclude: Sequence[str] = (),
            progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None) -> nn.Module:
    """Knowledge distillation of a trained teacher into a small student on a workspace's images.

    Every image not in the ``test`` split is used: the teacher's logits (computed
    once, over tensors pre-decoded with :func:`core.models.data.decode_all`) are the
    soft targets for all of them, labelled or not; images with a confirmed label
    also give a hard-label loss. Per batch::

        loss = alpha · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 - alpha) · CE(s, y)   (CE on labelled rows)

    (for a multi-label teacher, BCE against ``sigmoid(t/T)`` replaces the KL).
    AdamW with a cosine schedule; the student is trained whole.

    Args:
        teacher_loaded: a :class:`~core.models.versions.LoadedModel` (net, spec, classes).
        workspace: the open workspace whose images to learn from.
        student_arch: registry name of the student (:data:`core.models.architectures.ARCHITECTURES`).
        epochs, temperature, alpha: distillation schedule, temperature T > 0 and soft-loss weight in [0, 1].
        lr, weight_decay, batch_size: optimiser settings.
        pretrained: the student's starting weights (see :func:`~core.models.architectures.build_model`).
        workers: decode threads; seed: random seed; device: where to train.
        exclude: image ids left out (the images a quality gate will check the student on).
        progress, cancel: progress callback and cancel token (checked between batches).

    Returns:
        The student LoupeNet in eval mode on the CPU, with the teacher's classes and head type.
        Its input spec is :func:`student_spec` ``(teacher_loaded.spec, student_arch)``: same size.

    Raises:
        ModelError: bad options, or no usable image. Cancelled when cancelled.
    """
    from core.models.architectures import build_model
    from core.models.data import decode_all, labelled_set, normalise

    if epochs < 1 or batch_size < 1:
        raise ModelError("epochs and batch size must be at least 1")
    if temperature <= 0 or not 0.0 <= alpha <= 1.0:
        raise ModelError(f"temperature must be > 0 and alpha in [0, 1]; got T={temperature}, alpha={alpha}")
    cancel = cancel or CancelToken()
    torch.manual_seed(seed)
    classes = list(teacher_loaded.classes)
    multilabel = teacher_loaded.net.head_type == "multilabel"
    excluded = set(exclude) | set(workspace.damaged_images())
    refs = [r for r in workspace.images() if r.split != "test" and r.id not in excluded]
    if not refs:
        raise ModelError("no images outside the test split to distil on")
    labelled = labelled_set(workspace, classes, multilabel, splits=("train", "val", None))
    target_of = dict(zip(labelled.image_ids, labelled.targets))
    x01, ok = decode_all([r.path for r in refs], teacher_loaded.spec, workers, cancel=cancel,
                         progress=lambda p: report(progress, p.done, p.total, "decoding images"))
    refs = [refs[i] for i in ok]
    has_label = torch.tensor([r.id in target_of for r in refs])
    if multilabel:
        y = torch.stack([torch.as_tensor(target_of.get(r.id, np.zeros(len(classes), np.float32))) for r in refs])
    else:
        y = torch.tensor([int(target_of.get(r.id, -1)) for r in refs], dtype=torch.int64)
    report(progress, 0, len(refs), "teacher soft targets")
    teacher_logits = batched_logits(teacher_loaded.net, x01, teacher_loaded.spec, 64)
    s_spec = student_spec(teacher_loaded.spec, student_arch)
    student, weights = build_model(student_arch, len(classes), pretrained=pretrained,
                                   torch_cache_dir=torch_cache_dir, head=teacher_loaded.net.head_type)
    dev = torch.device(device)
    student = student.to(dev)
    optimiser = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * ((len(refs) + batch_size - 1) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=max(1, steps),
                                                    pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    logger.info("distilling %s → %s (%s) on %d images (%d labelled), %d epochs, T=%.1f, alpha=%.2f",
                teacher_loaded.net.arch, student_arch, weights, len(refs), int(has_label.sum()), epochs,
                temperature, alpha)
    done = 0
    for epoch in range(epochs):
        student.train()
        order = torch.randperm(len(refs), generator=gen)
        losses = []
        for i in range(0, len(order), batch_size):
            cancel.check()
            idx = order[i:i + batch_size]
            # No augmentation: the soft targets were computed once, on the unaugmented images.
            xb = normalise(x01[idx].float(), s_spec).to(dev)
            logits = student(xb)
            loss = alpha * _kd_loss(logits, teacher_logits[idx].to(dev), temperature, multilabel)
            lab = has_label[idx].to(dev)
            if alpha < 1.0 and bool(lab.any()):
                yb = y[idx].to(dev)
                hard = (F.binary_cross_entropy_with_logits(logits[lab], yb[lab]) if multilabel
                        else F.cross_entropy(logits[lab], yb[lab]))
                loss = loss + (1.0 - alpha) * hard
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            losses.append(loss.item())
            done += len(idx)
            report(progress, done, epochs * len(refs), f"distilling, epoch {epoch + 1}/{epochs}")
        logger.info("distillation epoch %d/%d: loss %.4f", epoch + 1, epochs, float(np.mean(losses)))
    return student.to("cpu").eval()


def _as_model(m) -> tuple[nn.Module, Any]:
    """(net, spec or None) from a LoadedModel-like object, a (net, spec) pair, or a bare module."""
    if isinstance(m, tuple):
        return m[0], m[1]
    if hasattr(m, "net") and hasattr(m, "spec"):
        return m.net, m.spec
    return m, None


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of rows where two logit matrices give the same top class."""
    return float((a.argmax(dim=1) == b.argmax(dim=1)).float().mean()) if len(a) else float("nan")


def compare(teacher, student, x: torch.Tensor, y: Sequence | np.ndarray,
            classes: Optional[Sequence[str]] = None, batch_size: int = 64) -> dict:
    """Teacher and student macro ROC-AUC on the same images, and the change.

    Args:
        teacher, student: LoadedModel-like objects (``.net``, ``.spec``), ``(net, spec)``
            pairs, or bare modules. With a spec, ``x`` is taken as un-normalised [0, 1]
            images (as :func:`core.models.data.decode_all` returns) and normalised per
            model, so models with different normalisations can be compared; a bare
            module gets ``x`` as it is.
        x: (N, C, S, S) images; y: (N,) class indices (or an (N, K) 0/1 matrix for multi-label).
        classes: class names (default ``"0".."K-1"``).

    Returns:
        ``{"teacher_auc", "student_auc", "delta_auc" (student - teacher), "agreement"
        (same top class), "n"}``; AUCs are None when only one class is present.
    """
    from core.models.metrics import evaluate

    out = {}
    logits = {}
    y = np.asarray(y)
    multilabel = y.ndim == 2
    for name, m in (("teacher", teacher), ("student", student)):
        net, spec = _as_model(m)
        if spec is not None:
            lg = batched_logits(net, x, spec, batch_size)
        else:
            net.eval()
            with torch.inference_mode():
                lg = torch.cat([net(x[i:i + batch_size]).float() for i in range(0, len(x), batch_size)])
        logits[name] = lg
        probs = (torch.sigmoid(lg) if multilabel else torch.softmax(lg, dim=1)).numpy()
        names = list(classes) if classes else [str(i) for i in range(probs.shape[1])]
        out[f"{name}_auc"] = evaluate(y, probs, names, n_boot=0, multilabel=multilabel)["macro_auc"]
    t, s = out["teacher_auc"], out["student_auc"]
    out["delta_auc"] = None if t is None or s is None else s - t
    out["agreement"] = agreement(logits["teacher"], logits["student"])
    out["n"] = int(len(x))
    return out
