"""``loupe explain``: a saliency map for one image (map .npy, overlay .png, JSON; contract in CLI.md)."""

from __future__ import annotations

import logging

import numpy as np

from app.cli.common import emit, info, open_workspace

logger = logging.getLogger(__name__)

METHOD_CHOICES = ("gradcam", "lime", "ig", "gradshap", "occlusion", "layercam")


def add_parsers(sub, common) -> None:
    """Register ``explain`` on the subparsers object ``sub``."""
    p = sub.add_parser("explain", parents=[common], help="explain the model's score for one image")
    p.add_argument("image", metavar="IMAGE", help="image id (from `loupe list`) or an imported file's path")
    p.add_argument("--method", choices=METHOD_CHOICES, default="gradcam")
    p.add_argument("--target", help="class or finding to explain (default: the predicted class)")
    p.add_argument("--version", help="model version (default: the active one)")
    p.add_argument("--out", metavar="MAP.npy", help="write the float32 [0, 1] map at the rendered image's size")
    p.add_argument("--png", metavar="OVERLAY.png", help="write the map over the rendered image")
    p.add_argument("--alpha", type=float, default=0.45, help="overlay opacity of the map (default 0.45)")
    p.add_argument("--faithfulness", action="store_true", help="also compute deletion / insertion AUC")
    p.add_argument("--sanity", action="store_true",
                   help="model-randomisation check: compare with the map of a randomised model")
    p.add_argument("--samples", type=int, help="LIME samples / GradientShap samples / IG steps")
    p.add_argument("--layer", help="Grad-CAM layer (dotted module name) instead of the architecture's")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    p.add_argument("--no-cache", action="store_true", help="recompute even when the map is cached")
    p.set_defaults(func=cmd_explain)


def _method_params(args) -> dict:
    params = {}
    if args.samples:
        key = {"lime": "n_samples", "gradshap": "n_samples", "ig": "n_steps"}.get(args.method)
        if key is None:
            raise ValueError(f"--samples does not apply to {args.method}")
        params[key] = args.samples
    if args.layer:
        if args.method != "gradcam":
            raise ValueError("--layer applies to gradcam only")
        params["layer"] = args.layer
    return params


def overlay(rendered: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 overlay of a [0, 1] map (matplotlib's ``jet``, opacity ``alpha`` × map) on a rendered image."""
    from matplotlib import colormaps

    base = rendered if rendered.ndim == 3 else np.repeat(rendered[..., None], 3, axis=2)
    base = base.astype(np.float32) / 255.0
    colour = colormaps["jet"](np.clip(heat, 0, 1))[..., :3].astype(np.float32)
    a = (alpha * np.clip(heat, 0, 1))[..., None]
    return (255 * np.clip(base * (1 - a) + colour * a, 0, 1)).round().astype(np.uint8)


def cmd_explain(args) -> int:
    import sys

    from PIL import Image

    from core.explain import explain_image
    from core.imaging import render

    try:
        params = _method_params(args)
    except ValueError as exc:
        print(f"loupe explain: {exc}", file=sys.stderr)
        return 2
    with open_workspace(args) as ws:
        e = explain_image(ws, args.image, args.method, args.target, version=args.version,
                          faithfulness=args.faithfulness, use_cache=not args.no_cache, device=args.device,
                          batch_size=args.batch_size, **params)
        sanity = None
        if args.sanity:
            from core.explain.sanity import model_randomisation
            from core.imaging import model_input
            from core.models.versions import load_version

            ref = ws.find_image(args.image)
            sanity = model_randomisation(load_version(ws, args.version), model_input(ref.path), args.method,
                                         e.target_index, explanation=e, device=args.device,
                                         batch_size=args.batch_size, **params)
        path = ws.find_image(args.image).path
    if args.out:
        np.save(args.out, e.map.astype(np.float32))
    if args.png:
        Image.fromarray(overlay(render(path), e.map, args.alpha)).save(args.png)
    doc = {"method": e.method, "target": e.target, "shape": list(e.shape), "seconds": round(e.seconds, 4),
           "cached": e.cached, "version": e.version, "image": e.image_id, "score": e.score, "params": e.params}
    if e.faithfulness:
        doc["faithfulness"] = e.faithfulness
    if sanity is not None:
        doc["sanity"] = {k: v for k, v in sanity.items() if k != "randomised_map"}
        if not sanity["passed"]:
            if sanity.get("spearman") is None:
                info("sanity check failed: the map is flat, so it cannot show what the model learned")
            else:
                info(f"sanity check failed: the map barely changes when the model is randomised "
                     f"(rank correlation {sanity['spearman']:.2f})")
    human = (f"{e.method} for {e.target} ({e.version}) on {e.image_id}: {e.shape[1]}×{e.shape[0]} map in "
             f"{e.seconds:.2f} s" + (" (cached)" if e.cached else ""))
    emit(args, doc, human)
    return 0
