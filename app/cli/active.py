"""``loupe queue refresh|next|errors``, ``loupe label``, ``loupe similar`` and ``loupe simulate``."""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

from app.cli.common import emit, info, open_workspace, reader_name
from core.active.why import describe_pick

logger = logging.getLogger(__name__)

#: Class names of known MedMNIST files (by file-name prefix), for readable output.
KNOWN_CLASSES = {"pneumoniamnist": ("normal", "pneumonia")}


def add_parsers(sub, common) -> None:
    """Register the active-learning commands on the subparsers object ``sub``."""
    from core.active.names import SIM_STRATEGIES, STRATEGIES

    q = sub.add_parser("queue", help="the labelling queue: refresh it or show the next cases")
    qsub = q.add_subparsers(dest="queue_command", metavar="ACTION")
    qsub.required = True
    r = qsub.add_parser("refresh", parents=[common], help="predict the pool and rebuild the queue")
    r.add_argument("--strategy", choices=STRATEGIES, default=None, help="default: `loupe settings` strategy")
    r.add_argument("--n", type=int, default=None, help="default: `loupe settings` batch")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    r.set_defaults(func=cmd_queue_refresh)
    nx = qsub.add_parser("next", parents=[common], help="the next cases to label, with why")
    nx.add_argument("--n", type=int, default=1)
    nx.set_defaults(func=cmd_queue_next)
    er = qsub.add_parser("errors", parents=[common], help="confirmed labels a confident model disputes")
    er.add_argument("--confidence", type=float, default=0.9)
    er.set_defaults(func=cmd_queue_errors)

    lb = sub.add_parser("label", parents=[common], help="label one image (a confirmed, human label)")
    lb.add_argument("image", metavar="IMAGE")
    lb.add_argument("--class", dest="classes", required=True, help="class name; ';' separates several")
    lb.add_argument("--severity", type=int)
    lb.add_argument("--note", default="")
    lb.add_argument("--annotator", default=None,
                    help="who labels (default: the global --reader, else $LOUPE_READER, else 'cli')")
    lb.add_argument("--flag-wrong", action="store_true")
    lb.set_defaults(func=cmd_label)

    si = sub.add_parser("similar", parents=[common], help="nearest labelled images by embedding")
    si.add_argument("image", metavar="IMAGE")
    si.add_argument("--k", type=int, default=5)
    si.set_defaults(func=cmd_similar)

    sm = sub.add_parser("simulate", parents=[common], help="run the labelling loop with npz labels as oracle")
    sm.add_argument("--npz", required=True)
    sm.add_argument("--strategy", choices=SIM_STRATEGIES, default="default")
    sm.add_argument("--seed-size", type=int, default=20)
    sm.add_argument("--batch", type=int, default=20)
    sm.add_argument("--rounds", type=int, default=15)
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--rare", "--rare-class", dest="rare",
                    help="rare class name(s) or index(es), comma-separated (default: the rarest in the training split)")
    sm.add_argument("--classes", help="comma-separated class names for the label indices (default: the npz's "
                                      "'classes' array when it has one)")
    sm.add_argument("--miss-cost", type=float, default=5.0, help="miss cost of a rare class without its own --cost")
    sm.add_argument("--cost", default="", help="miss cost per class, e.g. mel=10,df=5 (others: 1, rare: --miss-cost)")
    sm.add_argument("--start", choices=("random", "kmeans", "typiclust"), default="random",
                    help="how the seed set is chosen (default: a random draw, the same for every strategy)")
    sm.add_argument("--eval-split", choices=("test", "val"), default="test",
                    help="split the curve is measured on (val: for choosing settings; held out of train by "
                         "train_groups when the npz has no val split)")
    sm.add_argument("--arch", default="efficientnet_lite0")
    sm.add_argument("--pretrained", default="default")
    sm.add_argument("--min-rare-share", type=float, default=None,
                    help="share of each batch that must be likely rare (default: the app's, 0.2)")
    sm.add_argument("--audit-share", type=float, default=None,
                    help="share of each batch spent on confident negatives (default: the app's, 0.05)")
    sm.add_argument("--input-size", type=int, default=224,
                    help="backbone input in pixels (default 224, the models' own; the embeddings of an npz are "
                         "computed once and cached: about 4 minutes for PneumoniaMNIST on 2 CPU cores)")
    sm.add_argument("--cache-dir", help="where backbone embeddings of the npz are cached (default: temp dir)")
    sm.set_defaults(func=cmd_simulate)


