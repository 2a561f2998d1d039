"""Compressed-DICOM decoding and the UI thread: GIL stalls in a worker thread vs the decode worker process.

For each file, a Qt heartbeat (a 2 ms QTimer on the main thread, the UI thread's
stand-in) runs while a worker thread decodes the file ``--reps`` times, first
in-process (``dicom_io.decode_frame``, what the window did before) and then
through :class:`core.imaging.decode_pool.DecodePool` (one spawn worker). The
heartbeat's longest gap is how long the window would have been frozen. The same
run measures the decode latency of both routes (median of interleaved repeats)
for a small (64 × 64) and 2k × 2k images, and checks the two results are
equal bit for bit.

Files: the real radiographs of ../shared/data/dicom (JPEG-LS near-lossless,
JPEG Lossless, JPEG Baseline, RLE, uncompressed) and 2048 × 2048 / 64 × 64
crops of the RG3 tibia re-encoded as JPEG-LS, JPEG 2000 and RLE (pydicom's
encoders, written under --cache). Writes the "Decoding compressed DICOM off the
UI thread" section of docs/benchmarks.md (with --write).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_MD, machine_facts, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "dicom"
SECTION = "Decoding compressed DICOM off the UI thread"


def make_files(cache: Path) -> dict[str, Path]:
    """The benchmark's files: real ones plus RG3 re-encoded at 2048² and 64² (cached)."""
    import pydicom
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

    cache.mkdir(parents=True, exist_ok=True)
    files = {
        "RG1 JPEG-LS near-lossless 1955×1841": DATA / "RG1_JLSN.dcm",
        "RG2 JPEG Lossless 2140×1760": DATA / "RG2_JPLL.dcm",
        "SIIM JPEG Baseline 1024²": DATA / "SIIM_CR_chest_positive_sample.dcm",
        "RG3 RLE 1760²": DATA / "RG3_RLE.dcm",
        "RG3 uncompressed 1760²": DATA / "RG3_UNC.dcm",
    }
    src = pydicom.dcmread(DATA / "RG3_UNC.dcm")
    pixels = src.pixel_array
    big = np.pad(pixels, ((0, 2048 - pixels.shape[0]), (0, 2048 - pixels.shape[1])), mode="reflect")
    small = np.ascontiguousarray(pixels[800:864, 800:864])
    for size, arr in (("2048²", big), ("64²", small)):
        for name, uid in (("JPEG-LS", JPEGLSLossless), ("JPEG 2000", JPEG2000Lossless), ("RLE", RLELossless)):
            out = cache / f"rg3_{name.replace(' ', '').lower()}_{arr.shape[0]}.dcm"
            if not out.exists():
                ds = pydicom.dcmread(DATA / "RG3_UNC.dcm")
                ds.Rows, ds.Columns = arr.shape
                ds.PixelData = np.ascontiguousarray(arr).tobytes()
                ds.compress(uid, np.ascontiguousarray(arr))
                ds.save_as(out, enforce_file_format=True)
            files[f"RG3 {name} {size}"] = out
    return files


def heartbeat_during(work, interval_ms: int = 2) -> tuple[float, float]:
    """Run ``work`` in a thread while a QTimer beats on this thread; (longest gap, median gap) in ms."""
    from PySide6.QtCore import QCoreApplication, QTimer

    app = QCoreApplication.instance() or QCoreApplication([])
    gaps: list[float] = []
    done = threading.Event()
    last = [time.perf_counter()]

    def beat() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now
        if done.is_set():
            app.quit()

    timer = QTimer()
    timer.setInterval(interval_ms)
    timer.timeout.connect(beat)

    def run() -> None:
        try:
            work()
        finally:
            done.set()

    thread = threading.Thread(target=run)
    timer.start()
    last[0] = time.perf_counter()
    thread.start()
    app.exec()
    timer.stop()
    thread.join()
    return max(gaps) * 1000, statistics.median(gaps) * 1000


