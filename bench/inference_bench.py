"""Inference throughput: Loupe's ``run_inference`` vs a bare torchvision eval loop, plus INT8 and distillation.

Part A (224 px, batch 16, PneumoniaMNIST test images written as PNG files): for an
EfficientNet-Lite0 (offline ImageNet weights) and a ResNet-50 (random init; speed
does not depend on the weights) the same model, batch size and device run

* ``bare floor``: ``model.eval(); with torch.inference_mode(): model(batch)`` over
  tensors decoded and preprocessed beforehand (pure compute, the ceiling);
* ``bare + PIL``: the same loop decoding each PNG itself with PIL and torchvision
  transforms (grayscale→3 channels, resize, to-tensor, normalise) — the realistic reference;
* ``Loupe``: :func:`core.models.inference.run_inference` from the files (threaded
  decode one batch ahead), float and with the static INT8 backbone of
  :func:`core.models.compress.quantize_static_int8`.

Part B (64 px): an EfficientNet-Lite0 teacher is fine-tuned (frozen backbone) with
:func:`core.models.training.train` on the 3,882 training images, distilled into a
MobileNetV3-Large student with :func:`core.models.compress.distill`, and teacher,
INT8 teacher, student and INT8 student are timed through ``run_inference`` on the
624 test images and scored with :func:`core.models.metrics.evaluate`.

Run: ``.venv/bin/python bench/inference_bench.py`` (about 10 minutes on 2 CPU cores);
``--no-write`` leaves docs/benchmarks.md alone.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import BENCH_MD, SHARED_DATA, machine_facts, now_stamp, write_section  # noqa: E402

logger = logging.getLogger(__name__)

NPZ = SHARED_DATA / "pneumoniamnist" / "pneumoniamnist_imbalanced.npz"
CLASSES = ["normal", "pneumonia"]
BATCH = 16
T0 = time.monotonic()


def say(msg: str) -> None:
    """Progress line with elapsed time."""
    print(f"[{time.monotonic() - T0:6.0f} s] {msg}", flush=True)


def write_pngs(out: Path, images: np.ndarray, labels: np.ndarray, split: str, rows: list) -> None:
    """Write uint8 images as ``<out>/<split>/<split>_<i>.png`` and add labels-CSV rows."""
    (out / split).mkdir(parents=True, exist_ok=True)
    for i, (img, y) in enumerate(zip(images, labels)):
        name = f"{split}/{split}_{i:04d}.png"
        Image.fromarray(img).save(out / name)
        rows.append({"path": name, "label": CLASSES[int(y)], "split": split})


def write_csv(path: Path, rows: list) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "label", "split"])
        w.writeheader()
        w.writerows(rows)
    return path


def bare_floor(net, tensors: torch.Tensor) -> float:
    """Images/s of the plain eval loop over ready tensors."""
    net.eval()
    with torch.inference_mode():
        net(tensors[:BATCH])  # warm-up
        t = time.perf_counter()
        for i in range(0, len(tensors), BATCH):
            net(tensors[i:i + BATCH])
    return len(tensors) / (time.perf_counter() - t)


def bare_pil(net, paths: list[str], spec) -> float:
    """Images/s of the plain eval loop that decodes with PIL and torchvision transforms itself."""
    import torchvision.transforms as T

    tf = T.Compose([T.Grayscale(num_output_channels=3), T.Resize((spec.size, spec.size)), T.ToTensor(),
                    T.Normalize(spec.mean, spec.std)])
    net.eval()
    with torch.inference_mode():
        net(torch.stack([tf(Image.open(p)) for p in paths[:BATCH]]))  # warm-up
        t = time.perf_counter()
        for i in range(0, len(paths), BATCH):
            net(torch.stack([tf(Image.open(p).convert("L")) for p in paths[i:i + BATCH]]))
    return len(paths) / (time.perf_counter() - t)


def loupe(loaded, items) -> tuple[float, object]:
    """Images/s of ``run_inference`` from the files, and its result."""
    from core.models.inference import run_inference

    run_inference(loaded, items[:BATCH], batch_size=BATCH, device="cpu")  # warm-up
    t = time.perf_counter()
    res = run_inference(loaded, items, batch_size=BATCH, device="cpu")
    rate = len(items) / (time.perf_counter() - t)
    assert not res.failed, res.failed[:3]
    return rate, res


def static_int8(loaded, calib: torch.Tensor):
    """The LoadedModel with its network's backbone statically quantized (calibrated on ``calib``)."""
    from core.models.compress import quantize_static_int8

    q = quantize_static_int8(loaded.net, [calib[i:i + BATCH] for i in range(0, len(calib), BATCH)])
    return dataclasses.replace(loaded, net=q)


