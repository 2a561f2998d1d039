"""Helpers shared by the benchmarks in ``bench/``: machine facts, timing, and docs/benchmarks.md.

Several benchmarks write into one markdown file; each owns one ``## section``
that :func:`write_section` replaces in place (or appends), leaving the others alone.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import re
import statistics
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
BENCH_MD = ROOT / "docs" / "benchmarks.md"
SHARED_DATA = ROOT.parent / "shared" / "data"

_HEADING = re.compile(r"^## (.+?)\s*$", re.MULTILINE)


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_count() -> int:
    """CPUs this process may run on (what ``nproc`` prints)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def package_version(name: str) -> str:
    """Installed version of a distribution, or 'not installed' (never imports it)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_facts() -> str:
    """One line describing the machine and the key package versions."""
    return (
        f"{cpu_count()} CPU(s) (nproc), {cpu_model()}; Python {platform.python_version()}, "
        f"torch {package_version('torch')}, numpy {package_version('numpy')}, "
        f"pydicom {package_version('pydicom')}; {platform.system()} {platform.release()}"
    )


def now_stamp() -> str:
    """Local date and time to the minute, e.g. '2025-01-31 14:05'."""
    return _dt.datetime.now().strftime("%Y-%m-%d %H:%M")


def median_time(fn: Callable[[], object], repeat: int, setup: Callable[[], object] | None = None) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeat`` calls; ``setup()`` runs untimed before each."""
    times = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def intro_text() -> str:
    """The header of docs/benchmarks.md: what it is, how to run it, the machine it last ran on."""
    return (
        "# Loupe benchmarks\n\n"
        "Written by `make bench` (it installs the `[bench]` extra into `.venv` and runs the scripts in\n"
        "`bench/` its recipe lists); one script alone, e.g. `.venv/bin/python bench/import_bench.py`.\n"
        "Each `##` section below is owned and rewritten by one benchmark script.\n\n"
        "Every benchmark times Loupe **and** a reference tool on the same files in the same run,\n"
        "so the figures to compare are the *ratios*; absolute times depend on the machine.\n"
        "Each section states the date and machine of its own run.\n\n"
        f"Last written: {now_stamp()} on {machine_facts()}.\n"
    )


def write_section(md_path: Path | str, section_title: str, markdown_text: str) -> Path:
    """Replace (or append) the ``## section_title`` section of ``md_path``.

    Takes the markdown file (created with :func:`intro_text` if missing), the
    heading text without ``## `` and the section body. The intro (everything
    before the first ``## ``) is refreshed; other sections are kept as they are.
    Returns the path written.
    """
    path = Path(md_path)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    headings = list(_HEADING.finditer(old))
    sections: list[tuple[str, str]] = []
    for i, m in enumerate(headings):
        end = headings[i + 1].start() if i + 1 < len(headings) else len(old)
        sections.append((m.group(1), old[m.start():end].rstrip() + "\n"))
    new_block = f"## {section_title}\n\n{markdown_text.strip()}\n"
    replaced = False
    for i, (title, _) in enumerate(sections):
        if title == section_title:
            sections[i] = (title, new_block)
            replaced = True
    if not replaced:
        sections.append((section_title, new_block))
    body = "\n".join(block for _, block in sections)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(intro_text() + "\n" + body, encoding="utf-8")
    return path
