"""Fixtures for the app tests: a background runner and a small labelled workspace of synthetic images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


def write_dataset(folder, n=24, size=32, seed=0, easy=False):
    """PNGs whose class is a bright square (``pos``) or none (``neg``), plus labels.csv for two thirds of them.

    ``easy`` also brightens the whole ``pos`` image, so even an untrained backbone separates the classes.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["path,label,split"]
    for i in range(n):
        img = rng.integers(20, 80, (size, size), dtype=np.uint8)
        positive = i % 2 == 1
        if positive:
            y, x = rng.integers(2, size - 12, 2)
            img[y:y + 10, x:x + 10] = 230
            if easy:
                img = np.clip(img.astype(int) + 90, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img_{i:03d}.png")
        if i < n * 2 // 3:
            rows.append(f"img_{i:03d}.png,{'pos' if positive else 'neg'},")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture
def runner(qtbot):
    from app.workers import Runner

    r = Runner()
    yield r
    r.cancel_all()
    r.wait(30000)


@pytest.fixture
def labelled_workspace(tmp_path):
    """A workspace with 24 synthetic images, 16 labelled, and a tiny untrained resnet18 (32 px) as v1."""
    from core.importer import import_paths
    from core.models.versions import create_version
    from core.workspace import Workspace

    data = write_dataset(tmp_path / "images")
    ws = Workspace.open(tmp_path / "ws.sqlite")
    import_paths(ws, [data], labels_csv=data / "labels.csv")
    create_version(ws, "resnet18", ["neg", "pos"], pretrained="none", input_size=32)
    yield ws
    ws.close()