def _rows(items) -> list[dict]:
    return [{"id": it.image_id, "score": it.score, "why": it.why, "rank": it.rank, "strategy": it.strategy,
             "version": it.version} for it in items]


def _human(items) -> str:
    lines = []
    for it in items:
        lines.append(f"{it.rank:>3}. {it.image_id}  score {it.score:.3f}\n     {describe_pick(it.why)}")
    return "\n".join(lines) or "the queue is empty: `loupe queue refresh`"


def cmd_queue_refresh(args) -> int:
    from core.active.loop import refresh_queue

    if args.n is not None and args.n < 1:
        print("loupe queue refresh: --n must be at least 1", file=sys.stderr)
        return 2
    with open_workspace(args) as ws:
        from core.active.settings import read_settings

        stored = read_settings(ws)  # the same values the window's queue uses
        args.strategy = args.strategy or stored["strategy"]
        args.n = args.n or stored["batch"]
        items = refresh_queue(ws, args.strategy, args.n, device=args.device, seed=args.seed)
    doc = {"strategy": args.strategy, "n": len(items), "version": items[0].version if items else None,
           "items": _rows(items)}
    emit(args, doc, _human(items))
    return 0


def cmd_queue_next(args) -> int:
    with open_workspace(args) as ws:
        items = ws.queue(max(1, args.n))
    emit(args, _rows(items), _human(items))
    return 0


def cmd_queue_errors(args) -> int:
    from core.active.label_errors import label_error_candidates
    from core.active.loop import confirmed_labels, model_outputs
    from core.models.versions import load_version

    with open_workspace(args) as ws:
        loaded = load_version(ws)
        given = confirmed_labels(ws)
        outputs, _ = model_outputs(ws, loaded, sorted(given))
        found = label_error_candidates(outputs.image_ids, outputs.probs, given, loaded.classes, args.confidence)
    rows = [c.to_json() for c in found]
    human = "\n".join(f"{r['id']}: labelled {r['given']} (p {r['p_given']:.3f}), model says {r['predicted']} "
                      f"(p {r['p_predicted']:.3f})" for r in rows) or "no disputed labels"
    emit(args, rows, human)
    return 0


def cmd_label(args) -> int:
    from core.active.loop import new_confirmed_labels, should_retrain

    with open_workspace(args) as ws:
        ref = ws.find_image(args.image)
        annotator = args.annotator or reader_name(args, "cli")
        label = ws.add_label(ref.id, args.classes, annotator, source="human", severity=args.severity,
                             note=args.note, flag_wrong=args.flag_wrong)
        ws.dequeue(ref.id)
        n_new = new_confirmed_labels(ws) if ws.active_model() is not None else 0
        due = ws.active_model() is not None and should_retrain(ws, n_new)
    if due:
        info(f"{n_new} new confirmed labels since the last training: `loupe train` is due")
    emit(args, {"id": ref.id, "classes": list(label.classes), "annotator": label.annotator,
                "label_id": label.id, "new_labels": n_new, "retrain_due": due},
         f"labelled {ref.id}: {';'.join(label.classes)}")
    return 0


