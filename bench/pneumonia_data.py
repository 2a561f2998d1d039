"""PneumoniaMNIST (../shared/data) as PNG files plus a labels CSV, for benchmarks and `loupe simulate`.

Writes ``<out>/{train,val,test}/<split>_<index>.png`` and ``<out>/labels.csv``
with the official splits; class names 0 = normal (the rare class, ~10 %), 1 = pneumonia.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
NPZ = ROOT.parent / "shared" / "data" / "pneumoniamnist" / "pneumoniamnist_imbalanced.npz"
CLASSES = ("normal", "pneumonia")


def export(out: Path, npz: Path = NPZ, limit: int | None = None) -> Path:
    """Write the PNGs and labels.csv (once; reused when present). Returns the CSV path."""
    csv_path = out / "labels.csv"
    if csv_path.exists():
        return csv_path
    if not npz.exists():
        sys.exit(f"skipped: {npz} is absent (../shared/data is not beside this clone)")
    data = np.load(npz)
    rows = []
    for split in ("train", "val", "test"):
        images, labels = data[f"{split}_images"], data[f"{split}_labels"].ravel()
        n = len(images) if limit is None else min(limit, len(images))
        (out / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            name = f"{split}/{split}_{i:04d}.png"
            Image.fromarray(images[i]).save(out / name)
            rows.append({"path": name, "label": CLASSES[int(labels[i])], "split": split})
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return csv_path