def viewer_first_display(path: Path, pool, reps: int) -> tuple[float, float]:
    """The real viewer: ImageView.set_image on an uncached file until ``image_loaded``, with the heartbeat
    running; (longest heartbeat gap, median time to the picture) in ms over ``reps`` first displays.
    ``pool`` None decodes in the viewer's worker thread (as before), else through the enabled pool."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.widgets.image_view import ImageView
    from app.workers import Runner
    from core.imaging import clear_cache, decode_pool

    app = QApplication.instance()
    runner = Runner(max_threads=2)
    view = ImageView(runner)
    view.resize(900, 900)
    view.show()
    saved = decode_pool._POOL
    decode_pool._POOL = pool  # what the session's enable() sets (the pool is started and warm)
    worst, times = 0.0, []
    try:
        for _ in range(reps):
            clear_cache()
            gaps: list[float] = []
            last = [time.perf_counter()]
            loaded = []

            def beat() -> None:
                now = time.perf_counter()
                gaps.append(now - last[0])
                last[0] = now
                if loaded:
                    app.quit()

            view.image_loaded.connect(lambda _p: loaded.append(time.perf_counter()))
            timer = QTimer()
            timer.setInterval(2)
            timer.timeout.connect(beat)
            timer.start()
            t0 = last[0] = time.perf_counter()
            view.set_image(str(path))
            app.exec()
            timer.stop()
            view.image_loaded.disconnect()
            worst = max(worst, max(gaps) * 1000)
            times.append((loaded[0] - t0) * 1000)
    finally:
        decode_pool._POOL = saved
        runner.cancel_all()
        runner.wait(30000)
        view.close()
    return worst, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="decodes per heartbeat measurement")
    parser.add_argument("--latency-reps", type=int, default=7, help="interleaved decodes per route for latency")
    parser.add_argument("--cache", default="/tmp/loupe-cache-decode/files")
    parser.add_argument("--write", action="store_true", help="write the section of docs/benchmarks.md")
    args = parser.parse_args()

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    QApplication.instance() or QApplication([])
    from core.imaging import dicom_io
    from core.imaging.decode_pool import DecodePool

    files = make_files(Path(args.cache))
    pool = DecodePool(workers=1)
    t0 = time.perf_counter()
    if not pool.wait_ready(120):
        raise SystemExit("the decode worker did not start")
    start_s = time.perf_counter() - t0
    load = os.getloadavg()

    idle_max, _ = heartbeat_during(lambda: time.sleep(0.5))
    rows = []
    for label, path in files.items():
        ref, _ = dicom_io.decode_frame(path)
        got, _ = pool.decode_frame(path)
        equal = ref.dtype == got.dtype and np.array_equal(ref, got)
        offloaded = dicom_io._transfer_syntax(dicom_io.read_dataset(path, header_only=True)[0]) in pool.syntaxes
        durs: dict[str, list[float]] = {"thread": [], "pool": []}

        def rep(fn, key):
            for _ in range(args.reps):
                t = time.perf_counter()
                fn(path)
                durs[key].append((time.perf_counter() - t) * 1000)

        gap_thread, _ = heartbeat_during(lambda: rep(dicom_io.decode_frame, "thread"))
        gap_pool, _ = heartbeat_during(lambda: rep(pool.decode_frame, "pool"))
        rows.append((label, offloaded, equal, statistics.median(durs["thread"]), gap_thread, gap_pool))
        print(f"{label:40s} offloaded={offloaded!s:5} equal={equal} decode {statistics.median(durs['thread']):7.1f} ms"
              f"  max gap thread {gap_thread:7.1f} ms  pool {gap_pool:7.1f} ms", flush=True)

    latency = []
    for label in ("RG3 JPEG-LS 64²", "RG3 JPEG 2000 64²", "RG3 JPEG-LS 2048²", "RG3 JPEG 2000 2048²"):
        path = files[label]
        t_in, t_pool = [], []
        for _ in range(args.latency_reps):  # interleaved, so load changes hit both routes alike
            t = time.perf_counter()
            dicom_io.decode_frame(path)
            t_in.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            pool.decode_frame(path)
            t_pool.append((time.perf_counter() - t) * 1000)
        a, b = statistics.median(t_in), statistics.median(t_pool)
        ratios = sorted(p / i for p, i in zip(t_pool, t_in))
        latency.append((label, a, b, b / a, b - a, ratios[0], ratios[-1]))
        print(f"latency {label:24s} in-process {a:7.1f} ms  worker {b:7.1f} ms  ratio {b / a:5.2f}  (+{b - a:.1f} ms)",
              flush=True)
    viewer = []
    for label in ("RG1 JPEG-LS near-lossless 1955×1841", "RG3 JPEG 2000 2048²", "RG2 JPEG Lossless 2140×1760"):
        before = viewer_first_display(files[label], None, args.reps)
        after = viewer_first_display(files[label], pool, args.reps)
        viewer.append((label, before, after))
        print(f"viewer {label:40s} stall {before[0]:6.0f} -> {after[0]:6.0f} ms; picture after "
              f"{before[1]:6.0f} -> {after[1]:6.0f} ms", flush=True)
    pool.shutdown()
    load_end = os.getloadavg()

    lines = [
        f"`python bench/decode_bench.py --write` · {machine_facts()} · load average {load[0]:.2f} at the start, "
        f"{load_end[0]:.2f} at the end · heartbeat = 2 ms QTimer on the main thread while a worker thread decodes "
        f"each file {args.reps}× · one spawn decode worker (ready {start_s:.1f} s after start, off the UI thread) · "
        f"idle heartbeat's longest gap {idle_max:.1f} ms.",
        "",
        "| file | decoded in a worker process | equal bit for bit | decode (in-process, median) | UI stall, worker "
        "thread (before) | UI stall, decode worker process (after) |",
        "|---|---|---|---|---|---|",
    ]
    for label, offloaded, equal, dur, g_thread, g_pool in rows:
        lines.append(f"| {label} | {'yes' if offloaded else 'no (in-process)'} | {'yes' if equal else '**NO**'} | "
                     f"{dur:.0f} ms | {g_thread:.0f} ms | {g_pool:.0f} ms |")
    lines += [
        "",
        f"Decode latency, the same files decoded in-process and through the worker, interleaved "
        f"({args.latency_reps}× each, medians; the ratio's range is over the paired repeats):",
        "",
        "| file | in-process | through the worker | ratio | added |",
        "|---|---|---|---|---|",
    ]
    for label, a, b, ratio, added, lo, hi in latency:
        lines.append(f"| {label} | {a:.1f} ms | {b:.1f} ms | {ratio:.2f} ({lo:.2f}–{hi:.2f}) | {added:+.1f} ms |")
    lines += [
        "",
        f"The real viewer (`ImageView.set_image` on a file not yet cached, until `image_loaded`: decode, render, "
        f"range and percentiles in the view's worker thread, then the paint; {args.reps} first displays each, "
        f"heartbeat as above):",
        "",
        "| file | UI stall before (decode in the view's thread) | UI stall after (decode worker process) | "
        "picture on screen before | after |",
        "|---|---|---|---|---|",
    ]
    for label, (g0, t0), (g1, t1) in viewer:
        lines.append(f"| {label} | {g0:.0f} ms | {g1:.0f} ms | {t0:.0f} ms | {t1:.0f} ms |")
    ratios = [t1 / t0 for _, (_, t0), (_, t1) in viewer]
    lines += [
        "",
        "The worker route costs the process hop (a pickled array back over a pipe, plus reading the File Meta to "
        "choose the route); in exchange the window no longer freezes for the decode. In the viewer the picture "
        f"came {min(ratios):.2f}–{max(ratios):.2f}× as late as before (medians of {args.reps}, on this loaded "
        "machine): where that is above 1, Loupe is slower to the picture and the window stays live meanwhile. "
        "Syntaxes whose decoders let the UI thread run (uncompressed, RLE) stay in-process.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(BENCH_MD, SECTION, text)


if __name__ == "__main__":
    main()
