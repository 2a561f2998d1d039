"""Contact sheet of every explanation method over real radiographs (docs/explanations_contact_sheet.png).

Usage: python bench/explain_sheet.py [OUT_PNG]
Model: EfficientNet-Lite0 with its offline ImageNet weights (backbone and classifier from the
efficientnet-lite0 weights package), 224 px; target = its predicted ImageNet class (these are
not radiograph findings: the sheet checks geometry, alignment and method behaviour, not diagnosis).
Colour mapping (matplotlib ``jet``) happens here, never in core.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.cli.explain import overlay  # noqa: E402
from bench.common import SHARED_DATA  # noqa: E402
from bench.explain_bench import _load_lite0_classifier, _loaded  # noqa: E402
from core.explain import METHOD_NAMES, explain  # noqa: E402
from core.imaging import model_input, render  # noqa: E402

logger = logging.getLogger(__name__)

FILES = ("NIH_DX_chest", "SIIM_CR_chest_positive_sample.dcm", "CR-MONO1-10-chest.dcm", "RG2_JPLL.dcm")
TILE, CAPTION = 260, 30


def _tile(rgb: np.ndarray) -> Image.Image:
    im = Image.fromarray(rgb).convert("RGB")
    im.thumbnail((TILE, TILE))
    canvas = Image.new("RGB", (TILE, TILE), (30, 30, 30))
    canvas.paste(im, ((TILE - im.width) // 2, (TILE - im.height) // 2))
    return canvas


def main(out: Path) -> Path:
    loaded = _loaded("efficientnet_lite0", "default", classes=1000)
    _load_lite0_classifier(loaded.net)
    folder = SHARED_DATA / "dicom"
    paths = [next(p for p in sorted(folder.iterdir()) if p.name.startswith(f)) for f in FILES]
    cols = 1 + len(METHOD_NAMES)
    sheet = Image.new("RGB", (cols * TILE, len(paths) * (TILE + CAPTION)), (40, 40, 40))
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default()
    for r, path in enumerate(paths):
        shown, arr = render(path), model_input(path)
        y0 = r * (TILE + CAPTION)
        sheet.paste(_tile(shown), (0, y0))
        draw.text((4, y0 + TILE + 4), f"{path.name[:30]}\n{shown.shape[1]}x{shown.shape[0]}", fill="white", font=font)
        target = None
        for c, method in enumerate(METHOD_NAMES, start=1):
            e = explain(loaded, arr, method, target, device="cpu", faithfulness=True)
            target = e.target_index
            assert e.map.shape == shown.shape[:2], (e.map.shape, shown.shape)
            sheet.paste(_tile(overlay(shown, e.map)), (c * TILE, y0))
            f = e.faithfulness
            draw.text((c * TILE + 4, y0 + TILE + 4),
                      f"{method} {e.seconds:.1f}s  class {e.target}\ndel {f['deletion_auc']:.2f} ins "
                      f"{f['insertion_auc']:.2f} {f['badge']}", fill="white", font=font)
            logger.warning("%s %s: %.1f s, %s", path.name, method, e.seconds, f)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    print(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "explanations_contact_sheet.png"))
