"""Train/validation splits that never leak a patient across the boundary."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from typing import Hashable, Sequence

import numpy as np

logger = logging.getLogger(__name__)


def stratified_group_split(labels: Sequence[int], groups: Sequence[Hashable], val_fraction: float = 0.2,
                           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, val) with whole groups (patients) on one side.

    Groups are assigned greedily, rarest class first, to whichever side is
    further below its target count for that group's majority class, so every
    class with at least two groups appears on both sides and the class balance
    follows ``val_fraction``. Deterministic for a given ``seed``. Returns two
    sorted index arrays; validation is empty when there is only one group.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if n == 0:
        return np.array([], dtype=int), np.array([], dtype=int)
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    if len(members) < 2:
        return np.arange(n), np.array([], dtype=int)
    class_total = Counter(labels.tolist())
    rng = np.random.default_rng(seed)
    group_keys = list(members)
    rng.shuffle(group_keys)
    majority = {g: Counter(labels[members[g]].tolist()).most_common(1)[0][0] for g in group_keys}
    group_keys.sort(key=lambda g: class_total[majority[g]])  # rarest classes placed first (stable: keeps shuffle)
    val_target = {c: val_fraction * t for c, t in class_total.items()}
    val_count: Counter = Counter()
    train_count: Counter = Counter()
    groups_left = Counter(majority[g] for g in group_keys)
    train_idx: list[int] = []
    val_idx: list[int] = []
    for g in group_keys:
        c = majority[g]
        idx = members[g]
        remaining_groups = groups_left[c]
        groups_left[c] -= 1
        want_val = val_count[c] + len(idx) / 2 <= val_target[c]
        if remaining_groups == 1 and not train_count[c]:
            want_val = False  # the last group of a class with no training example stays in train
        elif remaining_groups == 1 and not val_count[c]:
            want_val = True  # ... and of a class with no validation example goes to validation
        if want_val:
            val_idx.extend(idx)
            val_count.update(labels[idx].tolist())
        else:
            train_idx.extend(idx)
            train_count.update(labels[idx].tolist())
    return np.array(sorted(train_idx), dtype=int), np.array(sorted(val_idx), dtype=int)
