"""The ``loupe`` command line (contract: ../shared/CLI.md).

Exit codes: 0 when the command did its job (rejected inputs are listed), 2 on a
usage error, 1 on a failure with one plain-language line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import importlib
from core.errors import LoupeError

logger = logging.getLogger("loupe")

#: Modules under app/cli that register commands (each has ``add_parsers(sub, common)``).
COMMAND_MODULES = ("studies", "models", "gui", "active", "explain", "export", "team", "pacs", "workstation")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command registered."""
    parser = argparse.ArgumentParser(prog="loupe", description="Model-assisted review of medical images.")
    parser.add_argument("--workspace", metavar="PATH",
                        help="workspace file (default: $LOUPE_WORKSPACE, else the user data dir)")
    parser.add_argument("--reader", metavar="NAME",
                        help="who is working, stored on every label (default: $LOUPE_READER)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"app.cli.{name}").add_parsers(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``loupe`` command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    from app.logging_setup import setup_cli_logging

    setup_cli_logging(verbose=args.verbose)
    from core.workspace import CACHE_ENV, set_cache_root

    set_cache_root(os.environ.get(CACHE_ENV))  # the environment is read here, at the edge, never in core
    try:
        return args.func(args)
    except LoupeError as exc:
        print(f"loupe: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("loupe: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: still one plain line, details with -v
        logger.debug("unexpected error", exc_info=True)
        if args.verbose or os.environ.get("LOUPE_DEBUG"):
            raise
        print(f"loupe: unexpected error ({type(exc).__name__}: {exc}); rerun with -v for details", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
