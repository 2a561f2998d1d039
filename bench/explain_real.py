"""Explanations on real lesions: do the maps point at the lesion on HAM10000 photographs?

Usage: python bench/explain_real.py [--n-test 200] [--n-val 60] [--n-val-costly 20] [--steps 8] [--no-write]

1. A Loupe model is trained with Loupe's own API (``loupe import --labels`` with the lesion id as the group,
   ``loupe model create``, then ``core.models.training.train`` — the engine of ``loupe train`` — in this
   process, because the CLI's niced training child starves on a shared machine) on a lesion-grouped split of
   ``../shared/data/ham10000_dev``: melanoma vs naevus, EfficientNet-Lite0 with its offline ImageNet weights
   at 224 px, ``gradual`` mode (the last backbone stages unfrozen one per epoch), Loupe's photograph
   augmentation, class-balanced batches. Lesions of the validation and test sets never appear in training.
   The trained workspace is cached under ``$LOUPE_BENCH_CACHE`` (keyed by the recipe).
2. The explanation settings (Grad-CAM layer, LIME samples, IG steps, Gradient SHAP samples, occlusion
   window; :data:`CANDIDATES`) are chosen on validation lesions (one photograph each), by how close they
   come to the targets on the correctly classified ones (:func:`target_score`); cached per model version.
3. On the held-out test photographs (one per lesion), each method — Loupe's Grad-CAM, LIME, Integrated
   Gradients, Gradient SHAP and Occlusion, and beside them pytorch-grad-cam's ``GradCAM`` (same layer) and
   the ``lime`` package's ``LimeImageExplainer`` (same number of samples) on the same network, input and
   images — is scored against the HAM10000 lesion mask (``lesion_masks.npz``):

   - energy ratio: share of the map's (non-negative) energy inside the lesion ÷ the lesion's share of the
     image area (1 = no better than uniform; only the photograph, never the model's padding, counts);
   - pointing game: the map's maximum lies inside the lesion (dilated by 3 % of the image side, the usual
     tolerance of Zhang et al. 2018 scaled to 200 × 150);
   - deletion / insertion AUC (blurred reference, the same code for every map);
   - seconds per image, every method on 1 CPU thread.

   Targets (issue 15): on correctly classified lesions every method's energy ratio ≥ 1.5 and pointing ≥
   0.8; Loupe's Grad-CAM ≥ pytorch-grad-cam's on both. Per-image paired differences Loupe − reference are
   reported with 95 % bootstrap intervals. Loupe's LayerCAM runs beside pytorch-grad-cam's ``LayerCAM`` on
   the same layers.
4. Two maps that ignore the model frame the scores: a centred Gaussian (:func:`centre_prior`) and the lesion
   mask itself (the ceiling). Scores are also split by the class predicted.
5. Where the model's evidence lies (:func:`lesion_dependence`): its probability with only the lesion, or only
   the skin around it, visible (the other region blurred as the deletion metric does, or filled with the
   skin's mean colour), so a reader can judge whether the targets are reachable by a faithful map.
Writes the "Explanations on real lesions (HAM10000)" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import BENCH_MD, SHARED_DATA, machine_facts, now_stamp, package_version, write_section  # noqa: E402

logger = logging.getLogger(__name__)

TITLE = "Explanations on real lesions (HAM10000)"
DATA = SHARED_DATA / "ham10000_dev"
CACHE = Path(os.environ.get("LOUPE_BENCH_CACHE", "/tmp/loupe-cache-explain"))
CLASSES = ("mel", "nv")
RECIPE = {"arch": "efficientnet_lite0", "size": 224, "mode": "gradual", "epochs": 3, "lr": "1e-3",
          "loss": "ce", "sampler": "balanced", "augment": 1.0, "n_nv_train": 900, "test_per_class": 120,
          "val_per_class": 30, "seed": 0, "threads": 2}
LOUPE = [sys.executable, "-m", "app.cli"]


# --- data and split ------------------------------------------------------------------------------

def read_metadata() -> list[dict]:
    """HAM10000 dev metadata rows (lesion_id, image_id, dx, …) for the two classes used here."""
    with open(DATA / "metadata.csv", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["dx"] in CLASSES]


def split_lesions(rows: list[dict], test_per_class: int, val_per_class: int, n_nv_train: int,
                  seed: int) -> tuple[list[dict], list[dict], list[dict]]:
    """(training rows, validation rows, test rows) with every lesion on one side only.

    Test: ``test_per_class`` lesions of each class, one photograph each (the first by image id).
    Validation (where the explanation settings are chosen): the next ``val_per_class`` lesions of each
    class, one photograph each; they are not trained on either.
    Training: every photograph of the remaining melanoma lesions and ``n_nv_train`` naevus
    photographs from the remaining naevus lesions (a subsample, so training fits the time budget).
    """
    rng = np.random.default_rng(seed)
    by_lesion: dict[str, list[dict]] = {}
    for r in rows:
        by_lesion.setdefault(r["lesion_id"], []).append(r)
    train, val, test = [], [], []
    for cls in CLASSES:
        lesions = sorted(lid for lid, rs in by_lesion.items() if rs[0]["dx"] == cls)
        rng.shuffle(lesions)
        for lid in lesions[:test_per_class]:
            test.append(sorted(by_lesion[lid], key=lambda r: r["image_id"])[0])
        for lid in lesions[test_per_class:test_per_class + val_per_class]:
            val.append(sorted(by_lesion[lid], key=lambda r: r["image_id"])[0])
        rest = [r for lid in lesions[test_per_class + val_per_class:] for r in by_lesion[lid]]
        if cls == "nv" and len(rest) > n_nv_train:
            keep = rng.choice(len(rest), n_nv_train, replace=False)
            rest = [rest[i] for i in sorted(keep)]
        train += rest
    return train, val, test


def lesion_split(rows: list[dict], test_per_class: int, n_nv_train: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(training rows, test rows) of :func:`split_lesions` with the recipe's validation lesions held out."""
    train, _, test = split_lesions(rows, test_per_class, RECIPE["val_per_class"], n_nv_train, seed)
    return train, test


def interleave(test_rows: list[dict]) -> list[dict]:
    """Test rows alternating melanoma / naevus, so any prefix is balanced."""
    mel = [r for r in test_rows if r["dx"] == "mel"]
    nv = [r for r in test_rows if r["dx"] == "nv"]
    return [r for pair in zip(mel, nv) for r in pair]


