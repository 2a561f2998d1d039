"""Screenshots of the reading panel with a severity grade and of the metrics panel with the audit row.

Run: ``QT_QPA_PLATFORM=offscreen .venv/bin/python bench/reader_screenshots.py`` → docs/screenshots/
``reading_severity.png`` and ``metrics_audit.png``. A synthetic workspace (32 px images, an untrained
ResNet-18 with a 4-level severity head): the figures are real outputs of that model, not a trained one.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main() -> int:
    import numpy as np
    import torch
    from PIL import Image
    from PySide6.QtWidgets import QApplication

    from app.theme import apply_dark_theme
    from app.widgets.metrics_panel import MetricsPanel
    from app.widgets.prediction_panel import PredictionPanel
    from app.workers import Runner
    from core.importer import import_paths
    from core.models.service import predict_images
    from core.models.versions import create_version
    from core.workspace import Workspace

    out = ROOT / "docs" / "screenshots"
    app = QApplication.instance() or QApplication([])
    try:
        apply_dark_theme(app)
    except Exception:  # the theme is cosmetic
        pass
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        folder = tmp / "images"
        folder.mkdir()
        rng = np.random.default_rng(0)
        rows = ["path,label,split,severity"]
        for i in range(60):
            pixels = rng.integers(0, 60, (32, 32), dtype=np.uint8)
            if i % 2:
                pixels[8:24, 8:24] = 150 + 25 * (i % 4)
            Image.fromarray(pixels).save(folder / f"img{i:02d}.png")
            rows.append(f"img{i:02d}.png,{'effusion' if i % 2 else 'normal'},{'test' if i < 40 else ''},{i % 4}")
        (folder / "labels.csv").write_text("\n".join(rows) + "\n")
        torch.manual_seed(0)
        path = tmp / "ws.sqlite"
        with Workspace.open(path) as ws:
            import_paths(ws, [folder], labels_csv=folder / "labels.csv")
            ws.set_setting("findings", {"severity": ["none", "mild", "moderate", "severe"]})
            create_version(ws, "resnet18", ["normal", "effusion"], pretrained="none", input_size=32,
                           severity_levels=4)
            preds, _ = predict_images(ws, device="cpu")
            pool = [r.id for r in ws.images() if r.split is None]
            ws.record_audit_picks("v1", "effusion", [(i, 0.02) for i in pool])
            ws.add_label(pool[3], "effusion", "reader", flag_wrong=True)
            shown = next(p for p in preds if p.severity is not None)
        panel = PredictionPanel()
        panel.resize(380, 260)
        panel.show_prediction(shown, {"effusion": 0.45}, "v1", grade_names=["none", "mild", "moderate", "severe"])
        panel.show()
        from PySide6.QtTest import QTest

        QTest.qWait(200)
        panel.grab().save(str(out / "reading_severity.png"))
        runner = Runner()
        metrics = MetricsPanel(runner, path)
        metrics.resize(1200, 1250)
        metrics.show()
        done = []
        metrics.evaluation_changed.connect(lambda _e: done.append(1))
        metrics.evaluate_active("test")
        from PySide6.QtTest import QTest

        while not done or metrics.ci_pending:
            QTest.qWait(200)
        QTest.qWait(200)
        metrics.grab().save(str(out / "metrics_audit.png"))
        runner.cancel_all()
        runner.wait(30000)
    print(f"wrote {out / 'reading_severity.png'} and {out / 'metrics_audit.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
