"""LIME measured fairly: Loupe's LIME and the ``lime`` package with the same segmentation, same model, same images.

Usage: python bench/lime_fair.py [--val 6] [--val-seeds 2] [--test 8] [--seeds 3] [--lime-ns 16,32,64]
       [--loupe-ns 16,32,48,64] [--val-ns 32,64] [--steps 10]

- Model: the melanoma-vs-naevus EfficientNet-Lite0 (224 px, fine-tuned) that ``bench/explain_real.py`` trains
  with Loupe's training API on a lesion-grouped HAM10000 split (cached), so the explained class is one the
  model predicts with confidence: held-out photographs it classifies correctly with probability ≥ 0.9, taken
  in order per class; the first ``--val`` (a third melanomas) are *validation* photographs, the next
  ``--test`` (three in eight melanomas) are *test* photographs. The two sets share no photograph.
- Segmentation: Loupe's SLIC superpixels (``core.explain.lime.superpixels`` with Loupe's default parameters)
  are computed once per photograph and passed to the lime package as its ``segmentation_fn`` (the seconds of
  that SLIC call are added to lime's time, as Loupe's own time includes its SLIC), so both fit weights for
  exactly the same features.
- Validation: Loupe's LIME variants (fill × fitted score × sampling) at each of ``--val-ns`` sample counts;
  the one with the largest mean insertion − deletion AUC over those counts among the fills that also hide a
  flat object (not ``segment_mean``: it scores 0 % on the synthetic bright-patch pointing test) is used on
  the test photographs. The lime package's own maps at the same counts are listed beside them.
- Test: the lime package (its defaults: hide_color=None, Bernoulli ½ samples with the image first, cosine
  kernel 0.25, ridge) and Loupe's chosen variant at their sample counts, photographs × ``--seeds`` seeds;
  every map scored by the same deletion / insertion code (blurred reference) on the same path (positive part
  scaled to [0, 1], onto the photograph's geometry, back to the model input). Reported: means with 95 %
  bootstrap intervals, paired differences Loupe − lime with 95 % intervals, and time to equal fidelity on
  both metrics: for each lime sample count, the fewest Loupe samples whose mean deletion AUC is ≤ and mean
  insertion AUC is ≥ lime's.
Writes the "LIME measured fairly (same segmentation)" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import explain_real as er  # noqa: E402
from bench.common import BENCH_MD, machine_facts, now_stamp, package_version, write_section  # noqa: E402

TITLE = "LIME measured fairly (same segmentation)"
#: Loupe variants tried on the validation photographs: (fill, fitted score, sampling).
VARIANTS = (("heavy_blur", "logit", "independent"), ("heavy_blur", "logit", "orthogonal"),
            ("heavy_blur", "logit", "antithetic"))
#: Fills that cannot be the default: they leave a flat object visible (synthetic pointing test).
NOT_DEFAULT = {"segment_mean"}


def confident_photos(loaded, n_val: int, n_test: int, threshold: float = 0.9):
    """(validation, test) lists of (image_id, model input, class index, probability): held-out photographs the
    model classifies correctly with probability ≥ ``threshold``, in order per class; about a third of the
    validation and three in eight of the test photographs are melanomas."""
    from core.imaging import model_input
    from core.models.preprocess import to_tensor_with_geometry

    rows = er.read_metadata()
    _, test_rows = er.lesion_split(rows, er.RECIPE["test_per_class"], er.RECIPE["n_nv_train"], er.RECIPE["seed"])
    quota = {"val": {"mel": max(1, round(n_val / 3))}, "test": {"mel": max(1, round(n_test * 3 / 8))}}
    quota["val"]["nv"], quota["test"]["nv"] = n_val - quota["val"]["mel"], n_test - quota["test"]["mel"]
    found = {"mel": [], "nv": []}
    for r in er.interleave(test_rows):
        cls = r["dx"]
        if len(found[cls]) >= quota["val"][cls] + quota["test"][cls]:
            continue
        arr = model_input(er.DATA / "images" / f"{r['image_id']}.jpg")
        x, _ = to_tensor_with_geometry(arr, loaded.spec)
        with torch.inference_mode():
            p = torch.softmax(loaded.net(x[None]), 1)[0]
        if float(p.max()) >= threshold and int(p.argmax()) == er.CLASSES.index(cls):
            found[cls].append((r["image_id"], arr, int(p.argmax()), float(p.max())))
        if all(len(found[c]) >= quota["val"][c] + quota["test"][c] for c in found):
            break
    val = found["mel"][:quota["val"]["mel"]] + found["nv"][:quota["val"]["nv"]]
    test = found["mel"][quota["val"]["mel"]:] + found["nv"][quota["val"]["nv"]:]
    return val, test


class Runner:
    """Maps and their scores for one model: the lime package and Loupe's LIME, same superpixels."""

    def __init__(self, loaded, steps: int) -> None:
        from core.explain.base import private_copy

        self.loaded, self.steps = loaded, steps
        self.refs = er.References(loaded)
        self.clone, _ = private_copy(loaded.net, "cpu")
        self.prepared = {}

    def prepare(self, image_id, arr):
        """(x, labels, SLIC seconds) of a photograph, computed once."""
        from core.explain.lime import _defaults, superpixels
        from core.models.preprocess import to_tensor_with_geometry

        if image_id not in self.prepared:
            d = _defaults(self.loaded.spec.size)
            x, geo = to_tensor_with_geometry(arr, self.loaded.spec)
            unit = (x[None] * self.refs.std + self.refs.mean).clamp(0, 1)[0].permute(1, 2, 0).numpy()
            t0 = time.perf_counter()
            labels = superpixels(unit, d["n_segments"], d["compactness"], d["slic_sigma"])
            self.prepared[image_id] = (x, geo, labels, time.perf_counter() - t0)
        return self.prepared[image_id]

    def score(self, x, model_map, target, seed) -> tuple[float, float]:
        from core.explain.faithfulness import deletion_insertion

        f = deletion_insertion(self.clone, x[None], model_map, target, steps=self.steps, seed=seed)
        return f["deletion_auc"], f["insertion_auc"]

    def lime(self, photo, n, seed, scored: bool = True) -> dict:
        from core.explain.base import normalise
        from core.explain.faithfulness import to_model_space
        from core.models.preprocess import undo_geometry

        image_id, arr, target, _ = photo
        x, geo, labels, slic_s = self.prepare(image_id, arr)
        t0 = time.perf_counter()
        m = self.refs.lime(x, target, n, seed, segmentation_fn=lambda _image: labels)
        secs = time.perf_counter() - t0 + slic_s
        if not scored:
            return {"seconds": secs}
        # Scored exactly as Loupe's map is: positive part scaled to [0, 1], onto the photograph's own geometry
        # (what a reader sees), back to model space. Scoring one tool's model-space map and the other's
        # round-tripped map moved insertion AUC by up to 0.18 on a photograph.
        shown = np.clip(undo_geometry(normalise(m, True)[0], geo), 0.0, 1.0)
        d, i = self.score(x, to_model_space(shown, geo), target, seed)
        return {"seconds": secs, "deletion": d, "insertion": i, "segments": int(labels.max()) + 1}

    def loupe(self, photo, n, seed, variant, scored: bool = True) -> dict:
        from core.explain import explain
        from core.explain.faithfulness import to_model_space

        image_id, arr, target, _ = photo
        x, geo, labels, _ = self.prepare(image_id, arr)
        fill, score, sampling = variant
        t0 = time.perf_counter()
        e = explain(self.loaded, arr, "lime", target, device="cpu", batch_size=16, n_samples=n, seed=seed,
                    baseline=fill, score=score, sampling=sampling)
        secs = time.perf_counter() - t0
        if not scored:
            return {"seconds": secs}
        assert e.params["segments"] == int(labels.max()) + 1, "Loupe's and the reference's superpixels differ"
        d, i = self.score(x, to_model_space(e.map, geo), target, seed)
        return {"seconds": secs, "deletion": d, "insertion": i, "segments": e.params["segments"]}


