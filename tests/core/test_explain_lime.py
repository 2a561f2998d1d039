"""LIME's pieces checked by hand: sampler, kernel, weighted ridge (against scikit-learn and the lime
package's own surrogate), and the whole method on a model whose logit is linear in the pixels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from core.errors import ModelError
from core.explain.base import ExplainContext
from core.explain.lime import (_defaults, hadamard_keep, kernel_weights, on_off, run, superpixels, to_unit,
                               weighted_ridge)
from core.models.preprocess import InputSpec


def test_on_off_first_row_is_the_image_and_draws_are_independent_halves():
    z = on_off("independent", 2001, 30, torch.Generator().manual_seed(0))
    assert z.shape == (2001, 30) and z.dtype == torch.bool and bool(z[0].all())
    share = z[1:].float().mean(0)
    assert float(share.min()) > 0.44 and float(share.max()) < 0.56  # each superpixel kept about half the time
    complements = sum(bool(torch.equal(a, ~b)) for a, b in zip(z[1::2], z[2::2]))
    assert complements == 0  # not paired
    again = on_off("independent", 2001, 30, torch.Generator().manual_seed(0))
    assert torch.equal(z, again)  # the seed decides the draw


def test_on_off_antithetic_and_uniform_count_pair_complements():
    for sampling in ("antithetic", "uniform_count"):
        z = on_off(sampling, 401, 10, torch.Generator().manual_seed(1))
        assert bool(z[0].all())
        for a, b in zip(z[1::2], z[2::2]):
            assert torch.equal(a, ~b)
    hidden = (~on_off("uniform_count", 401, 10, torch.Generator().manual_seed(1))[1::2]).sum(1)
    assert set(hidden.tolist()) == set(range(1, 10))  # every count 1..9, not only counts near 5
    with pytest.raises(ModelError, match="sampling"):
        on_off("half", 4, 3, torch.Generator())


def test_hadamard_keep_by_hand():
    h = hadamard_keep(4)
    assert h.tolist() == [[True, True, True, True], [True, False, True, False],
                          [True, True, False, False], [True, False, False, True]]
    s = hadamard_keep(16).int() * 2 - 1
    assert torch.equal(s.T @ s, 16 * torch.eye(16, dtype=torch.int32))
    with pytest.raises(ModelError, match="power of two"):
        hadamard_keep(12)


def test_on_off_orthogonal_is_a_balanced_uncorrelated_fold_over():
    z = on_off("orthogonal", 64, 21, torch.Generator().manual_seed(0))
    assert z.shape == (64, 21) and bool(z[0].all())  # row 0 is the image
    assert z.sum(0).tolist() == [32] * 21  # every superpixel kept in exactly half the samples
    s = z.int() * 2 - 1
    assert torch.equal(s.T @ s, 64 * torch.eye(21, dtype=torch.int32))  # no two superpixels correlated
    assert torch.equal(z.flip(0), ~z)  # row 63 − i is the complement of row i (fold-over)
    assert torch.equal(z, on_off("orthogonal", 64, 21, torch.Generator().manual_seed(0)))
    assert not torch.equal(z, on_off("orthogonal", 64, 21, torch.Generator().manual_seed(1)))
    # 40 samples: a 32-row orthogonal block, then independent draws
    z40 = on_off("orthogonal", 40, 21, torch.Generator().manual_seed(2))
    s = z40[:32].int() * 2 - 1
    assert torch.equal(s.T @ s, 32 * torch.eye(21, dtype=torch.int32)) and bool(z40[0].all())
    # more superpixels than a 16-row block has columns: 15 of them orthogonal, the other 6 independent draws
    z16 = on_off("orthogonal", 16, 21, torch.Generator().manual_seed(5))
    assert bool(z16[0].all())
    columns = {tuple(c) for c in hadamard_keep(16)[:, 1:].T.tolist()}
    assert len({tuple(c) for c in z16.T.tolist()} & columns) == 15  # every non-trivial Hadamard column once


def test_orthogonal_design_makes_each_weight_a_plain_contrast_free_of_pair_interactions():
    """Uniform weights, no penalty: on the orthogonal design the fitted weight of superpixel j is exactly
    mean(y | j kept) − mean(y | j hidden); an interaction of superpixels 0 and 1 (y = 1 only when both
    are kept) leaves every other weight at exactly 0. An independent draw of the same size does neither."""
    y_of = lambda z: (z[:, 0] & z[:, 1]).double().numpy() + 0.3 * z[:, 4].double().numpy()  # noqa: E731
    for sampling, exact in (("orthogonal", True), ("independent", False)):
        z = on_off(sampling, 32, 10, torch.Generator().manual_seed(4))
        y = y_of(z)
        coef, _ = weighted_ridge(z.numpy().astype(float), y, np.ones(32), alpha=0.0)
        contrast = np.array([y[z[:, j].numpy()].mean() - y[~z[:, j].numpy()].mean() for j in range(10)])
        others = np.delete(coef, [0, 1, 4])
        if exact:
            assert coef == pytest.approx(contrast, abs=1e-9)
            assert coef[[0, 1, 4]] == pytest.approx([0.5, 0.5, 0.3], abs=1e-9)
            assert np.abs(others).max() < 1e-9
        else:
            assert np.abs(coef - contrast).max() > 1e-3 and np.abs(others).max() > 1e-3


def test_kernel_weights_by_hand():
    z = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    w = kernel_weights(z, 0.25)
    d = 1 - math.sqrt(0.5)  # cosine distance of (1,1,0,0) to (1,1,1,1)
    assert w == pytest.approx([1.0, math.sqrt(math.exp(-d * d / 0.0625)), math.exp(-8.0)])
    assert w[1] == pytest.approx(0.5034, abs=1e-4)


def test_weighted_ridge_recovers_a_linear_function_and_matches_scikit_learn():
    rng = np.random.default_rng(0)
    z = rng.integers(0, 2, (40, 3)).astype(float)
    y = 0.5 + z @ np.array([1.0, -2.0, 3.0])
    coef, b = weighted_ridge(z, y, np.ones(40), alpha=0.0)
    assert coef == pytest.approx([1.0, -2.0, 3.0]) and b == pytest.approx(0.5)
    from sklearn.linear_model import Ridge

    w = rng.uniform(0.1, 1.0, 40)
    y2 = y + rng.normal(0, 0.3, 40)
    ref = Ridge(alpha=1.0).fit(z, y2, sample_weight=w)
    coef, b = weighted_ridge(z, y2, w, alpha=1.0)
    assert coef == pytest.approx(ref.coef_) and b == pytest.approx(ref.intercept_)


def test_surrogate_equals_the_lime_package_fit():
    """Same on/off samples and scores: Loupe's kernel + ridge give the lime package's weights."""
    lime_base = pytest.importorskip("lime.lime_base")
    from sklearn.metrics import pairwise_distances

    z = on_off("independent", 64, 12, torch.Generator().manual_seed(3))
    y = np.random.default_rng(3).uniform(0, 1, (64, 2))
    data = z.numpy().astype(int)
    dist = pairwise_distances(data, data[0].reshape(1, -1), metric="cosine").ravel()
    base = lime_base.LimeBase(lambda d: np.sqrt(np.exp(-(d ** 2) / 0.25 ** 2)), random_state=0)
    _, exp, _, _ = base.explain_instance_with_data(data, y, dist, 1, 100000, feature_selection="auto")
    theirs = np.array([dict(exp)[i] for i in range(12)])
    ours, _ = weighted_ridge(data, y[:, 1], kernel_weights(z, 0.25), 1.0)
    assert ours == pytest.approx(theirs, abs=1e-9)


class LinearLogit(nn.Module):
    """Logits (0, Σ a·x): the target logit is linear in the pixels, so hiding superpixel k (mean fill = 0
    after normalisation) removes exactly its share c_k = Σ_{pixels of k} a·x."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("a", a)

    def forward(self, x):
        s = (x * self.a).flatten(1).sum(1)
        return torch.stack([torch.zeros_like(s), s], 1)


