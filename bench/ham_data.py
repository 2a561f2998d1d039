"""HAM10000 dev set (../shared/data/ham10000_dev) as a MedMNIST-style npz that ``loupe simulate`` reads.

Splits by *lesion* (several photographs of one lesion never straddle two splits), stratified by the
lesion's diagnosis: about 60 % of the lesions are the pool (``train_*``), 20 % validation (``val_*``,
for choosing settings) and 20 % test (``test_*``, for the reported figures). Images are the
200×150 RGB JPEGs as they are, (N, 150, 200, 3) uint8; ``{split}_groups`` holds the lesion ids.
Class indices follow :data:`CLASSES` (alphabetical HAM10000 codes); df and vasc are the rare lesions.

    .venv/bin/python bench/ham_data.py OUT.npz
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HAM = ROOT.parent / "shared" / "data" / "ham10000_dev"
CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
RARE = ("df", "vasc")
#: Miss costs for the benchmark: melanoma is the costliest miss, the rare lesions next.
COSTS = {"mel": 10.0, "df": 5.0, "vasc": 5.0}
SHARES = (0.6, 0.2, 0.2)


def lesion_split(lesions: list[str], dx: list[str], seed: int = 0, shares=SHARES) -> dict[str, str]:
    """``{lesion_id: 'train'|'val'|'test'}``, stratified by diagnosis, each lesion on one side."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[str]] = {}
    first_dx: dict[str, str] = {}
    for les, d in zip(lesions, dx):
        first_dx.setdefault(les, d)
    for les, d in sorted(first_dx.items()):
        by_class.setdefault(d, []).append(les)
    out: dict[str, str] = {}
    for d, items in sorted(by_class.items()):
        items = list(items)
        rng.shuffle(items)
        n = len(items)
        n_train = int(round(shares[0] * n))
        n_val = int(round(shares[1] * n))
        for j, les in enumerate(items):
            out[les] = "train" if j < n_train else "val" if j < n_train + n_val else "test"
    return out


def build(out: Path, root: Path = HAM, seed: int = 0) -> Path:
    """Write the npz once (reused when present). Returns its path."""
    from PIL import Image

    out = Path(out)
    if out.exists():
        return out
    meta = root / "metadata.csv"
    if not meta.exists():
        sys.exit(f"skipped: {meta} is absent (../shared/data is not beside this clone)")
    with open(meta, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if (root / "images" / f"{r['image_id']}.jpg").exists()]
    rows.sort(key=lambda r: r["image_id"])
    side = lesion_split([r["lesion_id"] for r in rows], [r["dx"] for r in rows], seed)
    arrays: dict[str, list] = {}
    for r in rows:
        split = side[r["lesion_id"]]
        with Image.open(root / "images" / f"{r['image_id']}.jpg") as im:
            arr = np.asarray(im.convert("RGB").resize((200, 150)), dtype=np.uint8)
        arrays.setdefault(f"{split}_images", []).append(arr)
        arrays.setdefault(f"{split}_labels", []).append(CLASSES.index(r["dx"]))
        arrays.setdefault(f"{split}_groups", []).append(r["lesion_id"])
        arrays.setdefault(f"{split}_ids", []).append(r["image_id"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.npz")
    np.savez(tmp, **{k: (np.stack(v) if k.endswith("_images") else np.asarray(v)) for k, v in arrays.items()},
             classes=np.asarray(CLASSES))
    tmp.replace(out)
    return out


if __name__ == "__main__":
    path = build(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/loupe-cache-al/ham10000_dev.npz"))
    with np.load(path) as d:
        for split in ("train", "val", "test"):
            y = d[f"{split}_labels"]
            print(split, len(y), {c: int((y == i).sum()) for i, c in enumerate(CLASSES)},
                  "lesions", len(set(d[f"{split}_groups"].tolist())))
