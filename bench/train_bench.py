"""Training benchmark on real chest radiographs: Loupe's default fine-tune against a plain PyTorch loop.

Data: PneumoniaMNIST (../shared/data), ``--n-train`` official training images (a fixed random draw), the official
validation and test splits, written as PNG files and imported into a workspace **as radiographs**
(``--as-modality CR``) with a labels CSV. Model: EfficientNet-Lite0 with its offline ImageNet weights at
``--size`` px. Rare class: normal (about 10 %).

In the same run, for each seed, on the same images, input size, epochs and thread count (1):
- **Loupe**: ``core.models.training.train`` with ``TrainConfig(mode="finetune", epochs=E, loss="weighted",
  seed=S)`` and every other setting at its default (what ``loupe train --mode finetune --epochs E`` does),
  then the version's test-split metrics through ``core.models.service.evaluate_version`` (the path
  ``loupe evaluate --split test`` takes). Seconds: the whole ``train`` call (decode, training, validation,
  calibration, thresholds, saving).
- **Reference**: a plain 40-line loop — decode every PNG once with Pillow, resize to the input size,
  ImageNet normalisation, AdamW 1e-3 on all layers, class-weighted cross-entropy, a small random affine per
  image, batch 32, no schedule, the last epoch's weights. Seconds: decode + training.
Both report test macro AUC; paired differences over the seeds get a t-based 95 % interval.
Writes the "Training (PneumoniaMNIST)" section of docs/benchmarks.md (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import BENCH_MD, cpu_count, machine_facts, now_stamp, write_section  # noqa: E402
from pneumonia_data import CLASSES, NPZ  # noqa: E402

SECTION = "Training (PneumoniaMNIST)"
TARGET_AUC_GAP = 0.005
TARGET_TIME_RATIO = 1.5


def export_subset(out: Path, n_train: int) -> Path:
    """PNG files of ``n_train`` training images (a fixed random draw: the file lists every pneumonia image
    before the normal ones) and the whole val/test splits, with labels.csv."""
    from PIL import Image

    csv_path = out / "labels.csv"
    if csv_path.exists():
        return csv_path
    data = np.load(NPZ)
    rows = []
    for split in ("train", "val", "test"):
        images, labels = data[f"{split}_images"], data[f"{split}_labels"].ravel()
        keep = (np.sort(np.random.default_rng(0).permutation(len(images))[:n_train]) if split == "train"
                else np.arange(len(images)))
        (out / split).mkdir(parents=True, exist_ok=True)
        for i in keep:
            name = f"{split}/{split}_{i:04d}.png"
            Image.fromarray(images[i]).save(out / name)
            rows.append({"path": name, "label": CLASSES[int(labels[i])], "split": split})
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


def read_rows(csv_path: Path) -> list[dict]:
    with open(csv_path, newline="") as fh:
        return list(csv.DictReader(fh))


def auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


# ------------------------------------------------------------------------------------------- reference


def reference_run(data_dir: Path, rows: list[dict], size: int, epochs: int, seed: int) -> dict:
    """The plain loop. Returns {"auc", "seconds"}."""
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from torchvision.transforms import v2

    from core.models.architectures import build_model

    torch.manual_seed(seed)
    np.random.seed(seed)
    net, _ = build_model("efficientnet_lite0", 2, pretrained="default")
    start = time.monotonic()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def load(split):
        sel = [r for r in rows if r["split"] == split]
        x = np.stack([np.asarray(Image.open(data_dir / r["path"]).convert("RGB").resize((size, size),
                                                                                       Image.BILINEAR))
                      for r in sel]).astype(np.float32) / 255.0
        y = np.array([CLASSES.index(r["label"]) for r in sel])
        return (torch.from_numpy(x).permute(0, 3, 1, 2) - mean) / std, torch.from_numpy(y)

    x_tr, y_tr = load("train")
    counts = torch.bincount(y_tr, minlength=2).float()
    weight = counts.sum() / (2 * counts)
    aug = v2.RandomAffine(degrees=5, translate=(0.05, 0.05), scale=(0.95, 1.05))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(x_tr)).split(32):
            xb = torch.stack([aug(img) for img in x_tr[idx]])
            loss = F.cross_entropy(net(xb), y_tr[idx], weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    seconds = time.monotonic() - start
    x_te, y_te = load("test")
    net.eval()
    with torch.inference_mode():
        probs = torch.cat([torch.softmax(net(x_te[i:i + 128]), 1) for i in range(0, len(x_te), 128)])
    # pneumonia (class 1) is the positive class, as in the macro AUC of two classes that Loupe reports
    return {"auc": auc(y_te.numpy(), probs[:, 1].numpy()), "seconds": seconds}


# ------------------------------------------------------------------------------------------- Loupe


def loupe_workspace(work: Path, data_dir: Path, csv_path: Path, size: int):
    """A workspace with the PNGs imported as CR radiographs (cached in ``work``) and a fresh Lite0 version."""
    from core.importer import import_paths
    from core.models.versions import create_version
    from core.workspace import Workspace

    ws_path = work / "loupe.sqlite"
    fresh = not ws_path.exists()
    ws = Workspace.open(ws_path)
    report = None
    if fresh:
        report = import_paths(ws, [data_dir], labels_csv=csv_path, as_modality="CR")
    create_version(ws, "efficientnet_lite0", list(CLASSES), pretrained="default", input_size=size)
    return ws, report


def loupe_run(work: Path, data_dir: Path, csv_path: Path, size: int, epochs: int, seed: int,
              overrides: dict) -> dict:
    """Loupe's default fine-tune. Returns {"auc", "seconds", "val_auc", "result"}."""
    from core.models.config import TrainConfig
    from core.models.service import evaluate_version
    from core.models.training import train

    ws, _ = loupe_workspace(work, data_dir, csv_path, size)
    try:
        config = TrainConfig(mode="finetune", epochs=epochs, loss="weighted", seed=seed, workers=1, device="cpu",
                             **overrides)
        start = time.monotonic()
        result = train(ws, config)
        seconds = time.monotonic() - start
        test = evaluate_version(ws, result["version"], split="test", device="cpu", n_boot=200)
        return {"auc": float(test["macro_auc"]), "seconds": seconds,
                "val_auc": result["metrics"].get("macro_auc"), "test": test, "result": result}
    finally:
        ws.close()


