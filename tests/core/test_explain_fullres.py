"""Full-resolution radiographs: a 2,000 × 2,000 image is explained in its own geometry while every
method sees only the model input (the map is brought to full size once, at the output)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from core.explain import METHOD_NAMES, explain
from core.explain import base as B
from tests.core.test_explain_synth import PATCH, SIZE, train_tiny

FAST = {"lime": {"n_samples": 32}, "ig": {"n_steps": 8}, "gradshap": {"n_samples": 8},
        "occlusion": {"window": 16, "stride": 16}}
SIDE = 2000


@pytest.fixture(scope="module")
def tiny():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield train_tiny()
    torch.set_num_threads(before)


def _radiograph():
    """A 2,000 × 2,000 grey image: low noise, and the class-deciding bright patch at a known place."""
    rng = np.random.default_rng(3)
    small = rng.uniform(0.0, 0.6, size=(SIZE, SIZE)).astype(np.float32)
    small[40:40 + PATCH, 8:8 + PATCH] = 0.95
    big = torch.nn.functional.interpolate(torch.from_numpy(small)[None, None], size=(SIDE, SIDE), mode="nearest")
    scale = SIDE / SIZE
    box = (40 * scale, 8 * scale, (40 + PATCH) * scale, (8 + PATCH) * scale)
    return big[0, 0].numpy(), box


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_methods_never_see_more_than_the_model_input(tiny, method, monkeypatch):
    img, box = _radiograph()
    seen_inputs, forward_shapes = [], []
    original = B.METHODS[method]

    def spying_run(ctx):
        seen_inputs.append(tuple(ctx.x.shape))
        net_forward = ctx.net.forward

        def forward(x):
            forward_shapes.append(tuple(x.shape[-2:]))
            return net_forward(x)

        ctx.net.forward = forward
        try:
            return original.run(ctx)
        finally:
            del ctx.net.forward

    monkeypatch.setitem(B.METHODS, method, dataclasses.replace(original, run=spying_run))
    e = explain(tiny, img, method, "patch", device="cpu", **FAST.get(method, {}))
    assert seen_inputs == [(1, 3, SIZE, SIZE)]
    assert forward_shapes and all(s == (SIZE, SIZE) for s in forward_shapes)
    assert e.map.shape == (SIDE, SIDE) and e.map.dtype == np.float32
    if method == "gradcam":
        y, x = np.unravel_index(int(e.map.argmax()), e.map.shape)
        margin = SIDE / SIZE * 4  # Grad-CAM's layer is 4× coarser than the input
        assert box[0] - margin <= y <= box[2] + margin and box[1] - margin <= x <= box[3] + margin
