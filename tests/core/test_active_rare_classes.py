"""Several rare classes, each with its own miss cost: the cost matrix, the share floor, the audit slice, the why,
and a pool with a known answer on which the cost-sensitive and rare-share picks find more rare cases than random."""

from __future__ import annotations

import numpy as np
import pytest

from core.active.acquire import AcquisitionConfig, select_batch
from core.active.rare import (class_cost_matrix, cost_matrix_from, enforce_rare_shares, miss_costs_for,
                              rare_indices_of, risk_driver, share_quota)
from core.active.why import describe_pick

NAMES = ("nv", "bkl", "mel", "df", "vasc")
NV, BKL, MEL, DF, VASC = range(5)


def test_per_class_miss_costs_make_the_matrix():
    costs = miss_costs_for(5, [DF, VASC], miss_cost=5.0, costs={MEL: 10.0, VASC: 3.0})
    assert costs == [1.0, 1.0, 10.0, 5.0, 3.0]
    c = class_cost_matrix(5, costs)
    assert c[MEL].tolist() == [10, 10, 0, 10, 10] and c[DF, NV] == 5 and c[VASC, DF] == 3 and c[NV, BKL] == 1
    # The workspace form: several rare classes by name, then {"true>decided": cost} overrides on top.
    m = cost_matrix_from({"mel>nv": 10}, NAMES, ["df", "vasc"], 4.0)
    assert m[DF, NV] == m[VASC, BKL] == 4.0 and m[MEL, NV] == 10 and m[MEL, BKL] == 1
    # The older one-name form is unchanged.
    assert cost_matrix_from(None, ("normal", "pneumonia"), "normal", 3.0).tolist() == [[0, 3], [1, 0]]
    assert rare_indices_of(NAMES, None, "df,vasc") == [DF, VASC]
    assert rare_indices_of(NAMES, [10, 9, 8, 1, 2], None) == [DF]


def test_risk_driver_names_the_feared_miss():
    cost = class_cost_matrix(5, [1, 1, 10, 5, 5])
    p = np.array([[0.85, 0.05, 0.06, 0.02, 0.02],   # deciding nv: the 0.06 melanoma × 10 dominates the risk
                  [0.70, 0.25, 0.01, 0.02, 0.02],   # nv: the bkl mix-up (0.25 × 1) dominates
                  [0.50, 0.00, 0.00, 0.00, 0.50]])  # vasc is decided (0.5 × 1 < 0.5 × 5): the nv miss drives it
    assert risk_driver(p, cost).tolist() == [MEL, BKL, NV]


def test_share_quota_serves_the_short_rare_classes_first():
    assert share_quota(4, [DF, VASC], [50, 40, 30, 2, 9], target=10) == {DF: 2, VASC: 2}
    assert share_quota(3, [DF, VASC], [50, 40, 30, 2, 9], target=10) == {DF: 2, VASC: 1}  # fewest labels first
    assert share_quota(3, [DF, VASC], [50, 40, 30, 2, 12], target=10) == {DF: 3}  # vasc has enough
    assert share_quota(2, [DF, VASC], [50, 40, 30, 20, 12], target=10) == {DF: 1, VASC: 1}  # none short: all
    assert share_quota(0, [DF, VASC], None, 10) == {}


def test_share_floor_spreads_across_rare_classes():
    p = np.full((12, 5), 0.05)
    p[:, NV] = 0.8
    p[6:9] = [0.1, 0.05, 0.05, 0.7, 0.1]  # 6, 7, 8 likely df
    p[9:12] = [0.1, 0.05, 0.05, 0.1, 0.7]  # 9, 10, 11 likely vasc
    mask = np.ones(12, bool)
    selected, added = enforce_rare_shares([0, 1, 2, 3, 4, 5], p, [DF, VASC], mask, min_share=0.5,
                                          counts=[30, 20, 10, 1, 3], target=5)
    assert len(selected) == 6 and sorted(added.values()) == [DF, DF, VASC]
    assert selected[:3] == [0, 1, 2]  # the lowest-ranked common picks made room
    # a batch already holding a likely-vasc pick needs no extra vasc
    _, added = enforce_rare_shares([9, 0, 1, 2, 3, 4], p, [DF, VASC], mask, 0.5, counts=[30, 20, 10, 1, 3], target=5)
    assert sorted(added.values()) == [DF, DF]


