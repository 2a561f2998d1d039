""""Model was wrong" put to use: the queue looks near flagged cases, and the flags are followed up.

A reader who flags a case says the model erred there; cases that look like it
(nearest in the model's embedding space) are likely to be where it errs next.
:func:`near_flagged` finds them among the unlabelled pool and
:func:`boost_with_neighbours` lifts them to the top of the ``default`` strategy's
batch with their own "why". :func:`flagged_cases` lists every flagged case with
the version that erred and whether the current version still errs, for the
metrics panel. (The extra training weight lives in ``core.models.sample_weights``.)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from core.active.acquire import Pick

logger = logging.getLogger(__name__)

CONFIRMED = ("human", "import", "undo")
#: Unlabelled neighbours taken per flagged case.
NEIGHBOURS_PER_FLAG = 3
#: Cosine similarity a neighbour needs to count as "looks like" the flagged case.
MIN_SIMILARITY = 0.5
#: Most of a batch the neighbours may take.
MAX_SHARE = 0.25


@dataclass(frozen=True)
class Neighbour:
    """An unlabelled case near a flagged one: its row, the flagged image and their cosine similarity."""

    index: int
    flagged_id: str
    similarity: float


def flagged_ids(labels: dict) -> list[str]:
    """Image ids whose current confirmed label carries "model was wrong"."""
    return sorted(i for i, lab in labels.items() if lab.flag_wrong and lab.source in CONFIRMED)


def near_flagged(emb, image_ids: Sequence[str], flagged: Sequence[str], pool_mask,
                 per_flag: int = NEIGHBOURS_PER_FLAG, min_similarity: float = MIN_SIMILARITY) -> list[Neighbour]:
    """The ``per_flag`` most similar pool cases (``pool_mask`` True) of each flagged image present in ``emb``.

    Cosine similarity of the embeddings; a case near several flags is kept once,
    with its highest similarity. Returned most similar first.
    """
    emb = np.asarray(emb, dtype=np.float64)
    row = {image_id: i for i, image_id in enumerate(image_ids)}
    flag_rows = [(f, row[f]) for f in flagged if f in row]
    pool = np.flatnonzero(np.asarray(pool_mask, dtype=bool))
    if not flag_rows or not len(pool):
        return []
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    best: dict[int, Neighbour] = {}
    for flagged_id, fr in flag_rows:
        sims = unit[pool] @ unit[fr]
        for j in np.argsort(-sims)[:per_flag]:
            s = float(sims[j])
            if s < min_similarity:
                break
            i = int(pool[j])
            if i not in best or s > best[i].similarity:
                best[i] = Neighbour(i, flagged_id, s)
    return sorted(best.values(), key=lambda nb: -nb.similarity)


def boost_with_neighbours(picks: Sequence[Pick], neighbours: Sequence[Neighbour], n: int,
                          max_share: float = MAX_SHARE) -> list[Pick]:
    """The batch with up to ``max_share`` of ``n`` neighbours of flagged cases moved (or added) to the top.

    A neighbour already in the batch keeps its score but is raised; one not in it
    takes the place of the lowest-ranked pick. Each boosted pick's why says which
    flagged case it looks like. The audit slice is never displaced.
    """
    take = list(neighbours)[:max(0, math.ceil(max_share * n))] if n > 0 else []
    if not take:
        return list(picks)
    boosted_idx = {nb.index for nb in take}
    existing = {pk.index: pk for pk in picks}
    top = []
    for nb in take:
        old = existing.get(nb.index)
        why = dict(old.why) if old is not None else {}
        why.update(reason="near flagged", flagged_image=nb.flagged_id, similarity=round(nb.similarity, 4))
        top.append(Pick(nb.index, old.score if old is not None else 0.0, why))
    rest = [pk for pk in picks if pk.index not in boosted_idx]
    audit = [pk for pk in rest if pk.why.get("reason") == "audit"]
    others = [pk for pk in rest if pk.why.get("reason") != "audit"]
    room = max(0, n - len(top) - len(audit))
    return (top + others[:room] + audit)[:n] if n else top + others + audit


def flagged_cases(workspace, current_version: Optional[str]) -> list[dict]:
    """Every flagged case with the version that erred and whether ``current_version`` still errs.

    The version that erred is the one whose stored prediction for the image is the
    newest made before the flag (else the oldest stored one). ``still_wrong`` is
    True/False from the current version's stored prediction, None when it has not
    predicted the image. Rows: ``{"image_id", "label", "flagged_at", "erred_version",
    "erred_predicted", "current_version", "current_predicted", "still_wrong"}``, newest flag first.
    """
    labels = workspace.current_labels()
    rows = []
    for image_id in flagged_ids(labels):
        label = labels[image_id]
        truth = ";".join(label.classes)
        preds = workspace.predictions_of_image(image_id)
        before = [p for p in preds if (p.created_at or "") <= (label.created_at or "")]
        erred = (before[-1] if before else (preds[0] if preds else None))
        current = next((p for p in preds if p.version == current_version), None)
        rows.append({"image_id": image_id, "label": truth, "flagged_at": label.created_at,
                     "erred_version": erred.version if erred else None,
                     "erred_predicted": erred.predicted if erred else None,
                     "current_version": current_version,
                     "current_predicted": current.predicted if current else None,
                     "still_wrong": (current.predicted != truth) if current else None})
    rows.sort(key=lambda r: r["flagged_at"] or "", reverse=True)
    return rows
