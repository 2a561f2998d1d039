"""Fixtures for the model tests: a synthetic PNG data set with a labels CSV and a tiny model.

The images are 32x32 grayscale noise; class ``pos`` has a bright square, ``neg`` has none,
so even a randomly initialised backbone's features separate them a little. Photographs have
no patient id, so every image is its own group in the patient-level split.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pytest
from PIL import Image


def write_dataset(folder: Path, n: int = 24, splits: Optional[Sequence[Optional[str]]] = None,
                  seed: int = 0) -> Path:
    """Write ``n`` PNGs (alternating neg/pos) and ``labels.csv`` into ``folder``; returns the CSV path.

    ``splits[i]`` (train/val/test/None) goes into the CSV's split column when given.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        pos = i % 2 == 1
        pixels = rng.integers(0, 60, (32, 32), dtype=np.uint8)
        if pos:
            y, x = rng.integers(2, 14, size=2)
            pixels[y:y + 16, x:x + 16] = 230
        name = f"img{i:03d}.png"
        Image.fromarray(pixels).save(folder / name)
        rows.append([name, "pos" if pos else "neg"] + ([splits[i] or ""] if splits is not None else []))
    labels = folder / "labels.csv"
    with open(labels, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"] + (["split"] if splits is not None else []))
        writer.writerows(rows)
    return labels


def tiny_model(ws, seed: int = 0):
    """Register an untrained resnet18 at 32 px for classes neg/pos (active, as ``v1``)."""
    import torch

    from core.models.versions import create_version

    torch.manual_seed(seed)
    return create_version(ws, "resnet18", ["neg", "pos"], pretrained="none", input_size=32)


def fast_config(**overrides):
    """A TrainConfig small enough for a CPU test: one epoch, few bootstrap resamples, one decode thread."""
    from core.models.training import TrainConfig

    values = dict(epochs=1, batch_size=8, n_boot=20, workers=1, device="cpu")
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture
def dataset(tmp_path):
    """(folder, labels CSV) of 24 synthetic images, no split column."""
    folder = tmp_path / "photos"
    return folder, write_dataset(folder)


@pytest.fixture
def trainable(workspace, dataset, single_thread):
    """The workspace with the data set imported (confirmed labels) and an untrained v1 active."""
    from core.importer import import_paths

    folder, labels = dataset
    report = import_paths(workspace, [folder], labels)
    assert report.imported == 24 and not report.errors
    tiny_model(workspace)
    return workspace


@pytest.fixture
def small(workspace, tmp_path):
    """40 labelled synthetic photographs (16 validation, 24 training) and an untrained v1 active."""
    from core.importer import import_paths

    folder = tmp_path / "photos"
    csv_path = write_dataset(folder, n=40, splits=["val"] * 16 + ["train"] * 24)
    import_paths(workspace, [folder], csv_path)
    tiny_model(workspace)
    return workspace


def all_convs(ws) -> list[str]:
    """Names of every convolution in the active model's backbone (to keep them all in float in an INT8 copy)."""
    import torch

    from core.models.versions import load_version

    return [n for n, m in load_version(ws).net.backbone.named_modules() if isinstance(m, torch.nn.Conv2d)]


def flipped_copy(teacher, x, keep=None):
    """Stand-in for ``core.models.fast_reading.quantize_int8``: a copy whose every top class differs from the
    teacher's (the head's last layer negated), so the agreement check must fail."""
    import copy

    import torch

    net = copy.deepcopy(teacher.net)
    with torch.no_grad():
        net.head[-1].weight.mul_(-1)
        net.head[-1].bias.mul_(-1)
    return net, ()


def model_files(ws) -> list[str]:
    """Every file in the workspace's model folder (temporary files included)."""
    from core.models.versions import models_dir

    folder = models_dir(ws.path)
    return sorted(os.listdir(folder)) if folder.exists() else []