def _known_pool(n=3000, seed=0):
    """A pool whose answer is known: 5 classes, df and vasc 2 % each; a noisy but informative model."""
    rng = np.random.default_rng([seed, 7])  # not the stream the random strategy draws from
    y = rng.choice(5, size=n, p=[0.70, 0.14, 0.10, 0.03, 0.03])
    logits = rng.normal(0.0, 1.0, (n, 5)) + 2.0 * np.eye(5)[y] + np.log([0.70, 0.14, 0.10, 0.03, 0.03])
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    emb = rng.normal(0.0, 1.0, (n, 16)) + 3.0 * np.eye(5, 16)[y]
    return y, p, emb


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cost_and_rare_share_picks_find_more_rare_cases_than_random(seed):
    y, p, emb = _known_pool(seed=seed)
    labelled = np.zeros(len(y), bool)
    labelled[np.random.default_rng(seed).choice(len(y), 60, replace=False)] = True
    counts = np.bincount(y[labelled], minlength=5).tolist()
    rare = np.isin(y, [DF, VASC])
    found = {}
    for name in ("random", "cost", "default"):
        cfg = AcquisitionConfig(strategy=name, n=100, rare_classes=(DF, VASC), class_costs={MEL: 10.0},
                                miss_cost=5.0, min_rare_share=0.3, audit_share=0.0, seed=seed + 100, class_names=NAMES,
                                cold_start_k=0)
        picks = select_batch(p, emb, labelled, cfg, counts=counts)
        assert len(picks) == 100 and not labelled[[pk.index for pk in picks]].any()
        found[name] = int(rare[[pk.index for pk in picks]].sum())
        if name == "default":
            by_class = {c: int((y[[pk.index for pk in picks]] == c).sum()) for c in (DF, VASC)}
    # random finds about 6 in 100 (the pool is 6 % rare); the known answer: both informed picks find far more.
    assert found["random"] <= 14
    assert found["cost"] >= 2 * max(found["random"], 4)
    assert found["default"] >= 2 * max(found["random"], 4)
    assert min(by_class.values()) >= 5  # the floor served both rare classes, not just one


def test_audit_slice_and_why_per_rare_class():
    y, p, emb = _known_pool(600, seed=3)
    labelled = np.zeros(len(y), bool)
    labelled[:100] = True
    cfg = AcquisitionConfig(n=20, rare_classes=(DF, VASC), class_costs={MEL: 10.0}, audit_share=0.1,
                            audit_confidence=0.95, class_names=NAMES, cold_start_k=0)
    picks = select_batch(p, emb, labelled, cfg, counts=np.bincount(y[:100], minlength=5).tolist())
    audit = [pk for pk in picks if pk.why["reason"] == "audit"]
    assert len(audit) == 2 and {pk.why["rare_class"] for pk in audit} == {"df", "vasc"}
    for pk in audit:
        c = NAMES.index(pk.why["rare_class"])
        assert p[pk.index, c] <= 0.05 and pk.why["p_rare"] == pytest.approx(p[pk.index, c], abs=1e-4)
    shares = [pk for pk in picks if pk.why["reason"] == "rare share"]
    for pk in shares:
        assert pk.why["rare_class"] in ("df", "vasc")  # likely df/vasc, or the highest P of that class standing in
    for pk in picks:
        text = describe_pick(pk.why)
        assert f"P({pk.why['rare_class']})" in text
        if pk.why.get("risk_class") and pk.why["reason"] != "audit":
            assert f"missing {pk.why['risk_class']}" in text
    main = [pk for pk in picks if pk.why["reason"] == "uncertain / costly"]
    # a main pick names the costly class with the highest P × miss cost (melanoma costs 10 here)
    for pk in main:
        i = pk.index
        best = max((MEL, DF, VASC), key=lambda c: p[i, c] * (10.0 if c == MEL else 5.0))
        assert pk.why["rare_class"] == NAMES[best]


def test_boost_terms_enter_the_score_and_the_why():
    y, p, emb = _known_pool(400, seed=4)
    labelled = np.zeros(len(y), bool)
    cfg = AcquisitionConfig(n=5, rare_classes=(DF, VASC), audit_share=0.0, min_rare_share=0.0, cold_start_k=0,
                            diversity=False, class_names=NAMES)
    plain = select_batch(p, emb, labelled, cfg)
    boost = np.zeros(len(y))
    target = int(np.argsort(0.5 * 0 + np.arange(len(y)))[17])
    boost[target] = 5.0  # a large boost puts this case first
    boosted = select_batch(p, emb, labelled, cfg, boosts={"near_flagged": boost})
    assert target not in [pk.index for pk in plain] and boosted[0].index == target
    assert boosted[0].why["near_flagged"] == 5.0 and "near_flagged" not in boosted[1].why
    with pytest.raises(ValueError):
        select_batch(p, emb, labelled, cfg, boosts={"bad": np.zeros(3)})