def vname(v) -> str:
    return f"{v[0]} fill, {v[1]}, {v[2]}"


def validate(runner, photos, ns, seeds) -> tuple[list[dict], tuple]:
    """Every variant, and the lime package, on the validation photographs at each sample count of ``ns``
    (``seeds`` seeds); the chosen variant (largest mean insertion − deletion over all counts)."""
    records = []
    for photo in photos:
        for n in ns:
            for seed in range(seeds):
                records.append({"photo": photo[0], "variant": "lime", "n": n, **runner.lime(photo, n, seed)})
                for v in VARIANTS:
                    records.append({"photo": photo[0], "variant": v, "n": n, **runner.loupe(photo, n, seed, v)})
        print(f"validation {photo[0]} done", file=sys.stderr, flush=True)
    gaps = {v: np.mean([r["insertion"] - r["deletion"] for r in records if r["variant"] == v]) for v in VARIANTS}
    eligible = [v for v in VARIANTS if v[0] not in NOT_DEFAULT]
    return records, max(eligible, key=lambda v: gaps[v])


def test(runner, photos, seeds, lime_ns, loupe_ns, variant) -> list[dict]:
    """One record per (photograph, seed, tool, samples)."""
    records = []
    for photo in photos:
        for seed in range(seeds):
            for n in sorted(set(lime_ns) | set(loupe_ns)):
                runs = [("lime", n in lime_ns, lambda: runner.lime(photo, n, seed)),
                        ("Loupe", n in loupe_ns, lambda: runner.loupe(photo, n, seed, variant))]
                for tool, wanted, fn in (runs if seed % 2 == 0 else runs[::-1]):  # alternate who runs first
                    if wanted:
                        records.append({"photo": photo[0], "seed": seed, "tool": tool, "n": n, **fn()})
            print(f"test {photo[0]} seed {seed} done", file=sys.stderr, flush=True)
    return records


