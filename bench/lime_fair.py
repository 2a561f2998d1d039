"""LIME measured fairly: Loupe's LIME and the ``lime`` package with the same segmentation, same model, same images.

Usage: python bench/lime_fair.py [--photos 3] [--seeds 2] [--loupe 32,64,128] [--lime 64,128] [--steps 10]

- Model: the melanoma-vs-naevus EfficientNet-Lite0 (160 px) that ``bench/explain_real.py`` trains with Loupe's
  training API on a lesion-grouped HAM10000 split (cached), so the explained class is one the model predicts
  with confidence: the first held-out test photographs whose predicted probability is ≥ 0.9.
- Segmentation: Loupe's SLIC superpixels (``core.explain.lime.superpixels`` with Loupe's default parameters)
  are computed once per photograph and passed to the lime package as its ``segmentation_fn``, so both fit
  weights for exactly the same features. What still differs is each tool's own design: Loupe hides a
  superpixel with the data-set mean and draws antithetic on/off pairs; lime fills it with the segment's own
  mean colour (``hide_color=None``) and draws independent vectors.
- Every (photograph, seed, tool, samples) map is scored by the same deletion / insertion code (blurred
  reference). Reported: means with 95 % bootstrap intervals over photographs × seeds, paired differences
  against lime at the largest sample count, and time to equal fidelity on both metrics: the fewest Loupe
  samples whose mean deletion AUC is ≤ and mean insertion AUC is ≥ those of lime at each sample count.
Writes the "LIME measured fairly (same segmentation)" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import explain_real as er  # noqa: E402
from bench.common import BENCH_MD, machine_facts, now_stamp, package_version, write_section  # noqa: E402

TITLE = "LIME measured fairly (same segmentation)"


def confident_photos(loaded, n: int, threshold: float = 0.9) -> list[tuple[str, np.ndarray, int, float]]:
    """The first ``n`` held-out test photographs the model predicts with probability ≥ ``threshold``."""
    from core.imaging import model_input
    from core.models.preprocess import to_tensor_with_geometry

    rows = er.read_metadata()
    _, test_rows = er.lesion_split(rows, er.RECIPE["test_per_class"], er.RECIPE["n_nv_train"], er.RECIPE["seed"])
    out = []
    for r in er.interleave(test_rows):
        arr = model_input(er.DATA / "images" / f"{r['image_id']}.jpg")
        x, _ = to_tensor_with_geometry(arr, loaded.spec)
        with torch.inference_mode():
            p = torch.softmax(loaded.net(x[None]), 1)[0]
        if float(p.max()) >= threshold and int(p.argmax()) == er.CLASSES.index(r["dx"]):
            out.append((r["image_id"], arr, int(p.argmax()), float(p.max())))
        if len(out) == n:
            break
    return out


def run(loaded, photos, seeds: int, loupe_ns: list[int], lime_ns: list[int], steps: int,
        fills: tuple = ("mean",)) -> list[dict]:
    """One record per (photograph, seed, tool, samples)."""
    from core.explain import explain
    from core.explain.base import private_copy
    from core.explain.faithfulness import deletion_insertion
    from core.explain.lime import _defaults, superpixels
    from core.models.preprocess import to_tensor_with_geometry

    d = _defaults(loaded.spec.size)
    refs = er.References(loaded)
    clone, _ = private_copy(loaded.net, "cpu")
    records = []
    for image_id, arr, target, prob in photos:
        x, _ = to_tensor_with_geometry(arr, loaded.spec)
        unit = (x[None] * refs.std + refs.mean).clamp(0, 1)[0].permute(1, 2, 0).numpy()
        labels = superpixels(unit, d["n_segments"], d["compactness"], d["slic_sigma"])
        segments = int(labels.max()) + 1

        def same_segments(_image, labels=labels):
            return labels

        for seed in range(seeds):
            for n in lime_ns:
                t0 = time.perf_counter()
                m = refs.lime(x, target, n, seed, segmentation_fn=same_segments)
                secs = time.perf_counter() - t0
                f = deletion_insertion(clone, x[None], np.maximum(m, 0), target, steps=steps, seed=seed)
                records.append({"photo": image_id, "seed": seed, "tool": "lime", "n": n, "seconds": secs,
                                "deletion": f["deletion_auc"], "insertion": f["insertion_auc"],
                                "segments": segments, "prob": prob})
            for n, fill in [(n, fill) for fill in fills for n in loupe_ns]:
                t0 = time.perf_counter()
                base, _, sampling = fill.partition("+")
                e = explain(loaded, arr, "lime", target, device="cpu", batch_size=16, n_samples=n, seed=seed,
                            baseline=base, sampling=sampling or "half")
                secs = time.perf_counter() - t0
                from core.explain.faithfulness import to_model_space

                geo = to_tensor_with_geometry(arr, loaded.spec)[1]
                f = deletion_insertion(clone, x[None], to_model_space(e.map, geo), target, steps=steps, seed=seed)
                records.append({"photo": image_id, "seed": seed, "tool": f"Loupe ({fill} fill)", "n": n,
                                "seconds": secs,
                                "deletion": f["deletion_auc"], "insertion": f["insertion_auc"],
                                "segments": e.params.get("segments"), "prob": prob})
            print(f"{image_id} seed {seed} done", file=sys.stderr, flush=True)
    return records


def _ci(v: np.ndarray, n_boot: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    means = rng.choice(v, (n_boot, len(v)), replace=True).mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def section(records: list[dict], photos, args) -> str:
    """The markdown of the section."""
    def rows_of(tool, n):
        rs = [r for r in records if r["tool"] == tool and r["n"] == n]
        return sorted(rs, key=lambda r: (r["photo"], r["seed"]))

    lines = [f"Run {now_stamp()} on {machine_facts()}; `bench/lime_fair.py --photos {args.photos} --seeds {args.seeds} "
             f"--loupe {','.join(map(str, args.loupe_ns))} --lime {','.join(map(str, args.lime_ns))} --steps {args.steps} "
             f"--fills {','.join(args.fills)}`; 1 torch thread; lime {package_version('lime')}, captum "
             f"{package_version('captum')}.", "",
             f"Model: the HAM10000 melanoma-vs-naevus EfficientNet-Lite0 of \"Explanations on real lesions (HAM10000)\" "
             f"at {er.RECIPE['size']} px. Photographs: {len(photos)} held-out test photographs it classifies correctly "
             f"with probability ≥ 0.9 (" + ", ".join(f"{p[0]} {er.CLASSES[p[2]]} {p[3]:.2f}" for p in photos)
             + f"), × {args.seeds} seeds. Both tools use the same segmentation: Loupe's SLIC superpixels ("
             f"{', '.join(str(s) for s in sorted({r['segments'] for r in records}))} segments) passed to lime as "
             "`segmentation_fn`. Deletion AUC lower is better, insertion higher; means over photographs × seeds with "
             "95 % bootstrap intervals; s = seconds per map.", "",
             "| tool | samples | s | deletion AUC | insertion AUC |", "|---|---:|---:|---:|---:|"]
    loupes = [f"Loupe ({fill} fill)" for fill in args.fills]
    for tool, ns in [("lime", args.lime_ns)] + [(t, args.loupe_ns) for t in loupes]:
        for n in ns:
            rs = rows_of(tool, n)
            dl, ins = np.array([r["deletion"] for r in rs]), np.array([r["insertion"] for r in rs])
            lo_d, hi_d = _ci(dl)
            lo_i, hi_i = _ci(ins)
            lines.append(f"| {tool} | {n} | {np.median([r['seconds'] for r in rs]):.2f} | {dl.mean():.3f} "
                         f"({lo_d:.3f}–{hi_d:.3f}) | {ins.mean():.3f} ({lo_i:.3f}–{hi_i:.3f}) |")
    ref_n = max(args.lime_ns)
    ref = rows_of("lime", ref_n)
    lines += ["", f"Paired differences Loupe − lime@{ref_n} (same photograph and seed):", ""]
    for tool, n in [(t, n) for t in loupes for n in args.loupe_ns]:
        rs = rows_of(tool, n)
        dd = np.array([a["deletion"] - b["deletion"] for a, b in zip(rs, ref)])
        di = np.array([a["insertion"] - b["insertion"] for a, b in zip(rs, ref)])
        lines.append(f"- {tool}@{n}: deletion {dd.mean():+.3f} (95 % CI {_ci(dd)[0]:+.3f} to {_ci(dd)[1]:+.3f}), "
                     f"insertion {di.mean():+.3f} (95 % CI {_ci(di)[0]:+.3f} to {_ci(di)[1]:+.3f})")
    lines += ["", "Time to equal fidelity on both metrics (fewest Loupe samples whose mean deletion AUC is ≤ and "
              "mean insertion AUC ≥ lime's):", ""]
    for n in args.lime_ns:
        rs = rows_of("lime", n)
        d_ref, i_ref = np.mean([r["deletion"] for r in rs]), np.mean([r["insertion"] for r in rs])
        s_ref = np.median([r["seconds"] for r in rs])
        for tool in loupes:
            ok = [m for m in args.loupe_ns if np.mean([r["deletion"] for r in rows_of(tool, m)]) <= d_ref
                  and np.mean([r["insertion"] for r in rows_of(tool, m)]) >= i_ref]
            if ok:
                m = min(ok)
                s = np.median([r["seconds"] for r in rows_of(tool, m)])
                lines.append(f"- lime@{n} ({s_ref:.2f} s): {tool}@{m} ({s:.2f} s) → **{s_ref / s:.1f}×** the speed")
            else:
                lines.append(f"- lime@{n} ({s_ref:.2f} s): no {tool} run here reached it on both metrics — "
                             "**Loupe loses**")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    """Run the comparison and write its section of docs/benchmarks.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--loupe", default="32,64,128")
    parser.add_argument("--lime", default="64,128")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--fills", default="mean,segment_mean", help="Loupe LIME variants: fill[+sampling], e.g. mean, segment_mean, mean+uniform_count")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    args.loupe_ns = [int(v) for v in args.loupe.split(",")]
    args.lime_ns = [int(v) for v in args.lime.split(",")]
    args.fills = args.fills.split(",")
    logging.basicConfig(level=logging.WARNING)
    if not (er.DATA / "lesion_masks.npz").exists():
        print(f"skipped: {er.DATA} is absent", file=sys.stderr)
        return 0
    torch.set_num_threads(1)
    rows = er.read_metadata()
    train_rows, _ = er.lesion_split(rows, er.RECIPE["test_per_class"], er.RECIPE["n_nv_train"], er.RECIPE["seed"])
    loaded, _ = er.trained_model(train_rows)
    photos = confident_photos(loaded, args.photos)
    records = run(loaded, photos, args.seeds, args.loupe_ns, args.lime_ns, args.steps, tuple(args.fills))
    text = section(records, photos, args)
    print(text)
    if not args.no_write:
        write_section(BENCH_MD, TITLE, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
