"""Explanations on real lesions: do the maps point at the lesion on HAM10000 photographs?

Usage: python bench/explain_real.py [--n-test 240] [--lime-samples 256] [--no-write]

1. A Loupe model is trained with Loupe's own API (``loupe import --labels``, ``loupe model create``,
   ``loupe train``) on a lesion-grouped split of ``../shared/data/ham10000_dev``: melanoma vs naevus,
   EfficientNet-Lite0 with its offline ImageNet weights at 160 px, frozen backbone (heads trained on the
   cached embeddings), class-balanced batches. Lesions in the test set never appear in training or
   validation. The trained workspace is cached under ``/tmp/loupe-cache-explain`` (keyed by the recipe).
2. On the held-out test photographs (one per lesion), each method — Loupe's Grad-CAM, LIME, Integrated
   Gradients, Gradient SHAP and Occlusion, and beside them pytorch-grad-cam's ``GradCAM`` and the
   ``lime`` package's ``LimeImageExplainer`` on the same network, input and images — is scored against the
   HAM10000 lesion mask (``lesion_masks.npz``):

   - energy ratio: share of the map's (non-negative) energy inside the lesion ÷ the lesion's share of the
     image area (1 = no better than uniform; only the photograph, never the model's padding, counts);
   - pointing game: the map's maximum lies inside the lesion (dilated by 3 % of the image side, the usual
     tolerance of Zhang et al. 2018 scaled to 200 × 150);
   - deletion / insertion AUC (blurred reference, 20 steps, the same code for every map);
   - seconds per image, every method on 1 CPU thread.

   Targets (issue 15): on correctly classified lesions every method's energy ratio ≥ 1.5 and pointing ≥
   0.8; Loupe's Grad-CAM ≥ pytorch-grad-cam's on both. Per-image paired differences Loupe − reference are
   reported with 95 % bootstrap intervals.
Writes the "Explanations on real lesions (HAM10000)" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import BENCH_MD, SHARED_DATA, machine_facts, now_stamp, package_version, write_section  # noqa: E402

logger = logging.getLogger(__name__)

TITLE = "Explanations on real lesions (HAM10000)"
DATA = SHARED_DATA / "ham10000_dev"
CACHE = Path(os.environ.get("LOUPE_BENCH_CACHE", "/tmp/loupe-cache-explain"))
CLASSES = ("mel", "nv")
RECIPE = {"arch": "efficientnet_lite0", "size": 160, "mode": "frozen", "epochs": 40, "lr": "3e-3",
          "loss": "ce", "sampler": "balanced", "n_nv_train": 1800, "test_per_class": 120, "seed": 0}
LOUPE = [sys.executable, "-m", "app.cli"]


# --- data and split ------------------------------------------------------------------------------

def read_metadata() -> list[dict]:
    """HAM10000 dev metadata rows (lesion_id, image_id, dx, …) for the two classes used here."""
    with open(DATA / "metadata.csv", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["dx"] in CLASSES]


def lesion_split(rows: list[dict], test_per_class: int, n_nv_train: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(training rows, test rows) with every lesion on one side only.

    Test: ``test_per_class`` lesions of each class, one photograph each (the first by image id).
    Training: every photograph of the remaining melanoma lesions and of ``n_nv_train`` naevus
    photographs from the remaining naevus lesions (a subsample, so training fits the time budget).
    """
    rng = np.random.default_rng(seed)
    by_lesion: dict[str, list[dict]] = {}
    for r in rows:
        by_lesion.setdefault(r["lesion_id"], []).append(r)
    train, test = [], []
    for cls in CLASSES:
        lesions = sorted(lid for lid, rs in by_lesion.items() if rs[0]["dx"] == cls)
        rng.shuffle(lesions)
        for lid in lesions[:test_per_class]:
            test.append(sorted(by_lesion[lid], key=lambda r: r["image_id"])[0])
        rest = [r for lid in lesions[test_per_class:] for r in by_lesion[lid]]
        if cls == "nv" and len(rest) > n_nv_train:
            keep = rng.choice(len(rest), n_nv_train, replace=False)
            rest = [rest[i] for i in sorted(keep)]
        train += rest
    return train, test


def lesion_masks() -> dict[str, np.ndarray]:
    """image_id → (150, 200) boolean lesion mask."""
    with np.load(DATA / "lesion_masks.npz") as z:
        ids, packed, shape = z["image_ids"], z["masks"], tuple(z["shape"])
    masks = np.unpackbits(packed, axis=-1)[..., :shape[1]].astype(bool)
    return {str(i): m for i, m in zip(ids, masks)}


# --- training through Loupe's own API ------------------------------------------------------------

def loupe(ws: Path, *args: str, threads: int = 1) -> dict:
    """Run one ``loupe --json`` command (``threads`` torch threads) and return its JSON document."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": str(ROOT), "QT_QPA_PLATFORM": "offscreen"}
    result = subprocess.run([*LOUPE, "--workspace", str(ws), *args, "--json"], cwd=ROOT, capture_output=True,
                            text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"loupe {' '.join(args)} failed: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout)


def trained_workspace(train_rows: list[dict]) -> tuple[Path, dict]:
    """The workspace holding the trained model (cached by recipe and training set); (path, training report)."""
    key = hashlib.sha256(json.dumps([RECIPE, [r["image_id"] for r in train_rows]]).encode()).hexdigest()[:12]
    folder = CACHE / f"ham-{key}"
    ws, done = folder / "workspace.sqlite", folder / "trained.json"
    if done.exists():
        return ws, json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    if ws.exists():
        ws.unlink()
    labels = folder / "labels.csv"
    with open(labels, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "label", "group"])
        w.writeheader()
        for r in train_rows:
            w.writerow({"path": str(DATA / "images" / f"{r['image_id']}.jpg"), "label": r["dx"],
                        "group": r["lesion_id"]})
    t0 = time.monotonic()
    files = [str(DATA / "images" / f"{r['image_id']}.jpg") for r in train_rows]
    list_file = folder / "files.txt"
    list_file.write_text("\n".join(files))
    imported = loupe(ws, "import", *files, "--labels", str(labels))
    loupe(ws, "model", "create", "--arch", RECIPE["arch"], "--classes", ",".join(CLASSES),
          "--input-size", str(RECIPE["size"]))
    t1 = time.monotonic()
    trained = loupe(ws, "train", "--mode", RECIPE["mode"], "--epochs", str(RECIPE["epochs"]), "--lr", RECIPE["lr"],
                    "--loss", RECIPE["loss"], "--sampler", RECIPE["sampler"], "--device", "cpu")
    report = {"imported": imported["imported"], "import_s": t1 - t0, "train_s": time.monotonic() - t1,
              "version": trained["version"], "promoted": trained["promoted"], "reason": trained.get("reason"),
              "metrics": trained.get("metrics", {})}
    done.write_text(json.dumps(report, default=str))
    return ws, report


def main_train(argv=None) -> None:
    """Only train (and cache) the model."""
    rows = read_metadata()
    train_rows, test_rows = lesion_split(rows, RECIPE["test_per_class"], RECIPE["n_nv_train"], RECIPE["seed"])
    print(f"train {len(train_rows)} photographs, test {len(test_rows)}", flush=True)
    ws, report = trained_workspace(train_rows)
    print(json.dumps(report, default=str)[:2000], flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    if "--train-only" in sys.argv:
        main_train()
