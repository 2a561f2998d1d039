"""LIME's segment-mean fill (the lime package's ``hide_color=None``), checked by hand and end to end."""

from __future__ import annotations

import numpy as np
import torch

from core.explain import explain
from core.explain.lime import segment_means
from tests.core.test_explain_synth import make_images, train_tiny


def test_segment_means_by_hand():
    x = torch.arange(32, dtype=torch.float32).reshape(1, 2, 4, 4)
    labels = torch.tensor([[0, 0, 1, 1]] * 4)
    b = segment_means(x, labels, 2)
    assert torch.allclose(b[0, 0, :, :2], torch.tensor(6.5)) and torch.allclose(b[0, 0, :, 2:], torch.tensor(8.5))
    assert torch.allclose(b[0, 1, :, :2], torch.tensor(22.5))


def _tiny_and_patch():
    """The tiny trained model, one positive synthetic image, and the mask of its class-deciding patch."""
    torch.set_num_threads(1)
    tiny = train_tiny()
    imgs, _, boxes = make_images(1, 31, positive_fraction=1.0)
    top, left, bottom, right = boxes[0]
    inside = np.zeros(imgs[0].shape, bool)
    inside[top:bottom, left:right] = True
    return tiny, imgs, inside


def test_segment_mean_fill_cannot_hide_a_flat_object():
    """A documented limit of the lime package's fill, reproduced: a uniform patch filled with its own mean
    colour is not hidden, so LIME with that fill gives the class-deciding patch less weight than with the
    data-set mean fill, which does hide it. This is why ``segment_mean`` is not Loupe's default."""
    tiny, imgs, inside = _tiny_and_patch()
    # The same samples for both (same seed), so only the fill differs.
    seg = explain(tiny, imgs[0], "lime", "patch", device="cpu", n_samples=64, baseline="segment_mean")
    dflt = explain(tiny, imgs[0], "lime", "patch", device="cpu", n_samples=64, baseline="mean")
    assert seg.params["baseline"] == "segment_mean" and seg.map.shape == imgs[0].shape
    assert np.isfinite(seg.map).all() and 0.0 <= seg.map.min() and seg.map.max() <= 1.0
    assert dflt.map[inside].mean() > dflt.map[~inside].mean()
    assert dflt.map[inside].mean() > seg.map[inside].mean()


def test_heavy_blur_fill_hides_a_flat_object():
    """The default fill, the deletion/insertion check's own reference (the image blurred with sigma S/4): unlike the
    segment mean it spreads a flat patch into its surroundings, so LIME still finds the deciding patch."""
    tiny, imgs, inside = _tiny_and_patch()
    blur = explain(tiny, imgs[0], "lime", "patch", device="cpu", n_samples=64)
    assert blur.params["baseline"] == "heavy_blur"  # the default
    seg = explain(tiny, imgs[0], "lime", "patch", device="cpu", n_samples=64, baseline="segment_mean")
    assert blur.map[inside].mean() > blur.map[~inside].mean()
    assert blur.map[inside].mean() > seg.map[inside].mean()