def part_a(tmp: Path, data, n: int, n_resnet: int) -> list[dict]:
    """Throughput at 224 px: bare floor, bare + PIL, Loupe float, Loupe INT8 (and dynamic INT8 floor)."""
    from core.importer import import_paths
    from core.models.compress import quantize_dynamic_int8
    from core.models.inference import load_input
    from core.models.versions import create_version, load_version
    from core.workspace import Workspace

    rows: list = []
    folder = tmp / "a"
    write_pngs(folder, data["test_images"][:n], data["test_labels"].ravel()[:n], "test", rows)
    ws = Workspace.open(tmp / "a.sqlite")
    import_paths(ws, [folder / "test"])
    refs = sorted(ws.images(), key=lambda r: r.path)
    out = []
    for arch, pretrained, count in (("efficientnet_lite0", "default", n), ("resnet50", "none", n_resnet)):
        version = create_version(ws, arch, CLASSES, pretrained=pretrained, input_size=224)
        loaded = load_version(ws, version.version)
        items = [(r.id, r.path) for r in refs[:count]]
        paths = [p for _, p in items]
        tensors = torch.stack([load_input(p, loaded.spec) for p in paths])
        say(f"{arch} 224 px, {count} images: bare loop on ready tensors")
        floor = bare_floor(loaded.net, tensors)
        say(f"{arch}: {floor:.1f} img/s; bare loop with PIL decode + torchvision transforms")
        pil = bare_pil(loaded.net, paths, loaded.spec)
        say(f"{arch}: {pil:.1f} img/s; Loupe run_inference (float)")
        rate, res = loupe(loaded, items)
        say(f"{arch}: {rate:.1f} img/s; static INT8")
        q = static_int8(loaded, tensors[:32])
        q_rate, q_res = loupe(q, items)
        agree = float(np.mean(q_res.logits.argmax(1) == res.logits.argmax(1)))
        maxdiff = float(np.abs(q_res.probs - res.probs).max())
        say(f"{arch}: INT8 {q_rate:.1f} img/s (top-class agreement {agree:.3f}, max |Δp| {maxdiff:.3f})")
        dyn_floor = None
        if arch == "efficientnet_lite0":
            dyn_floor = bare_floor(quantize_dynamic_int8(loaded.net), tensors[:64])
            say(f"{arch}: dynamic INT8 (Linear only) floor {dyn_floor:.1f} img/s")
        out.append({"arch": arch, "weights": pretrained, "n": count, "floor": floor, "pil": pil, "loupe": rate,
                    "int8": q_rate, "int8_agree": agree, "int8_maxdiff": maxdiff, "dyn_floor": dyn_floor})
    ws.close()
    return out