def lesion_masks() -> dict[str, np.ndarray]:
    """image_id → (150, 200) boolean lesion mask."""
    with np.load(DATA / "lesion_masks.npz") as z:
        ids, packed, shape = z["image_ids"], z["masks"], tuple(z["shape"])
    masks = np.unpackbits(packed, axis=-1)[..., :shape[1]].astype(bool)
    return {str(i): m for i, m in zip(ids, masks)}


# --- training through Loupe's own API ------------------------------------------------------------

def loupe(ws: Path, *args: str, threads: int = 1) -> dict:
    """Run one ``loupe --json`` command (``threads`` torch threads) and return its JSON document."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": str(ROOT), "QT_QPA_PLATFORM": "offscreen"}
    result = subprocess.run([*LOUPE, "--workspace", str(ws), *args, "--json"], cwd=ROOT, capture_output=True,
                            text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"loupe {' '.join(args)} failed: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout)


def trained_workspace(train_rows: list[dict]) -> tuple[Path, dict]:
    """The workspace holding the trained model (cached by recipe and training set); (path, training report)."""
    key = hashlib.sha256(json.dumps([RECIPE, [r["image_id"] for r in train_rows]]).encode()).hexdigest()[:12]
    folder = CACHE / f"ham-{key}"
    ws, done = folder / "workspace.sqlite", folder / "trained.json"
    if done.exists():
        return ws, json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    prepared = folder / "imported.json"
    t0 = time.monotonic()
    if not prepared.exists():
        for old in folder.glob("workspace.sqlite*"):
            old.unlink()
        labels = folder / "labels.csv"
        with open(labels, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["path", "label", "group"])
            w.writeheader()
            for r in train_rows:
                w.writerow({"path": str(DATA / "images" / f"{r['image_id']}.jpg"), "label": r["dx"],
                            "group": r["lesion_id"]})
        files = [str(DATA / "images" / f"{r['image_id']}.jpg") for r in train_rows]
        imported = loupe(ws, "import", *files, "--labels", str(labels))
        loupe(ws, "model", "create", "--arch", RECIPE["arch"], "--classes", ",".join(CLASSES),
              "--input-size", str(RECIPE["size"]))
        prepared.write_text(json.dumps({"imported": imported["imported"], "import_s": time.monotonic() - t0}))
    info = json.loads(prepared.read_text())
    # Loupe's core training API, in this process (the CLI's training child runs at a lower priority,
    # which on a shared, busy machine makes it many times slower).
    import torch

    from core.models.training import TrainConfig, train
    from core.workspace import Workspace

    torch.set_num_threads(RECIPE["threads"])
    t1 = time.monotonic()
    workspace = Workspace.open(ws)

    def progress(event: dict) -> None:
        if event.get("event") in ("start", "epoch", "early_stop", "evaluate") or (
                event.get("event") == "step" and event.get("step", 0) % 20 == 1):
            print(json.dumps({k: v for k, v in event.items() if k != "config"}, default=str)[:300], flush=True)

    try:
        trained = train(workspace, TrainConfig(epochs=RECIPE["epochs"], mode=RECIPE["mode"], lr=float(RECIPE["lr"]),
                                               loss=RECIPE["loss"], sampler=RECIPE["sampler"], device="cpu",
                                               augment=RECIPE["augment"], workers=1, seed=RECIPE["seed"]),
                        emit=progress)
    finally:
        workspace.close()
    report = {**info, "train_s": time.monotonic() - t1, "threads": RECIPE["threads"], "version": trained["version"],
              "promoted": trained["promoted"], "reason": trained.get("reason"),
              "metrics": trained.get("metrics", {})}
    done.write_text(json.dumps(report, default=str))
    return ws, report


# --- scoring a map against the lesion mask ----------------------------------------------------------

def energy_ratio(image_map: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's non-negative energy inside the lesion ÷ the lesion's share of the image (nan if no energy)."""
    e = np.maximum(np.asarray(image_map, dtype=np.float64), 0.0)
    total = e.sum()
    if total <= 0 or not mask.any():
        return float("nan")
    return float((e[mask].sum() / total) / mask.mean())


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a square of side 2·radius + 1 (max-pooling)."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.max_pool2d(t, 2 * radius + 1, stride=1, padding=radius)[0, 0].numpy() > 0


def pointing_hit(image_map: np.ndarray, mask_tol: np.ndarray) -> float:
    """1 when the map's maximum lies in the (tolerance-dilated) lesion; with tied maxima (LIME's
    piecewise-constant maps) the share of the tied pixels inside; nan for an all-zero map."""
    m = np.asarray(image_map)
    top = m.max()
    if top <= 0:
        return float("nan")
    at_max = m >= top - 1e-6 * abs(top)
    return float(mask_tol[at_max].mean())


# --- the methods ----------------------------------------------------------------------------------