def paired_ci(diffs: list[float]) -> tuple[float, float, float]:
    """Mean and t-based 95 % interval of paired differences (the interval is (nan, nan) for one seed)."""
    from scipy import stats

    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=1500)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--loupe-config", default="{}", help="JSON TrainConfig overrides (experiments only)")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--work", help="cache folder (PNG files, workspace)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--resume", action="store_true",
                        help="reuse seeds already measured in --work with the same settings")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not NPZ.exists():
        print(f"skipped: {NPZ} is absent")
        return
    import torch

    torch.set_num_threads(1)
    overrides = json.loads(args.loupe_config)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="loupe-train-bench-"))
    data_dir = work / "png"
    csv_path = export_subset(data_dir, args.n_train)
    rows = read_rows(csv_path)
    results = []
    tag = f"n{args.n_train}-s{args.size}-e{args.epochs}-{json.dumps(overrides, sort_keys=True)}"
    cache = work / "results"
    cache.mkdir(exist_ok=True)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        stored = cache / f"{hashlib.sha1(tag.encode()).hexdigest()[:10]}-seed{seed}.json"
        if args.resume and stored.exists() and not args.skip_reference:
            # a seed measured earlier (Loupe and reference back to back in one process), e.g. by a parallel run
            loupe, ref = json.loads(stored.read_text())
            loupe["reused"] = True
            results.append((seed, loupe, ref))
            print(f"seed {seed}: from {stored}")
            continue
        loupe = loupe_run(work, data_dir, csv_path, args.size, args.epochs, seed, overrides)
        ref = None if args.skip_reference else reference_run(data_dir, rows, args.size, args.epochs, seed)
        results.append((seed, loupe, ref))
        if ref is not None:
            keep = {k: loupe[k] for k in ("auc", "seconds", "val_auc")}
            stored.write_text(json.dumps([keep, ref]))
        print(f"seed {seed}: Loupe test AUC {loupe['auc']:.4f} (val {loupe['val_auc']:.4f}) in "
              f"{loupe['seconds']:.1f} s" + (f"; reference {ref['auc']:.4f} in {ref['seconds']:.1f} s" if ref else ""),
              flush=True)
    if args.skip_reference or args.no_write:
        return
    write_report(args, results, rows)


