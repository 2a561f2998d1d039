"""Contact sheet of the HAM10000 test lesions where Grad-CAM misses the lesion worst.

Writes docs/explanations_lesion_misses.jpg by default.

Usage: python bench/explain_lesion_sheet.py [RECORDS_JSON] [OUT_IMAGE] [--n 12] [--layers DOTTED,NAMES] [--scale 2]
Reads the per-image records ``bench/explain_real.py`` wrote (``$LOUPE_BENCH_CACHE/records.json``), takes the
correctly classified test lesions whose Loupe Grad-CAM maximum lies outside the lesion, the lowest energy
ratio first, and shows for each: the photograph with the lesion outline (green), the Grad-CAM and the
LayerCAM overlays of the same model, and the probability with only the lesion / only the skin visible
(skin-colour fill, :func:`bench.explain_real.lesion_dependence`). For looking at shortcuts (dark corners,
rulers, hair, gel bubbles), not for scoring.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bench.explain_real as er  # noqa: E402
from app.cli.explain import overlay  # noqa: E402

logger = logging.getLogger(__name__)

SCALE, CAPTION = 2, 28


def outline(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``rgb`` with the mask's boundary drawn in green."""
    edge = mask & er.dilate(~mask, 1)
    out = rgb.copy()
    out[edge] = (0, 255, 0)
    return out


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="?", default=str(er.CACHE / "records.json"))
    parser.add_argument("out", nargs="?", default=str(ROOT / "docs" / "explanations_lesion_misses.jpg"))
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--layers", default=None, help="LayerCAM layers (default: Loupe's)")
    parser.add_argument("--scale", type=int, default=SCALE, help="pixels per photograph pixel")
    args = parser.parse_args(argv)
    import torch

    from core.explain import explain
    from core.explain.faithfulness import to_model_space
    from core.imaging import model_input
    from core.models.preprocess import to_tensor_with_geometry

    torch.set_num_threads(1)
    records = json.loads(Path(args.records).read_text())
    misses = sorted((r for r in records if r["method"] == "Loupe gradcam" and r["correct"] and r["pointing"] < 0.5),
                    key=lambda r: r["energy"])[:args.n]
    rows = er.read_metadata()
    train_rows, _ = er.lesion_split(rows, er.RECIPE["test_per_class"], er.RECIPE["n_nv_train"], er.RECIPE["seed"])
    loaded, _ = er.trained_model(train_rows)
    masks = er.lesion_masks()
    h, w = 150 * args.scale, 200 * args.scale
    cols = 3
    per_row = 2  # two lesions side by side
    n_rows = (len(misses) + per_row - 1) // per_row
    sheet = Image.new("RGB", (per_row * cols * w, n_rows * (h + CAPTION)), (40, 40, 40))
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default()
    for k, r in enumerate(misses):
        arr = model_input(er.DATA / "images" / f"{r['image']}.jpg")
        mask = masks[r["image"]]
        rgb = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
        pred = er.CLASSES.index(r["dx"])
        cams = [explain(loaded, arr, "gradcam", pred, device="cpu").map,
                explain(loaded, arr, "layercam", pred, device="cpu", layers=args.layers).map]
        x, geo = to_tensor_with_geometry(arr, loaded.spec)
        d = er.lesion_dependence(loaded.net, x, to_model_space(mask.astype(np.float32), geo),
                                 to_model_space(np.ones(mask.shape, np.float32), geo), pred)
        big = lambda a: np.kron(a, np.ones((args.scale, args.scale, 1), a.dtype)) if a.ndim == 3 else a  # noqa: E731
        m_big = np.kron(mask, np.ones((args.scale, args.scale), bool))
        tiles = [outline(big(t), m_big) for t in (rgb, overlay(rgb, cams[0]), overlay(rgb, cams[1]))]
        x0, y0 = (k % per_row) * cols * w, (k // per_row) * (h + CAPTION)
        for c, t in enumerate(tiles):
            sheet.paste(Image.fromarray(t).resize((w, h), Image.NEAREST), (x0 + c * w, y0))
        draw.text((x0 + 4, y0 + h + 2),
                  f"{r['image']} {r['dx']} p={r['prob']:.2f}  Grad-CAM E={r['energy']:.2f} | "
                  f"LayerCAM {args.layers or ''}\n"
                  f"p lesion only {d['p_lesion_only_skin']:.2f}, skin only {d['p_skin_only_skin']:.2f} "
                  f"(lesion share {r['lesion_share']:.2f})", fill="white", font=font)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, **({"quality": 85} if out.suffix.lower() in (".jpg", ".jpeg") else {"optimize": True}))
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    print(main())
