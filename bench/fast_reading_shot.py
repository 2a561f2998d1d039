"""Screenshots of the reading and explanation panels in fast reading mode (docs/screenshots/fast_reading*.png).

Run under a display: ``xvfb-run -a -s "-screen 0 1600x1000x24" env QT_QPA_PLATFORM=xcb
.venv/bin/python bench/fast_reading_shot.py [--workspace PREPARED_DEMO.sqlite]``. It prepares (or copies) the demo
workspace, makes a fast reading version of the active model through the quality gate — Loupe's INT8 recipe first;
when that copy fails the checks, an INT8 copy with every convolution kept in float (which reads as its teacher),
and the script says which it used — turns Model → Fast reading on, opens a radiograph and grabs the window.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "screenshots"


def make_fast_version(ws) -> str:
    """A gated INT8 copy of the active model; returns a sentence saying which recipe passed."""
    import torch

    from core.models.fast_mode import gated_fast_version
    from core.models.fast_reading import GateFailed, quantize_version
    from core.models.versions import load_version

    existing = gated_fast_version(ws)
    if existing is not None:
        return f"reusing {existing.version}"
    try:
        version, _ = quantize_version(ws, actor="screenshots")
        return f"{version.version}: Loupe's INT8 recipe passed the checks"
    except GateFailed as exc:
        print(f"the INT8 recipe failed the gate ({exc}); keeping every convolution in float instead", flush=True)
    convs = [n for n, m in load_version(ws).net.backbone.named_modules() if isinstance(m, torch.nn.Conv2d)]
    version, _ = quantize_version(ws, keep_float=convs, actor="screenshots")
    return f"{version.version}: INT8 with every convolution kept in float passed the checks"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workspace", help="an existing demo workspace to copy (default: prepare one)")
    args = parser.parse_args()
    from bench.screenshots import demo_window

    app, ws, win, wait, shot = demo_window(args.workspace, "loupe-fast-shots-",
                                           before_window=lambda w: print(make_fast_version(w), flush=True))

    OUT.mkdir(parents=True, exist_ok=True)
    wait(lambda: win.rows and win.device.text() != "device: …" and win.fast_reading_action.isEnabled())
    if not win.fast_reading_action.isChecked():  # a copied workspace may have it on already
        win.fast_reading_action.trigger()
    fast = lambda: (win.loaded_model or {}).get("reading", {}).get("fast")  # noqa: E731
    wait(lambda: fast() and not win.session.busy()
         and all(r.prediction is None or r.prediction.version == fast() for r in win.rows.values()), 900)
    chest = next((i for i, r in win.rows.items() if "NIH_DX" in r.ref.path), next(iter(win.rows)))
    win.worklist.select(chest)
    wait(lambda: win.viewer.current_path is not None and not win.session.busy())
    win.side.setCurrentIndex(0)
    shot("fast_reading.png")
    win.side.setCurrentWidget(win.overlay)
    win.overlay.method.setCurrentIndex(1)  # Grad-CAM, by the full model
    wait(lambda: win.overlay.last is not None and win.overlay.last.method == "gradcam")
    wait(lambda: not win.session.busy())
    shot("fast_reading_explain.png")
    print("reading panel:", win.prediction.reading_note.text(), "|", win.overlay.state.text(), flush=True)
    win.close()
    ws.close()


if __name__ == "__main__":
    main()
