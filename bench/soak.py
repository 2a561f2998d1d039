"""Soak test: thousands of fuzzed imports and a long loop of random SIGKILLs; writes docs/reliability.md.

``make soak`` runs it (``python bench/soak.py [--minutes M] [--fuzz N]``). The
same checks as the ``make test`` versions (tests/core/test_fuzz_import.py and
tests/core/test_reliability_kill.py), only many more of them:

1. fuzz: N mutated/truncated DICOM, PNG and JPEG files built from ../shared/data
   (plus synthetic seeds), each scanned and, when imported, rendered under a
   per-file watchdog;
2. kills: for M minutes, rotate through a labelling loop, ``loupe label``,
   ``loupe import`` of a folder and ``loupe train`` (tiny resnet18), SIGKILL the
   process group at a random moment, reopen and check the workspace (integrity,
   audit chain, every acknowledged label, every registered model file's hash).

Figures — cases fuzzed, kills survived, labels lost — go to docs/reliability.md.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import time
import warnings
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.core import test_fuzz_import as fuzz  # noqa: E402
from tests.core import test_reliability_kill as kills  # noqa: E402

logger = logging.getLogger("soak")


def run_fuzz(n: int, seed: int) -> dict:
    """Fuzz ``n`` files; returns counts and up to 20 distinct failures."""
    rng = random.Random(seed)
    seeds = fuzz.seeds()
    names = sorted(seeds)
    counts: Counter = Counter()
    failures: dict[str, str] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(n):
            name = rng.choice(names)
            ops = [fuzz.random_op(rng) for _ in range(rng.randrange(1, 5))]
            path = Path(tmp) / f"case{i:06d}_{name}"
            path.write_bytes(fuzz.mutate(seeds[name], ops))
            try:
                counts[fuzz.check_one(path)] += 1
            except AssertionError as exc:
                counts["failed"] += 1
                key = str(exc).split(": ", 1)[-1][:120]
                failures.setdefault(key, f"{path.name} ops={ops!r}"[:300])
            finally:
                path.unlink(missing_ok=True)
    return {"cases": n, "imported": counts["imported"], "rejected": counts["rejected"], "failed": counts["failed"],
            "failures": dict(list(failures.items())[:20]), "seconds": time.perf_counter() - start,
            "seed_files": len(names)}


CODESTREAM_SECTION = "Damaged compressed images (codestream fuzz)"


def run_codestream_fuzz(n: int, seed: int) -> dict:
    """Fuzz ``n`` files inside their codestreams (every decoded syntax, 1 and 3 frames); counts and failures.

    Each file must be rejected at import with a reason, or refused as damaged
    at display, or display exactly what the library decodes from the same
    bytes — and, after a truncation, exactly the intact image (see
    ``tests/core/test_fuzz_import.py:check_codestream_case``).
    """
    import os

    rng = random.Random(seed)
    trace = Path(os.environ["LOUPE_SOAK_TRACE"]) if os.environ.get("LOUPE_SOAK_TRACE") else None
    combos = fuzz.codestream_seed_names()
    counts: Counter = Counter()
    by_syntax: dict[str, Counter] = {}
    failures: dict[str, str] = {}
    kinds: Counter = Counter()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            kind, frames = rng.choice(combos)
            mutation = rng.choice(fuzz.CODESTREAM_MUTATIONS)
            data, _ = fuzz.mutate_codestream(kind, frames, mutation, rng)
            path = Path(tmp) / f"cs{i:06d}_{kind}_{frames}_{mutation}.dcm"
            path.write_bytes(data)
            if trace:  # the case under way, so that a native crash (which kills the process) can be found
                trace.write_bytes(data)
                trace.with_suffix(".txt").write_text(f"{i} {kind} {frames} {mutation} trial={i % 2 == 0}\n")
            row = by_syntax.setdefault(kind, Counter())
            trial = i % 2 == 0  # half import without the trial decode: the display's checks must hold alone
            try:
                outcome = fuzz.check_codestream_case(path, kind, frames, mutation, trial_decode=trial)
            except AssertionError as exc:
                text = str(exc)
                outcome = ("hang" if "(hang)" in text else "silent_partial" if "silent partial" in text
                           else "mismatch" if "differ from the reference" in text else "crash")
                key = text.split(": ", 1)[-1][:120]
                failures.setdefault(key, f"{path.name}")
            finally:
                path.unlink(missing_ok=True)
            counts[outcome] += 1
            counts[f"{outcome}_{'trial' if trial else 'notrial'}"] += 1
            if (i + 1) % 500 == 0:
                import resource

                rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                logger.info("codestream fuzz %d/%d: %s (max RSS %.0f MB)", i + 1, n,
                            {k: v for k, v in counts.items() if "_" not in k}, rss)
            row[outcome] += 1
            kinds[mutation] += 1
            if frames > 1:
                counts["multiframe"] += 1
    failed = sum(counts[k] for k in ("hang", "silent_partial", "mismatch", "crash"))
    import resource

    return {"max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cases": n, "counts": dict(counts), "by_syntax": {k: dict(v) for k, v in by_syntax.items()},
            "mutations": dict(kinds), "failed": failed, "failures": dict(list(failures.items())[:20]),
            "seconds": time.perf_counter() - start}


def codestream_markdown(cs: dict, seed: int) -> str:
    """The figures of :func:`run_codestream_fuzz` as this section's Markdown."""
    c = cs["counts"]
    lines = [
        f"Figures from `make soak` (`bench/soak.py --codestream {cs['cases']}`, seed {seed}), "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, on {_machine()}, one thread.",
        "Seeds: 64 × 64 crops of a real radiograph (RG3) in every transfer syntax Loupe decodes, 1 and 3 frames "
        "(tests/core/codestreams.py). Mutations inside the pixel data: the file cut inside it, one frame's "
        "codestream cut and re-wrapped in intact fragments (end marker put back or not), a run of bytes removed, "
        "bytes flipped. Invariant per file: rejected at import with a reason, or refused as damaged at display, "
        "or displayed exactly as the library decodes the same bytes (and, after a cut, exactly as the intact image). "
        "Every other file is imported without the trial decode, so that the display's own checks are tested alone.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| files fuzzed inside their codestreams | {cs['cases']} |",
        f"| … of which multi-frame | {c.get('multiframe', 0)} |",
        f"| rejected at import with one plain reason | {c.get('rejected', 0)} |",
        f"| accepted at import, refused as damaged at display | {c.get('damaged', 0)} |",
        f"| … imported with the trial decode: rejected / damaged at display / whole | {c.get('rejected_trial', 0)} / "
        f"{c.get('damaged_trial', 0)} / {c.get('whole_trial', 0)} |",
        f"| … imported without it: rejected / damaged at display / whole | {c.get('rejected_notrial', 0)} / "
        f"{c.get('damaged_notrial', 0)} / {c.get('whole_notrial', 0)} |",
        f"| displayed whole (equal to the reference decode of the same bytes) | {c.get('whole', 0)} |",
        f"| **crashes** (unexpected exception, decoder panic reaching the caller) | **{c.get('crash', 0)}** |",
        f"| **hangs** (> {fuzz.PER_FILE_SECONDS:.0f} s) | **{c.get('hang', 0)}** |",
        f"| **silent partial renders** | **{c.get('silent_partial', 0)}** |",
        f"| displayed pixels differing from the reference decode | **{c.get('mismatch', 0)}** |",
        "",
        "| syntax | files | rejected | damaged at display | whole | failures |",
        "|---|---|---|---|---|---|",
    ]
    for kind, row in sorted(cs["by_syntax"].items()):
        fails = sum(row.get(k, 0) for k in ("hang", "silent_partial", "mismatch", "crash"))
        total = sum(row.values())
        lines.append(f"| {kind} | {total} | {row.get('rejected', 0)} | {row.get('damaged', 0)} | "
                     f"{row.get('whole', 0)} | {fails} |")
    lines += ["", f"Mutations: {', '.join(f'{k} {v}' for k, v in sorted(cs['mutations'].items()))}. "
                  f"Time {cs['seconds']:.0f} s; peak memory of the whole run {cs['max_rss_mb']:.0f} MB "
                  f"(address space capped at 8 GB, so a runaway decoder allocation fails instead of being killed).",
              "Found by this soak and fixed: a bit flip that zeroed a JPEG frame's height (a DNL-style size) made "
              "libjpeg grow its image without bound (9.8 GB before it was stopped); the codestream's declared size "
              "must now equal the DICOM header's. Earlier runs also found pylibjpeg-rle panicking (a Rust panic "
              "that printed its backtrace) on damaged RLE data, now decoded by pydicom's own RLE decoder, and an RLE "
              "segment whose runs describe one byte too many, now damage.",
              "'Whole' after a bit flip or a removed run means the codestream stayed well formed and complete: the "
              "picture differs "
              "from the original where the flipped bits are, exactly as the decoder library shows those bytes; "
              "no checksum in DICOM could tell such a file from an intact one."]
    if cs["failures"]:
        lines += ["", "Failures:", ""] + [f"- {k} — {v}" for k, v in cs["failures"].items()]
    return "\n".join(lines)


