"""Training options that must take effect: each test fails if train() (or the loss) ignored the option.

Expectations are computed by hand from the formulas, never with the function under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.importer import import_paths
from core.models import augment as aug
from core.models import training as training_mod
from core.models.losses import FocalLoss, make_loss
from core.models.training import train, warmup_cosine
from core.models.versions import load_version, save_version
from tests.core.conftest import fast_config, tiny_model, write_dataset

pytestmark = pytest.mark.usefixtures("single_thread")

LN2, LN4_3 = math.log(2.0), math.log(4.0 / 3.0)
# Sample A: logits (ln 3, 0), target 0 -> p_t = 3/4, CE = ln(4/3). Sample B: logits (0, 0), target 1 -> CE = ln 2.
LOGITS = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
TARGET = torch.tensor([0, 1])
# counts (3, 1): inverse frequency 4/(2*3), 4/(2*1) = (2/3, 2), normalised to mean 1 -> (0.5, 1.5)
COUNTS = [3, 1]


# --- losses on a known batch -------------------------------------------------------------------------

def test_weighted_and_plain_cross_entropy_on_a_known_batch():
    plain = float(make_loss("ce", COUNTS)(LOGITS, TARGET))
    weighted = float(make_loss("weighted", COUNTS)(LOGITS, TARGET))
    assert plain == pytest.approx((LN4_3 + LN2) / 2, abs=1e-6)  # 0.49041
    assert weighted == pytest.approx((0.5 * LN4_3 + 1.5 * LN2) / (0.5 + 1.5), abs=1e-6)  # 0.59178
    assert weighted - plain > 0.1


def test_focal_loss_matches_its_formula():
    # -(1 - p_t)^γ log p_t with γ = 2: A: (1/4)^2 ln(4/3); B: (1/2)^2 ln 2
    a, b = 0.0625 * LN4_3, 0.25 * LN2
    assert float(FocalLoss(gamma=2.0)(LOGITS, TARGET)) == pytest.approx((a + b) / 2, abs=1e-6)
    alpha = torch.tensor([0.5, 1.5])
    assert float(FocalLoss(gamma=2.0, alpha=alpha)(LOGITS, TARGET)) == pytest.approx((0.5 * a + 1.5 * b) / 2,
                                                                                      abs=1e-6)
    assert float(make_loss("focal", COUNTS)(LOGITS, TARGET)) == pytest.approx((0.5 * a + 1.5 * b) / 2, abs=1e-6)
    # sigmoid form: logit 0 for a positive: p_t = 1/2, bce = ln 2 -> (1/2)^2 ln 2
    ml = FocalLoss(gamma=2.0, multilabel=True)(torch.zeros(1, 1), torch.ones(1, 1))
    assert float(ml) == pytest.approx(0.25 * LN2, abs=1e-6)


def test_sample_weights_multiply_into_the_per_sample_loss():
    sw = torch.tensor([1.0, 3.0])
    plain = float(make_loss("ce", COUNTS)(LOGITS, TARGET, sample_weight=sw))
    assert plain == pytest.approx((LN4_3 + 3 * LN2) / 4, abs=1e-6)
    weighted = float(make_loss("weighted", COUNTS)(LOGITS, TARGET, sample_weight=sw))
    assert weighted == pytest.approx((0.5 * LN4_3 + 4.5 * LN2) / 5, abs=1e-6)
    ones = float(make_loss("weighted", COUNTS)(LOGITS, TARGET, sample_weight=torch.ones(2)))
    assert ones == pytest.approx(float(make_loss("weighted", COUNTS)(LOGITS, TARGET)), abs=1e-6)


def test_warmup_then_cosine_schedule():
    f = warmup_cosine(10, 2)
    assert [round(f(k), 4) for k in (0, 1)] == [0.5, 1.0]
    assert f(2) == pytest.approx(1.0) and f(6) == pytest.approx(0.5) and f(10) == pytest.approx(0.0)
    assert warmup_cosine(4)(0) == 1.0  # no warm-up: starts at the full rate


# --- options reach the training loop ---------------------------------------------------------------

@pytest.fixture
def imbalanced(workspace, tmp_path, single_thread):
    """24 images, 20 'neg' and 4 'pos' (confirmed), user val split of 4 neg + 1 pos, untrained v1 active."""
    folder = tmp_path / "photos"
    write_dataset(folder, n=24)
    import_paths(workspace, [folder])
    refs = workspace.images()
    labels = ["pos" if i < 4 else "neg" for i in range(len(refs))]
    workspace.add_labels([{"image_id": r.id, "classes": [c], "annotator": "import", "source": "import"}
                          for r, c in zip(refs, labels)])
    workspace.set_splits({r.id: ("val" if i in (3, 20, 21, 22, 23) else "train") for i, r in enumerate(refs)})
    tiny_model(workspace)
    return workspace


def _spy_batches(monkeypatch):
    seen = []
    real = training_mod._batches

    def spy(n, batch_size, sampler, targets, n_classes, rank, world, generator):
        out = real(n, batch_size, sampler, targets, n_classes, rank, world, generator)
        seen.append((sampler, np.concatenate([targets[b.numpy()] for b in out])))
        return out

    monkeypatch.setattr(training_mod, "_batches", spy)
    return seen


def test_balanced_sampler_changes_what_train_draws(imbalanced, monkeypatch):
    seen = _spy_batches(monkeypatch)
    train(imbalanced, fast_config(mode="frozen", epochs=4, sampler="none", patience=99))
    plain = np.concatenate([t for _, t in seen])
    assert {s for s, _ in seen} == {"none"}
    assert (plain == 1).sum() == 3 * 4  # each epoch draws every one of the 3 'pos' training images once
    seen.clear()
    train(imbalanced, fast_config(mode="frozen", epochs=4, sampler="balanced", patience=99, parent="v1"))
    balanced = np.concatenate([t for _, t in seen])
    assert {s for s, _ in seen} == {"balanced"} and len(balanced) == len(plain) == 19 * 4
    # with replacement, class-balanced: about half of 76 draws are 'pos', against 12 without the sampler
    assert (balanced == 1).sum() >= 25


def test_loss_option_reaches_the_loop(imbalanced, monkeypatch):
    kinds = []
    real = training_mod.make_loss
    monkeypatch.setattr(training_mod, "make_loss", lambda kind, *a, **k: kinds.append(kind) or real(kind, *a, **k))
    first_loss = {}
    for loss in ("ce", "weighted"):
        events = []
        train(imbalanced, fast_config(mode="frozen", loss=loss, parent="v1", batch_size=32), emit=events.append)
        first_loss[loss] = next(e["loss"] for e in events if e["event"] == "step")
    assert kinds == ["ce", "weighted"]
    # same seed, same first batch (all 19 images), same logits: only the class weights differ
    assert first_loss["ce"] != pytest.approx(first_loss["weighted"], abs=1e-4)


# --- the promotion gate on data built for a known answer --------------------------------------------

def _constant_version(ws, parent_version: str) -> str:
    """Save a copy of ``parent_version`` whose head ignores the image (zero weights): every score is equal."""
    loaded = load_version(ws, parent_version)
    net = loaded.net
    with torch.no_grad():
        net.head[1].weight.zero_()
        net.head[1].bias.copy_(torch.tensor([0.3, -0.3]))
    saved = save_version(ws, net, loaded.spec, list(loaded.classes), weights="test: constant head",
                         parent=parent_version, actor="test")
    return saved.version


def test_gate_promotes_a_real_model_over_a_constant_one_and_keeps_the_real_one_against_a_constant(
        workspace, tmp_path, single_thread):
    # 60 images, bright square = pos; the user's val split holds 10 of each class.
    folder = tmp_path / "photos"
    write_dataset(folder, n=60)
    import_paths(workspace, [folder], labels_csv=folder / "labels.csv")
    refs = sorted(workspace.images(), key=lambda r: r.path)
    workspace.set_splits({r.id: ("val" if i < 20 else "train") for i, r in enumerate(refs)})
    tiny_model(workspace)
    constant = _constant_version(workspace, "v1")
    workspace.activate_model(constant, actor="test", reason="test: a model that cannot rank")
    # 1) a trained candidate against an active model that scores every image the same (AUC 0.5): promoted
    result = train(workspace, fast_config(mode="finetune", epochs=4, batch_size=8, patience=99, lr=3e-3))
    assert result["metrics"]["macro_auc"] >= 0.9
    assert result["promoted"] is True and result["reason"].startswith("promoted:")
    good = result["version"]
    assert workspace.active_model().version == good
    # 2) a constant candidate (learning rate ~0 from the constant parent) against the trained one: kept out
    result = train(workspace, fast_config(mode="frozen", epochs=1, lr=1e-12, parent=constant))
    assert result["metrics"]["macro_auc"] == pytest.approx(0.5)
    assert result["promoted"] is False and "would drop" in result["reason"]
    assert workspace.active_model().version == good


# --- augmentation per image ---------------------------------------------------------------------------

def _asymmetric_batch(n: int = 8) -> torch.Tensor:
    """Grayscale images (3 equal channels) with a bright block in the top-left corner only."""
    x = torch.zeros(n, 3, 64, 64)
    x[:, :, 4:20, 4:20] = 1.0
    return x


def test_radiographs_are_never_flipped_rotated_far_or_coloured():
    x = _asymmetric_batch(64)
    out = aug.augmentation_for(size=64)(x, torch.zeros(64, dtype=torch.long), torch.Generator().manual_seed(0))
    # the block stays in the top-left quadrant (±7° and a few pixels of shift cannot move it across)
    quadrants = out[:, 0].reshape(64, 2, 32, 2, 32).sum(dim=(2, 4))
    assert bool((quadrants.argmax(dim=1).argmax(dim=1) == 0).all())
    assert bool((quadrants[:, 0, 0] > 0.8 * quadrants.sum(dim=(1, 2))).all())
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])  # stays grayscale


def test_photographs_get_flips_and_rotations():
    x = _asymmetric_batch(64)
    out = aug.augmentation_for(size=64)(x, torch.ones(64, dtype=torch.long), torch.Generator().manual_seed(0))
    mass = out[:, 0].reshape(64, 2, 32, 2, 32).sum(dim=(2, 4)).reshape(64, 4)
    moved = (mass.argmax(dim=1) != 0).sum()
    assert moved >= 32  # flips (p = 0.5 each) and free rotation move the block most of the time


def test_a_mixed_batch_augments_each_image_by_its_own_modality():
    kinds = aug.kinds_of(["CR", "XC", "DX", "XC", "MG", "XC", "CR", "XC"] * 8)
    assert kinds.tolist()[:8] == [0, 1, 0, 1, 0, 1, 0, 1]
    x = _asymmetric_batch(64)
    out = aug.augmentation_for(size=64)(x, kinds, torch.Generator().manual_seed(1))
    quadrant = out[:, 0].reshape(64, 2, 32, 2, 32).sum(dim=(2, 4)).reshape(64, 4).argmax(dim=1)
    radiographs, photos = kinds == 0, kinds == 1
    assert bool((quadrant[radiographs] == 0).all())
    assert int((quadrant[photos] != 0).sum()) >= 16


def test_train_passes_each_images_modality_to_the_augmentation(imbalanced, monkeypatch):
    ws = imbalanced
    refs = ws.images()
    ws.set_image_details({r.id: {"modality": "CR"} for r in refs[::2]})
    calls = []
    real = aug.augment_batch
    monkeypatch.setattr(aug, "augment_batch", lambda x, kinds, a, g=None: calls.append(kinds.clone()) or real(
        x, kinds, a, g))
    train(ws, fast_config(mode="finetune", epochs=1, batch_size=32))
    drawn = torch.cat(calls)
    # 19 training images: refs[::2] are CR (radiograph, 0), the others XC (photograph, 1)
    modality = {r.id: r.record.modality for r in ws.images()}
    expected = sorted(0 if modality[r.id] == "CR" else 1 for i, r in enumerate(refs)
                      if i not in (3, 20, 21, 22, 23))
    assert sorted(drawn.tolist()) == expected and 0 in expected and 1 in expected


def test_strength_zero_turns_augmentation_off():
    x = torch.rand(4, 3, 32, 32)
    out = aug.augmentation_for(strength=0.0, size=32)(x, torch.tensor([0, 1, 0, 1]))
    assert torch.equal(out, x)


# --- splits by patient and group ------------------------------------------------------------------------

def test_linked_groups_join_images_sharing_a_patient_or_a_group():
    from core.models.splits import linked_groups

    ids = ["a", "b", "c", "d", "e", "f"]
    patients = ["P1", None, "P2", None, "P1", None]
    groups = [None, "L1", "L1", "L2", None, None]
    # a,e share P1; b,c share lesion L1 and c is P2; d is alone with L2; f has nothing
    assert linked_groups(ids, patients, groups) == ["P1", "P2", "P2", "group:L2", "P1", "f"]
    # a lesion seen at two patients' records joins them
    assert len(set(linked_groups(["x", "y", "z"], ["P1", "P2", "P3"], ["L", "L", None]))) == 2


def test_split_keeps_every_lesion_and_patient_on_one_side(workspace, tmp_path):
    import csv as _csv

    from core.models.data import labelled_set, train_val_split

    folder = tmp_path / "lesions"
    write_dataset(folder, n=48)
    rows = list(_csv.reader(open(folder / "labels.csv")))
    with open(folder / "labels.csv", "w", newline="") as fh:
        writer = _csv.writer(fh)
        writer.writerow(rows[0] + ["group", "patient"])
        for i, row in enumerate(rows[1:]):
            # 3 images per lesion (same class), lesions 0..15; every 4th lesion's patient also owns lesion+1
            lesion = i // 6 * 2 + (i % 2)
            writer.writerow(row + [f"L{lesion}", f"P{lesion // 4}" if lesion % 4 == 0 else ""])
    import_paths(workspace, [folder], labels_csv=folder / "labels.csv")
    data = labelled_set(workspace, ["neg", "pos"])
    by_id = {r.id: r for r in workspace.images()}
    for seed in range(6):
        train_set, val_set = train_val_split(workspace, data, 0.25, seed)
        assert len(val_set) > 0 and len(train_set) + len(val_set) == 48
        for attr in ("group", "patient"):
            def key(i):
                r = by_id[i]
                return r.group if attr == "group" else r.record.patient_id
            left = {key(i) for i in train_set.image_ids} - {None}
            right = {key(i) for i in val_set.image_ids} - {None}
            assert left.isdisjoint(right), (attr, seed, left & right)
