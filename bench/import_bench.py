"""Import and display benchmark: Loupe against a bare pydicom + numpy pipeline, same files, one run.

1. Header scan (files/s): :func:`core.imaging.scan_paths` on a temp folder holding
   ``COPIES`` copies of every file in ../shared/data/dicom, against a bare loop of
   ``pydicom.dcmread(f, stop_before_pixels=True, force=True)`` over the same files.
2. Decode + render (ms/image), cold: :func:`core.imaging.render` with the frame cache
   cleared before each call, against dcmread → pixel_array → pydicom's modality LUT →
   VOI LUT/window (index 0) → min-max to uint8 → MONOCHROME1 inversion. Warm (cached)
   Loupe renders are timed too, and the two outputs are compared (mean |Δ| grey levels).

Writes the "Import and display" section of docs/benchmarks.md. Exits 0 with a message
when ../shared/data is absent. Usage: ``.venv/bin/python bench/import_bench.py [--quick]``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import math
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import BENCH_MD, SHARED_DATA, machine_facts, now_stamp, write_section  # noqa: E402
from core.imaging import clear_cache, render, scan_paths  # noqa: E402

logger = logging.getLogger(__name__)

SECTION = "Import and display"
SCAN_TARGET_FPS = 500.0
RENDER_TARGET_RATIO = 1.3


# ---------------------------------------------------------------- bare reference pipeline


def bare_scan(folder: Path) -> int:
    """Walk ``folder`` and read every header with pydicom alone; returns the number read."""
    n = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            pydicom.dcmread(os.path.join(dirpath, name), stop_before_pixels=True, force=True)
            n += 1
    return n


def bare_render(path: Path) -> np.ndarray:
    """The textbook pydicom 3 display pipeline, as a script would write it; returns uint8."""
    ds = pydicom.dcmread(path, force=True)
    if "TransferSyntaxUID" not in ds.file_meta:
        # Pre-Part-10 file (no File Meta): pydicom cannot decode without being told
        # the syntax; use what it detected while reading.
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
    arr = ds.pixel_array
    arr = apply_modality_lut(arr, ds)
    arr = apply_voi_lut(arr, ds, index=0)
    arr = np.asarray(arr, dtype=np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    x = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        x = 1.0 - x
    return np.floor(x * 255.0 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------- measurements


def make_scan_folder(files: list[Path], copies: int, dest: Path) -> int:
    """Copy every file ``copies`` times into ``dest/copy_NNN/``; returns the file count."""
    for i in range(copies):
        sub = dest / f"copy_{i:03d}"
        sub.mkdir()
        for f in files:
            shutil.copyfile(f, sub / f.name)
    return copies * len(files)


def bench_scan(files: list[Path], copies: int, repeat: int) -> dict:
    """Median files/s of Loupe's scan and the bare loop over ``copies`` × ``files``."""
    with tempfile.TemporaryDirectory(prefix="loupe_scan_bench_") as tmp:
        folder = Path(tmp)
        n = make_scan_folder(files, copies, folder)
        # Warm-up (page cache, imports) for both, untimed.
        result = scan_paths([folder])
        bare_scan(folder)
        loupe_t, bare_t = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            result = scan_paths([folder])
            loupe_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            read = bare_scan(folder)
            bare_t.append(time.perf_counter() - t0)
    lt, bt = statistics.median(loupe_t), statistics.median(bare_t)
    return {
        "files": n,
        "records": len(result.records),
        "errors": len(result.errors),
        "bare_read": read,
        "loupe_fps": n / lt,
        "bare_fps": n / bt,
        "loupe_s": lt,
        "bare_s": bt,
        "repeat": repeat,
    }


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench_render(files: list[Path], repeat: int) -> list[dict]:
    """Per file: median cold Loupe / bare / warm Loupe ms, and how far the outputs differ."""
    rows = []
    for path in files:
        # Warm-up both (page cache, lazy decoder imports), untimed.
        clear_cache()
        render(path)
        bare_render(path)
        cold, bare, warm = [], [], []
        loupe_img = bare_img = None
        for _ in range(repeat):  # interleaved so drifts in machine load hit both alike
            clear_cache()
            t, loupe_img = _timed(lambda: render(path))
            cold.append(t)
            t, bare_img = _timed(lambda: bare_render(path))
            bare.append(t)
        for _ in range(repeat):  # cache now holds the frame
            t, _ = _timed(lambda: render(path))
            warm.append(t)
        assert loupe_img is not None and bare_img is not None
        if loupe_img.shape == bare_img.shape:
            diff = np.abs(loupe_img.astype(np.int16) - bare_img.astype(np.int16))
            mad, p99 = float(diff.mean()), float(np.percentile(diff, 99))
        else:
            mad = p99 = math.nan
        rows.append(
            {
                "name": path.name,
                "shape": "×".join(str(s) for s in loupe_img.shape),
                "cold_ms": 1000 * statistics.median(cold),
                "bare_ms": 1000 * statistics.median(bare),
                "warm_ms": 1000 * statistics.median(warm),
                "mad": mad,
                "p99": p99,
            }
        )
    return rows


def profile_render(files: list[Path], top: int = 25) -> str:
    """cProfile of one cold Loupe render per file; returns the top entries by own time and cumulative."""
    prof = cProfile.Profile()
    for path in files:
        clear_cache()
        prof.enable()
        render(path)
        prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


# ---------------------------------------------------------------- report


