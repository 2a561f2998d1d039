"""``loupe export`` and ``loupe audit verify``."""

from __future__ import annotations

import logging

from app.cli.common import emit, info, open_workspace

logger = logging.getLogger(__name__)


def add_parsers(sub, common) -> None:
    """Register ``export`` and ``audit verify`` on the subparsers object ``sub``."""
    e = sub.add_parser("export", parents=[common], help="export labels, predictions and explanations")
    e.add_argument("--format", required=True, choices=["csv", "json", "dicom-sr"],
                   help="csv / json: one file; dicom-sr: a new folder of DICOM SR, Secondary Capture (explanation maps) "
                        "and VL Photographic Image (photographs) files")
    e.add_argument("out", metavar="OUT", help="file (csv, json) or folder (dicom-sr) to create")
    e.add_argument("--deidentify", action="store_true",
                   help="DICOM PS3.15 Basic Profile: pseudonymous ids, remapped UIDs, shifted dates, no paths")
    e.add_argument("--include-burned-in", action="store_true",
                   help="with --deidentify: also export images whose pixels may carry burned-in text (Burned In "
                        "Annotation = YES, and photographs); they are held back otherwise")
    e.set_defaults(func=cmd_export)

    a = sub.add_parser("audit", help="check the audit log")
    asub = a.add_subparsers(dest="audit_command", metavar="ACTION")
    asub.required = True
    v = asub.add_parser("verify", parents=[common], help="check the audit log's hash chain")
    v.set_defaults(func=cmd_audit_verify)


def cmd_export(args) -> int:
    from core.export import export_workspace

    def progress(event) -> None:
        if event.total and event.done and event.done % 50 == 0:
            info(f"{event.message}")

    with open_workspace(args) as ws:
        report = export_workspace(ws, args.out, args.format, deidentify=args.deidentify, progress=progress,
                                  actor="cli", include_burned_in=args.include_burned_in)
    for item in report.skipped:
        info(f"skipped {item['id']}: {item['reason']}")
    counts = ", ".join(f"{v} {k}" for k, v in report.counts.items())
    held = (f"; held back {len(report.held_back)} image(s) whose pixels may carry burned-in text "
            f"(--include-burned-in exports them)" if report.held_back else "")
    emit(args, report.to_json(),
         f"exported {args.format}{' (de-identified)' if report.deidentified else ''} to {report.out}: {counts}{held}")
    return 0


def cmd_audit_verify(args) -> int:
    with open_workspace(args) as ws:
        ok, first_bad = ws.verify_audit()
        entries = len(ws.audit_log())
    doc = {"intact": ok, "entries": entries, "first_broken": first_bad}
    if ok:
        emit(args, doc, f"audit log intact, {entries} entries")
        return 0
    emit(args, doc, f"audit log broken at entry {first_bad}")
    info(f"loupe: the audit log's hash chain is broken at entry {first_bad}: "
         "that entry or the one before it was changed, removed or reordered")
    return 1