def write_report(args, results, rows) -> None:
    n = {s: sum(1 for r in rows if r["split"] == s) for s in ("train", "val", "test")}
    normal = sum(1 for r in rows if r["split"] == "train" and r["label"] == "normal")
    table = ["| seed | Loupe test AUC | Loupe s | reference test AUC | reference s | AUC diff | time ratio |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for seed, lo, ref in results:
        table.append(f"| {seed} | {lo['auc']:.4f} | {lo['seconds']:.1f} | {ref['auc']:.4f} | {ref['seconds']:.1f} | "
                     f"{lo['auc'] - ref['auc']:+.4f} | {lo['seconds'] / ref['seconds']:.2f} |")
    diffs = [lo["auc"] - ref["auc"] for _, lo, ref in results]
    mean, lo95, hi95 = paired_ci(diffs)
    l_auc = statistics.fmean(lo["auc"] for _, lo, _ in results)
    r_auc = statistics.fmean(ref["auc"] for _, _, ref in results)
    l_s = statistics.fmean(lo["seconds"] for _, lo, _ in results)
    r_s = statistics.fmean(ref["seconds"] for _, _, ref in results)
    auc_ok = l_auc >= r_auc - TARGET_AUC_GAP
    time_ok = l_s <= TARGET_TIME_RATIO * r_s
    ci = f"95 % interval {lo95:+.4f} to {hi95:+.4f}" if not math.isnan(lo95) else "one seed: no interval"
    text = "\n".join([
        f"Run {now_stamp()} on {machine_facts()}; torch threads 1 for both.",
        "",
        f"Data: PneumoniaMNIST (`{NPZ.name}`), {n['train']} official training images (a fixed random draw) ({normal} normal, "
        f"the rare class) as PNG files imported as radiographs (`loupe import --as-modality CR --labels`), the "
        f"official validation ({n['val']}) and test ({n['test']}) splits. EfficientNet-Lite0 with its offline "
        f"ImageNet weights, {args.size} px, {args.epochs} epochs, class-weighted loss, CPU, one thread each, "
        f"{len(results)} seeds; for each seed Loupe and the reference ran back to back in one process on the "
        f"same images" + (" (seeds measured by parallel `--resume` runs of this script with the same settings and "
                          "collected here)" if any(lo.get("reused") for _, lo, _ in results) else "") + ". "
        f"The {cpu_count()} cores may be shared with other jobs (one-minute load average when this section was "
        f"written: {os.getloadavg()[0]:.1f}): absolute seconds are noisy; compare the ratio.",
        "",
        "- **Loupe**: `loupe train --mode finetune --epochs "
        f"{args.epochs}` defaults (`TrainConfig(mode='finetune', loss='weighted')`); seconds are the whole "
        "training call (decode, epochs, per-epoch validation, calibration, thresholds, save); test AUC from "
        "`loupe evaluate --split test`'s code path.",
        "- **Reference**: a plain PyTorch loop (decode once with Pillow, AdamW 1e-3 on all layers, weighted "
        "cross-entropy, small random affine per image, batch 32, constant rate, last epoch); seconds are decode "
        "+ training.",
        "",
        *table,
        "",
        f"Mean test macro AUC: Loupe **{l_auc:.4f}**, reference **{r_auc:.4f}**; paired difference (Loupe − "
        f"reference) {mean:+.4f} ({ci}). Mean seconds: Loupe {l_s:.1f}, reference {r_s:.1f} "
        f"(ratio {l_s / r_s:.2f}).",
        f"Target (Loupe ≥ reference AUC − {TARGET_AUC_GAP} in ≤ {TARGET_TIME_RATIO}× its time): AUC "
        f"**{'met' if auc_ok else 'not met'}**, time **{'met' if time_ok else 'not met'}**.",
        "",
        "Before this recipe (issue #11, quiet machine): `--mode finetune` 0.884 against the loop's 0.955, because "
        "PNG radiographs were augmented as photographs (180° rotations, flips, colour jitter, erasing) and the "
        "backbone learnt at 1/10 of the head's rate. Now pictures imported as CR/DX get radiograph augmentation "
        "(chosen per image), the whole network learns at 1e-3, AdamW decays weights only, the rate follows a "
        "cosine, and augmentation runs batched on tensors (cheaper than the loop's per-image transform)."
        + ("" if auc_ok else " Loupe still loses on AUC by the margin above; not yet separated: Loupe's "
           "stronger radiograph augmentation (±7°, ±8 % zoom, ±15 % brightness/contrast against ±5°, ±5 %, "
           "none), its cosine decay and best-validation-loss epoch against the loop's constant rate and last "
           "epoch, and its float antialiased resize against Pillow's."),
    ])
    print(text)
    write_section(BENCH_MD, SECTION, text)


if __name__ == "__main__":
    main()
