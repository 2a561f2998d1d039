"""``loupe findings [set …]`` and ``loupe settings [set KEY VALUE]`` (contract: ../shared/CLI.md)."""

from __future__ import annotations

import json

from app.cli.common import emit, info, open_workspace


def add_parsers(sub, common) -> None:
    """Register ``findings`` and ``settings`` on the subparsers object ``sub``."""
    f = sub.add_parser("findings", parents=[common], help="show or set the workspace's findings (classes, rare "
                                                          "classes, miss costs, severity scale)")
    f.set_defaults(func=cmd_findings)
    fsub = f.add_subparsers(dest="findings_command", metavar="ACTION")
    s = fsub.add_parser("set", parents=[common], help="set the findings (replaces them; audited)")
    s.add_argument("--classes", required=True, help="comma-separated class names, in button order")
    s.add_argument("--multilabel", action="store_true", help="several classes may be true at once")
    s.add_argument("--rare", default="", help="comma-separated rare classes the queue protects")
    s.add_argument("--cost", default="", help="miss cost per class, e.g. B=5,C=3 (others cost 1)")
    s.add_argument("--severity", default="", help='severity grades, mildest first, e.g. "none,mild,moderate,severe"')
    s.add_argument("--widen-model", action="store_true",
                   help="when classes were added, also create a new active model version with a wider head")
    s.set_defaults(func=cmd_findings_set)

    g = sub.add_parser("settings", parents=[common], help="show or set the queue and retraining settings")
    g.set_defaults(func=cmd_settings)
    gsub = g.add_subparsers(dest="settings_command", metavar="ACTION")
    t = gsub.add_parser("set", parents=[common], help="set one setting (audited)")
    t.add_argument("key", metavar="KEY")
    t.add_argument("value", metavar="VALUE")
    t.set_defaults(func=cmd_settings_set)


def _findings_text(doc: dict) -> str:
    lines = [f"classes:    {', '.join(doc['classes']) or '(none yet: loupe findings set --classes A,B)'}",
             f"kind:       {'multi-label' if doc['multilabel'] else 'exclusive (one class per image)'}",
             f"rare:       {', '.join(doc['rare']) or '(none: the rarest labelled class)'}",
             "miss costs: " + (", ".join(f"{k}={v:g}" for k, v in doc["costs"].items()) or "(default)"),
             f"severity:   {', '.join(doc['severity']) or '(no severity scale)'}"]
    return "\n".join(lines)


def cmd_findings(args) -> int:
    with open_workspace(args) as ws:
        doc = ws.findings().to_json()
    emit(args, doc, _findings_text(doc))
    return 0


def cmd_findings_set(args) -> int:
    from core.workspace.findings import Findings, added_classes, parse_costs

    def names(text: str) -> tuple[str, ...]:
        return tuple(p.strip() for p in (text or "").split(",") if p.strip())

    wanted = Findings(classes=names(args.classes), multilabel=args.multilabel, rare=names(args.rare),
                      costs=parse_costs(args.cost), severity=names(args.severity))
    with open_workspace(args) as ws:
        stored = ws.set_findings(wanted, actor="cli")
        active = ws.active_model()
        new = added_classes(active.classes, stored) if active is not None else []
        widened = None
        if new and args.widen_model:
            from core.models.widen import widen_active_model

            widened = widen_active_model(ws, list(stored.classes), actor="cli")
        elif new:
            info(f"the active model {active.version} does not know {', '.join(new)}: create a version with a wider "
                 f"head with `loupe findings set … --widen-model`, or a new model with `loupe model create`")
    doc = stored.to_json()
    if widened is not None:
        doc["widened_version"] = widened.version
    text = _findings_text(doc) + (f"\nnew model version {widened.version} (wider head) is active" if widened else "")
    emit(args, doc, text)
    return 0


def cmd_settings(args) -> int:
    from core.active.settings import SPECS, read_settings

    with open_workspace(args) as ws:
        values = read_settings(ws)
    width = max(len(s.key) for s in SPECS)
    human = "\n".join(f"{s.key:<{width}}  {json.dumps(values[s.key])}  — {s.help}" for s in SPECS)
    emit(args, values, human)
    return 0


def cmd_settings_set(args) -> int:
    from core.active.settings import write_setting

    with open_workspace(args) as ws:
        value = write_setting(ws, args.key, args.value, actor="cli")
    emit(args, {args.key: value}, f"{args.key} = {json.dumps(value)}")
    return 0