def part_b(tmp: Path, data, teacher_epochs: int, student_epochs: int, size: int) -> dict:
    """Teacher fine-tune, distillation, and throughput + AUC of teacher / INT8 / student on the test split."""
    from core.importer import import_paths
    from core.models.compress import distill, student_spec
    from core.models.data import decode_all, labelled_set, normalise
    from core.models.metrics import evaluate
    from core.models.training import TrainConfig, train
    from core.models.versions import create_version, load_version
    from core.workspace import Workspace

    folder = tmp / "b"
    rows: list = []
    for split in ("train", "val", "test"):
        write_pngs(folder, data[f"{split}_images"], data[f"{split}_labels"].ravel(), split, rows)
    csv_path = write_csv(folder / "labels.csv", rows)
    ws = Workspace.open(tmp / "b.sqlite")
    say(f"importing {len(rows)} PneumoniaMNIST PNGs with labels")
    report = import_paths(ws, [folder / s for s in ("train", "val", "test")], labels_csv=csv_path)
    say(f"imported {report.imported}, labels {report.labels_added}; teacher: efficientnet_lite0 {size} px, "
        f"frozen fine-tune, {teacher_epochs} epochs")
    create_version(ws, "efficientnet_lite0", CLASSES, pretrained="default", input_size=size)
    t = time.monotonic()
    result = train(ws, TrainConfig(epochs=teacher_epochs, mode="frozen", device="cpu", n_boot=200, patience=99))
    teacher_s = time.monotonic() - t
    teacher = load_version(ws, result["version"])
    say(f"teacher {result['version']} trained in {teacher_s:.0f} s (val AUC {result['metrics'].get('macro_auc')})")

    test = labelled_set(ws, CLASSES, splits=("test",))
    items = list(zip(test.image_ids, test.paths))
    y = test.targets
    train_set = labelled_set(ws, CLASSES, splits=("train",))
    calib01, _ = decode_all(train_set.paths[:64], teacher.spec)

    def score(loaded, label):
        rate, res = loupe(loaded, items)
        auc = evaluate(y, res.probs, CLASSES, n_boot=0)["macro_auc"]
        say(f"{label}: {rate:.1f} img/s, test AUC {auc:.4f}")
        return {"rate": rate, "auc": auc, "bytes": None}

    from core.models.compress import state_dict_bytes

    out = {"size": size, "n_test": len(items), "teacher_seconds": teacher_s, "teacher_epochs": teacher_epochs,
           "student_epochs": student_epochs}
    tensors = torch.stack([normalise(decode_all([p], teacher.spec)[0], teacher.spec)[0] for p in test.paths])
    out["floor"] = bare_floor(teacher.net, tensors)
    out["pil"] = bare_pil(teacher.net, list(test.paths), teacher.spec)
    say(f"teacher bare loop: floor {out['floor']:.1f} img/s, with PIL {out['pil']:.1f} img/s")
    out["teacher"] = score(teacher, "teacher float (Loupe)")
    out["teacher"]["bytes"] = state_dict_bytes(teacher.net)
    tq = static_int8(teacher, normalise(calib01, teacher.spec))
    out["teacher_int8"] = score(tq, "teacher INT8 (Loupe)")
    out["teacher_int8"]["bytes"] = state_dict_bytes(tq.net)

    say(f"distilling into mobilenet_v3_large ({student_epochs} epochs, T=4, alpha=0.7) on all non-test images")
    t = time.monotonic()
    last = [0.0]

    def progress(p):
        if time.monotonic() - last[0] > 30:
            last[0] = time.monotonic()
            say(f"  {p.message}: {p.done}/{p.total}")

    student = distill(teacher, ws, "mobilenet_v3_large", epochs=student_epochs, temperature=4.0, alpha=0.7,
                      progress=progress)
    out["distill_seconds"] = time.monotonic() - t
    s_loaded = dataclasses.replace(teacher, net=student, spec=student_spec(teacher.spec, "mobilenet_v3_large"),
                                   temperature=1.0)
    out["student"] = score(s_loaded, f"student float (Loupe), distilled in {out['distill_seconds']:.0f} s")
    out["student"]["bytes"] = state_dict_bytes(student)
    sq = static_int8(s_loaded, normalise(calib01, s_loaded.spec))
    out["student_int8"] = score(sq, "student INT8 (Loupe)")
    out["student_int8"]["bytes"] = state_dict_bytes(sq.net)
    ws.close()
    return out


def ratios(rows: list[dict], key: str) -> str:
    """'arch 1.23×, …' of ``key`` over the bare + PIL rate."""
    return ", ".join(f"{r['arch']} {r[key] / r['pil']:.2f}×" for r in rows)


