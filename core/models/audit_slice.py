"""The audit slice's pay-off: each model version's miss rate among the confident negatives readers checked.

Every queue refresh spends a small share of the batch on cases the model calls
confidently negative for the rare class (``core.active.acquire``); the picks are
recorded per version (``Workspace.record_audit_picks``). Once readers label them,
the share labelled rare is the version's audited miss rate, with a Wilson 95 %
interval. The promotion gate refuses a candidate whose miss rate on audited
cases is significantly worse than the active version's (one-sided Fisher exact
test on the same audited images).
"""

from __future__ import annotations

import logging
import math
from statistics import NormalDist
from typing import Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)

#: Significance level of the promotion gate's "significantly worse" test.
GATE_ALPHA = 0.05
#: P(rare) at or below which a case counts as a confident negative (as the acquisition's audit slice).
CONFIDENT_NEGATIVE = 0.05
CONFIRMED = ("human", "import", "undo")


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Optional[list[float]]:
    """Two-sided Wilson score interval ``[lo, hi]`` of ``successes / n`` (None when n is 0)."""
    if n <= 0:
        return None
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - spread), min(1.0, centre + spread)]


def summary(n: int, missed: int) -> dict:
    """``{"n", "missed", "miss_rate", "ci95"}`` for ``missed`` of ``n`` audited cases."""
    return {"n": int(n), "missed": int(missed), "miss_rate": (missed / n) if n else None,
            "ci95": wilson_interval(missed, n)}


def audit_summary(workspace, version: str) -> Optional[dict]:
    """The audited miss rate of ``version``: of its audit picks that now carry a confirmed label, the share
    labelled with the pick's rare class. None when none of its picks has been labelled yet."""
    labels = workspace.current_labels()
    n = missed = 0
    for pick in workspace.audit_picks(version):
        label = labels.get(pick["image_id"])
        if label is None or label.source not in CONFIRMED:
            continue
        n += 1
        missed += int(pick["rare_class"] in label.classes)
    return summary(n, missed) if n else None


def audit_by_version(workspace) -> dict[str, dict]:
    """``{version: audit_summary}`` for every version with labelled audit picks."""
    versions = sorted({p["version"] for p in workspace.audit_picks()})
    out = {}
    for v in versions:
        s = audit_summary(workspace, v)
        if s is not None:
            out[v] = s
    return out


def fisher_greater(missed_a: int, n_a: int, missed_b: int, n_b: int) -> float:
    """One-sided Fisher exact p-value that A's miss rate exceeds B's (the hypergeometric upper tail)."""
    total_missed, total = missed_a + missed_b, n_a + n_b
    if n_a == 0 or n_b == 0 or total_missed == 0:
        return 1.0
    denom = math.comb(total, n_a)
    p = 0.0
    for k in range(missed_a, min(n_a, total_missed) + 1):
        p += math.comb(total_missed, k) * math.comb(total - total_missed, n_a - k) / denom
    return min(1.0, p)


def significantly_worse(candidate: Optional[dict], active: Optional[dict], alpha: float = GATE_ALPHA) -> tuple[bool, float]:
    """Whether the candidate's audited miss rate is significantly higher than the active's, and the p-value."""
    if not candidate or not active or not candidate.get("n") or not active.get("n"):
        return False, 1.0
    p = fisher_greater(candidate["missed"], candidate["n"], active["missed"], active["n"])
    return p < alpha, p


def audited_cases(workspace, image_ids: Sequence[str]) -> dict[str, bool]:
    """``{image id: labelled rare}`` for the ``image_ids`` that were audit picks and carry a confirmed label."""
    wanted = set(image_ids)
    labels = workspace.current_labels()
    out: dict[str, bool] = {}
    for pick in workspace.audit_picks():
        image_id = pick["image_id"]
        label = labels.get(image_id)
        if image_id in wanted and label is not None and label.source in CONFIRMED:
            out[image_id] = out.get(image_id, False) or pick["rare_class"] in label.classes
    return out


def miss_rate_on(p_rare, labelled_rare, confident: float = CONFIDENT_NEGATIVE) -> dict:
    """Miss rate of one model on audited cases: of those it calls confident negatives (P(rare) ≤
    ``confident``), the share labelled rare."""
    p = np.asarray(p_rare, dtype=np.float64)
    y = np.asarray(labelled_rare, dtype=bool)
    neg = p <= confident
    return summary(int(neg.sum()), int((neg & y).sum()))


def audit_comparison(workspace, image_ids: Sequence[str], cand_probs, act_probs, classes: Sequence[str],
                     rare: str) -> Optional[dict]:
    """Candidate's and active's miss rates on the audited cases among ``image_ids`` (the validation images,
    which the candidate did not train on); None when none of them was audited or there is no active model.

    Returns ``{"candidate": summary, "active": summary}`` for :func:`core.models.versions.promotion_decision`.
    """
    if act_probs is None or rare not in classes:
        return None
    audited = audited_cases(workspace, image_ids)
    if not audited:
        return None
    rows = [i for i, image_id in enumerate(image_ids) if image_id in audited]
    y = [audited[image_ids[i]] for i in rows]
    k = list(classes).index(rare)
    return {"candidate": miss_rate_on(np.asarray(cand_probs)[rows, k], y),
            "active": miss_rate_on(np.asarray(act_probs)[rows, k], y)}
