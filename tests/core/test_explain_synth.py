"""The synthetic proof set for explanations: the class is decided by a bright patch at a random place.

Helpers (imported by the other explain tests) build the data set, a tiny
convolutional LoupeNet (registered under a test-only architecture name while it
is built) and train it in a few seconds; the test here checks it learned the task.
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import torch
import torch.nn as nn

from core.models import architectures as A
from core.models.preprocess import InputSpec
from core.models.versions import LoadedModel
from core.types import ModelVersion

H, W = 48, 64  # non-square, so padding has to be undone
PATCH = 12
RING, HOLE = 16, 8
SIZE = 64
CLASSES = ("none", "patch")


def _free_spot(rng, taken, size):
    while True:
        y, x = int(rng.integers(0, H - size + 1)), int(rng.integers(0, W - size + 1))
        if taken is None or y + size <= taken[0] or taken[2] <= y or x + size <= taken[1] or taken[3] <= x:
            return y, x


def make_images(n: int, seed: int, positive_fraction: float = 0.5):
    """``n`` float32 (H, W) images in [0, 1]: noise, a bright hollow RING² distractor in every image, and
    for the positives a bright filled PATCH² square elsewhere (the only thing that decides the class).

    The distractor has more bright pixels than the patch, so a model that merely follows
    brightness (a randomised network) points at the ring as often as at the patch.
    Returns (images (n, H, W), labels (n,), boxes (n, 4) = top, left, bottom, right; -1 for negatives).
    """
    rng = np.random.default_rng(seed)
    imgs = rng.uniform(0.0, 0.6, size=(n, H, W)).astype(np.float32)
    labels = (rng.random(n) < positive_fraction).astype(np.int64)
    boxes = np.full((n, 4), -1, dtype=np.int64)
    for i in range(n):
        taken = None
        if labels[i]:
            y, x = _free_spot(rng, None, PATCH)
            imgs[i, y:y + PATCH, x:x + PATCH] = rng.uniform(0.85, 1.0)
            boxes[i] = taken = (y, x, y + PATCH, x + PATCH)
        y, x = _free_spot(rng, taken, RING)
        ring = np.full((RING, RING), rng.uniform(0.85, 1.0), dtype=np.float32)
        q = (RING - HOLE) // 2
        ring[q:q + HOLE, q:q + HOLE] = imgs[i, y + q:y + q + HOLE, x + q:x + q + HOLE]
        imgs[i, y:y + RING, x:x + RING] = ring
    return imgs, labels, boxes


class TinyCNN(nn.Module):
    """Three 3×3 convolutions (stride 1, 2, 2) → global average pool → linear; ``features`` is 4× down."""

    def __init__(self) -> None:
        super().__init__()
        def block(i, o, s):
            return [nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]
        self.features = nn.Sequential(*block(3, 16, 1), *block(16, 32, 2), *block(32, 32, 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(32, 1000)

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


TINY = A.ArchSpec("tinycnn", "efficientnet", TinyCNN, 32, (("features",),), "features",
                  mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@contextlib.contextmanager
def tiny_arch():
    """Register the test-only ``tinycnn`` architecture while the block runs."""
    A.ARCHITECTURES["tinycnn"] = TINY
    try:
        yield
    finally:
        A.ARCHITECTURES.pop("tinycnn", None)


@functools.lru_cache(maxsize=4)
def train_tiny(seed: int = 0, n: int = 1024, epochs: int = 8, head: str = "multiclass") -> LoadedModel:
    """Train the tiny model on the synthetic set (about 10 s on one CPU core); cached per arguments."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # far faster for a tiny model, and on a busy 2-core machine
    try:
        return _train(seed, n, epochs, head)
    finally:
        torch.set_num_threads(threads)


def _train(seed: int, n: int, epochs: int, head: str) -> LoadedModel:
    from core.models.preprocess import to_tensor

    torch.manual_seed(seed)
    with tiny_arch():
        net, _ = A.build_model("tinycnn", 2 if head == "multiclass" else 1, head=head, dropout=0.0)
    spec = InputSpec(size=SIZE, mean=TINY.mean, std=TINY.std)
    imgs, labels, _ = make_images(n, seed)
    x = torch.stack([to_tensor(a, spec) for a in imgs])
    y = torch.from_numpy(labels)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=g).split(32):
            opt.zero_grad()
            out = net(x[idx])
            if head == "multiclass":
                loss = nn.functional.cross_entropy(out, y[idx])
            else:
                loss = nn.functional.binary_cross_entropy_with_logits(out[:, 0], y[idx].float())
            loss.backward()
            opt.step()
    net.eval()
    for p in net.parameters():
        p.grad = None
    classes = CLASSES if head == "multiclass" else ("patch",)
    record = ModelVersion(version=f"tiny-{seed}", arch="tinycnn", classes=classes, path="", file_hash=f"h{seed}")
    return LoadedModel(record, net, spec, classes)


def accuracy(loaded: LoadedModel, seed: int = 99, n: int = 200) -> float:
    """Test accuracy of the tiny model on freshly drawn images."""
    from core.models.preprocess import to_tensor

    imgs, labels, _ = make_images(n, seed)
    with torch.no_grad():
        logits = loaded.net(torch.stack([to_tensor(a, loaded.spec) for a in imgs]))
    pred = logits.argmax(1).numpy() if logits.shape[1] > 1 else (logits[:, 0] > 0).long().numpy()
    return float((pred == labels).mean())


def test_tiny_model_learns_the_patch_task():
    loaded = train_tiny()
    assert accuracy(loaded) >= 0.97