class References:
    """pytorch-grad-cam's GradCAM and the lime package, on a copy of the same network."""

    def __init__(self, loaded, layer: Optional[str] = None, layercam_layers: Optional[list[str]] = None) -> None:
        """``layer``: the dotted Grad-CAM layer (default: the one Loupe's Grad-CAM uses, ``target_layer_name``);
        ``layercam_layers``: the layers of pytorch-grad-cam's ``LayerCAM`` (none: no LayerCAM)."""
        import copy

        import torch
        from pytorch_grad_cam import GradCAM, LayerCAM

        self.loaded = loaded
        self.net = copy.deepcopy(loaded.net).eval()
        self.layer_name = layer or loaded.net.target_layer_name
        layer = self.net.get_submodule(self.layer_name)
        self.cam = GradCAM(model=self.net, target_layers=[layer])
        self.layer_cam = (LayerCAM(model=self.net, target_layers=[self.net.get_submodule(n) for n in layercam_layers])
                          if layercam_layers else None)
        self.mean = torch.tensor(loaded.spec.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(loaded.spec.std).view(1, 3, 1, 1)

    def gradcam(self, x, target: int) -> np.ndarray:
        """(S, S) model-space map."""
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        return self.cam(input_tensor=x[None], targets=[ClassifierOutputTarget(target)])[0]

    def layercam(self, x, target: int) -> np.ndarray:
        """(S, S) model-space map of pytorch-grad-cam's ``LayerCAM`` (its fusion of the layers)."""
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        return self.layer_cam(input_tensor=x[None], targets=[ClassifierOutputTarget(target)])[0]

    def lime(self, x, target: int, n_samples: int, seed: int, segmentation_fn=None) -> np.ndarray:
        """(S, S) model-space map: each segment's weight (lime's defaults: quickshift segments, each hidden
        segment filled with its mean colour, cosine kernel width 0.25, ridge)."""
        import torch
        from lime import lime_image

        unit = (x[None] * self.std + self.mean).clamp(0, 1)[0].permute(1, 2, 0).numpy().astype(np.float64)

        def classify(batch):
            t = (torch.from_numpy(np.asarray(batch, dtype=np.float32)).permute(0, 3, 1, 2) - self.mean) / self.std
            with torch.inference_mode():
                return torch.softmax(self.net(t), 1).numpy()

        kw = {"segmentation_fn": segmentation_fn} if segmentation_fn is not None else {}
        exp = lime_image.LimeImageExplainer(random_state=seed).explain_instance(
            unit, classify, labels=(target,), top_labels=None, hide_color=None, num_samples=n_samples,
            batch_size=16, random_seed=seed, **kw)
        weights = dict(exp.local_exp[target])
        lut = np.array([weights.get(i, 0.0) for i in range(int(exp.segments.max()) + 1)], dtype=np.float32)
        return lut[exp.segments]


#: Explanation settings tried on the validation lesions (``--choose``); the best by :func:`target_score`
#: is used on the test lesions. Grad-CAM layers of EfficientNet-Lite0 at 224 px: features.3 (28 × 28),
#: features.4 / .5 (14 × 14), features.6 / .7 / .8 (7 × 7; .8 is Loupe's default, ``target_layer_name``).
CANDIDATES = {
    "gradcam": [{"layer": f"backbone.features.{i}"} for i in (3, 4, 5, 6, 7, 8)],
    "lime": [{"n_samples": 32}, {"n_samples": 64}],
    "ig": [{"n_steps": 8}, {"n_steps": 16}],
    "gradshap": [{"n_samples": 8}, {"n_samples": 16}, {"n_samples": 16, "smooth": 14.0}],
    "occlusion": [{"window": 56, "stride": 28}, {"window": 32, "stride": 32}],
    # LayerCAM (core.explain.layercam): its default (the Grad-CAM layer and the three stages before it,
    # features.5–8), one finer layer alone, and the fusion of the three 7 × 7 layers.
    "layercam": [{}, {"layers": "backbone.features.4"}, {"layers": "backbone.features.5"},
                 {"layers": "backbone.features.6,backbone.features.7,backbone.features.8"}],
}
DEFAULT_SETTINGS = {"gradcam": {}, "lime": {"n_samples": 64}, "ig": {"n_steps": 16}, "gradshap": {"n_samples": 16},
                    "occlusion": {"window": 56, "stride": 28}, "layercam": {}}
#: Loupe's methods in the order they run (and appear in the tables).
METHODS = ("gradcam", "layercam", "lime", "ig", "gradshap", "occlusion")
#: The centre prior's Gaussian sigma as a fraction of the photograph's shorter side (fixed, not tuned).
PRIOR_SIGMA = 0.25


def method_params(settings: Optional[dict] = None, full: bool = True) -> dict:
    """Loupe's methods and their parameters in this benchmark (defaults except where named)."""
    settings = {**DEFAULT_SETTINGS, **(settings or {})}
    if not full:
        return {k: dict(settings[k]) for k in ("gradcam", "layercam")}
    return {k: dict(settings[k]) for k in METHODS}


def centre_prior(shape: tuple[int, int], sigma: float = PRIOR_SIGMA) -> np.ndarray:
    """A map that ignores the model: a Gaussian centred on the photograph, sigma = ``sigma`` × its shorter side."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    s = sigma * min(h, w)
    return np.exp(-(((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2) / (2 * s * s))).astype(np.float32)


def lesion_dependence(net, x, mask_model, photo_model, target: int) -> dict:
    """How much the model's probability for ``target`` rests on the lesion and on the skin around it.

    ``x``: (C, S, S) model input; ``mask_model`` / ``photo_model``: (S, S) lesion mask and photograph area in
    model space (the padding is neither and is never changed). Each region is hidden in two ways: by the
    blurred image the deletion / insertion metric uses (``blur``: sigma S/4 — a hidden lesion stays a soft
    darker smudge) and by the mean colour of the skin around the lesion (``skin``: the lesion is gone).
    Returns the probabilities ``p_full``, ``p_lesion_only_{blur,skin}`` (the skin around it hidden),
    ``p_skin_only_{blur,skin}`` (the lesion hidden) and ``p_none_blur`` (the whole photograph blurred).
    """
    import torch

    from core.explain.base import gaussian_blur
    from core.explain.faithfulness import BLUR_FRACTION

    X = x[None]
    m = torch.as_tensor(mask_model, dtype=X.dtype).clamp(0, 1)[None, None]
    photo = torch.as_tensor(photo_model, dtype=X.dtype).clamp(0, 1)[None, None]
    skin = photo * (1 - m)
    blur = gaussian_blur(X, max(1.0, X.shape[-1] * BLUR_FRACTION))
    skin_colour = (X * skin).sum(dim=(2, 3), keepdim=True) / skin.sum().clamp_min(1e-6)
    fill = skin_colour.expand_as(X)

    def hide(region, reference):
        return X * (1 - region) + reference * region

    batch = torch.cat([X, hide(skin, blur), hide(skin, fill), hide(m, blur), hide(m, fill), hide(photo, blur)])
    with torch.no_grad():
        p = torch.softmax(net(batch), 1)[:, target].numpy()
    keys = ("p_full", "p_lesion_only_blur", "p_lesion_only_skin", "p_skin_only_blur", "p_skin_only_skin",
            "p_none_blur")
    return {k: float(v) for k, v in zip(keys, p)}


def target_score(energy: float, pointing: float) -> float:
    """How far a setting gets towards the issue's targets: the lower of energy ÷ 1.5 and pointing ÷ 0.8."""
    return min(energy / 1.5, pointing / 0.8)


def _prepare(loaded, r: dict, masks: dict, tol: int):
    import torch

    from core.imaging import model_input
    from core.models.preprocess import to_tensor_with_geometry

    arr = model_input(DATA / "images" / f"{r['image_id']}.jpg")
    mask = masks[r["image_id"]]
    if mask.shape != arr.shape[:2]:
        raise SystemExit(f"mask {mask.shape} and image {arr.shape[:2]} of {r['image_id']} differ")
    x, geo = to_tensor_with_geometry(arr, loaded.spec)
    with torch.inference_mode():
        probs = torch.softmax(loaded.net(x[None]), 1)[0]
    return arr, mask, dilate(mask, tol), x, geo, probs


def choose_records(loaded, rows: list[dict], masks: dict, costly: set, log=None,
                   only: Optional[set] = None) -> list[dict]:
    """Every candidate setting of :data:`CANDIDATES` on the validation photographs: one record per
    (image, method, setting) with energy ratio, pointing hit and seconds (no deletion / insertion). The
    perturbation and gradient-integration methods run only on the photographs in ``costly``. ``only``:
    the (method, setting JSON) pairs to run (default: all)."""
    import torch

    from core.explain import explain

    torch.set_num_threads(1)
    tol = max(1, round(0.03 * 200))
    out = []
    for i, r in enumerate(rows):
        arr, mask, mask_tol, x, geo, probs = _prepare(loaded, r, masks, tol)
        pred = int(probs.argmax())
        for name, options in CANDIDATES.items():
            if name not in ("gradcam", "layercam") and r["image_id"] not in costly:
                continue
            for params in options:
                if only is not None and (name, json.dumps(params, sort_keys=True)) not in only:
                    continue
                t0 = time.perf_counter()
                e = explain(loaded, arr, name, pred, device="cpu", **params)
                out.append({"image": r["image_id"], "dx": r["dx"], "correct": pred == CLASSES.index(r["dx"]),
                            "method": name, "setting": json.dumps(params, sort_keys=True),
                            "energy": energy_ratio(e.map, mask), "pointing": pointing_hit(e.map, mask_tol),
                            "seconds": time.perf_counter() - t0})
        if log:
            log(f"choose {i + 1}/{len(rows)} {r['image_id']} {r['dx']} pred {CLASSES[pred]} p={float(probs[pred]):.2f}")
    return out


def choose_settings(records: list[dict], max_seconds: Optional[float] = None) -> tuple[dict, list[dict]]:
    """(settings, table rows): per method the candidate with the best :func:`target_score` on the correctly
    classified validation lesions (ties: the cheaper one). With ``max_seconds``, only candidates whose
    median seconds per image on validation are within it compete (the cheapest when none is)."""
    settings, table = {}, []
    for name, options in CANDIDATES.items():
        best = None
        affordable = [json.dumps(p, sort_keys=True) for p in options]
        if max_seconds is not None:
            secs = {k: float(np.median([r["seconds"] for r in records if r["method"] == name and r["setting"] == k]
                                       or [np.inf])) for k in affordable}
            within = [k for k in affordable if secs[k] <= max_seconds]
            affordable = within or [min(secs, key=secs.get)]
        for params in options:
            key = json.dumps(params, sort_keys=True)
            rs = [r for r in records if r["method"] == name and r["setting"] == key and r["correct"]]
            if not rs:
                continue
            e = float(np.nanmean([r["energy"] for r in rs]))
            pt = float(np.nanmean([r["pointing"] for r in rs]))
            sec = float(np.median([r["seconds"] for r in rs]))
            score = target_score(e, pt)
            row = {"method": name, "setting": params, "n": len(rs), "energy": e, "pointing": pt, "seconds": sec,
                   "score": score}
            table.append(row)
            if key not in affordable:
                row["over_budget"] = True
                continue
            if best is None or score > best["score"] + 1e-9 or (abs(score - best["score"]) <= 1e-9
                                                                 and sec < best["seconds"]):
                best = row
        if best is not None:
            best["chosen"] = True
            settings[name] = dict(best["setting"])
    return settings, table


def evaluate(loaded, rows: list[dict], masks: dict, settings: dict, steps: int, log=None,
             full: Optional[set] = None, sink=None) -> list[dict]:
    """One record per (image, method): energy ratio, pointing hit, deletion / insertion AUC, seconds; and one
    ``"dependence"`` record per image (:func:`lesion_dependence`).

    Beside Loupe's methods, two maps that ignore the model are scored the same way: a centred Gaussian
    (:func:`centre_prior`) and the lesion mask itself (the ceiling of energy ratio and pointing).
    Images whose id is not in ``full`` (when given) get only the CAMs, the two reference maps and no
    deletion / insertion (the perturbation methods cost hundreds of forward passes each). The lime package
    gets Loupe LIME's number of samples, pytorch-grad-cam Loupe Grad-CAM's layer and LayerCAM's layers."""
    import torch

    from core.explain import explain
    from core.explain.base import private_copy
    from core.explain.faithfulness import deletion_insertion, to_model_space
    from core.explain.layercam import parse_layers
    from core.models.preprocess import undo_geometry

    torch.set_num_threads(1)
    settings = {**DEFAULT_SETTINGS, **settings}
    layer = settings["gradcam"].get("layer") or loaded.net.target_layer_name
    refs = References(loaded, layer, parse_layers(loaded.net, settings["layercam"].get("layers")))
    clone, _ = private_copy(loaded.net, "cpu")
    tol = max(1, round(0.03 * 200))
    lime_samples = int(settings["lime"]["n_samples"])
    out = []
    for i, r in enumerate(rows):
        arr, mask, mask_tol, x, geo, probs = _prepare(loaded, r, masks, tol)
        pred = int(probs.argmax())
        truth = CLASSES.index(r["dx"])
        common = {"image": r["image_id"], "dx": r["dx"], "correct": pred == truth, "pred": CLASSES[pred],
                  "prob": float(probs[pred]), "lesion_share": float(mask.mean())}
        out.append({**common, "method": "dependence",
                    **lesion_dependence(clone, x, to_model_space(mask.astype(np.float32), geo),
                                        to_model_space(np.ones(mask.shape, np.float32), geo), pred)})
        maps = {}
        everything = full is None or r["image_id"] in full
        for name, params in method_params(settings, everything).items():
            t0 = time.perf_counter()
            e = explain(loaded, arr, name, pred, device="cpu", **params)
            maps[f"Loupe {name}"] = (e.map, time.perf_counter() - t0)
        t0 = time.perf_counter()
        m = refs.gradcam(x, pred)
        maps["pytorch-grad-cam GradCAM"] = (undo_geometry(m, geo), time.perf_counter() - t0)
        t0 = time.perf_counter()
        m = refs.layercam(x, pred)
        maps["pytorch-grad-cam LayerCAM"] = (undo_geometry(m, geo), time.perf_counter() - t0)
        if everything:
            t0 = time.perf_counter()
            m = refs.lime(x, pred, lime_samples, seed=0)
            maps["lime package"] = (undo_geometry(m, geo), time.perf_counter() - t0)
        maps["centre prior"] = (centre_prior(mask.shape), 0.0)
        maps["lesion mask"] = (mask.astype(np.float32), 0.0)
        for name, (image_map, seconds) in maps.items():
            f = (deletion_insertion(clone, x[None], to_model_space(np.maximum(image_map, 0), geo), pred, steps=steps)
                 if everything else {"deletion_auc": float("nan"), "insertion_auc": float("nan")})
            out.append({**common, "method": name, "energy": energy_ratio(image_map, mask),
                        "pointing": pointing_hit(image_map, mask_tol), "deletion": f["deletion_auc"],
                        "insertion": f["insertion_auc"], "seconds": seconds})
        if log:
            log(f"{i + 1}/{len(rows)} {r['image_id']} {r['dx']} pred {CLASSES[pred]} p={float(probs[pred]):.2f}")
        if sink:
            sink(out)
    return out


def trained_model(train_rows: list[dict]):
    """The trained LoadedModel (training it first when not cached) and the training report."""
    from core.models.versions import load_version
    from core.workspace import Workspace

    ws_path, report = trained_workspace(train_rows)
    ws = Workspace.open(ws_path)
    try:
        return load_version(ws, report["version"]), report
    finally:
        ws.close()


def main_train(argv=None) -> None:
    """Only train (and cache) the model."""
    rows = read_metadata()
    train_rows, test_rows = lesion_split(rows, RECIPE["test_per_class"], RECIPE["n_nv_train"], RECIPE["seed"])
    print(f"train {len(train_rows)} photographs, test {len(test_rows)}", flush=True)
    ws, report = trained_workspace(train_rows)
    print(json.dumps(report, default=str)[:2000], flush=True)


def main_shard(args) -> None:
    """Evaluate one shard of the test photographs (or, with ``--choose``, of the validation photographs)
    into a JSON file (run by :func:`main` in parallel)."""
    rows = read_metadata()
    train_rows, val_rows, test_rows = split_lesions(rows, RECIPE["test_per_class"], RECIPE["val_per_class"],
                                                    RECIPE["n_nv_train"], RECIPE["seed"])
    loaded, _ = trained_model(train_rows)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if args.choose:
        val_rows = interleave(val_rows)[:args.n_val]
        costly = {r["image_id"] for r in val_rows[:args.n_val_costly]}
        val_rows = val_rows[args.shard::args.shards]
        only = {tuple(p) for p in json.loads(args.only)} if args.only else None
        Path(args.out).write_text(json.dumps(choose_records(loaded, val_rows, lesion_masks(), costly, log=log,
                                                            only=only)))
        return
    test_rows = interleave(test_rows)[:args.n_test]
    full = {r["image_id"] for r in test_rows[:args.full]} if args.full is not None else None
    test_rows = test_rows[args.shard::args.shards]
    partial = Path(args.out + ".partial")
    records = evaluate(loaded, test_rows, lesion_masks(), json.loads(args.settings), args.steps, log=log, full=full,
                       sink=lambda recs: partial.write_text(json.dumps(recs)))
    Path(args.out).write_text(json.dumps(records))


def run_shards(args, extra: list[str], stem: str) -> list[dict]:
    """Run ``args.shards`` shard processes (1 torch thread each) and gather their records."""
    outs = [CACHE / f"{stem}-{i}-of-{args.shards}.json" for i in range(args.shards)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, __file__, "--shard", str(i), "--shards", str(args.shards),
                               "--n-test", str(args.n_test), "--n-val", str(args.n_val),
                               "--n-val-costly", str(args.n_val_costly), "--steps", str(args.steps),
                               "--out", str(o), *extra], env=env, cwd=ROOT)
             for i, o in enumerate(outs)]
    if any(p.wait() for p in procs):
        raise SystemExit("a shard failed")
    return [r for o in outs for r in json.loads(o.read_text())]


