"""Rebuild the demo's PneumoniaMNIST pool from ../shared/data (run once by a developer, output committed).

Writes resources/demo/pneumoniamnist/{train,test}/*.png and resources/demo/labels.csv:
a small labelled seed set, an unlabelled pool for the active-learning queue, and a
labelled test split. The rare class is *normal* (about 10 % of the pool), as in the
imbalanced training set it comes from.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent / "demo"
NPZ = HERE.parents[1].parent / "shared" / "data" / "pneumoniamnist" / "pneumoniamnist_imbalanced.npz"
CLASSES = ("normal", "pneumonia")
POOL, SEED, TEST = 300, 40, 100


def main() -> None:
    data = np.load(NPZ)
    rng = np.random.default_rng(7)
    out = HERE / "pneumoniamnist"
    rows = []
    for split, n in (("train", POOL), ("test", TEST)):
        images, labels = data[f"{split}_images"], data[f"{split}_labels"].ravel()
        picked = rng.choice(len(images), size=n, replace=False)
        # the labelled seed covers both classes (10 normal, 30 pneumonia); the rest is the unlabelled pool
        seed = set(picked[labels[picked] == 0][:10]) | set(picked[labels[picked] == 1][:SEED - 10])
        (out / split).mkdir(parents=True, exist_ok=True)
        for idx in sorted(picked):
            name = f"{split}/pmnist_{split}_{idx:04d}.png"
            Image.fromarray(images[idx]).save(out / name)
            labelled = split == "test" or idx in seed
            if labelled:
                rows.append({"path": f"pneumoniamnist/{name}", "label": CLASSES[labels[idx]],
                             "split": "test" if split == "test" else "train"})
    with open(HERE / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {POOL + TEST} images, {len(rows)} labels")


if __name__ == "__main__":
    main()
