"""``loupe import``, ``loupe list``, ``loupe render`` and ``loupe demo``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from app.cli.common import emit, info, open_workspace, resolve_workspace_path
from core.errors import DamagedImageError, LoupeError

DEMO_DIR = Path(__file__).resolve().parents[2] / "resources" / "demo"


def add_parsers(sub, common) -> None:
    """Register the study commands on the subparsers object ``sub``."""
    p = sub.add_parser("import", parents=[common], help="import DICOM/PNG/JPEG/TIFF files and folders")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--labels", metavar="CSV",
                   help="labels CSV (path|file, label, [severity], [split], [patient], [group], [modality])")
    p.add_argument("--as-modality", type=str.upper, choices=["CR", "DX", "XC"],
                   help="what non-DICOM pictures are: CR/DX radiographs or XC photographs (default XC)")
    p.add_argument("--trial-decode-limit", type=float, default=64.0, metavar="MB",
                   help="decode every frame at import of files up to MB megabytes to prove them whole "
                        "(default 64; 0 = header and structure checks only, the display checks the rest)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("list", parents=[common], help="list imported images")
    p.add_argument("--split", choices=["train", "val", "test"])
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("render", parents=[common], help="write an image as a reader sees it (PNG)")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--out", required=True, metavar="PNG")
    p.add_argument("--window", nargs=2, type=float, metavar=("CENTER", "WIDTH"))
    p.add_argument("--preset", type=int, default=0, help="index of the header's window preset")
    p.add_argument("--frame", type=int, default=0, help="frame of a multi-frame image (0 = first)")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("demo", parents=[common], help="build the demo workspace from resources/demo")
    p.add_argument("--no-train", action="store_true", help="import only; do not create or train a model")
    p.set_defaults(func=cmd_demo)


def _report_text(report) -> str:
    lines = [f"imported {report.imported} image(s), {report.skipped} already present, "
             f"{len(report.errors)} rejected, {report.labels_added} label(s) added"]
    lines += [f"  rejected {e.path}: {e.reason}" for e in report.errors]
    lines += [f"  skipped {e.path}: {e.reason}" for e in report.skipped_files]
    lines += [f"  replaced {e.path}: {e.reason}" for e in report.replaced]
    return "\n".join(lines)


def cmd_import(args) -> int:
    from core.importer import import_paths

    missing = [p for p in args.paths if not Path(p).exists()]
    if missing and len(missing) == len(args.paths):
        raise LoupeError(f"nothing to import: {', '.join(missing)} does not exist")
    from core.imaging.integrity import IntegrityOptions

    limit = max(0.0, float(getattr(args, "trial_decode_limit", 64.0)))
    integrity = IntegrityOptions(trial_decode=limit > 0, trial_decode_limit=int(limit * 1024 * 1024))
    with open_workspace(args) as ws:
        report = import_paths(ws, args.paths, labels_csv=args.labels, progress=_stderr_progress(args),
                              as_modality=args.as_modality, integrity=integrity)
    emit(args, report.to_json(), _report_text(report))
    return 0


def _stderr_progress(args):
    last = [-1]

    def progress(event) -> None:
        step = int(event.fraction * 10)
        if event.total >= 200 and step != last[0]:
            last[0] = step
            info(f"scanning {event.done}/{event.total}")

    return progress


def cmd_list(args) -> int:
    with open_workspace(args) as ws:
        refs = ws.images(split=args.split)
        damaged = ws.damaged_images()
    rows = [{"id": r.id, "path": r.path, "modality": r.record.modality, "patient_id": r.record.patient_id,
             "study_uid": r.record.study_uid, "label": r.label, "split": r.split, "group": r.group,
             "frames": r.record.frames, "rows": r.record.rows, "columns": r.record.columns,
             "damaged": damaged.get(r.id)} for r in refs]
    human = "\n".join(f"{r['id']}  {r['modality']:<3} {r['label'] or '-':<12} {r['split'] or '-':<5} {r['path']}"
                      for r in rows) or "no images imported yet"
    emit(args, rows, human)
    return 0


def cmd_render(args) -> int:
    from PIL import Image

    from core.imaging import render

    with open_workspace(args) as ws:
        ref = ws.find_image(args.image)
    window = tuple(args.window) if args.window else None
    try:
        pixels = render(ref.path, frame=args.frame, window=window, voi_index=args.preset)
    except DamagedImageError as exc:
        # never written as if whole; remembered so prediction, the queue and training leave it out
        with open_workspace(args) as ws:
            ws.mark_damaged(ref.id, str(exc), actor=getattr(args, "reader", None) or "cli")
        raise DamagedImageError(f"{ref.path} is damaged and was not rendered: {exc}") from None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(out)
    height, width = pixels.shape[:2]
    emit(args, {"id": ref.id, "out": str(out), "shape": [height, width], "mode": "RGB" if pixels.ndim == 3 else "L"},
         f"wrote {out} ({width}×{height})")
    return 0


def cmd_demo(args) -> int:
    """Prepare the bundled demo (import, offline pretrained model, seed training, queue) and say what it holds."""
    from core.demo import prepare_demo

    with open_workspace(args) as ws:
        summary = prepare_demo(ws, DEMO_DIR, train=not args.no_train, progress=lambda p: info(p.message))
        text = demo_text(ws, summary)
    emit(args, {**summary["import"], **{k: v for k, v in summary.items() if k != "import"},
                "workspace": str(resolve_workspace_path(args.workspace))}, text)
    return 0


def demo_text(ws, summary: dict) -> str:
    """A person-readable summary of the demo workspace."""
    refs = ws.images()
    labels = ws.current_labels()
    by_modality = Counter(r.record.modality for r in refs)
    studies = {r.record.study_uid for r in refs}
    patients = {r.record.patient_id for r in refs if r.record.patient_id}
    by_class = Counter(";".join(l.classes) for l in labels.values() if l.classes)
    imported = summary["import"]
    return (f"imported {imported['imported']} image(s), {imported['skipped']} already present, "
            f"{len(imported['errors'])} rejected\n"
            f"demo workspace {ws.path}: {len(refs)} images in {len(studies)} studies of {len(patients)} patients "
            f"({', '.join(f'{m} {n}' for m, n in sorted(by_modality.items()))}); "
            f"labelled: {', '.join(f'{c} {n}' for c, n in sorted(by_class.items())) or 'none'}; "
            f"active model: {summary.get('active') or 'none'}; queued: {len(ws.queue())}")
