"""``loupe readers`` (the team, double reading, agreement) and ``loupe adjudicate`` (settle disputed reads)."""

from __future__ import annotations

import logging
import os
import sys

from app.cli.common import emit, open_workspace

logger = logging.getLogger(__name__)

READER_ENV = "LOUPE_READER"


def _reader_name(args) -> str | None:
    """``--reader`` after the command, then the global ``--reader``, then ``LOUPE_READER``."""
    return (getattr(args, "cmd_reader", None) or getattr(args, "reader", None)
            or os.environ.get(READER_ENV) or None)


def add_parsers(sub, common) -> None:
    """Register ``readers`` and ``adjudicate`` on the subparsers object ``sub``."""
    from core.workspace.reading import ROLES

    r = sub.add_parser("readers", parents=[common],
                       help="the reading team: roles, double reading, inter-reader agreement")
    r.add_argument("--version", help="model version compared with the readers (default: active)")
    r.set_defaults(func=cmd_readers)
    rsub = r.add_subparsers(dest="readers_command", metavar="ACTION")
    add = rsub.add_parser("add", parents=[common], help="add a reader or change a reader's role")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, required=True)
    add.set_defaults(func=cmd_readers_add)
    dr = rsub.add_parser("double-reading", parents=[common], help="switch double reading on or off")
    dr.add_argument("state", choices=["on", "off"])
    dr.add_argument("--blind-model", action="store_true", help="readers do not see the model's prediction")
    dr.set_defaults(func=cmd_double_reading)
    nx = rsub.add_parser("next", parents=[common], help="the next queued cases this reader still has to read")
    nx.add_argument("--reader", dest="cmd_reader", metavar="NAME")
    nx.add_argument("--n", type=int, default=1)
    nx.set_defaults(func=cmd_readers_next)

    a = sub.add_parser("adjudicate", parents=[common],
                       help="list disputed double reads, or settle one: loupe adjudicate IMAGE --class A")
    a.add_argument("image", metavar="IMAGE", nargs="?")
    a.add_argument("--class", dest="classes", help="the adjudicated class; ';' separates several")
    a.add_argument("--severity", type=int)
    a.add_argument("--note", default="")
    a.add_argument("--reader", dest="cmd_reader", metavar="NAME", help="the adjudicator (default: --reader)")
    a.set_defaults(func=cmd_adjudicate)


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def cmd_readers(args) -> int:
    from core.readers import team_report

    with open_workspace(args) as ws:
        readers = ws.readers()
        setting = ws.double_reading()
        report = team_report(ws, args.version)
    doc = {"readers": [r.to_json() for r in readers], "double_reading": setting.to_json(), **report.to_json()}
    k = report.agreement
    lines = [f"{r.name:<20} {r.role}" for r in readers] or ["no readers yet: `loupe readers add NAME --role reader`"]
    lines.append(f"double reading: {'on' if setting.enabled else 'off'}"
                 + (" (blind to the model)" if setting.blind_model else ""))
    ci = f" (95% CI {k.ci95[0]:.3f} to {k.ci95[1]:.3f})" if k.ci95 else ""
    lines.append(f"inter-reader kappa: {_fmt(k.kappa)}{ci} on {k.n} double-read cases")
    for name, stats in report.readers.items():
        for cls, rates in stats["per_class"].items():
            model = stats["model"]["per_class"][cls]
            lines.append(f"  {name} {cls}: sensitivity {_fmt(rates['sensitivity'])}, specificity "
                         f"{_fmt(rates['specificity'])}; model on the same cases {_fmt(model['sensitivity'])}, "
                         f"{_fmt(model['specificity'])}")
    emit(args, doc, "\n".join(lines))
    return 0


def cmd_readers_add(args) -> int:
    with open_workspace(args) as ws:
        reader = ws.add_reader(args.name, args.role, actor=_reader_name(args) or "cli")
    emit(args, reader.to_json(), f"{reader.name}: {reader.role}")
    return 0


def cmd_double_reading(args) -> int:
    with open_workspace(args) as ws:
        setting = ws.set_double_reading(args.state == "on", args.blind_model, actor=_reader_name(args) or "cli")
    emit(args, setting.to_json(), f"double reading {'on' if setting.enabled else 'off'}")
    return 0


def cmd_readers_next(args) -> int:
    name = _reader_name(args)
    if not name:
        print("loupe readers next: say who reads with --reader NAME (or LOUPE_READER)", file=sys.stderr)
        return 2
    with open_workspace(args) as ws:
        blind = ws.double_reading().blind_model
        items = ws.reading_queue(name, max(1, args.n))
    rows = [{"id": it.image_id, "rank": it.rank, **({} if blind else {"score": it.score, "why": it.why})}
            for it in items]
    emit(args, rows, "\n".join(f"{r['id']}" for r in rows) or f"nothing left for {name} to read")
    return 0


def cmd_adjudicate(args) -> int:
    from core.readers import disputed

    with open_workspace(args) as ws:
        if args.image is None:
            cases = disputed(ws)
            doc = [c.to_json() for c in cases]
            human = "\n".join(
                f"{c.image_id}: " + ", ".join(f"{r.annotator} says {';'.join(r.classes)}" for r in c.reads)
                for c in cases) or "no disputed reads"
            emit(args, doc, human)
            return 0
        if not args.classes:
            print("loupe adjudicate: give the decision with --class A", file=sys.stderr)
            return 2
        name = _reader_name(args)
        if not name:
            print("loupe adjudicate: say who adjudicates with --reader NAME (or LOUPE_READER)", file=sys.stderr)
            return 2
        ref = ws.find_image(args.image)
        label = ws.adjudicate(ref.id, args.classes, name, severity=args.severity, note=args.note)
        case = ws.case_reads(ref.id)[ref.id]
    emit(args, {"id": ref.id, "classes": list(label.classes), "adjudicator": label.annotator, "label_id": label.id,
                "case": case.to_json()},
         f"adjudicated {ref.id}: {';'.join(label.classes)}")
    return 0
