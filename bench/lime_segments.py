"""LIME superpixel settings vs the `lime` package on several photographs (deletion / insertion AUC).

The explanation benchmark compares Loupe's LIME with `lime` on one photograph; this
checks whether the SLIC settings (number of segments, compactness) change the
faithfulness picture across several HAM10000 photographs, with the same
ImageNet EfficientNet-Lite0 classifier and the same deletion/insertion code.

    .venv/bin/python bench/lime_segments.py [--samples 256] [--photos mel,nv,bkl]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import explain_bench as eb  # noqa: E402
from bench.common import BENCH_MD, SHARED_DATA, machine_facts, now_stamp, write_section  # noqa: E402

TITLE = "LIME superpixel settings (several photographs)"
SETTINGS = ({"n_segments": 50, "compactness": 0.3}, {"n_segments": 50, "compactness": 10.0},
            {"n_segments": 100, "compactness": 10.0}, {"n_segments": 100, "compactness": 20.0})


def run(samples: int, photos: list[str]) -> list[dict]:
    """One row per (photograph, method): seconds, segments, deletion and insertion AUC."""
    from core.explain import explain
    from core.explain.faithfulness import deletion_insertion
    from core.imaging import model_input

    loaded = eb._loaded("efficientnet_lite0", "default", classes=1000)
    eb._load_lite0_classifier(loaded.net)
    rows = []
    for cls in photos:
        path = sorted((SHARED_DATA / "ham10000_sample" / cls).glob("*.jpg"))[0]
        img = model_input(path)
        heat, label, ref_s, x = eb._lime_package(loaded, img, "cpu", 1000, 16)
        with eb.using_copy(loaded.net, "cpu") as net:
            ref = deletion_insertion(net, x[None], np.maximum(heat, 0), label, batch_size=16)
        rows.append({"photo": cls, "method": "lime@1000 (quickshift)", "seconds": ref_s,
                     "segments": len(np.unique(heat)), "deletion": ref["deletion_auc"],
                     "insertion": ref["insertion_auc"]})
        for setting in SETTINGS:
            e = explain(loaded, img, "lime", label, device="cpu", batch_size=16, n_samples=samples,
                        faithfulness=True, **setting)
            rows.append({"photo": cls, "method": f"Loupe@{samples} SLIC {setting['n_segments']}, "
                                                 f"compactness {setting['compactness']:g}",
                         "seconds": e.seconds - e.faithfulness["seconds"], "segments": e.params.get("segments"),
                         "deletion": e.faithfulness["deletion_auc"], "insertion": e.faithfulness["insertion_auc"]})
            print(rows[-1], file=sys.stderr)
    return rows


def section(rows: list[dict], args) -> str:
    """The markdown of the section."""
    lines = [f"Run {now_stamp()} on {machine_facts()}; `bench/lime_segments.py --samples {args.samples}`.", "",
             "ImageNet EfficientNet-Lite0 (1000 classes) at 224 px, the first photograph of each HAM10000 class "
             "named, explained for its top ImageNet class; deletion AUC lower is better, insertion AUC higher.", "",
             "| photo | method | s | segments | deletion AUC | insertion AUC |", "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['photo']} | {r['method']} | {r['seconds']:.1f} | {r['segments']} | {r['deletion']:.3f} | "
              f"{r['insertion']:.3f} |" for r in rows]
    lines += ["", "Mean over the photographs (same order as above):", ""]
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        lines.append(f"- {method}: deletion {np.mean([r['deletion'] for r in mine]):.3f}, "
                     f"insertion {np.mean([r['insertion'] for r in mine]):.3f}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    """Run the comparison and write its section of docs/benchmarks.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--photos", default="mel,nv,bkl")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not (SHARED_DATA / "ham10000_sample").is_dir():
        print("skipped: ../shared/data/ham10000_sample is absent", file=sys.stderr)
        return 0
    torch.set_num_threads(max(1, torch.get_num_threads()))
    text = section(run(args.samples, args.photos.split(",")), args)
    write_section(BENCH_MD, TITLE, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
