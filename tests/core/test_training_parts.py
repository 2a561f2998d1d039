"""Losses, class weights and patient-grouped splits."""

import numpy as np
import pytest
import torch

from core.models.losses import FocalLoss, class_weights, coral_loss, coral_predict, make_loss
from core.models.splits import stratified_group_split


def test_class_weights_are_inverse_frequency_with_mean_one():
    w = class_weights([90, 10])
    assert torch.allclose(w, torch.tensor([0.2, 1.8]))
    assert class_weights([5, 0])[1] > 0  # an absent class does not divide by zero


def test_focal_with_gamma_zero_equals_cross_entropy():
    logits = torch.tensor([[2.0, -1.0], [0.1, 0.3], [-0.5, 1.5]])
    target = torch.tensor([0, 1, 0])
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert torch.isclose(FocalLoss(gamma=0.0)(logits, target), ce)
    # focusing down-weights the easy first example, so the focal loss is smaller than CE
    assert FocalLoss(gamma=2.0)(logits, target) < ce


def test_make_loss_kinds_and_unknown():
    assert isinstance(make_loss("ce", [3, 1]), torch.nn.CrossEntropyLoss)
    weighted = make_loss("weighted", [3, 1])
    assert torch.allclose(weighted.weight, torch.tensor([0.5, 1.5]))
    assert isinstance(make_loss("focal", [3, 1], multilabel=True), FocalLoss)
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("hinge", [1, 1])


def test_coral_ordinal_loss_and_prediction():
    logits = torch.tensor([[5.0, 5.0, -5.0], [-5.0, -5.0, -5.0]])
    assert coral_predict(logits).tolist() == [2, 0]
    good = coral_loss(logits, torch.tensor([2, 0]))
    bad = coral_loss(logits, torch.tensor([0, 3]))
    assert good < 0.01 < bad
    assert coral_loss(logits, torch.tensor([-1, -1])) == 0  # no severity given: no loss


def test_split_keeps_patients_whole_and_classes_on_both_sides():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(100), 3)  # 100 patients, 3 images each
    labels = np.where(groups < 10, 1, 0)  # the rare class: 10 patients
    labels[rng.random(len(labels)) < 0.05] = 0
    train, val = stratified_group_split(labels, groups, val_fraction=0.2, seed=3)
    assert set(groups[train]).isdisjoint(groups[val])
    assert len(train) + len(val) == len(labels)
    assert set(labels[val]) == {0, 1} and set(labels[train]) == {0, 1}
    assert 0.12 < len(val) / len(labels) < 0.28
    again = stratified_group_split(labels, groups, val_fraction=0.2, seed=3)
    assert np.array_equal(again[0], train)


def test_split_puts_a_two_patient_class_on_both_sides_and_handles_one_group():
    labels = [0, 0, 0, 0, 0, 0, 1, 1]
    groups = [0, 1, 2, 3, 4, 5, 6, 7]
    train, val = stratified_group_split(labels, groups, val_fraction=0.2)
    assert 1 in np.asarray(labels)[train] and 1 in np.asarray(labels)[val]
    train, val = stratified_group_split([0, 1], ["p", "p"])
    assert list(train) == [0, 1] and len(val) == 0