def _short(name: str, width: int = 34) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def format_section(scan: dict, rows: list[dict], repeat: int) -> tuple[str, dict]:
    """The markdown body of the section, and the headline figures."""
    ratios = [r["cold_ms"] / r["bare_ms"] for r in rows]
    geo = math.exp(statistics.fmean(math.log(x) for x in ratios))
    tot_cold = sum(r["cold_ms"] for r in rows)
    tot_bare = sum(r["bare_ms"] for r in rows)
    scan_ratio = scan["loupe_fps"] / scan["bare_fps"]
    scan_ok = scan["loupe_fps"] >= SCAN_TARGET_FPS
    render_ok = geo <= RENDER_TARGET_RATIO
    lines = [
        f"Run {now_stamp()} on {machine_facts()}.",
        "",
        "Reference: a bare pydicom + numpy pipeline on the same files in the same run (page cache warm,",
        "one warm-up pass each, single thread).",
        "",
        "### Header scan",
        "",
        f"{scan['files']} files ({scan['files'] // 10} copies of each of the 10 files in `../shared/data/dicom`), "
        f"median of {scan['repeat']} runs.",
        "",
        "| pipeline | files/s | s per pass | notes |",
        "|---|---:|---:|---|",
        f"| Loupe `scan_paths([folder])` | {scan['loupe_fps']:.0f} | {scan['loupe_s']:.3f} | "
        f"{scan['records']} records, {scan['errors']} errors; walk + sniff + selected tags + pixel-length "
        "and decoder checks |",
        f"| bare `dcmread(stop_before_pixels=True, force=True)` | {scan['bare_fps']:.0f} | {scan['bare_s']:.3f} | "
        "walk + full header parse, no validation |",
        "",
        f"Loupe / bare throughput: **{scan_ratio:.2f}×**. Target ≥ {SCAN_TARGET_FPS:.0f} files/s for Loupe: "
        f"{_met(scan_ok)}. The bare loop never touches a value (pydicom converts lazily); Loupe converts "
        "the ~20 values of its record, checks pixel length and decoder, and sniffs the file type first.",
        "",
        "### Decode + render, one image",
        "",
        f"Median of {repeat} runs per file. *Loupe cold* = `clear_cache()` (untimed) then `render(path)`; "
        "*bare* = `dcmread` → `pixel_array` → `apply_modality_lut` → `apply_voi_lut(index=0)` → "
        "min-max to uint8 → MONOCHROME1 inversion; *Loupe warm* = `render(path)` with the frame cached. "
        "*mean |Δ|* = mean absolute difference of the two uint8 outputs in grey levels (p99 in brackets): "
        "informative only, since the bare pipeline stretches the VOI output to its own min..max rather than "
        "using the window's full output range.",
        "",
        "| file | size | Loupe cold ms | bare ms | ratio | Loupe warm ms | mean \\|Δ\\| (p99) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r, ratio in zip(rows, ratios):
        flag = " ⚠" if ratio > RENDER_TARGET_RATIO else ""
        diff = "n/a (shapes differ)" if math.isnan(r["mad"]) else f"{r['mad']:.1f} ({r['p99']:.0f})"
        lines.append(
            f"| `{_short(r['name'])}` | {r['shape']} | {r['cold_ms']:.1f} | {r['bare_ms']:.1f} | "
            f"{ratio:.2f}×{flag} | {r['warm_ms']:.1f} | {diff} |"
        )
    lines += [
        f"| **all 10** | | {tot_cold:.0f} | {tot_bare:.0f} | {tot_cold / tot_bare:.2f}× (sum) | "
        f"{sum(r['warm_ms'] for r in rows):.0f} | |",
        "",
        f"Geometric mean Loupe cold / bare: **{geo:.2f}×**. Target ≤ {RENDER_TARGET_RATIO}×: {_met(render_ok)}"
        + (f" (⚠ marks files above {RENDER_TARGET_RATIO}×)." if any(x > RENDER_TARGET_RATIO for x in ratios) else "."),
    ]
    head = {"scan_ok": scan_ok, "render_ok": render_ok, "geo": geo, "scan_ratio": scan_ratio}
    return "\n".join(lines), head


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer copies and repeats (smoke run)")
    parser.add_argument("--no-write", action="store_true", help="print the section, do not touch docs/")
    parser.add_argument("--profile", action="store_true", help="always print a cProfile of cold renders")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    data = SHARED_DATA / "dicom"
    if not data.is_dir():
        print(f"import_bench: skipped, real data not found at {data} (needs ../shared/data next to the repo)")
        return 0
    files = sorted(p for p in data.iterdir() if p.is_file() and not p.name.startswith("."))
    copies, scan_repeat, render_repeat = (6, 2, 2) if args.quick else (60, 5, 7)

    print(f"header scan: {copies} copies × {len(files)} files, {scan_repeat} runs …", flush=True)
    scan = bench_scan(files, copies, scan_repeat)
    print(f"  Loupe {scan['loupe_fps']:.0f} files/s, bare {scan['bare_fps']:.0f} files/s", flush=True)
    print(f"decode + render: {len(files)} files × {render_repeat} runs …", flush=True)
    rows = bench_render(files, render_repeat)
    text, head = format_section(scan, rows, render_repeat)
    print(text)
    if args.profile or not head["render_ok"]:
        print("\ncProfile of one cold Loupe render per file:\n")
        print(profile_render(files))
    if not args.no_write:
        print(f"\nwrote {write_section(BENCH_MD, SECTION, text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
