"""Acquisition scores, cost-sensitive risk, diversity, cold start and the batch builder on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest

from core.active import strategies as st
from core.active.acquire import AcquisitionConfig, select_batch
from core.active.cold_start import cold_start_batch, needs_cold_start, representatives
from core.active.diversity import diverse_subset, k_center_greedy
from core.active.rare import bayes_risk, cost_matrix_from, default_cost_matrix, enforce_rare_share

P = np.array([[0.9, 0.1], [0.5, 0.5], [0.7, 0.3], [0.99, 0.01]])


def test_entropy_ranks_even_split_first():
    h = st.entropy(P)
    assert h[1] == pytest.approx(np.log(2))
    assert list(st.top_k(h, 4)) == [1, 2, 0, 3]
    assert st.entropy(P, normalise=True)[1] == pytest.approx(1.0)


def test_margin_and_least_confidence_known_values():
    assert st.margin(P) == pytest.approx([0.2, 1.0, 0.6, 0.02])
    assert st.least_confidence(P) == pytest.approx([0.1, 0.5, 0.3, 0.01])
    three = np.array([[0.4, 0.35, 0.25], [0.6, 0.2, 0.2]])
    assert st.margin(three) == pytest.approx([0.95, 0.6])


def test_scores_match_modal():
    from modAL.uncertainty import classifier_entropy, classifier_margin, classifier_uncertainty

    class Fixed:  # a "classifier" returning the hand-made matrix
        def predict_proba(self, X):
            return P

    assert st.entropy(P) == pytest.approx(classifier_entropy(Fixed(), P))
    assert st.least_confidence(P) == pytest.approx(classifier_uncertainty(Fixed(), P))
    assert 1 - st.margin(P) == pytest.approx(classifier_margin(Fixed(), P))


def test_bald_high_when_passes_disagree():
    agree = np.tile([[0.5, 0.5]], (4, 1, 1))  # (T, 1, K): uncertain but consistent → no mutual information
    disagree = np.array([[[0.95, 0.05]], [[0.05, 0.95]], [[0.95, 0.05]], [[0.05, 0.95]]])
    both = np.concatenate([agree, disagree], axis=1)
    scores = st.bald(both)
    assert scores[0] == pytest.approx(0.0, abs=1e-9)
    assert scores[1] > 0.4
    assert st.tta_variance(both)[1] > st.tta_variance(both)[0] == pytest.approx(0.0)


def test_cost_sensitive_prefers_likely_rare():
    cost = default_cost_matrix(2, rare_index=0, miss_cost=5.0)
    assert cost.tolist() == [[0.0, 5.0], [1.0, 0.0]]
    probs = np.array([[0.05, 0.95], [0.17, 0.83], [0.6, 0.4], [0.95, 0.05]])
    risk = bayes_risk(probs, cost)
    # Indifference at P(rare) = 1/6: the case near it is the costliest, not the 50/50 one.
    assert int(np.argmax(risk)) == 1
    assert risk[1] > risk[2] > risk[3]
    picks = select_batch(probs, None, np.zeros(4, bool), AcquisitionConfig(strategy="cost", n=1, rare_index=0))
    assert picks[0].index == 1 and picks[0].why["p_rare"] == pytest.approx(0.17)
    assert picks[0].why["expected_miss_cost"] == pytest.approx(0.85)


def test_cost_matrix_setting_forms():
    classes = ["normal", "pneumonia"]
    assert cost_matrix_from(None, classes, "normal", 3.0)[0, 1] == 3.0
    assert cost_matrix_from({"normal>pneumonia": 10}, classes, "normal")[0, 1] == 10
    with pytest.raises(ValueError):
        cost_matrix_from([[0, 1, 2]], classes, "normal")


def test_k_center_picks_far_apart_points():
    # Two tight clusters and one outlier: three picks must hit all three places.
    pts = np.array([[0, 0], [0.01, 0], [0, 0.01], [10, 10], [10.01, 10], [0, 20]], dtype=float)
    picks = k_center_greedy(pts, range(6), 3, first=0)
    assert picks[0] == 0 and {tuple(pts[i].round()) for i in picks} == {(0, 0), (10, 10), (0, 20)}
    # Anchors count as covered: with cluster A labelled, the next pick is the farthest from it.
    assert k_center_greedy(pts, [1, 2, 3, 4, 5], 1, anchors=[0]) == [5]
    # The best-ranked case always survives diversity.
    assert diverse_subset(pts, [1, 2, 0, 3, 4, 5], 2)[0] == 1


def test_minimum_rare_share_is_honoured():
    p_rare = np.array([0.1, 0.2, 0.1, 0.9, 0.8, 0.05])
    mask = np.ones(6, bool)
    selected, added = enforce_rare_share([0, 1, 2, 5], p_rare, mask, min_share=0.5)
    assert sum(p_rare[i] >= 0.5 for i in selected) == 2 and added == {3, 4} and len(selected) == 4
    assert enforce_rare_share([3, 0], p_rare, mask, 0.5) == ([3, 0], set())


def test_rare_share_takes_the_most_uncertain_likely_rare_cases():
    # 3, 4 and 6 are likely rare; 3 is nearly certain (teaches little), 6 sits near the boundary.
    p_rare = np.array([0.1, 0.2, 0.1, 0.99, 0.8, 0.05, 0.55])
    informative = np.array([0.5, 0.6, 0.5, 0.05, 0.7, 0.2, 0.99])
    mask = np.ones(7, bool)
    selected, added = enforce_rare_share([0, 1, 2, 5], p_rare, mask, min_share=0.5, scores=informative)
    assert added == {6, 4} and 3 not in selected
    # too few likely-rare cases: the highest P(rare) of the rest stand in
    few = np.array([0.1, 0.2, 0.1, 0.3, 0.45, 0.05, 0.6])
    selected, added = enforce_rare_share([0, 1, 2, 5], few, mask, min_share=0.5, scores=informative)
    assert added == {6, 4}


def _pool(n=200, seed=0):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, 8))
    p_rare = rng.beta(0.5, 4.0, n)
    return np.stack([p_rare, 1 - p_rare], axis=1), emb


def test_default_batch_why_share_and_audit():
    probs, emb = _pool()
    labelled = np.zeros(len(probs), bool)
    labelled[:30] = True
    cfg = AcquisitionConfig(n=20, rare_index=0, min_rare_share=0.2, audit_share=0.1, audit_confidence=0.95,
                            class_names=("normal", "pneumonia"))
    picks = select_batch(probs, emb, labelled, cfg, counts=[10, 20])
    assert len(picks) == 20 and len({p.index for p in picks}) == 20
    assert not any(labelled[p.index] for p in picks)
    audit = [p for p in picks if p.why.get("reason") == "audit"]
    assert len(audit) == 2 and all(probs[p.index, 0] <= 0.05 for p in audit)
    main = [p for p in picks if p.why.get("reason") != "audit"]
    assert sum(probs[p.index, 0] >= 0.5 for p in main) >= int(np.ceil(0.2 * len(main)))
    for p in main:
        assert {"entropy", "p_rare", "miss_cost", "expected_miss_cost", "diversity_rank", "reason"} <= set(p.why)
        assert p.why["miss_cost"] == 5.0 and p.why["rare_class"] == "normal"


def test_single_strategies_and_errors():
    probs, emb = _pool(20)
    labelled = np.zeros(20, bool)
    labelled[np.argmax(st.entropy(probs))] = True
    for name in ("entropy", "margin", "least_confidence", "random"):
        picks = select_batch(probs, emb, labelled, AcquisitionConfig(strategy=name, n=5))
        assert len(picks) == 5 and name in picks[0].why and not any(labelled[p.index] for p in picks)
    ent = select_batch(probs, emb, labelled, AcquisitionConfig(strategy="entropy", n=3))
    assert [p.index for p in ent] == list(st.top_k(st.entropy(probs), 3, labelled))
    with pytest.raises(ValueError):
        select_batch(probs, emb, labelled, AcquisitionConfig(strategy="bald", n=3))
    with pytest.raises(ValueError):
        select_batch(probs, emb, labelled, AcquisitionConfig(strategy="nope", n=3))
    assert select_batch(probs, emb, np.ones(20, bool), AcquisitionConfig(n=3)) == []


def test_cold_start_covers_classes():
    probs, emb = _pool(100)
    assert needs_cold_start([2, 30], k=5) and not needs_cold_start([5, 30], k=5) and needs_cold_start([])
    picks = select_batch(probs, emb, np.zeros(100, bool), AcquisitionConfig(n=10, rare_index=0, audit_share=0, cold_start_k=5,
                                                                           class_names=("normal", "pneumonia")),
                         counts=[1, 3])
    assert len(picks) == 10 and all(p.why["reason"] == "cold start" for p in picks)
    targeted = [p for p in picks if "target_class" in p.why]
    assert {p.why["target_class"] for p in targeted} == {"normal", "pneumonia"}
    top_rare = set(np.argsort(-probs[:, 0])[:20].tolist())
    assert any(p.index in top_rare for p in targeted if p.why["target_class"] == "normal")


def test_cold_start_zero_labels_and_one_class():
    probs, emb = _pool(50)
    seed = cold_start_batch(emb, None, range(50), 6, counts=[0, 0])
    assert len(seed) == 6 and len({i for i, _ in seed}) == 6
    one = np.ones((50, 1))  # a one-class model: nothing to divide, nothing to crash
    assert len(cold_start_batch(emb, one, range(50), 5, counts=[0])) == 5
    assert len(select_batch(one, emb, np.zeros(50, bool), AcquisitionConfig(n=5), counts=[3])) == 5
    assert len(representatives(emb, range(4), 10)) == 4
