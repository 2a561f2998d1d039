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
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")


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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("pydicom", "core", "PIL"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    fz = run_fuzz(args.fuzz, args.seed)
    logger.info("fuzz: %s", {k: v for k, v in fz.items() if k != "failures"})
    kl = run_kills(args.minutes, args.seed)
    logger.info("kills: %s", {k: v for k, v in kl.items() if k != "problems"})
    write_report(args.out, fz, kl, args.seed)
    print(f"wrote {args.out}: {fz['cases']} fuzzed ({fz['failed']} failed), {kl['kills']} kills survived, "
          f"{kl['lost']} labels lost, {len(kl['problems'])} problems")
    return 0 if fz["failed"] == 0 and kl["lost"] == 0 and not kl["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