def timing(runner, photos, n, rounds, variant) -> list[tuple[float, float]]:
    """(lime seconds, Loupe seconds) of maps made back to back, alternating which goes first, no scoring."""
    out = []
    for photo in photos:
        for r in range(rounds):
            first_lime = r % 2 == 0
            a = runner.lime(photo, n, r, scored=False)["seconds"] if first_lime else None
            b = runner.loupe(photo, n, r, variant, scored=False)["seconds"]
            a = a if first_lime else runner.lime(photo, n, r, scored=False)["seconds"]
            out.append((a, b))
    return out


def _ci(v: np.ndarray, n_boot: int = 4000) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    means = rng.choice(v, (n_boot, len(v)), replace=True).mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _fmt(v: np.ndarray, signed: bool = False) -> str:
    lo, hi = _ci(v)
    f = "+.3f" if signed else ".3f"
    return f"{v.mean():{f}} ({lo:{f}} to {hi:{f}})"


def section(val_records, chosen, records, val, photos, args, load, minutes, pairs_t) -> str:
    """The markdown of the section."""
    def rows_of(tool, n):
        return sorted([r for r in records if r["tool"] == tool and r["n"] == n], key=lambda r: (r["photo"], r["seed"]))

    def mean(tool, n, key):
        return float(np.mean([r[key] for r in rows_of(tool, n)]))

    def secs(tool, n):
        return float(np.median([r["seconds"] for r in rows_of(tool, n)]))

    desc = lambda ps: ", ".join(f"{p[0]} {er.CLASSES[p[2]]} {p[3]:.2f}" for p in ps)  # noqa: E731
    segs = sorted({r["segments"] for r in records})
    lines = [f"Run {now_stamp()} on {machine_facts()}; `nice -n 19 python bench/lime_fair.py --val {args.val} "
             f"--val-seeds {args.val_seeds} --test {args.test} --seeds {args.seeds} --lime-ns {args.lime_ns} "
             f"--loupe-ns {args.loupe_ns} --val-ns {args.val_ns} --steps {args.steps} --timing-n {args.timing_n} "
             f"--timing-photos {args.timing_photos} --timing-rounds {args.timing_rounds}`, "
             f"{minutes:.1f} min in all; 1 torch thread for both tools; lime {package_version('lime')}; one-minute "
             f"load average {load[0]:.1f} before → {load[1]:.1f} after (2 cores shared with other jobs: compare the "
             "seconds within this run only).", "",
             f"Model: the HAM10000 melanoma-vs-naevus EfficientNet-Lite0 of \"Explanations on real lesions (HAM10000)\" "
             f"at {er.RECIPE['size']} px (the cached model `bench/explain_real.py` trained). Photographs: held-out, "
             "classified correctly with probability ≥ 0.9. Both tools use the same segmentation: Loupe's SLIC "
             f"superpixels ({min(segs)}–{max(segs)} segments) passed to lime as `segmentation_fn` (SLIC's seconds "
             "counted for both). Both maps are scored by the same code on the same path: positive part scaled to "
             "[0, 1], onto the photograph's geometry, back to the model input. Deletion AUC lower is better, "
             f"insertion higher (blurred reference, {args.steps} steps); 95 % bootstrap intervals over photographs × "
             "seeds; s = median seconds per map.", "",
             f"**Validation** ({len(val)} photographs: {desc(val)}; × {args.val_seeds} seeds at each of "
             f"{args.val_ns} samples): Loupe variants (fill, fitted score, sampling) and the lime package on the "
             "same photographs and seeds; `heavy_blur` is the image blurred with sigma S/4, the deletion/insertion "
             "check's own reference; `orthogonal` samples rows of a Sylvester–Hadamard matrix (every superpixel "
             "hidden in exactly half the samples, no two correlated, complementary pairs); the choice is the "
             "largest insertion − deletion over all the counts:", "",
             "| variant | samples | deletion AUC | insertion AUC | insertion − deletion |",
             "|---|---:|---:|---:|---:|"]
    for v in ("lime",) + VARIANTS:
        for n in args.val_list:
            rs = [r for r in val_records if r["variant"] == v and r["n"] == n]
            d, i = np.array([r["deletion"] for r in rs]), np.array([r["insertion"] for r in rs])
            name = "lime package (its defaults)" if v == "lime" else vname(v)
            mark = "" if v == "lime" else (" **(chosen)**" if v == chosen else (
                " (not eligible: leaves a flat object visible)" if v[0] in NOT_DEFAULT else ""))
            lines.append(f"| {name}{mark} | {n} | {d.mean():.3f} | {i.mean():.3f} | {(i - d).mean():+.3f} |")
    from core.explain.lime import _defaults

    d0 = _defaults(er.RECIPE["size"])
    default_note = ("Loupe's default" if (d0["baseline"], d0["score"], d0["sampling"]) == tuple(chosen)
                    else "not Loupe's default")
    lines += ["", f"**Test** ({len(photos)} other photographs: {desc(photos)}; × {args.seeds} seeds). Loupe: "
              f"{vname(chosen)} ({default_note}); lime: its own defaults.", "",
              "| tool | samples | s | deletion AUC | insertion AUC |", "|---|---:|---:|---:|---:|"]
    for tool, ns in (("lime", args.lime_list), ("Loupe", args.loupe_list)):
        for n in ns:
            rs = rows_of(tool, n)
            lines.append(f"| {tool} | {n} | {secs(tool, n):.2f} | {_fmt(np.array([r['deletion'] for r in rs]))} | "
                         f"{_fmt(np.array([r['insertion'] for r in rs]))} |")
    lines += ["", "Paired differences Loupe − lime (same photograph and seed; deletion: negative favours Loupe, "
              "insertion: positive favours Loupe), 95 % intervals:", ""]
    top = max(args.lime_list)
    pairs = [(n, n) for n in args.lime_list if n in args.loupe_list] + [(m, top) for m in args.loupe_list if m < top]
    for m, n in pairs:
        a, b = rows_of("Loupe", m), rows_of("lime", n)
        assert [(r["photo"], r["seed"]) for r in a] == [(r["photo"], r["seed"]) for r in b]
        dd = np.array([x["deletion"] - y["deletion"] for x, y in zip(a, b)])
        di = np.array([x["insertion"] - y["insertion"] for x, y in zip(a, b)])
        lines.append(f"- Loupe@{m} − lime@{n}: deletion {_fmt(dd, True)}, insertion {_fmt(di, True)}; "
                     f"time {secs('Loupe', m):.2f} s vs {secs('lime', n):.2f} s")
    ratio = np.array([a / b for a, b in pairs_t])
    lines += ["", f"Cost per map at {args.timing_n} samples, measured back to back ({len(pairs_t)} pairs on "
              f"{args.timing_photos} test photographs, alternating which tool goes first): lime median "
              f"{np.median([a for a, _ in pairs_t]):.2f} s, Loupe {np.median([b for _, b in pairs_t]):.2f} s; "
              f"lime / Loupe time {np.median(ratio):.2f} (95 % interval of the mean {_ci(ratio)[0]:.2f} to "
              f"{_ci(ratio)[1]:.2f}). Both are dominated by the same forward passes (16 images per batch)."]
    lines += ["", "Time to equal fidelity on both metrics (the fewest Loupe samples whose mean deletion AUC is ≤ and "
              "mean insertion AUC ≥ lime's at that sample count):", ""]
    for n in args.lime_list:
        ok = [m for m in args.loupe_list if mean("Loupe", m, "deletion") <= mean("lime", n, "deletion")
              and mean("Loupe", m, "insertion") >= mean("lime", n, "insertion")]
        if ok:
            m = min(ok)
            lines.append(f"- lime@{n} ({secs('lime', n):.2f} s): Loupe@{m} ({secs('Loupe', m):.2f} s) → "
                         f"**{secs('lime', n) / secs('Loupe', m):.1f}×** the speed")
        else:
            lines.append(f"- lime@{n} ({secs('lime', n):.2f} s): no Loupe sample count here reached it on both "
                         "metrics — **Loupe loses**")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    """Run the comparison and write its section of docs/benchmarks.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--val", type=int, default=6, help="validation photographs")
    parser.add_argument("--test", type=int, default=8, help="test photographs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--lime-ns", default="16,32,64", help="the lime package's sample counts (test)")
    parser.add_argument("--loupe-ns", default="16,32,48,64", help="Loupe's sample counts (test)")
    parser.add_argument("--val-seeds", type=int, default=2)
    parser.add_argument("--timing-n", type=int, default=64, help="samples per map in the back-to-back timing")
    parser.add_argument("--timing-photos", type=int, default=2)
    parser.add_argument("--timing-rounds", type=int, default=4)
    parser.add_argument("--val-ns", default="32,64", help="samples per map on the validation photographs")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    args.lime_list = [int(v) for v in args.lime_ns.split(",")]
    args.loupe_list = [int(v) for v in args.loupe_ns.split(",")]
    args.val_list = [int(v) for v in args.val_ns.split(",")]
    logging.basicConfig(level=logging.WARNING)
    if not (er.DATA / "lesion_masks.npz").exists():
        print(f"skipped: {er.DATA} is absent", file=sys.stderr)
        return 0
    t0, load0 = time.monotonic(), os.getloadavg()[0]
    torch.set_num_threads(1)
    rows = er.read_metadata()
    train_rows, _ = er.lesion_split(rows, er.RECIPE["test_per_class"], er.RECIPE["n_nv_train"], er.RECIPE["seed"])
    loaded, _ = er.trained_model(train_rows)
    val, photos = confident_photos(loaded, args.val, args.test)
    runner = Runner(loaded, args.steps)
    val_records, chosen = validate(runner, val, args.val_list, args.val_seeds)
    print(f"chosen on validation: {vname(chosen)}", file=sys.stderr, flush=True)
    records = test(runner, photos, args.seeds, args.lime_list, args.loupe_list, chosen)
    pairs_t = timing(runner, photos[:args.timing_photos], args.timing_n, args.timing_rounds, chosen)
    er.CACHE.mkdir(parents=True, exist_ok=True)
    (er.CACHE / "lime_fair_records.json").write_text(json.dumps(
        {"val": val_records, "test": records, "timing": pairs_t, "chosen": chosen}, default=str))
    text = section(val_records, chosen, records, val, photos, args, (load0, os.getloadavg()[0]),
                   (time.monotonic() - t0) / 60, pairs_t)
    print(text)
    if not args.no_write:
        write_section(BENCH_MD, TITLE, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