def _ctx(net, x, spec, **params):
    p = {**_defaults(x.shape[-1]), **params}
    return ExplainContext(net.eval(), x, 1, p, 16, "cpu", spec)


def test_lime_on_a_linear_logit_returns_each_superpixels_contribution():
    torch.manual_seed(0)
    spec = InputSpec(size=24, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    img = torch.zeros(3, 24, 24)
    img[0, :12], img[1, 12:, :12], img[2, 12:, 12:] = 1.0, 1.0, 1.0  # three flat colour blocks
    x = ((img - 0.5) / 0.5)[None]
    a = torch.zeros(1, 3, 24, 24)
    a[0, 0, 2:8, 2:8] = 0.05  # only part of the red block counts
    a[0, 2, 12:, 12:] = -0.01
    net = LinearLogit(a)
    ctx = _ctx(net, x, spec, baseline="mean", n_samples=200, alpha=1e-9, n_segments=8)
    out = run(ctx).numpy()
    labels = superpixels(to_unit(ctx), 8, 0.3, 1.0)
    k = int(labels.max()) + 1
    contrib = (x * a)[0].sum(0).numpy()
    expected = np.array([contrib[labels == i].sum() for i in range(k)])
    assert ctx.params["segments"] == k >= 3
    assert out == pytest.approx(expected[labels], abs=1e-4)
    assert ctx.score == pytest.approx(float(torch.softmax(net(x), 1)[0, 1]))  # from the first (unperturbed) row
    assert out.max() == pytest.approx(expected.max(), abs=1e-4) and expected.max() > 1.0
    ortho = run(_ctx(net, x, spec, baseline="mean", n_samples=64, alpha=1e-9, n_segments=8,
                     sampling="orthogonal")).numpy()
    assert ortho == pytest.approx(expected[labels], abs=1e-4)  # the orthogonal design recovers it as well


def test_probability_score_keeps_the_ranking_and_bad_parameters_are_refused():
    spec = InputSpec(size=24, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    img = torch.zeros(3, 24, 24)
    img[0, :12] = 1.0
    img[1, 12:] = 1.0
    x = ((img - 0.5) / 0.5)[None]
    a = torch.zeros(1, 3, 24, 24)
    a[0, 0, :12] = 0.002  # the red half raises the target a little, the green half lowers it
    a[0, 1, 12:] = -0.002
    net = LinearLogit(a)
    prob = run(_ctx(net, x, spec, baseline="mean", score="probability", n_samples=128, n_segments=4)).numpy()
    assert prob[:12].mean() > 0 > prob[12:].mean()
    with pytest.raises(ModelError, match="score"):
        run(_ctx(net, x, spec, score="softmax"))
    with pytest.raises(ModelError, match="2 samples"):
        run(_ctx(net, x, spec, n_samples=1))


class LayoutRecorder(LinearLogit):
    """LinearLogit that records the memory layout of every batch it is given."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__(a)
        self.channels_last = []

    def forward(self, x):
        self.channels_last.append(x.is_contiguous(memory_format=torch.channels_last))
        return super().forward(x)


def test_perturbed_batches_reach_the_model_channels_last():
    spec = InputSpec(size=24, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = torch.rand(1, 3, 24, 24)
    net = LayoutRecorder(torch.ones(1, 3, 24, 24) * 0.01)
    run(_ctx(net, x, spec, n_samples=40, n_segments=4))
    assert net.channels_last == [True, True, True]  # 40 samples in batches of 16
