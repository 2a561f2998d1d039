"""Site operating thresholds: a workspace's own threshold for a class of a model version.

A version's thresholds are chosen on its validation images when it is trained and
stored in its (hashed, immutable) model file. A site whose images differ — the
PneumoniaMNIST test split keeps only 0.71 of the validation split's 0.95 normal
sensitivity at the same threshold (docs/benchmarks.md) — re-checks them on its own
labelled cases in the metrics panel and saves its choice here: a workspace setting,
per version and class, written with an audit entry. :func:`core.models.versions.load_version`
applies it on top of the file's thresholds, so prediction, evaluation and the app
all decide with it; clearing it (``None``) restores the file's value.
"""

from __future__ import annotations

import logging
import math
from typing import Optional

from core.errors import LoupeError

logger = logging.getLogger(__name__)

#: The former workspace setting (moved into the ``site_thresholds`` table by a migration).
SETTING = "site_thresholds"


def site_thresholds(workspace, version: str) -> dict[str, float]:
    """``{class: threshold}`` saved for ``version`` in this workspace (empty when none)."""
    return dict(workspace.site_threshold_rows(version).get(version, {}))


def set_site_threshold(workspace, version: str, class_name: str, value: Optional[float], actor: str = "system",
                       evidence: Optional[dict] = None) -> dict[str, float]:
    """Save (or with ``value=None`` clear) this site's threshold for one class of ``version``.

    ``evidence`` (e.g. the split, sensitivity and specificity it was chosen on) goes into the
    audit entry with the old and new values. Each (version, class) is its own row, written in
    one transaction with its audit entry, so two processes saving at once lose nothing.
    Returns the version's site thresholds after the change. Raises LoupeError for an unknown
    version or class, or a value outside [0, 1].
    """
    model = workspace.model(version)
    if class_name not in model.classes:
        raise LoupeError(f"model {version} has no class '{class_name}' (classes: {', '.join(model.classes)})")
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)
                              or not 0.0 <= value <= 1.0):
        raise LoupeError(f"a threshold is a probability between 0 and 1, got {value}")
    new = None if value is None else float(value)
    old = workspace.save_site_threshold(version, class_name, new, actor, {"evidence": evidence or {}})
    logger.info("site threshold of %s for %s: %s → %s", class_name, version, old, value)
    return site_thresholds(workspace, version)
