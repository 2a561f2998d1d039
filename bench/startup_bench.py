"""Cold start: process start → first window on screen, and → first prediction shown.

Compared in the same run with two bare references: a PySide6 QMainWindow that
only shows itself (the floor for a window) and a bare script that imports torch,
builds the same EfficientNet-Lite0 and runs one forward pass (the floor for a
first prediction). Each figure is the median of several fresh processes.
Writes the "Cold start" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_MD, machine_facts, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

LOUPE = r"""
import os, sys, time, json
t0 = float(os.environ["T0"])
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
app = QApplication([])
from app.main_window import MainWindow
from app.theme import apply_dark_theme
from core.workspace import Workspace
apply_dark_theme(app)
ws = Workspace.open(sys.argv[1])
win = MainWindow(ws, ask_reader=False)
win.show()
marks = {}
def first_paint():
    marks.setdefault("window", time.time() - t0)
QTimer.singleShot(0, first_paint)
image_id = None
def poll():
    global image_id
    if "window" not in marks or not win.rows:
        return
    if image_id is None:
        image_id = next(iter(win.rows))
        win.worklist.select(image_id)
        win.runner.submit("bench", __import__("core.models.service", fromlist=["x"]).predict_images,
                          ws, [image_id], device="cpu",
                          on_done=lambda r: (win.prediction.show_prediction(r[0][0], {}, r[0][0].version),
                                             marks.setdefault("prediction", time.time() - t0)))
    if "prediction" in marks:
        print(json.dumps(marks)); sys.stdout.flush(); app.quit()
timer = QTimer(); timer.timeout.connect(poll); timer.start(10)
app.exec()
"""

BARE_QT = r"""
import os, time, json
t0 = float(os.environ["T0"])
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMainWindow
app = QApplication([])
w = QMainWindow(); w.resize(1500, 920); w.show()
def done():
    print(json.dumps({"window": time.time() - t0})); app.quit()
QTimer.singleShot(0, done)
app.exec()
"""

BARE_TORCH = r"""
import os, sys, time, json
t0 = float(os.environ["T0"])
import numpy as np, torch
from PIL import Image
from core.models.architectures import build_model
from core.models.preprocess import InputSpec, to_tensor
net, _ = build_model("efficientnet_lite0", 2, pretrained="default")
net.eval()
img = np.asarray(Image.open(sys.argv[1]).convert("L"), dtype=np.float32) / 255.0
with torch.inference_mode():
    p = torch.softmax(net(to_tensor(img, InputSpec(size=128, mean=(0.5,)*3, std=(0.5,)*3))[None]), 1)
print(json.dumps({"prediction": time.time() - t0}))
"""


def run(code: str, *args: str) -> dict:
    env = {**os.environ, "T0": repr(time.time()), "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen")}
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if not lines:
        raise SystemExit(f"benchmark child failed: {out.stderr[-2000:]}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="loupe-startup-"))
    ws = work / "demo.sqlite"
    subprocess.run([sys.executable, "-m", "app.cli", "--workspace", str(ws), "demo", "--no-train"], cwd=ROOT,
                   check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "app.cli", "--workspace", str(ws), "model", "create", "--arch",
                    "efficientnet_lite0", "--classes", "normal,pneumonia", "--input-size", "128"], cwd=ROOT,
                   check=True, capture_output=True)
    png = next((ROOT / "resources" / "demo" / "pneumoniamnist" / "test").glob("*.png"))
    loupe = [run(LOUPE, str(ws)) for _ in range(args.repeats)]
    qt = [run(BARE_QT) for _ in range(args.repeats)]
    torch_ = [run(BARE_TORCH, str(png)) for _ in range(args.repeats)]
    shutil.rmtree(work, ignore_errors=True)
    med = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
    lw, lp, qw, tp = med(loupe, "window"), med(loupe, "prediction"), med(qt, "window"), med(torch_, "prediction")
    text = "\n".join([
        f"Run {time.strftime('%Y-%m-%d %H:%M')} on {machine_facts()}; median of {args.repeats} fresh processes, "
        f"page cache warm, Qt offscreen.",
        "",
        "| milestone | Loupe s | bare reference | reference s | ratio |",
        "|---|---:|---|---:|---:|",
        f"| first window shown (demo workspace, 404 images) | {lw:.2f} | empty PySide6 QMainWindow | {qw:.2f} | "
        f"{lw / qw:.2f}× |",
        f"| first prediction shown (EfficientNet-Lite0, 128 px) | {lp:.2f} | import torch + build + 1 forward, no UI "
        f"| {tp:.2f} | {lp / tp:.2f}× |",
        "",
        "The window appears before torch is imported (the model stack loads in a background thread); the first "
        "prediction pays for that import once.",
    ])
    print(text)
    if not args.no_write:
        write_section(BENCH_MD, "Cold start", text)


if __name__ == "__main__":
    main()