def markdown(a: list[dict], b: dict, wall: float) -> str:
    """The Inference section of docs/benchmarks.md."""
    ok = lambda c: "met" if c else "**not met**"  # noqa: E731
    lines = [
        f"Run {now_stamp()} on {machine_facts()}; torch threads {torch.get_num_threads()}; "
        f"`bench/inference_bench.py`, {wall / 60:.1f} min in all.",
        "",
        f"### Throughput at 224 px, batch {BATCH}, CPU (PneumoniaMNIST test images as 28×28 PNG files)",
        "",
        "Images/s. *Bare floor*: `model.eval(); torch.inference_mode(); model(batch)` over tensors made "
        "beforehand (compute only). *Bare + PIL*: the same loop decoding each PNG with PIL and torchvision "
        "transforms (the realistic reference; ratios are against it). *Loupe*: `run_inference` from the files "
        "(threaded decode one batch ahead, forward_all with embeddings). *INT8*: `run_inference` with "
        "`quantize_static_int8` (FX post-training static quantization of the backbone, x86 kernels, 32 "
        "calibration images).",
        "",
        "| model | images | bare floor | bare + PIL | Loupe | Loupe / bare+PIL | Loupe INT8 | INT8 / bare+PIL "
        "| INT8 top-class agreement | dynamic INT8 floor |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in a:
        dyn = f"{r['dyn_floor']:.1f}" if r["dyn_floor"] else "–"
        lines.append(
            f"| {r['arch']} ({r['weights']} weights) | {r['n']} | {r['floor']:.1f} | {r['pil']:.1f} | "
            f"{r['loupe']:.1f} | {r['loupe'] / r['pil']:.2f}× | {r['int8']:.1f} | {r['int8'] / r['pil']:.2f}× | "
            f"{r['int8_agree']:.3f} | {dyn} |")
    tb = b["teacher"]
    lines += [
        "",
        f"### Teacher, INT8 and distilled student at {b['size']} px (test split, {b['n_test']} images)",
        "",
        f"Teacher: efficientnet_lite0 (ImageNet weights), frozen-backbone fine-tune, {b['teacher_epochs']} epochs "
        f"on the 3,882 training images ({b['teacher_seconds']:.0f} s). Student: mobilenet_v3_large from random "
        f"init, distilled ({b['student_epochs']} epochs, T = 4, α = 0.7, soft targets on all 4,406 train+val "
        f"images, hard labels where confirmed; {b['distill_seconds']:.0f} s). Reference for the ratios: the "
        f"teacher in the bare loop with PIL decode ({b['pil']:.1f} img/s; floor {b['floor']:.1f} img/s).",
        "",
        "| model (through Loupe) | images/s | × bare+PIL teacher | test AUC | Δ AUC vs teacher | state dict |",
        "|---|---|---|---|---|---|",
    ]
    for key, name in (("teacher", "teacher float"), ("teacher_int8", "teacher INT8"), ("student", "student float"),
                      ("student_int8", "student INT8")):
        r = b[key]
        lines.append(f"| {name} | {r['rate']:.1f} | {r['rate'] / b['pil']:.2f}× | {r['auc']:.4f} | "
                     f"{(r['auc'] - tb['auc']) * 100:+.2f} pt | {r['bytes'] / 1e6:.1f} MB |")
    plain_ok = all(r["loupe"] / r["pil"] >= 1.0 for r in a)
    fast = [(k, b[k]) for k in ("teacher_int8", "student", "student_int8")
            if b[k]["rate"] / b["pil"] >= 2.0 and b[k]["auc"] >= tb["auc"] - 0.01]
    fast224 = [r["arch"] for r in a if r["int8"] / r["pil"] >= 2.0]
    lines += [
        "",
        "### Targets",
        "",
        f"- Plain Loupe ≥ 1.0× the bare loop with PIL decode (224 px): {ok(plain_ok)} "
        f"({ratios(a, 'loupe')}).",
        f"- INT8 ≥ 2× the bare loop at 224 px: {ok(len(fast224) == len(a))} "
        f"({ratios(a, 'int8')}; AUC not measured there: untrained heads).",
        f"- INT8 or distilled ≥ 2× with ≤ 1 point AUC loss ({b['size']} px, trained teacher): "
        f"{ok(bool(fast))}" + (f" (by {', '.join(k.replace('_', ' ') for k, _ in fast)})." if fast else "."),
        "- Dynamic INT8 (`quantize_dynamic_int8`) only quantizes Linear layers; on these CNNs it gives no "
        "real speed-up (see the last column above) — static quantization of the convolutions is what pays.",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="test images for EfficientNet-Lite0 at 224 px")
    ap.add_argument("--n-resnet", type=int, default=64, help="test images for ResNet-50 at 224 px (slow)")
    ap.add_argument("--size", type=int, default=64, help="input size of the teacher and student")
    ap.add_argument("--teacher-epochs", type=int, default=10)
    ap.add_argument("--student-epochs", type=int, default=4)
    ap.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not NPZ.exists():
        print(f"skipped: {NPZ} is absent (../shared/data is not beside this clone)")
        return 0
    data = np.load(NPZ)
    say(f"machine: {machine_facts()}; torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory(prefix="loupe-infer-") as d:
        tmp = Path(d)
        a = part_a(tmp, data, args.n, args.n_resnet)
        b = part_b(tmp, data, args.teacher_epochs, args.student_epochs, args.size)
    text = markdown(a, b, time.monotonic() - T0)
    print("\n" + text)
    if not args.no_write:
        say(f"wrote the Inference section of {write_section(BENCH_MD, 'Inference', text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
