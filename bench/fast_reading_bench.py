"""Fast reading versions through the registry gate: INT8 and distilled student of a trained teacher.

The teacher is EfficientNet-Lite0 (ImageNet weights) fine-tuned (frozen backbone, 10 epochs) on the
PneumoniaMNIST training PNGs at 64 px. ``quantize_version`` and ``distill_version`` (what ``loupe model
quantize`` / ``loupe model distill`` run) build the candidate and apply the three checks on the validation
split; the speed of teacher and candidate is measured through ``run_inference`` on the same test images,
same threads, in this run.

Run: ``.venv/bin/python bench/fast_reading_bench.py [--workspace CACHED.sqlite]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import BENCH_MD, machine_facts, now_stamp, write_section  # noqa: E402

SECTION = "Teacher, INT8 and distilled student through the fast-reading gate"


def rate(loaded, items, repeat: int = 2) -> float:
    from core.models.inference import run_inference

    best = 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        run_inference(loaded, items, batch_size=16, device="cpu", with_embeddings=False, workers=1)
        best = max(best, len(items) / (time.perf_counter() - t))
    return best


def fmt(c) -> str:
    v = "n/a" if c["candidate"] is None else f"{c['candidate']:.4f}"
    t = "n/a" if c["teacher"] is None else f"{c['teacher']:.4f}"
    return f"{c['check']} {v} vs {t} {'✓' if c['passed'] else '✗'}"


def main(argv=None) -> int:
    import torch

    from core.models.data import labelled_set
    from core.models.fast_reading import GateFailed, distill_version, quantize_version
    from core.models.versions import load_version
    from core.workspace import Workspace

    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", default="/tmp/loupe-cache-models/pneu/ws.sqlite",
                    help="a workspace with the trained teacher active (bench/inference_bench.py part B builds one)")
    ap.add_argument("--student-epochs", type=int, default=4)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.monotonic()
    ws = Workspace.open(args.workspace)
    teacher = load_version(ws)
    test = labelled_set(ws, list(teacher.classes), splits=("test",))
    items = list(zip(test.image_ids, test.paths))[:512]
    rows = []
    teacher_rate = rate(teacher, items)
    rows.append(("teacher float", teacher.version.version, teacher_rate, "—", "the reference"))
    for kind, build in (("INT8", lambda: quantize_version(ws, actor="bench")),
                        ("distilled mobilenet_v3_large", lambda: distill_version(
                            ws, "mobilenet_v3_large", epochs=args.student_epochs, pretrained="none",
                            actor="bench"))):
        t = time.monotonic()
        try:
            version, checks = build()
            cand = load_version(ws, version.version)
            verdict = f"registered as {version.version}"
        except GateFailed as exc:
            checks, version, verdict = exc.checks, None, "refused"
            cand = None
        seconds = time.monotonic() - t
        speed = None
        if cand is None and kind == "INT8":  # measure the refused candidate's speed all the same
            from core.models.fast_reading import gate_data, quantize_int8

            data = gate_data(ws, teacher, workers=1)
            q, _ = quantize_int8(teacher, data.x_calib)
            cand = dataclasses.replace(teacher, net=q)
            cand.version = dataclasses.replace(teacher.version, params={**teacher.version.params,
                                                                        "compression": {"kind": "int8"}})
        if cand is not None:
            speed = rate(cand, items)
        rows.append((kind, verdict, speed, "; ".join(fmt(c) for c in checks), f"{seconds:.0f} s to build and check"))
        print(kind, verdict, speed, [fmt(c) for c in checks], flush=True)
    ws.close()
    lines = [f"Run {now_stamp()} on {machine_facts()}; torch threads 1; `bench/fast_reading_bench.py`, "
             f"{(time.monotonic() - t0) / 60:.1f} min in all.", "",
             f"Teacher: {teacher.version.arch} {teacher.version.version} at {teacher.spec.size} px (frozen-backbone "
             "fine-tune on the PneumoniaMNIST training PNGs). Each candidate is built from it and checked on the "
             "validation split, as `loupe model quantize` / `loupe model distill` do: macro AUC within 1 point, "
             "rare-class sensitivity at the teacher's operating threshold not lower, top-class agreement ≥ 98 %. "
             f"Speed: `run_inference` over the same {len(items)} test PNGs (batch 16, one thread, one decode "
             "thread), best of two.", "",
             "| model | gate | images/s | × teacher | checks (candidate vs teacher) | note |", "|---|---|---|---|---|---|"]
    for kind, verdict, speed, checks, note in rows:
        ratio = f"{speed / teacher_rate:.2f}×" if speed else "—"
        lines.append(f"| {kind} | {verdict} | {speed:.1f} | {ratio} | {checks} | {note} |" if speed else
                     f"| {kind} | {verdict} | — | — | {checks} | {note} |")
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(BENCH_MD, SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
