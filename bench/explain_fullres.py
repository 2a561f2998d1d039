"""Explanations of a full-resolution radiograph: a 2,000 × 2,000 image explained in its own geometry.

Usage: python bench/explain_fullres.py [--side 2000] [--size 224]

The real CR chest radiograph ``../shared/data/dicom/RG1_JLSN.dcm`` (decoded and windowed as the viewer shows
it) is resampled to ``side`` × ``side``. Each method runs on the model input only (``size`` px): the image
is reduced once on the way in, and the low-resolution map is brought to the image's geometry once, at the
output. Reported per method (EfficientNet-Lite0, offline ImageNet backbone, 2-class head; 1 torch
thread): seconds for the whole ``explain()`` call, the part spent bringing the map to full size, the largest
tensor any forward pass received, and the output map's shape.
Writes the "Explanations of full-resolution radiographs" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BENCH_MD, SHARED_DATA, machine_facts, now_stamp, write_section  # noqa: E402

TITLE = "Explanations of full-resolution radiographs"
PARAMS = {"gradcam": {}, "lime": {"n_samples": 128}, "ig": {}, "gradshap": {}, "occlusion": {}}


def radiograph(side: int) -> np.ndarray:
    """The RG1 chest radiograph in [0, 1], resampled to (side, side)."""
    from core.imaging import model_input

    arr = model_input(SHARED_DATA / "dicom" / "RG1_JLSN.dcm")
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
    t = torch.nn.functional.interpolate(t, size=(side, side), mode="bilinear", align_corners=False)
    return t[0, 0].numpy() if t.shape[1] == 1 else t[0].permute(1, 2, 0).numpy()


def run(side: int, size: int) -> tuple[list[dict], tuple]:
    """One row per method."""
    from core.explain import base as B
    from core.explain import explain
    from core.models import preprocess as P
    from core.models.architectures import build_model, default_input_spec
    from core.models.versions import LoadedModel
    from core.types import ModelVersion

    torch.manual_seed(0)
    net, weights = build_model("efficientnet_lite0", 2, pretrained="default")
    loaded = LoadedModel(ModelVersion("lite0", "efficientnet_lite0", ("a", "b"), "", weights=weights), net,
                         default_input_spec("efficientnet_lite0", size), ("a", "b"))
    img = radiograph(side)
    explain(loaded, img, "gradcam", device="cpu")  # warm-up: the private copy
    rows = []
    undo_time = [0.0]
    original_undo = P.undo_geometry

    def timed_undo(map2d, geometry):
        t0 = time.perf_counter()
        try:
            return original_undo(map2d, geometry)
        finally:
            undo_time[0] += time.perf_counter() - t0

    P.undo_geometry = timed_undo
    try:
        for name, params in PARAMS.items():
            largest = [0]
            method = B.METHODS[name]

            def spying(ctx, method=method, largest=largest):
                forward = ctx.net.forward

                def f(x):
                    largest[0] = max(largest[0], int(np.prod(x.shape[1:])))
                    return forward(x)

                ctx.net.forward = f
                try:
                    return method.run(ctx)
                finally:
                    del ctx.net.forward

            B.METHODS[name] = dataclasses.replace(method, run=spying)
            undo_time[0] = 0.0
            try:
                t0, c0 = time.perf_counter(), time.process_time()
                e = explain(loaded, img, name, 1, device="cpu", **params)
                secs, cpu = time.perf_counter() - t0, time.process_time() - c0
            finally:
                B.METHODS[name] = method
            rows.append({"method": name, "seconds": secs, "cpu_s": cpu, "upsample_s": undo_time[0], "largest": largest[0],
                         "shape": e.map.shape, "params": {k: v for k, v in e.params.items() if k != "segments"}})
            print(rows[-1], file=sys.stderr, flush=True)
    finally:
        P.undo_geometry = original_undo
    return rows, img.shape


def main(argv=None) -> int:
    """Run and write the section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=2000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not (SHARED_DATA / "dicom" / "RG1_JLSN.dcm").exists():
        print("skipped: ../shared/data/dicom is absent", file=sys.stderr)
        return 0
    torch.set_num_threads(1)
    rows, shape = run(args.side, args.size)
    c = 3
    lines = [f"Run {now_stamp()} on {machine_facts()}; `bench/explain_fullres.py --side {args.side} --size "
             f"{args.size}`; 1 torch thread.", "",
             f"The RG1 CR chest radiograph resampled to {shape[1]} × {shape[0]} px ({np.prod(shape) * 4 / 2**20:.0f} MB "
             f"as float32), explained by EfficientNet-Lite0 at {args.size} px (ImageNet backbone, untrained 2-class "
             f"head: timing and geometry only). Every method receives only the model input ({c} × {args.size} × "
             f"{args.size} = {c * args.size ** 2:,} values per image; the largest tensor any forward pass saw per "
             "image is listed); the image is reduced once on the way in and the map is brought to the image's own "
             "geometry once, at the output (bilinear, padding cut away).", "",
             "Seconds are wall-clock on a machine shared with other jobs, CPU seconds are this process's own "
             "(1 thread).", "",
             "| method | parameters | seconds | CPU seconds | of which: map to full size | largest forward input "
             "per image | output map |", "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        p = ", ".join(f"{k}={v}" for k, v in r["params"].items() if v is not None) or "defaults"
        lines.append(f"| {r['method']} | {p} | {r['seconds']:.2f} | {r['cpu_s']:.2f} | {r['upsample_s']:.3f} | "
                     f"{r['largest']:,} | "
                     f"{r['shape'][1]} × {r['shape'][0]} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        write_section(BENCH_MD, TITLE, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
