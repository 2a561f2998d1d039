"""'Why this case' in words: every reason of the default strategy, the plain strategies, nothing hidden."""

from __future__ import annotations

import numpy as np

from core.active.acquire import AcquisitionConfig, select_batch
from core.active.why import describe_pick


def test_uncertain_case_names_entropy_and_the_cost_of_a_miss():
    text = describe_pick({"entropy": 0.88, "risk": 0.7, "combined": 0.86, "rare_class": "normal", "p_rare": 0.3,
                          "miss_cost": 5.0, "expected_miss_cost": 1.51, "score_rank": 1, "diversity_rank": 3,
                          "reason": "uncertain / costly"})
    assert text.startswith("Uncertain or costly to miss.")
    assert "Entropy 0.88" in text and "P(normal) 0.30 × miss cost 5 = expected miss cost 1.51" in text
    assert "Score rank 1, diversity rank 3." in text


def test_each_reason_has_its_own_wording():
    audit = describe_pick({"reason": "audit", "audit": "confident negative", "rare_class": "normal", "p_rare": 0.02})
    assert audit.startswith("Audit: a confident negative (P(normal) 0.02)") and "missed normal" in audit
    share = describe_pick({"reason": "rare share", "rare_class": "mel", "p_rare": 0.57, "entropy": 0.5})
    assert share.startswith("Keeps the batch's share of likely mel cases: P(mel) 0.57")
    seed = describe_pick({"reason": "cold start", "target_class": "tb", "P(tb)": 0.71, "labels_of_class": 2})
    assert seed == "Cold start: 'tb' has only 2 confirmed label(s); this is one of the cases most likely to be tb (P 0.71)."
    assert describe_pick({"reason": "cold start", "coverage_rank": 3}).endswith("Coverage rank 3.")


def test_plain_strategies_and_unknown_keys_are_shown_not_dropped():
    assert describe_pick({"bald": 0.12}) == "BALD (MC-dropout disagreement) 0.12."
    assert describe_pick({"entropy": 0.62}) == "Entropy 0.62."
    assert describe_pick({"reason": "uncertain / costly", "new_signal": 3}).endswith("New signal 3.")
    assert describe_pick({}) == ""


def test_every_pick_of_a_real_batch_is_described():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1], 200)
    emb = rng.normal(size=(200, 8))
    labelled = np.zeros(200, bool)
    labelled[:30] = True
    cfg = AcquisitionConfig(n=20, rare_index=0, class_names=("normal", "pneumonia"), audit_confidence=0.8)
    picks = select_batch(probs, emb, labelled, cfg, counts=[10, 20])
    texts = [describe_pick(p.why) for p in picks]
    assert all(t and "{" not in t for t in texts)
    assert any(t.startswith("Uncertain or costly") for t in texts)
