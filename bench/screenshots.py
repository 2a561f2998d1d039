"""Screenshots of the real window for docs/screenshots and the README.

Run under a display, e.g. ``xvfb-run -a -s "-screen 0 1600x1000x24" env QT_QPA_PLATFORM=xcb
.venv/bin/python bench/screenshots.py``. It prepares a copy of the demo workspace, drives the
window the way a reader would (open a radiograph, Grad-CAM, LIME side by side, queue mode,
a background training run, the metrics on the test split) and grabs the screen after each step.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "screenshots"


def demo_window(workspace_copy, prefix: str, before_window=None):
    """A prepared copy of the demo workspace in the real window, 1560 × 940, and ``(app, ws, win, wait, shot)``.

    ``workspace_copy``: an existing demo workspace to copy (None: prepare one). ``before_window(ws)`` runs on the
    workspace before the window opens. ``wait(cond, timeout)`` spins the event loop until ``cond()``;
    ``shot(name)`` grabs the window into docs/screenshots/NAME.
    """
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow
    from app.settings import Settings
    from app.theme import apply_dark_theme
    from core.demo import prepare_demo
    from core.workspace import Workspace

    work = Path(tempfile.mkdtemp(prefix=prefix))
    ws_path = work / "demo.sqlite"
    if workspace_copy:
        src = Path(workspace_copy)
        for f in src.parent.glob(src.stem + "*"):
            (shutil.copytree if f.is_dir() else shutil.copy2)(f, work / f.name.replace(src.stem, "demo", 1))
    app = QApplication.instance() or QApplication(sys.argv[:1])
    apply_dark_theme(app)
    ws = Workspace.open(ws_path)
    prepare_demo(ws, ROOT / "resources" / "demo", progress=lambda p: print(p.message, flush=True))
    if before_window is not None:
        before_window(ws)
    settings = Settings(path=str(work / "settings.ini"))
    settings.annotator = "demo reader"
    win = MainWindow(ws, settings)
    win.resize(1560, 940)
    win.show()

    def wait(cond, timeout=300.0, quiet=False):
        end = time.monotonic() + timeout
        while not cond() and time.monotonic() < end:
            loop = QEventLoop()
            QTimer.singleShot(50, loop.quit)
            loop.exec()
        if not cond() and not quiet:
            print("warning: timed out waiting", flush=True)

    def shot(name):
        wait(lambda: False, 0.8, quiet=True)
        pixmap = app.primaryScreen().grabWindow(win.winId())
        if pixmap.isNull() or app.platformName() == "offscreen":
            pixmap = win.grab()
        OUT.mkdir(parents=True, exist_ok=True)
        pixmap.save(str(OUT / name))
        print("wrote", OUT / name, flush=True)

    return app, ws, win, wait, shot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workspace", help="an existing demo workspace to copy (default: prepare one)")
    args = parser.parse_args()
    app, ws, win, wait, shot = demo_window(args.workspace, "loupe-shots-")

    def settle(seconds=1.0):
        wait(lambda: False, seconds, quiet=True)

    OUT.mkdir(parents=True, exist_ok=True)
    wait(lambda: win.rows and win.device.text() != "device: …")
    chest = next(i for i, r in win.rows.items() if "NIH_DX" in r.ref.path)
    win.worklist.select(chest)
    wait(lambda: win.viewer.current_path is not None and not win.session.busy())
    shot("worklist.png")

    win.side.setCurrentWidget(win.overlay)
    win.overlay.method.setCurrentIndex(1)  # Grad-CAM
    wait(lambda: win.overlay.last is not None and win.overlay.last.method == "gradcam")
    win.overlay.check_faithfulness()
    wait(lambda: not win.session.busy())
    shot("gradcam.png")

    win.overlay.side_by_side.setChecked(True)
    win.overlay.colormap.setCurrentText("inferno")
    win.overlay.method.setCurrentIndex(2)  # LIME
    wait(lambda: win.overlay.last is not None and win.overlay.last.method == "lime", 900)
    shot("lime.png")
    win.overlay.side_by_side.setChecked(False)
    win.overlay.method.setCurrentIndex(0)

    win.toggle_queue_mode()
    wait(lambda: win.labels.image_id is not None and not win.session.busy())
    win.side.setCurrentWidget(win.queue)
    shot("queue.png")
    win.toggle_queue_mode()

    win.training.mode.setCurrentText("frozen")
    win.training.epochs_spin.setValue(25)
    win.train_now()
    wait(lambda: not win.training_controller.running, 900)
    wait(lambda: not win.session.busy())
    shot("training.png")

    win.train_dock.hide()
    win.metrics_dock.show()
    win.metrics_dock.raise_()
    win.metrics.evaluate_active("test")
    wait(lambda: win.metrics.evaluation is not None and not win.session.busy(), 600)
    shot("metrics.png")
    win.close()
    ws.close()


if __name__ == "__main__":
    main()
