"""``loupe pacs query|retrieve|send``: studies from a DICOM node (DIMSE) or a DICOMweb server."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from app.cli.common import emit, info, open_workspace, resolve_workspace_path

logger = logging.getLogger(__name__)


def add_parsers(sub, common) -> None:
    """Register ``pacs`` and its actions on the subparsers object ``sub``."""
    node = __import__("argparse").ArgumentParser(add_help=False)
    node.add_argument("--host", default="")
    node.add_argument("--port", type=int, default=104)
    node.add_argument("--aet", default="LOUPE", help="this workstation's AE title")
    node.add_argument("--called-aet", default="ANY-SCP", help="the node's AE title")
    node.add_argument("--dicomweb", metavar="URL", default="", help="a DICOMweb base URL instead of host/port")
    node.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds")

    p = sub.add_parser("pacs", help="query, retrieve and send studies (DIMSE or DICOMweb)")
    psub = p.add_subparsers(dest="pacs_command", metavar="ACTION")
    psub.required = True
    q = psub.add_parser("query", parents=[common, node], help="find studies by patient id or study UID")
    q.add_argument("--patient-id")
    q.add_argument("--study-uid")
    q.set_defaults(func=cmd_query)
    r = psub.add_parser("retrieve", parents=[common, node], help="retrieve a study and import it")
    r.add_argument("--study-uid", required=True)
    r.add_argument("--move-port", type=int, default=0, metavar="PORT",
                   help="retrieve with C-MOVE instead of C-GET: listen on PORT as a storage SCP named --aet "
                        "(the node must know that AE title, this host and PORT as a move destination)")
    r.add_argument("--store", metavar="FOLDER",
                   help="where retrieved files are kept (default: a 'pacs' folder beside the workspace)")
    r.set_defaults(func=cmd_retrieve)
    s = psub.add_parser("send", parents=[common, node], help="send DICOM files or folders (C-STORE or STOW-RS)")
    s.add_argument("paths", nargs="+", metavar="FILE|FOLDER")
    s.set_defaults(func=cmd_send)


def _node(args):
    from core.pacs import PacsNode

    node = PacsNode(host=args.host, port=args.port, aet=args.aet, called_aet=args.called_aet,
                    dicomweb=args.dicomweb, timeout=args.timeout, move_port=getattr(args, "move_port", 0) or 0)
    node.validate()
    return node


def cmd_query(args) -> int:
    from core.pacs import query

    if not (args.patient_id or args.study_uid):
        print("loupe pacs query: give --patient-id or --study-uid", file=sys.stderr)
        return 2
    matches = query(_node(args), args.patient_id, args.study_uid)
    rows = [m.to_json() for m in matches]
    human = "\n".join(f"{m.study_uid}  patient {m.patient_id}  {m.study_date}  {','.join(m.modalities)}  "
                      f"{m.n_instances} instance(s)" for m in matches) or "no matching study"
    emit(args, rows, human)
    return 0


def cmd_retrieve(args) -> int:
    from app.cli.studies import _report_text
    from core.pacs import retrieve_and_import

    node = _node(args)
    store = Path(args.store) if args.store else resolve_workspace_path(args.workspace).absolute().parent / "pacs"
    with open_workspace(args) as ws:
        report = retrieve_and_import(ws, node, args.study_uid, store,
                                     progress=lambda p: info(p.message) if p.message else None)
    emit(args, report.to_json(), _report_text(report))
    return 0


def cmd_send(args) -> int:
    from core.pacs import send

    result = send(_node(args), [Path(p) for p in args.paths])
    human = f"sent {result['sent']} file(s)" + "".join(f"\n  not sent {f['path']}: {f['reason']}"
                                                     for f in result["failed"])
    emit(args, result, human)
    return 0
