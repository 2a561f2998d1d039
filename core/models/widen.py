"""A new model version whose head knows more classes: what "adding a finding" does to a model.

The backbone, the severity head and every known class's head row are copied from the active version; each new
class gets a zero weight row and a bias well below the others (so the new version keeps deciding as before until
it has been trained on the new class). Calibration temperature and known thresholds are kept.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch

from core.errors import ModelError

logger = logging.getLogger(__name__)


def widen_head(net, old_classes: Sequence[str], new_classes: Sequence[str]):
    """A copy of ``net`` (a LoupeNet) whose head has one output per name of ``new_classes``.

    ``new_classes`` must contain every old class; rows follow ``new_classes``' order. Returns the new network.
    Raises ModelError when a class would be dropped.
    """
    from core.models.architectures import ARCHITECTURES, LoupeNet

    missing = [c for c in old_classes if c not in new_classes]
    if missing:
        raise ModelError(f"a wider head keeps every class; {', '.join(missing)} would be dropped")
    wide = LoupeNet(ARCHITECTURES[net.arch], net.backbone, len(new_classes), net.head_type, net.severity_levels,
                    net.dropout)
    wide.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("head.")}, strict=False)
    old_linear, new_linear = net.head[1], wide.head[1]
    with torch.no_grad():
        new_linear.weight.zero_()
        floor = float(old_linear.bias.min()) - 4.0  # logit 4 below the least likely known class
        new_linear.bias.fill_(floor)
        for i, name in enumerate(old_classes):
            j = list(new_classes).index(name)
            new_linear.weight[j] = old_linear.weight[i]
            new_linear.bias[j] = old_linear.bias[i]
    wide.eval()
    return wide


def widen_active_model(workspace, classes: Sequence[str], actor: str = "system"):
    """Register a new active version of the active model with a head for ``classes`` (a superset of its own).

    Returns the new :class:`~core.types.ModelVersion`; raises ModelError when no model is active or when a class
    of the active model is missing from ``classes``.
    """
    import copy

    from core.models.versions import load_version, save_version

    loaded = load_version(workspace)
    old = list(loaded.classes)
    added = [c for c in classes if c not in old]
    if not added:
        raise ModelError(f"the active model {loaded.version.version} already knows every class")
    net = widen_head(copy.deepcopy(loaded.net), old, list(classes))
    thresholds = {k: v for k, v in loaded.file_thresholds.items() if k in classes}
    record = save_version(
        workspace, net, loaded.spec, list(classes), weights=loaded.version.weights, parent=loaded.version.version,
        params={"created_by": "widen head", "added_classes": added}, status="active",
        reason=f"head widened from {loaded.version.version} for {', '.join(added)} (not yet trained on them)",
        temperature=loaded.temperature, thresholds=thresholds, actor=actor)
    logger.info("widened %s to %s for %s", loaded.version.version, record.version, added)
    return record
