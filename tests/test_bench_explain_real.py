"""bench/explain_real.py: the lesion split, the map scores and the choice of settings on validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import bench.explain_real as er


def test_energy_ratio_and_pointing_by_hand():
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True  # a quarter of the image
    inside = np.zeros((4, 4))
    inside[0, 0] = 1.0
    assert er.energy_ratio(inside, mask) == pytest.approx(4.0)  # all energy in a quarter of the area
    assert er.energy_ratio(np.ones((4, 4)), mask) == pytest.approx(1.0)  # uniform = 1
    assert np.isnan(er.energy_ratio(np.zeros((4, 4)), mask))
    assert er.pointing_hit(inside, mask) == 1.0
    outside = np.zeros((4, 4))
    outside[3, 3] = 2.0
    assert er.pointing_hit(outside, mask) == 0.0
    tied = np.zeros((4, 4))
    tied[0, 0] = tied[3, 3] = 1.0  # two tied maxima, one inside
    assert er.pointing_hit(tied, mask) == 0.5


def _records(method, options, energies, pointings, seconds):
    out = []
    for p, e, pt, s in zip(options, energies, pointings, seconds):
        for img in range(3):
            out.append({"image": str(img), "correct": True, "method": method, "setting": json.dumps(p, sort_keys=True),
                        "energy": e, "pointing": pt, "seconds": s})
        out.append({"image": "wrong", "correct": False, "method": method, "setting": json.dumps(p, sort_keys=True),
                    "energy": 9.0, "pointing": 1.0, "seconds": s})  # misclassified lesions never decide
    return out


def test_choose_settings_by_target_score_and_time_cap(monkeypatch):
    monkeypatch.setattr(er, "CANDIDATES", {"lime": [{"n_samples": 32}, {"n_samples": 64}]})
    # 32 samples: min(1.2 / 1.5, 0.7 / 0.8) = 0.8 beats 64 samples: min(1.8 / 1.5, 0.6 / 0.8) = 0.75
    recs = _records("lime", er.CANDIDATES["lime"], [1.2, 1.8], [0.7, 0.6], [3.0, 6.0])
    settings, table = er.choose_settings(recs)
    assert settings == {"lime": {"n_samples": 32}}
    assert [round(r["score"], 3) for r in table] == [0.8, 0.75] and all(r["n"] == 3 for r in table)
    recs = _records("lime", er.CANDIDATES["lime"], [1.2, 1.8], [0.7, 0.9], [3.0, 6.0])
    assert er.choose_settings(recs)[0] == {"lime": {"n_samples": 64}}
    assert er.choose_settings(recs, max_seconds=5.0)[0] == {"lime": {"n_samples": 32}}  # 64 is over the cap
    assert er.choose_settings(recs, max_seconds=1.0)[0] == {"lime": {"n_samples": 32}}  # none within: the cheapest


@pytest.mark.skipif(not (er.DATA / "metadata.csv").exists(), reason="../shared/data/ham10000_dev is absent")
def test_split_keeps_every_lesion_on_one_side():
    rows = er.read_metadata()
    train, val, test = er.split_lesions(rows, 120, 30, 900, 0)
    sides = [{r["lesion_id"] for r in part} for part in (train, val, test)]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    assert len(test) == 240 and len(val) == 60  # one photograph per lesion
    assert len(sides[2]) == 240 and len(sides[1]) == 60
    assert sum(r["dx"] == "nv" for r in train) == 900
    # the two-way split lime_fair.py uses gives the same training and test rows
    assert er.lesion_split(rows, 120, 900, 0) == (train, test)


def test_centre_prior_peaks_at_the_centre_and_scores_by_hand():
    prior = er.centre_prior((5, 7), sigma=0.2)
    assert prior.shape == (5, 7) and prior[2, 3] == pytest.approx(1.0) and prior.argmax() == 2 * 7 + 3
    assert prior[2, 0] == pytest.approx(np.exp(-9 / (2 * 1.0 ** 2)))  # 3 px from the centre, sigma 0.2 × 5 = 1 px
    mask = np.zeros((5, 7), bool)
    mask[1:4, 2:5] = True
    assert er.pointing_hit(prior, mask) == 1.0
    assert er.energy_ratio(mask.astype(float), mask) == pytest.approx(35 / 9)  # the ceiling: 1 ÷ area share


class _Linear(torch.nn.Module):
    """logits (s, −s) with s = the mean of channel 0 over the left half minus over the right half."""

    def forward(self, x):
        s = x[:, 0, :, :2].mean(dim=(1, 2)) - x[:, 0, :, 2:].mean(dim=(1, 2))
        return torch.stack([s, -s], dim=1)


def test_lesion_dependence_hides_each_region():
    x = torch.zeros(3, 4, 4)
    x[0, :, :2] = 4.0  # a bright "lesion" on the left, dark "skin" on the right
    mask = np.zeros((4, 4), np.float32)
    mask[:, :2] = 1.0
    photo = np.ones((4, 4), np.float32)
    d = er.lesion_dependence(_Linear(), x, mask, photo, 0)
    p = lambda s: float(torch.softmax(torch.tensor([s, -s]), 0)[0])  # noqa: E731
    assert d["p_full"] == pytest.approx(p(4.0))
    # skin filled with its own mean colour (0): unchanged; lesion filled with the skin's colour: s = 0
    assert d["p_lesion_only_skin"] == pytest.approx(p(4.0)) and d["p_skin_only_skin"] == pytest.approx(0.5)
    # the fully blurred photograph is nearly uniform: far less evidence than the photograph
    assert 0.5 <= d["p_none_blur"] < d["p_full"]
    assert d["p_skin_only_blur"] < d["p_full"] and d["p_lesion_only_blur"] < d["p_full"]


def test_dependence_lines_report_drops_per_class():
    recs = [{"method": "dependence", "correct": True, "pred": c, "p_full": 0.9, "p_lesion_only_blur": 0.8,
             "p_lesion_only_skin": 0.7, "p_skin_only_blur": 0.6, "p_skin_only_skin": 0.5, "p_none_blur": 0.5}
            for c in ("mel", "nv") for _ in range(3)]
    recs.append({**recs[0], "correct": False, "p_full": 0.1})  # misclassified lesions are left out
    text = "\n".join(er.dependence_lines(recs))
    assert "| melanoma | 3 | 0.90 (0.90–0.90) |" in text and "| all | 6 |" in text
    assert "blur: hiding the lesion +0.30 (+0.30 to +0.30), hiding the skin +0.10" in text
    assert "skin: hiding the lesion +0.40 (+0.40 to +0.40), hiding the skin +0.20" in text
