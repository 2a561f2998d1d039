"""Proof on the synthetic set: every method points at the deciding patch; a randomised model's maps do not.

Pointing game: the map's peak (argmax, in the original 48×64 geometry) lies inside the
bright patch. Trained model: ≥ 90 % of test images for every method. Randomised model
(every layer re-initialised, seeds 0-2 spread over the images so no single random
head's sign decides): below 90 %.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.explain import METHOD_NAMES, explain
from core.explain.sanity import randomised_copy
from tests.core.test_explain_synth import H, W, make_images, train_tiny

N_TEST = 20
FAST = {"lime": {"n_samples": 192}, "ig": {"n_steps": 16}, "gradshap": {"n_samples": 16}}


@pytest.fixture(scope="module")
def one_thread():
    # The tiny model is far faster on one thread, and a busy 2-core machine oversubscribes two.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(one_thread):
    return train_tiny()


def _pointing(loaded, method, nets=(None,)):
    imgs, _, boxes = make_images(N_TEST, 123, positive_fraction=1.0)
    hits = 0
    for i, (a, b) in enumerate(zip(imgs, boxes)):
        e = explain(loaded, a, method, "patch", device="cpu", net=nets[i % len(nets)], **FAST.get(method, {}))
        assert e.map.shape == (H, W) and e.map.dtype == np.float32
        assert 0.0 <= e.map.min() and e.map.max() <= 1.0
        y, x = np.unravel_index(np.argmax(e.map), e.map.shape)
        hits += int(b[0] <= y < b[2] and b[1] <= x < b[3])
    return hits / N_TEST


@pytest.fixture(scope="module")
def randomised(tiny):
    return tuple(randomised_copy(tiny.net, seed) for seed in range(3))


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_pointing_game(tiny, randomised, method, record_property):
    trained = _pointing(tiny, method)
    rnd = _pointing(tiny, method, randomised)
    record_property("pointing", {"trained": trained, "randomised": rnd})
    print(f"\npointing {method}: trained {trained:.2f}, randomised {rnd:.2f}")
    assert trained >= 0.9, f"{method}: the peak fell inside the patch in only {trained:.0%} of images"
    assert rnd < 0.9, f"{method}: a randomised model still points at the patch ({rnd:.0%}): the map follows the image"
    assert rnd < trained
