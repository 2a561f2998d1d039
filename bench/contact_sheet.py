"""Render every DICOM file of a folder into one captioned contact sheet PNG.

Usage: python bench/contact_sheet.py [DICOM_FOLDER] [OUT_PNG]
(defaults: ../shared/data/dicom and docs/dicom_contact_sheet.png).
Uses core.imaging.render, i.e. exactly what the viewer shows.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.imaging import read_image_header, render  # noqa: E402

logger = logging.getLogger(__name__)

TILE = 320
CAPTION = 34
COLUMNS = 5


def contact_sheet(folder: Path, out: Path) -> Path:
    """Render each ``*.dcm`` in ``folder`` (sorted) as a captioned tile; write and return ``out``."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    rows = (len(files) + COLUMNS - 1) // COLUMNS
    sheet = Image.new("RGB", (COLUMNS * TILE, rows * (TILE + CAPTION)), (40, 40, 40))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, path in enumerate(files):
        x0, y0 = (i % COLUMNS) * TILE, (i // COLUMNS) * (TILE + CAPTION)
        try:
            rec = read_image_header(path)
            img = Image.fromarray(np.asarray(render(path))).convert("RGB")
            img.thumbnail((TILE - 8, TILE - 8), Image.Resampling.LANCZOS)
            sheet.paste(img, (x0 + (TILE - img.width) // 2, y0 + (TILE - img.height) // 2))
            info = f"{rec.modality} {rec.photometric} {rec.columns}x{rec.rows}"
        except Exception as exc:  # noqa: BLE001 - show the failure on the sheet
            info = f"ERROR: {exc}"[:60]
        name = path.name if len(path.name) <= 44 else path.name[:41] + "..."
        draw.text((x0 + 4, y0 + TILE + 2), name, fill=(255, 255, 255), font=font)
        draw.text((x0 + 4, y0 + TILE + 17), info, fill=(180, 180, 180), font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "dicom"
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "docs" / "dicom_contact_sheet.png"
    print(contact_sheet(folder, out))
