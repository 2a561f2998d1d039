"""Model input preprocessing and its inverse geometry."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.errors import ModelError
from core.models.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Geometry,
    InputSpec,
    batch,
    geometry_for,
    to_tensor,
    to_tensor_with_geometry,
    undo_geometry,
)


def test_default_spec_is_imagenet_224():
    spec = InputSpec()
    assert spec.size == 224 and spec.mean == IMAGENET_MEAN and spec.std == IMAGENET_STD
    assert spec.channels == 3 and spec.resize == "pad"


def test_spec_round_trips_through_json():
    spec = InputSpec(size=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), resize="stretch")
    restored = InputSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert restored == spec and hash(restored) == hash(spec)
    assert spec.to_dict()["schema_version"] == 1


@pytest.mark.parametrize("bad", [dict(size=4), dict(channels=2), dict(mean=(0.5,)), dict(resize="crop"),
                                 dict(std=(0.0, 1.0, 1.0))])
def test_invalid_spec_raises(bad):
    with pytest.raises(ModelError):
        InputSpec(**bad)


def test_grayscale_is_replicated_and_shaped():
    rng = np.random.default_rng(0)
    img = rng.random((40, 50), dtype=np.float32)
    t = to_tensor(img, InputSpec(size=32))
    assert t.shape == (3, 32, 32) and t.dtype == torch.float32
    # undo the normalisation: all three channels carry the same gray values
    raw = t * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    assert torch.allclose(raw[0], raw[1], atol=1e-6) and torch.allclose(raw[0], raw[2], atol=1e-6)
    assert to_tensor(img[:, :, None], InputSpec(size=32)).shape == (3, 32, 32)


def test_normalisation_exact_on_constant_image():
    spec = InputSpec(size=32, resize="stretch")
    t = to_tensor(np.full((48, 48, 3), 0.6, dtype=np.float32), spec)
    for c in range(3):
        expected = (0.6 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        assert torch.allclose(t[c], torch.full((32, 32), expected), atol=1e-5)


def test_padding_is_black_before_normalisation():
    spec = InputSpec(size=40, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    t = to_tensor(np.ones((20, 40), dtype=np.float32), spec)  # wide: padded top and bottom
    assert torch.allclose(t[:, 0, :], torch.zeros(3, 40)) and torch.allclose(t[:, -1, :], torch.zeros(3, 40))
    assert torch.allclose(t[:, 20, :], torch.ones(3, 40))


def test_uint8_rgb_and_bad_inputs():
    t = to_tensor(np.full((8, 8, 3), 255, dtype=np.uint8), InputSpec(size=8, mean=(0, 0, 0), std=(1, 1, 1)))
    assert torch.allclose(t, torch.ones(3, 8, 8))
    with pytest.raises(ModelError):
        to_tensor(np.zeros((8, 8, 4), dtype=np.float32))
    with pytest.raises(ModelError):
        to_tensor(np.zeros((8, 8), dtype=np.int32))
    with pytest.raises(ModelError):
        batch([])


def test_single_channel_spec_averages_colour():
    spec = InputSpec(size=8, mean=(0.0,), std=(1.0,), channels=1)
    img = np.zeros((8, 8, 3), dtype=np.float32)
    img[..., 0] = 0.9
    assert torch.allclose(to_tensor(img, spec), torch.full((1, 8, 8), 0.3))


def test_batch_mixes_sizes():
    arrays = [np.zeros((30, 20), dtype=np.float32), np.ones((25, 50, 3), dtype=np.float32)]
    assert batch(arrays, InputSpec(size=32)).shape == (2, 3, 32, 32)


@pytest.mark.parametrize("resize", ["pad", "stretch"])
def test_undo_geometry_round_trip_on_non_square_image(resize):
    spec = InputSpec(size=64, resize=resize)
    h, w = 90, 150
    top, left, bottom, right = 20, 40, 60, 110
    box = np.zeros((h, w), dtype=np.float32)
    box[top:bottom, left:right] = 1.0

    # the map a perfect explainer would produce: the box, in model input space
    t, geo = to_tensor_with_geometry(box, InputSpec(size=64, mean=(0, 0, 0), std=(1, 1, 1), resize=resize))
    assert geo == geometry_for(box.shape, spec)
    back = undo_geometry(t[0].numpy(), geo)
    assert back.shape == (h, w) and back.dtype == np.float32
    ys, xs = np.nonzero(back > 0.5)
    assert abs(ys.min() - top) <= 1 and abs(ys.max() - (bottom - 1)) <= 1
    assert abs(xs.min() - left) <= 1 and abs(xs.max() - (right - 1)) <= 1
    assert back.min() >= -1e-6 and back.max() <= 1 + 1e-6

    assert Geometry.from_dict(json.loads(json.dumps(geo.to_dict()))) == geo
    if resize == "pad":
        assert geo.padded_shape == (150, 150) and geo.pad == (30, 0)
        assert geo.scale == (64 / 150, 64 / 150)


def test_undo_geometry_accepts_tensor_and_rejects_3d():
    geo = geometry_for((10, 20), InputSpec(size=16))
    assert undo_geometry(torch.ones(16, 16), geo).shape == (10, 20)
    with pytest.raises(ModelError):
        undo_geometry(np.ones((2, 16, 16)), geo)