def chosen_settings(args, report: dict) -> dict:
    """``{"settings", "table", "minutes", "n_images", "n_correct"}``: the explanation settings chosen on the
    validation lesions (:func:`choose_settings`); cached per model version and validation size."""
    path = CACHE / f"choose-records-{report['version']}-{args.n_val}-{args.n_val_costly}.json"
    doc = json.loads(path.read_text()) if path.exists() else {"records": [], "minutes": 0.0}
    have = {(r["method"], r["setting"]) for r in doc["records"]}
    missing = [(name, json.dumps(p, sort_keys=True)) for name, options in CANDIDATES.items() for p in options
               if (name, json.dumps(p, sort_keys=True)) not in have]
    if missing:  # only the candidates not scored before (the records are cached per model version)
        t0 = time.monotonic()
        doc["records"] += run_shards(args, ["--choose", "--only", json.dumps(missing)], "choose")
        doc["minutes"] += (time.monotonic() - t0) / 60
        path.write_text(json.dumps(doc))
    records = doc["records"]
    settings, table = choose_settings(records, args.max_seconds)
    return {"settings": settings, "table": table, "minutes": doc["minutes"], "max_seconds": args.max_seconds,
            "n_images": len({r["image"] for r in records}),
            "n_correct": len({r["image"] for r in records if r["correct"]})}


