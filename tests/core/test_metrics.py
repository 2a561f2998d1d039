"""Tests for core.models.metrics and core.models.calibration (hand-checked expectations)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from core.models.calibration import (
    apply_temperature,
    brier_score,
    expected_calibration_error,
    fit_temperature,
    reliability_curve,
)
from core.models.metrics import (
    bootstrap_binary,
    cohen_kappa,
    evaluate,
    operating_thresholds,
    predict,
    quadratic_weighted_kappa,
    roc_points,
    threshold_table,
)

CONTRACT_KEYS = {"n", "accuracy", "macro_auc", "kappa", "ece", "confusion", "classes", "per_class"}
CLASS_KEYS = {"n", "sensitivity", "specificity", "precision", "f1", "auc", "ap", "ci95"}

# Six samples, three classes. Argmax predictions: [0, 1, 1, 1, 2, 0].
Y3 = np.array([0, 0, 1, 1, 2, 2])
P3 = np.array([
    [0.75, 0.15, 0.10],  # true 0, pred 0, confidence 0.75 (bin 11)
    [0.35, 0.62, 0.03],  # true 0, pred 1, confidence 0.62 (bin 9), wrong
    [0.05, 0.85, 0.10],  # true 1, pred 1, confidence 0.85 (bin 12)
    [0.20, 0.75, 0.05],  # true 1, pred 1, confidence 0.75 (bin 11)
    [0.05, 0.10, 0.85],  # true 2, pred 2, confidence 0.85 (bin 12)
    [0.95, 0.03, 0.02],  # true 2, pred 0, confidence 0.95 (bin 14), wrong
])
NAMES = ["normal", "benign", "malignant"]


def strict_json(obj) -> str:
    return json.dumps(obj, allow_nan=False)


def synthetic(n: int, rng: np.random.Generator, separation: float = 1.5):
    """Binary problem with overlapping Gaussian scores; probs as an (n, 2) array."""
    y = rng.integers(0, 2, n)
    z = rng.normal(size=n) + separation * y
    s = 1.0 / (1.0 + np.exp(-(z - separation / 2)))
    return y, np.stack([1.0 - s, s], axis=1)


# ---------------------------------------------------------------- hand-computed multi-class
def test_hand_computed_multiclass():
    r = evaluate(Y3, P3, NAMES, n_boot=200)
    assert CONTRACT_KEYS <= set(r)
    assert r["n"] == 6
    assert r["classes"] == NAMES
    assert r["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert r["accuracy"] == pytest.approx(4 / 6)
    # po = 4/6, pe = (2*2 + 2*3 + 2*1) / 36 = 1/3 -> kappa = (2/3 - 1/3) / (2/3)
    assert r["kappa"] == pytest.approx(0.5)
    assert r["balanced_accuracy"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)

    normal, benign, malignant = (r["per_class"][c] for c in NAMES)
    assert CLASS_KEYS <= set(normal)
    # normal: TP 1, FN 1, FP 1, TN 3
    assert (normal["n"], normal["n_negative"]) == (2, 4)
    assert normal["sensitivity"] == pytest.approx(0.5)
    assert normal["specificity"] == pytest.approx(0.75)
    assert normal["precision"] == pytest.approx(0.5)
    assert normal["f1"] == pytest.approx(0.5)
    # benign: TP 2, FN 0, FP 1, TN 3
    assert benign["sensitivity"] == pytest.approx(1.0)
    assert benign["specificity"] == pytest.approx(0.75)
    assert benign["precision"] == pytest.approx(2 / 3)
    assert benign["f1"] == pytest.approx(0.8)
    # malignant: TP 1, FN 1, FP 0, TN 4
    assert malignant["sensitivity"] == pytest.approx(0.5)
    assert malignant["specificity"] == pytest.approx(1.0)
    assert malignant["precision"] == pytest.approx(1.0)
    assert malignant["f1"] == pytest.approx(2 / 3)
    # AUCs by pair counting: 6/8, 8/8, 4/8
    assert normal["auc"] == pytest.approx(0.75)
    assert benign["auc"] == pytest.approx(1.0)
    assert malignant["auc"] == pytest.approx(0.5)
    assert r["macro_auc"] == pytest.approx(0.75)
    assert benign["ap"] == pytest.approx(1.0)
    # ECE: (|0 - .62| + 2|1 - .75| + 2|1 - .85| + |0 - .95|) / 6
    assert r["ece"] == pytest.approx(2.37 / 6)
    assert normal["threshold"] is None
    assert normal["small_n"] is True and "2 positives" in normal["warning"]
    strict_json(r)


def test_hand_computed_ece_and_reliability_curve():
    assert expected_calibration_error(Y3, P3) == pytest.approx(0.395)
    curve = reliability_curve(Y3, P3, n_bins=15)
    assert len(curve["edges"]) == 16 and len(curve["count"]) == 15
    assert curve["count"][9] == 1 and curve["count"][11] == 2
    assert curve["count"][12] == 2 and curve["count"][14] == 1
    assert sum(curve["count"]) == 6
    assert curve["confidence"][11] == pytest.approx(0.75)
    assert curve["accuracy"][11] == pytest.approx(1.0)
    assert curve["confidence"][14] == pytest.approx(0.95)
    assert curve["accuracy"][14] == pytest.approx(0.0)
    assert curve["confidence"][0] is None and curve["accuracy"][0] is None
    strict_json(curve)


def test_binary_shorthand_ece_and_brier():
    # 1-D probs = probability of class 1
    y, p1 = np.array([1, 0]), np.array([0.8, 0.4])
    # rows [0.2, 0.8] vs [0, 1] -> 0.08; [0.6, 0.4] vs [1, 0] -> 0.32
    assert brier_score(y, p1) == pytest.approx(0.2)
    # top-label confidences 0.8 (right) and 0.6 (right): ECE = (0.2 + 0.4) / 2
    assert expected_calibration_error(y, p1) == pytest.approx(0.3)


def test_cohen_kappa_hand_and_sklearn():
    assert cohen_kappa(Y3, [0, 1, 1, 1, 2, 0]) == pytest.approx(0.5)
    a, b = [0, 1, 1, 0, 2, 2, 1], [0, 1, 0, 0, 2, 1, 1]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    assert cohen_kappa([1, 1, 1], [1, 1, 1]) is None  # chance agreement is total
    assert cohen_kappa([], []) is None


def test_quadratic_weighted_kappa():
    # O has weight .25 off the diagonal; sum(W * E) = 2/3 + 1/4 + 1/3 -> 1 - .25 / 1.25
    assert quadratic_weighted_kappa([0, 1, 2], [0, 2, 2], 3) == pytest.approx(0.8)
    a = [0, 1, 2, 3, 4, 2, 1, 0, 3]
    b = [0, 2, 2, 4, 3, 1, 1, 1, 3]
    assert quadratic_weighted_kappa(a, b, 5) == pytest.approx(cohen_kappa_score(a, b, weights="quadratic"))
    assert quadratic_weighted_kappa(a, a, 5) == pytest.approx(1.0)
    assert quadratic_weighted_kappa([2, 2], [2, 2], 5) is None
    with pytest.raises(ValueError):
        quadratic_weighted_kappa([0, 5], [0, 1], 5)


# ---------------------------------------------------------------- prediction rule
def test_threshold_rule_for_rare_class():
    p = np.array([[0.6, 0.1, 0.3], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    assert predict(p).tolist() == [0, 0, 1]
    # malignant at 0.2: row 0 passes -> malignant; others fall back to argmax
    assert predict(p, [None, None, 0.2]).tolist() == [2, 0, 1]
    # two classes pass on row 0: benign 0.1/0.05 = 2 beats malignant 0.3/0.2 = 1.5
    assert predict(p, [None, 0.05, 0.2]).tolist()[0] == 1
    r = evaluate([2, 0, 1], p, NAMES, thresholds={"malignant": 0.2}, n_boot=0)
    assert r["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert r["per_class"]["malignant"]["threshold"] == pytest.approx(0.2)
    assert r["per_class"]["normal"]["threshold"] is None
    with pytest.raises(ValueError):
        evaluate([2, 0, 1], p, NAMES, thresholds={"unknown": 0.2})


# ---------------------------------------------------------------- perfect / edge cases
def test_perfect_classifier():
    y = np.repeat(np.arange(3), 40)
    p = np.full((120, 3), 0.005)
    p[np.arange(120), y] = 0.99
    r = evaluate(y, p, NAMES, n_boot=100)
    assert r["accuracy"] == 1.0 and r["kappa"] == pytest.approx(1.0) and r["macro_auc"] == pytest.approx(1.0)
    assert r["ece"] == pytest.approx(0.01)
    for c in NAMES:
        pc = r["per_class"][c]
        assert pc["auc"] == 1.0 and pc["sensitivity"] == 1.0 and pc["f1"] == 1.0
        assert pc["ci95"]["auc"] == [1.0, 1.0] and pc["ci95"]["sensitivity"] == [1.0, 1.0]
        assert pc["small_n"] is False and pc["warning"] is None


def test_one_class_present_gives_none_not_nan():
    y = np.zeros(10, dtype=int)
    p = np.tile([0.8, 0.1, 0.1], (10, 1))
    r = evaluate(y, p, NAMES, n_boot=50)
    strict_json(r)
    assert r["macro_auc"] is None and r["kappa"] is None
    assert r["accuracy"] == 1.0
    normal, benign = r["per_class"]["normal"], r["per_class"]["benign"]
    assert normal["auc"] is None and normal["specificity"] is None and normal["sensitivity"] == 1.0
    assert benign["sensitivity"] is None and benign["precision"] is None and benign["f1"] is None
    assert benign["ap"] is None and benign["specificity"] == 1.0
    assert benign["ci95"]["sensitivity"] is None and benign["ci95"]["auc"] is None
    assert normal["ci95"]["sensitivity"] == [1.0, 1.0]


def test_empty_and_random_inputs_do_not_crash():
    r = evaluate(np.zeros(0, dtype=int), np.zeros((0, 3)), NAMES)
    strict_json(r)
    assert r["n"] == 0 and r["accuracy"] is None and r["ece"] is None and r["brier"] is None
    assert r["confusion"] == [[0, 0, 0]] * 3
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 200)
    p = rng.dirichlet(np.ones(3), 200)
    r = evaluate(y, p, NAMES, n_boot=100)
    strict_json(r)
    assert 0.35 < r["macro_auc"] < 0.65
    assert abs(r["kappa"]) < 0.2


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError):
        evaluate([0, 1], np.ones((3, 2)) / 2, ["a", "b"])
    with pytest.raises(ValueError):
        evaluate([0, 5], np.ones((2, 2)) / 2, ["a", "b"])
    with pytest.raises(ValueError):
        evaluate([0, 1], [[np.nan, 1.0], [0.5, 0.5]], ["a", "b"])
    with pytest.raises(ValueError):
        evaluate([0, 1], np.ones((2, 2)) / 2, ["a", "b", "c"])


# ---------------------------------------------------------------- multi-label
def test_multilabel_hand_computed():
    y = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    p = np.array([[0.9, 0.2], [0.6, 0.7], [0.3, 0.4], [0.1, 0.6]])
    # predictions at 0.5: [[1, 0], [1, 1], [0, 0], [0, 1]]
    r = evaluate(y, p, ["effusion", "nodule"], multilabel=True, n_boot=50)
    strict_json(r)
    assert r["multilabel"] is True
    assert r["accuracy"] == pytest.approx(0.5)  # exact-match rows 0 and 1
    eff, nod = r["per_class"]["effusion"], r["per_class"]["nodule"]
    assert eff["sensitivity"] == 1.0 and eff["specificity"] == 1.0 and eff["auc"] == 1.0
    assert (nod["sensitivity"], nod["specificity"], nod["precision"], nod["f1"]) == (0.5, 0.5, 0.5, 0.5)
    assert nod["counts"] == {"tp": 1, "fp": 1, "tn": 1, "fn": 1}
    assert r["confusion"] == [[2, 1], [1, 1]]  # [i][j]: true label i and predicted label j
    assert r["balanced_accuracy"] == pytest.approx(0.75)
    assert r["kappa"] == pytest.approx(0.5)  # mean of 1.0 and 0.0
    assert eff["threshold"] == 0.5
    # a per-label threshold changes the prediction: nodule at 0.65 drops row 3's false positive
    r2 = evaluate(y, p, ["effusion", "nodule"], thresholds={"nodule": 0.65}, multilabel=True, n_boot=0)
    assert r2["per_class"]["nodule"]["specificity"] == 1.0
    assert r2["accuracy"] == pytest.approx(0.75)


# ---------------------------------------------------------------- bootstrap
def test_ci_contains_estimate_and_narrows_with_more_data():
    rng = np.random.default_rng(0)
    widths = []
    for n in (120, 3000):
        y, p = synthetic(n, rng)
        r = evaluate(y, p, ["neg", "pos"], n_boot=1000, seed=1)
        pc = r["per_class"]["pos"]
        for key in ("sensitivity", "auc"):
            lo, hi = pc["ci95"][key]
            assert lo <= pc[key] <= hi
        widths.append(pc["ci95"]["auc"][1] - pc["ci95"]["auc"][0])
    assert widths[1] < widths[0] / 2


def test_bootstrap_is_deterministic_and_matches_explicit_resampling():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300).astype(bool)
    s = np.round(rng.random(300) * 0.6 + 0.3 * y, 1)  # many ties
    pred = s >= 0.5
    a = bootstrap_binary(y, s, pred, 200, seed=5)
    assert a == bootstrap_binary(y, s, pred, 200, seed=5)
    assert a != bootstrap_binary(y, s, pred, 200, seed=6)
    # Same draws done the slow way (positives first, then negatives, from one generator).
    g = np.random.default_rng(5)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    dp = g.integers(0, len(pos), size=(200, len(pos)))
    dn = g.integers(0, len(neg), size=(200, len(neg)))
    target = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    aucs = [roc_auc_score(target, np.r_[s[pos][dp[b]], s[neg][dn[b]]]) for b in range(200)]
    sens = [pred[pos][dp[b]].mean() for b in range(200)]
    assert a["auc"] == pytest.approx(np.percentile(aucs, [2.5, 97.5]).tolist())
    assert a["sensitivity"] == pytest.approx(np.percentile(sens, [2.5, 97.5]).tolist())


def test_evaluate_is_deterministic_with_seed():
    rng = np.random.default_rng(2)
    y, p = synthetic(500, rng)
    assert strict_json(evaluate(y, p, ["a", "b"], seed=3)) == strict_json(evaluate(y, p, ["a", "b"], seed=3))


# ---------------------------------------------------------------- temperature scaling
def test_temperature_scaling_reduces_ece_on_overconfident_logits():
    rng = np.random.default_rng(0)
    n, k = 4000, 3
    true_logits = rng.normal(scale=1.5, size=(n, k))
    true_p = apply_temperature(true_logits, 1.0)
    y = np.array([rng.choice(k, p=row) for row in true_p])
    logits = 4.0 * true_logits  # over-confident model
    before = expected_calibration_error(y, apply_temperature(logits, 1.0))
    t = fit_temperature(logits, y)
    after = expected_calibration_error(y, apply_temperature(logits, t))
    assert 3.0 < t < 5.0
    assert after < before / 3
    assert after < 0.05


def test_temperature_is_clamped_and_robust():
    y = np.array([0, 1] * 50)
    separable = np.stack([1.0 - 2 * y, 2 * y - 1.0], axis=1).astype(float)
    assert 0.05 <= fit_temperature(separable, y) <= 0.06  # NLL keeps falling as T -> 0
    noise = np.random.default_rng(1).normal(size=(100, 2))
    assert 0.05 <= fit_temperature(noise, y) <= 20.0
    assert fit_temperature(np.zeros((0, 2)), np.zeros(0, dtype=int)) == 1.0
    with pytest.raises(ValueError):
        fit_temperature([[np.inf, 0.0]], [0])
    with pytest.raises(ValueError):
        apply_temperature(noise, 0.0)
    probs = apply_temperature(noise, 2.0)
    assert np.allclose(probs.sum(axis=1), 1.0)


def test_temperature_multilabel():
    rng = np.random.default_rng(4)
    z = rng.normal(scale=2.0, size=(3000, 2))
    y = (rng.random(z.shape) < 1.0 / (1.0 + np.exp(-z))).astype(int)
    t = fit_temperature(3.0 * z, y, multilabel=True)
    assert 2.5 < t < 3.5
    p = apply_temperature(3.0 * z, t, multilabel=True)
    assert expected_calibration_error(y, p, multilabel=True) < expected_calibration_error(
        y, apply_temperature(3.0 * z, 1.0, multilabel=True), multilabel=True)


# ---------------------------------------------------------------- operating thresholds, ROC
def test_operating_threshold_hand_computed():
    y = np.array([1, 1, 1, 1, 0, 0])
    s = np.array([0.9, 0.8, 0.4, 0.3, 0.5, 0.1])
    p = np.stack([1 - s, s], axis=1)
    table = threshold_table(y, p, ["neg", "pos"], target_sensitivity=0.75)
    row = table["pos"]
    assert row["threshold"] == pytest.approx(0.4)  # the 3rd highest positive score
    assert row["sensitivity"] == pytest.approx(0.75) and row["specificity"] == pytest.approx(0.5)
    assert operating_thresholds(y, p, ["neg", "pos"], 1.0)["pos"] == pytest.approx(0.3)
    strict_json(table)


def test_operating_thresholds_reach_target_and_are_highest():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 600)
    p = rng.dirichlet(np.ones(3), 600)
    p[np.arange(600), y] += 0.5
    p /= p.sum(axis=1, keepdims=True)
    thresholds = operating_thresholds(y, p, NAMES, target_sensitivity=0.95)
    table = threshold_table(y, p, NAMES, target_sensitivity=0.95)
    for c, name in enumerate(NAMES):
        t = thresholds[name]
        pos = p[y == c, c]
        assert np.mean(pos >= t) >= 0.95
        assert np.mean(pos >= np.nextafter(t, 1.0)) < 0.95  # any higher threshold misses the target
        assert table[name]["sensitivity"] == pytest.approx(np.mean(pos >= t))
    assert operating_thresholds(np.zeros(4, dtype=int), np.tile([0.7, 0.2, 0.1], (4, 1)), NAMES)["benign"] is None


def test_roc_points():
    r = roc_points(Y3, P3, 1)
    assert r["auc"] == pytest.approx(1.0)
    assert r["fpr"][0] == 0.0 and r["tpr"][-1] == 1.0 and r["fpr"][-1] == 1.0
    assert len(r["fpr"]) == len(r["tpr"]) == len(r["thresholds"])
    strict_json(r)
    empty = roc_points(np.zeros(5, dtype=int), np.tile([0.7, 0.2, 0.1], (5, 1)), 2)
    assert empty == {"fpr": [], "tpr": [], "thresholds": [], "auc": None}
    ml = roc_points(np.array([[1, 0], [0, 1]]), np.array([[0.8, 0.3], [0.2, 0.9]]), 0)
    assert ml["auc"] == 1.0


def test_small_n_warning_threshold():
    rng = np.random.default_rng(6)
    y = np.r_[np.zeros(100, dtype=int), np.ones(29, dtype=int)]
    p = rng.dirichlet(np.ones(2), len(y))
    r = evaluate(y, p, ["common", "rare"], n_boot=10)
    assert r["per_class"]["rare"]["small_n"] is True
    assert "29 positives" in r["per_class"]["rare"]["warning"]
    assert "29 negatives" in r["per_class"]["common"]["warning"]
    y2 = np.r_[np.zeros(100, dtype=int), np.ones(30, dtype=int)]
    r2 = evaluate(y2, rng.dirichlet(np.ones(2), len(y2)), ["common", "rare"], n_boot=10)
    assert r2["per_class"]["rare"]["small_n"] is False


def test_apply_temperature_matches_scipy_without_overflow():
    import warnings

    from scipy.special import expit, softmax

    from core.models.calibration import apply_temperature

    z = np.array([[1000.0, -1000.0, 0.0], [0.3, 0.2, -5.0], [-800.0, -801.0, -799.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        soft = apply_temperature(z, 1.7)
        sig = apply_temperature(z, 0.5, multilabel=True)
    np.testing.assert_allclose(soft, softmax(z / 1.7, axis=-1), atol=1e-12)
    np.testing.assert_allclose(sig, expit(z / 0.5), atol=1e-12)


def test_wilson_lower_bound_known_values():
    from core.models.metrics import wilson_lower

    assert wilson_lower(90, 100, 0.95) == pytest.approx(0.8396, abs=1e-3)
    assert wilson_lower(0, 0) == 0.0 and wilson_lower(0, 10) == 0.0
    assert wilson_lower(20, 20, 0.95) < 0.9 < wilson_lower(200, 200, 0.95)


def test_confident_threshold_keeps_a_margin_for_new_data():
    rng = np.random.default_rng(3)
    y = np.r_[np.ones(300, int), np.zeros(700, int)]
    score = np.r_[rng.beta(5, 2, 300), rng.beta(2, 5, 700)]
    p = np.stack([1 - score, score], axis=1)
    plain = threshold_table(y, p, ["neg", "pos"], target_sensitivity=0.9)["pos"]
    sure = threshold_table(y, p, ["neg", "pos"], target_sensitivity=0.9, confidence=0.95)["pos"]
    assert sure["threshold"] < plain["threshold"]
    assert plain["sensitivity_lower"] < 0.9 <= sure["sensitivity_lower"]
    # just enough positives kept: one fewer would break the bound
    from core.models.metrics import wilson_lower

    kept = int(round(sure["sensitivity"] * 300))
    assert wilson_lower(kept - 1, 300, 0.95) < 0.9
    # too few positives to promise 0.9: every positive is kept
    small = threshold_table(y[295:305], p[295:305], ["neg", "pos"], 0.9, confidence=0.95)["pos"]
    assert small["sensitivity"] == 1.0 and small["threshold"] == pytest.approx(p[295:300, 1].min())