def write_own_section(out: Path, title: str, body: str) -> None:
    """Replace (or append) the ``## title`` section of ``out``, keeping the rest of the file as it is."""
    import re

    old = out.read_text(encoding="utf-8") if out.exists() else "# Reliability\n"
    block = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\s*$.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    new = pattern.sub(lambda m: block + "\n", old) if pattern.search(old) else old.rstrip() + "\n\n" + block
    out.write_text(new.rstrip() + "\n", encoding="utf-8")


def _kept_sections(out: Path, titles: tuple[str, ...]) -> str:
    """Sections of ``out`` owned by other parts of the soak, to keep when the main report is rewritten."""
    import re

    if not out.exists():
        return ""
    text = out.read_text(encoding="utf-8")
    kept = []
    for title in titles:
        m = re.search(rf"^## {re.escape(title)}\s*$.*?(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
        if m:
            kept.append(m.group(0).rstrip() + "\n")
    return "\n".join(kept)


def run_kills(minutes: float, seed: int) -> dict:
    """SIGKILL loop for ``minutes``; returns per-kind kill counts, acknowledged and lost labels."""
    rng = random.Random(seed)
    deadline = time.monotonic() + minutes * 60
    stats: Counter = Counter()
    lost_total = 0
    problems: list[str] = []
    acks: list = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = kills.make_workspace(tmp, n_images=24, model=True)
        from tests.core.conftest import write_dataset

        import_dir = tmp / "incoming"
        write_dataset(import_dir, n=60, seed=5)
        with kills.Workspace.open(path) as ws:
            ids = sorted(r.id for r in ws.images())
        kinds = ["loop", "loop", "label", "import", "train"]
        round_ = 0
        while time.monotonic() < deadline:
            kind = kinds[round_ % len(kinds)]
            round_ += 1
            if kind == "loop":
                result = kills.label_loop(path, f"ann{round_ % 3}", rng.uniform(0.2, 3.0), rng.randrange(1 << 30))
            elif kind == "label":
                result = kills.cli_label(path, rng.choice(ids), rng.choice(["neg", "pos"]), "cli",
                                         rng.uniform(0.5, 6.0))
            elif kind == "import":
                # a fresh copy of the folder each time so that every import has work to do
                sub = import_dir.parent / f"incoming{round_}"
                write_dataset(sub, n=30, seed=round_)
                result = kills.run_and_kill(kills.cli(path, "import", str(sub), "--labels", str(sub / "labels.csv"),
                                                      "--json"), rng.uniform(0.5, 7.0))
            else:
                result = kills.run_and_kill(kills.cli(path, "train", "--epochs", "1", "--device", "cpu", "--json"),
                                            rng.uniform(2.0, 14.0))
            acks += result.acks
            stats[f"{kind}_runs"] += 1
            stats[f"{kind}_killed"] += int(result.killed)
            if not result.killed and result.returncode != 0:
                problems.append(f"{kind} exited {result.returncode}: {result.stderr.strip()[-200:]}")
            try:
                state = kills.check_workspace(path, acks)
            except AssertionError as exc:
                problems.append(f"after {kind} round {round_}: {exc}")
                break
            lost_total = len(state["lost"])
            stats["orphan_temp_files"] = len(state["orphans"])
            stats["versions"] = state["versions"]
            logger.info("round %d %s killed=%s acks=%d lost=%d", round_, kind, result.killed, len(acks), lost_total)
    killed = sum(v for k, v in stats.items() if k.endswith("_killed"))
    return {"rounds": round_, "kills": killed, "acknowledged": len(acks), "lost": lost_total,
            "stats": dict(stats), "problems": problems[:20], "minutes": minutes}


def write_report(out: Path, fz: dict, kl: dict, seed: int) -> None:
    """Write the figures as Markdown."""
    s = kl["stats"]
    lines = [
        "# Reliability",
        "",
        f"Figures from `make soak` (`bench/soak.py`, seed {seed}), "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, on {_machine()}.",
        "The bounded versions of the same checks run in `make test`: "
        "tests/core/test_reliability_*.py and tests/core/test_fuzz_import.py.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| files fuzzed (mutated/truncated DICOM, PNG, JPEG from {fz['seed_files']} seed files) | {fz['cases']} |",
        f"| … imported (and rendered or refused plainly) | {fz['imported']} |",
        f"| … rejected with one plain reason | {fz['rejected']} |",
        f"| … crashes, hangs (> {fuzz.PER_FILE_SECONDS:.0f} s) or unexpected exceptions | **{fz['failed']}** |",
        f"| SIGKILLs survived (workspace reopened and checked after each) | {kl['kills']} |",
        f"| … of a labelling loop / `loupe label` / `loupe import` / `loupe train` | "
        f"{s.get('loop_killed', 0)} / {s.get('label_killed', 0)} / {s.get('import_killed', 0)} / "
        f"{s.get('train_killed', 0)} |",
        f"| acknowledged labels checked after the kills | {kl['acknowledged']} |",
        f"| **labels lost** | **{kl['lost']}** |",
        f"| integrity / audit-chain / model-hash failures | **{len(kl['problems'])}** |",
        f"| model versions registered during the run (all load with their hash) | {s.get('versions', 0)} |",
        f"| temporary model files left by kills (never registered) | {s.get('orphan_temp_files', 0)} |",
        "",
        f"Fuzz time {fz['seconds']:.0f} s; kill loop {kl['minutes']:.1f} min, {kl['rounds']} rounds.",
        "",
        "## What is checked",
        "",
        "- After every kill: `PRAGMA integrity_check` and foreign keys, the audit log's hash chain, "
        "every label the child acknowledged (printed after its commit) present with its classes and annotator, "
        "at most one active model and every registered version's file loading with `weights_only` and its sha256.",
        "- Each fuzzed file: exactly one outcome (a record, or one ImportIssue with a non-empty reason that is not "
        "the scanner's catch-all for unexpected exceptions), within the per-file watchdog; imported files render "
        "or raise a LoupeError.",
        "- Disk full (real tmpfs, or SQLite's page limit) and read-only media: plain messages, nothing half-saved "
        "(tests/core/test_reliability_storage.py).",
        "",
        "## Known gaps",
        "",
        "- Temporary model files from a kill during `torch.save` stay on disk until removed by hand "
        "(they are never registered or loaded).",
        "- Windows is not covered (SIGKILL and process groups are POSIX).",
    ]
    if fz["failures"]:
        lines += ["", "## Fuzz failures", ""] + [f"- {k} — {v}" for k, v in fz["failures"].items()]
    if kl["problems"]:
        lines += ["", "## Kill-loop problems", ""] + [f"- {p}" for p in kl["problems"]]
    kept = _kept_sections(out, (CODESTREAM_SECTION,))
    out.write_text("\n".join(lines) + "\n" + ("\n" + kept if kept else ""), encoding="utf-8")


def _machine() -> str:
    import os
    import platform

    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    """Run the soak; exit 1 when anything was lost, corrupted, crashed or hung."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=8.0, help="length of the kill loop")
    parser.add_argument("--fuzz", type=int, default=5000, help="number of fuzzed files")
    parser.add_argument("--seed", type=int, default=20240501)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md")
    parser.add_argument("--codestream", type=int, default=10000,
                        help="number of files fuzzed inside their codestreams (0 to skip)")
    parser.add_argument("--codestream-only", action="store_true",
                        help="run only the codestream fuzz and rewrite only its section")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("pydicom", "core", "PIL", "pylibjpeg", "libjpeg", "openjpeg", "rle", "jpeg_ls"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    import resource

    import torch

    torch.set_num_threads(1)
    # a decoder told to build a huge image must fail here, not take the shared machine's memory
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, resource.getrlimit(resource.RLIMIT_AS)[1]))
    cs_failed = 0
    if args.codestream:
        cs = run_codestream_fuzz(args.codestream, args.seed)
        logger.info("codestream fuzz: %s", {k: v for k, v in cs.items() if k != "failures"})
        cs_failed = cs["failed"]
    if args.codestream_only:
        if args.codestream:
            write_own_section(args.out, CODESTREAM_SECTION, codestream_markdown(cs, args.seed))
        print(f"wrote {args.out}: {args.codestream} codestream files fuzzed ({cs_failed} failed)")
        return 0 if cs_failed == 0 else 1
    fz = run_fuzz(args.fuzz, args.seed)
    logger.info("fuzz: %s", {k: v for k, v in fz.items() if k != "failures"})
    kl = run_kills(args.minutes, args.seed)
    logger.info("kills: %s", {k: v for k, v in kl.items() if k != "problems"})
    write_report(args.out, fz, kl, args.seed)
    if args.codestream:
        write_own_section(args.out, CODESTREAM_SECTION, codestream_markdown(cs, args.seed))
    print(f"wrote {args.out}: {fz['cases']} fuzzed ({fz['failed']} failed), {kl['kills']} kills survived, "
          f"{kl['lost']} labels lost, {len(kl['problems'])} problems")
    return 0 if fz["failed"] == 0 and cs_failed == 0 and kl["lost"] == 0 and not kl["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
