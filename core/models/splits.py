"""Train/validation splits that never leak a patient or a group (e.g. a lesion) across the boundary."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from typing import Hashable, Optional, Sequence

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


def linked_groups(ids: Sequence[str], patients: Sequence[Optional[str]], groups: Sequence[Optional[str]]
                  ) -> list[str]:
    """One split unit per image: images that share a patient or a group (e.g. a lesion id) are linked, and
    linked images (transitively: a lesion photographed at two visits joins both visits' patients) get the
    same unit. An image with neither is its own unit. Takes parallel sequences; returns the unit of each
    image, named after its first patient id (else ``group:<first group>``, else the image id), so a split
    by unit keeps every patient and every group on one side."""
    parent = list(range(len(ids)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    for i, (patient, group) in enumerate(zip(patients, groups)):
        for key in (("patient", patient), ("group", group)):
            if key[1] is None or key[1] == "":
                continue
            j = first.setdefault(key, i)
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    name: dict[int, str] = {}
    for i, (patient, group) in enumerate(zip(patients, groups)):
        if patient:
            name.setdefault(find(i), str(patient))
    for i, group in enumerate(groups):
        if group:
            name.setdefault(find(i), f"group:{group}")
    return [name.get(find(i), str(ids[i])) for i in range(len(ids))]