def _ci(values: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = rng.choice(values, (n_boot, len(values)), replace=True).mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


ORDER = ("centre prior", "Loupe gradcam", "pytorch-grad-cam GradCAM", "Loupe layercam", "pytorch-grad-cam LayerCAM",
         "Loupe lime", "lime package", "Loupe ig", "Loupe gradshap", "Loupe occlusion", "lesion mask")
LABEL = {"Loupe gradcam": "Loupe Grad-CAM", "Loupe lime": "Loupe LIME", "Loupe ig": "Loupe Integrated Gradients",
         "Loupe gradshap": "Loupe Gradient SHAP", "Loupe occlusion": "Loupe Occlusion",
         "Loupe layercam": "Loupe LayerCAM", "pytorch-grad-cam LayerCAM": "pytorch-grad-cam `LayerCAM`",
         "pytorch-grad-cam GradCAM": "pytorch-grad-cam `GradCAM`", "lime package": "`lime` `LimeImageExplainer`",
         "centre prior": "*centre prior* (ignores the model)", "lesion mask": "*lesion mask* (the ceiling)"}
#: Maps that ignore the model: scored like the methods, but the targets are not theirs to meet.
REFERENCE_MAPS = ("centre prior", "lesion mask")


def dependence_lines(records: list[dict]) -> list[str]:
    """Markdown: the model's probability for its (correct) prediction with only the lesion or only the skin
    around it visible, per predicted class, with 95 % bootstrap intervals (:func:`lesion_dependence`)."""
    deps = [r for r in records if r["method"] == "dependence" and r["correct"]]
    if not deps:
        return []
    cols = (("p_full", "whole photograph"), ("p_lesion_only_blur", "lesion only (skin blurred)"),
            ("p_lesion_only_skin", "lesion only (skin → its mean colour)"),
            ("p_skin_only_blur", "skin only (lesion blurred)"), ("p_skin_only_skin", "skin only (lesion → skin colour)"),
            ("p_none_blur", "all blurred"))
    lines = ["| predicted (correctly) | n | " + " | ".join(c[1] for c in cols) + " |",
             "|---|---:|" + "---:|" * len(cols)]
    for label, rs in (("melanoma", [r for r in deps if r["pred"] == "mel"]),
                      ("naevus", [r for r in deps if r["pred"] == "nv"]), ("all", deps)):
        cells = []
        for key, _ in cols:
            v = np.array([r[key] for r in rs])
            lo, hi = _ci(v)
            cells.append(f"{v.mean():.2f} ({lo:.2f}–{hi:.2f})")
        lines.append(f"| {label} | {len(rs)} | " + " | ".join(cells) + " |")
    lines.append("")
    for label, rs in (("melanoma", [r for r in deps if r["pred"] == "mel"]),
                      ("naevus", [r for r in deps if r["pred"] == "nv"]), ("all", deps)):
        parts = []
        for ref in ("blur", "skin"):
            les = np.array([r["p_full"] - r[f"p_skin_only_{ref}"] for r in rs])  # drop when the lesion is hidden
            sur = np.array([r["p_full"] - r[f"p_lesion_only_{ref}"] for r in rs])  # drop when the skin is hidden
            d = les - sur
            parts.append(f"{ref}: hiding the lesion {les.mean():+.2f} ({_ci(les)[0]:+.2f} to {_ci(les)[1]:+.2f}), "
                         f"hiding the skin {sur.mean():+.2f} ({_ci(sur)[0]:+.2f} to {_ci(sur)[1]:+.2f}), "
                         f"paired difference {d.mean():+.2f} ({_ci(d)[0]:+.2f} to {_ci(d)[1]:+.2f})")
        lines.append(f"- Mean probability drop, {label} (n = {len(rs)}) — " + "; ".join(parts) + ".")
    return lines


def reading_lines(summary: dict, records: list[dict]) -> list[str]:
    """Markdown bullets placing each method between the centre prior and the lesion mask (from the numbers)."""
    if "centre prior" not in summary or "lesion mask" not in summary:
        return []
    prior, ceiling = summary["centre prior"][0], summary["lesion mask"][0]
    methods = [n for n in summary if n not in REFERENCE_MAPS]
    above = [LABEL[n] for n in methods if summary[n][0]["energy"] > prior["energy"]
             or summary[n][0]["pointing"] > prior["pointing"]]
    best_p = max(methods, key=lambda n: summary[n][0]["pointing"])
    best_e = max(methods, key=lambda n: summary[n][0]["energy"])
    out = ["", f"- The centre prior, which never looks at the model, scores energy ratio {prior['energy']:.2f} and "
               f"pointing {prior['pointing']:.2f}; the lesion mask (a perfect map) {ceiling['energy']:.2f} and "
               f"{ceiling['pointing']:.2f}. Methods above the prior on either score: "
               f"{', '.join(above) if above else 'none'}. Best pointing: {LABEL[best_p]} "
               f"{summary[best_p][0]['pointing']:.2f}; best energy ratio: {LABEL[best_e]} "
               f"{summary[best_e][0]['energy']:.2f}."]
    for name in methods:
        parts = []
        for cls, word in (("mel", "melanoma"), ("nv", "naevus")):
            rs = [r for r in records if r["method"] == name and r["correct"] and r["dx"] == cls]
            if rs:
                e, pt = np.nanmean([r["energy"] for r in rs]), np.nanmean([r["pointing"] for r in rs])
                parts.append(f"{word} {e:.2f} / {pt:.2f}" + (" (targets met)" if e >= 1.5 and pt >= 0.8 else ""))
        if name.startswith("Loupe") and parts:
            out.append(f"- {LABEL[name]}, energy ratio / pointing by the class predicted: {'; '.join(parts)}.")
    return out


def per_class_lines(records: list[dict]) -> list[str]:
    """Markdown: each map's scores on correctly classified lesions, split by the class predicted."""
    lines = ["| method | melanoma: energy ratio | pointing | deletion AUC | insertion AUC | naevus: energy ratio | "
             "pointing | deletion AUC | insertion AUC |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in ORDER:
        cells = []
        for cls in CLASSES:
            rs = [r for r in records if r["method"] == name and r["correct"] and r["dx"] == cls]
            if not rs:
                cells += ["–"] * 4
                continue
            cells += [f"{np.nanmean([r[k] for r in rs]):.{2 if k in ('energy', 'pointing') else 3}f}"
                      for k in ("energy", "pointing", "deletion", "insertion")]
        if any(c != "–" for c in cells):
            lines.append(f"| {LABEL[name]} | " + " | ".join(cells) + " |")
    return lines


def section(records: list[dict], report: dict, args, wall: float, choice: dict, settings: dict) -> str:
    """The markdown of the section."""
    images = {r["image"]: r for r in records}
    n, n_ok = len(images), sum(1 for r in images.values() if r["correct"])
    share = np.mean([r["lesion_share"] for r in images.values()])
    m = report.get("metrics", {})
    chosen = choice["settings"]
    defaults = {"gradcam": {"layer": f"{choice['default_layer']} (Loupe's default)"},
                "layercam": {"layers": f"{choice.get('default_layercam', '?')} (Loupe's default)"}}
    shown = {k: (v or defaults.get(k, {})) for k, v in settings.items()}
    val_rows = ["| method | setting | n | energy ratio | pointing | s / image | score | |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for row in choice["table"]:
        val_rows.append(f"| {row['method']} | {', '.join(f'{k} {v}' for k, v in row['setting'].items()) or 'default'} | "
                        f"{row['n']} | "
                        f"{row['energy']:.2f} | {row['pointing']:.2f} | {row['seconds']:.2f} | {row['score']:.2f} | "
                        f"{'**chosen**' if row.get('chosen') else ('over the time cap' if row.get('over_budget') else '')} |")
    flags = (f" --max-seconds {args.max_seconds:g}" if args.max_seconds is not None else "") + (
        f" --full {args.full}" if args.full is not None else "")
    lines = [f"Run {now_stamp()} on {machine_facts()}; `bench/explain_real.py --n-test {args.n_test} --n-val "
             f"{args.n_val} --steps {args.steps}{flags}` under `nice -n 19` ({args.shards} processes, 1 torch thread "
             f"each; "
             f"test photographs {wall / 60:.0f} min wall"
             + (f", stopped for time: the section holds the photographs finished by then" if args.collect else "")
             + f"; load average {', '.join(f'{v:.1f}' for v in os.getloadavg())} "
             f"at the end); grad-cam {package_version('grad-cam')}, lime {package_version('lime')}, "
             f"captum {package_version('captum')}.", "",
             f"Model: trained with Loupe's own training API (`core.models.training.train`, the engine behind "
             f"`loupe train`) on a lesion-grouped split of `ham10000_dev`: melanoma vs naevus, "
             f"{report.get('imported', '?')} training photographs (every melanoma photograph of the training lesions, "
             f"{RECIPE['n_nv_train']} naevus photographs; Loupe holds out 20 % of them, grouped by lesion, for its own "
             f"early stopping and calibration), EfficientNet-Lite0 with its offline ImageNet weights at "
             f"{RECIPE['size']} px, `{RECIPE['mode']}` mode (the last stages unfrozen one per epoch), "
             f"{RECIPE['epochs']} epochs max, lr {RECIPE['lr']}, Loupe's photograph augmentation (strength "
             f"{RECIPE['augment']}), `--loss {RECIPE['loss']} --sampler {RECIPE['sampler']}`, {report.get('threads', 1)} "
             f"threads: {report.get('train_s', 0) / 60:.1f} min; Loupe's validation macro AUC "
             f"{m.get('macro_auc', float('nan')):.3f}.", "",
             f"Settings chosen on {choice['n_images']} validation photographs (one per lesion, {RECIPE['val_per_class']} "
             f"lesions per class, in neither training nor test; {choice['n_correct']} classified correctly), by the "
             f"lower of energy ratio ÷ 1.5 and pointing ÷ 0.8 on the correctly classified ones (ties: the cheaper "
             f"setting)" + (f", among settings within {choice['max_seconds']:g} s per image on validation (so that "
             f"the test run fits its time)" if choice.get("max_seconds") else "")
             + f"; the methods other than Grad-CAM and LayerCAM on the first {args.n_val_costly} of them; "
             f"{choice['minutes']:.0f} min:", "", *val_rows, "",
             f"Test: {n} photographs, one per held-out lesion (no test lesion in training or validation), "
             f"{sum(1 for r in images.values() if r['dx'] == 'mel')} melanoma / "
             f"{sum(1 for r in images.values() if r['dx'] == 'nv')} naevus; {n_ok} classified correctly "
             f"(accuracy {n_ok / max(n, 1):.3f}); mean lesion area share {share:.2f}. Every map explains the predicted "
             f"class. Energy ratio = share of the map's non-negative energy inside the HAM10000 lesion mask ÷ the "
             f"lesion's area share (1 = uniform); pointing = the map's maximum inside the mask dilated by 6 px; "
             f"deletion (lower better) / insertion (higher better) AUC with the blurred reference, {args.steps} "
             f"steps, the same code for every map. Means with 95 % bootstrap intervals; s / image is the median "
             f"seconds per map (1 thread, shared machine). Targets on correctly classified lesions: energy ratio "
             f"≥ 1.5, pointing ≥ 0.8. Parameters (defaults except): "
             + "; ".join(f"{k} {v}" for k, v in shown.items())
             + f"; pytorch-grad-cam `GradCAM` on the same layer as Loupe's Grad-CAM and its `LayerCAM` on the same "
             f"layers as Loupe's LayerCAM (Loupe's `layercam` method, new: per-position positive gradients × "
             f"activations, several layers fused); the `lime` package with its "
             f"defaults (quickshift segments) and {chosen['lime']['n_samples']} samples, the same as Loupe's LIME. "
             + f"Two maps that ignore the model frame the table: the *centre prior*, a Gaussian centred on the "
             f"photograph with sigma {PRIOR_SIGMA:g} × its shorter side (fixed, not tuned; HAM10000 photographs are "
             f"framed on the lesion), and the *lesion mask* itself, the best any map can score (its energy ratio is "
             f"1 ÷ the lesion's area share, averaged over lesions). "
             + (f"Only the first {args.full} test photographs (balanced) ran every method and deletion / insertion; "
                f"the rest ran the two Grad-CAMs." if args.full is not None else ""), "",
             "| method (correctly classified lesions) | n | energy ratio | pointing | deletion AUC | insertion AUC | "
             "s / image | targets |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    by = {}
    for r in records:
        by.setdefault(r["method"], []).append(r)
    summary = {}
    for name in ORDER:
        rs = [r for r in by.get(name, []) if r["correct"]]
        if not rs:
            continue
        vals = {k: np.array([r[k] for r in rs], dtype=np.float64) for k in ("energy", "pointing", "deletion",
                                                                           "insertion", "seconds")}
        mean = {k: float(np.nanmean(v)) for k, v in vals.items()}
        summary[name] = (mean, vals)
        ci = {k: _ci(v) for k, v in vals.items()}
        met = mean["energy"] >= 1.5 and mean["pointing"] >= 0.8
        verdict = ("reference" if name in REFERENCE_MAPS else "met" if met else "**missed**")
        lines.append(f"| {LABEL[name]} | {len(rs)} | {mean['energy']:.2f} ({ci['energy'][0]:.2f}–{ci['energy'][1]:.2f}) | "
                     f"{mean['pointing']:.2f} ({ci['pointing'][0]:.2f}–{ci['pointing'][1]:.2f}) | "
                     f"{mean['deletion']:.3f} ({ci['deletion'][0]:.3f}–{ci['deletion'][1]:.3f}) | "
                     f"{mean['insertion']:.3f} ({ci['insertion'][0]:.3f}–{ci['insertion'][1]:.3f}) | "
                     f"{np.median(vals['seconds']):.2f} | {verdict} |")
    lines += reading_lines(summary, records)
    lines += ["", "By the class predicted (correctly classified lesions; the same maps):", "", *per_class_lines(records)]
    dep = dependence_lines(records)
    if dep:
        lines += ["", "**Where the model's evidence lies.** The model's probability for its correct prediction when a "
                  "region of the photograph is hidden, in two ways: with the blurred image the deletion / insertion "
                  "metric uses (sigma S/4; a hidden lesion stays a soft darker smudge), and with the mean colour of "
                  "the skin around the lesion (the lesion is gone; the padding is never changed). Means with 95 % "
                  "bootstrap intervals:", "", *dep, "",
                  "The test lesions where Grad-CAM misses the lesion worst, with LayerCAM beside it and these "
                  "probabilities: `docs/explanations_lesion_misses.jpg` (`bench/explain_lesion_sheet.py`)."]
    lines += ["", "All test photographs (correct or not):", "",
              "| method | n | energy ratio | pointing | deletion AUC | insertion AUC |", "|---|---:|---:|---:|---:|---:|"]
    for name in ORDER:
        rs = by.get(name, [])
        if rs:
            lines.append(f"| {LABEL[name]} | {len(rs)} | {np.nanmean([r['energy'] for r in rs]):.2f} | "
                         f"{np.nanmean([r['pointing'] for r in rs]):.2f} | "
                         f"{np.nanmean([r['deletion'] for r in rs]):.3f} | {np.nanmean([r['insertion'] for r in rs]):.3f} |")
    if "Loupe gradcam" in summary and "pytorch-grad-cam GradCAM" in summary:
        a, b = summary["Loupe gradcam"][1], summary["pytorch-grad-cam GradCAM"][1]
        lines += [""]
        for k, word in (("energy", "energy ratio"), ("pointing", "pointing")):
            d = a[k] - b[k]
            lo, hi = _ci(d)
            lines.append(f"- Loupe Grad-CAM − pytorch-grad-cam, {word} (paired, correct lesions): "
                         f"{np.nanmean(d):+.3f} (95 % CI {lo:+.3f} to {hi:+.3f}); target ≥ 0: "
                         f"**{'met' if np.nanmean(d) >= -1e-9 else 'missed'}**.")
    if "Loupe layercam" in summary and "pytorch-grad-cam LayerCAM" in summary:
        a, b = summary["Loupe layercam"][1], summary["pytorch-grad-cam LayerCAM"][1]
        for k, word in (("energy", "energy ratio"), ("pointing", "pointing")):
            d = a[k] - b[k]
            lo, hi = _ci(d)
            lines.append(f"- Loupe LayerCAM − pytorch-grad-cam `LayerCAM` (same layers), {word} (paired, correct "
                         f"lesions): {np.nanmean(d):+.3f} (95 % CI {lo:+.3f} to {hi:+.3f}).")
    if "Loupe lime" in summary and "lime package" in summary:
        a, b = summary["Loupe lime"][1], summary["lime package"][1]
        for k in ("energy", "pointing", "deletion", "insertion"):
            d = a[k] - b[k]
            lo, hi = _ci(d)
            lines.append(f"- Loupe LIME − lime package, {k} (paired): {np.nanmean(d):+.3f} (95 % CI {lo:+.3f} to "
                         f"{hi:+.3f}).")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    """Train (or reuse) the model, choose the explanation settings on the validation lesions, evaluate the
    test photographs in parallel shards, write the section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--n-val", type=int, default=60, help="validation photographs for choosing settings")
    parser.add_argument("--n-val-costly", type=int, default=20,
                        help="of which this many also try the methods other than Grad-CAM")
    parser.add_argument("--steps", type=int, default=8, help="deletion / insertion steps")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--full", type=int, default=None,
                        help="run every method (and deletion / insertion) on only the first N test photographs; "
                             "the rest get the two Grad-CAMs")
    parser.add_argument("--shard", type=int, default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--choose", action="store_true", help="(shard) score the candidate settings")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="only settings within this median seconds per image (on validation) compete")
    parser.add_argument("--choose-only", action="store_true", help="train, choose the settings, print them")
    parser.add_argument("--settings", default=None, help="(shard) the settings as JSON")
    parser.add_argument("--only", default=None, help="(choosing shard) JSON list of [method, setting JSON] to score")
    parser.add_argument("--collect", default=None, metavar="MINUTES",
                        help="write the section from the shards' partial records of a run that took MINUTES")
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not (DATA / "lesion_masks.npz").exists():
        print(f"skipped: {DATA} is absent", file=sys.stderr)
        return 0
    if args.train_only:
        main_train()
        return 0
    if args.shard is not None:
        main_shard(args)
        return 0
    rows = read_metadata()
    train_rows, _ = lesion_split(rows, RECIPE["test_per_class"], RECIPE["n_nv_train"], RECIPE["seed"])
    loaded, report = trained_model(train_rows)
    t0 = time.monotonic()
    choice = chosen_settings(args, report)
    settings = {k: dict(v) for k, v in choice["settings"].items()}
    default = loaded.net.target_layer_name  # the layer Loupe's Grad-CAM uses when none is named
    choice["default_layer"] = default
    from core.explain.layercam import default_layers

    choice["default_layercam"] = ",".join(default_layers(loaded.net))
    if settings["gradcam"].get("layer") == default:
        settings["gradcam"] = {}  # Loupe's own default is the chosen layer: run it as a user would
    print(json.dumps({"settings": settings, "default_layer": default}), flush=True)
    if args.choose_only:
        for row in choice["table"]:
            print(json.dumps(row), flush=True)
        return 0
    t1 = time.monotonic()
    if args.collect:  # the records the shards have written so far (a run stopped for time)
        records = [r for i in range(args.shards)
                   for r in json.loads((CACHE / f"shard-{i}-of-{args.shards}.json.partial").read_text())]
        wall = float(args.collect) * 60
    else:
        records = run_shards(args, ["--settings", json.dumps(settings)]
                             + (["--full", str(args.full)] if args.full is not None else []), "shard")
        wall = time.monotonic() - t1
    (CACHE / "records.json").write_text(json.dumps(records))
    text = section(records, report, args, wall, choice, settings)
    print(text)
    if not args.no_write:
        write_section(BENCH_MD, TITLE, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