def cmd_similar(args) -> int:
    from core.active.loop import confirmed_labels, model_outputs
    from core.active.similar import similar_cases

    with open_workspace(args) as ws:
        ref = ws.find_image(args.image)
        given = confirmed_labels(ws)
        outputs, failed = model_outputs(ws, None, sorted(set(given) | {ref.id}))
    if ref.id not in outputs.image_ids:
        raise_reason = dict(failed).get(ref.id, "unreadable")
        from core.errors import LoupeError

        raise LoupeError(f"cannot embed {ref.id}: {raise_reason}")
    query = outputs.emb[outputs.index()[ref.id]]
    found = similar_cases(query, outputs.image_ids, outputs.emb, given, args.k, exclude=[ref.id])
    rows = [n.to_json() for n in found]
    emit(args, rows, "\n".join(f"{r['id']}  {r['label']:<12} distance {r['distance']:.3f}" for r in rows)
         or "no labelled images yet")
    return 0


def _class_names(args, npz: Path):
    if args.classes:
        return [c.strip() for c in args.classes.split(",")]
    for prefix, names in KNOWN_CLASSES.items():
        if npz.name.lower().startswith(prefix):
            return list(names)
    try:
        import numpy as np

        with np.load(npz) as data:
            if "classes" in data.files:
                return [str(c) for c in data["classes"].tolist()]
    except (OSError, ValueError):
        return None  # the simulation itself reports an unreadable file
    return None


def _class_index(text: str, names, what: str) -> int:
    from core.errors import LoupeError

    text = text.strip()
    if names and text in names:
        return names.index(text)
    if text.isdigit() and (not names or int(text) < len(names)):
        return int(text)
    known = f" (classes: {', '.join(names)})" if names else ""
    raise LoupeError(f"unknown {what} '{text}'{known}")


def cmd_simulate(args) -> int:
    from core.active.simulate import SimConfig, simulate
    from core.errors import LoupeError
    from core.models.weights import default_torch_cache_dir

    for name in ("seed_size", "batch", "rounds"):
        if getattr(args, name) < (0 if name == "rounds" else 1):
            print(f"loupe simulate: --{name.replace('_', '-')} is too small", file=sys.stderr)
            return 2
    npz = Path(args.npz)
    if not npz.exists():
        raise LoupeError(f"no such file: {npz}")
    names = _class_names(args, npz)
    rares: list[int] = []
    for part in (args.rare or "").split(","):
        if part.strip():
            idx = _class_index(part, names, "rare class")
            if idx not in rares:
                rares.append(idx)
    costs: dict[int, float] = {}
    for part in (p.strip() for p in args.cost.split(",")):
        if not part:
            continue
        cname, sep, value = part.partition("=")
        try:
            cost = float(value)
        except ValueError:
            cost = -1.0
        if not sep or cost < 0:
            raise LoupeError(f"--cost takes CLASS=NUMBER pairs (a number ≥ 0), got '{part}'")
        costs[_class_index(cname, names, "class in --cost")] = cost
    if args.miss_cost < 0:
        raise LoupeError(f"--miss-cost must not be negative, got {args.miss_cost}")
    cache = Path(args.cache_dir) if args.cache_dir else Path(tempfile.gettempdir()) / "loupe-sim-cache"
    shares = {k: getattr(args, k) for k in ("min_rare_share", "audit_share") if getattr(args, k) is not None}
    for key, value in shares.items():
        if not 0.0 <= value < 1.0:
            raise LoupeError(f"--{key.replace('_', '-')} must be at least 0 and below 1, got {value}")
    config = SimConfig(strategy=args.strategy, seed_size=args.seed_size, batch=args.batch, rounds=args.rounds,
                       seed=args.seed, rare_class=rares[0] if rares else None, rare_classes=tuple(rares),
                       class_costs=costs or None, miss_cost=args.miss_cost, start=args.start, **shares)
    result = simulate(npz, config, cache, names, arch=args.arch, pretrained=args.pretrained,
                      size=args.input_size, torch_cache_dir=str(default_torch_cache_dir()), eval_split=args.eval_split)
    rare_txt = "+".join(result["rare_classes"])
    human = "\n".join(f"{p['labels']:>5} labels: macro AUC {p['macro_auc']:.3f}, {rare_txt} AP "
                      f"{p['rare_ap']:.3f}, recall {p['rare_recall']:.3f}, {p['rare_found']} rare found"
                      for p in result["curve"])
    emit(args, result, human)
    return 0
