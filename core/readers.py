"""How a reading team agrees: inter-reader Cohen's kappa with its interval, and each reader's
sensitivity and specificity against the double-reading truth (and the model's on the same cases).

Everything here reads the workspace through its public methods (no SQL) and is
pure arithmetic that can be checked by hand; the window's readers panel and
``loupe readers`` both call :func:`team_report`.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import combinations
from typing import Iterable, Optional, Sequence

from core.workspace.reading import ADJUDICATED, AGREED, DISPUTED, CaseReads

Z95 = 1.959963984540054


def _category(classes: Iterable[str]) -> str:
    return ";".join(sorted(classes))


@dataclass(frozen=True)
class KappaResult:
    """Cohen's kappa of paired ratings with its 95 % interval (Fleiss, Cohen & Everitt 1969 standard error).

    ``ci95`` is ``None`` when kappa is undefined (fewer than two cases, or both
    raters used one and the same category throughout: expected agreement 1).
    """

    kappa: Optional[float]
    ci95: Optional[tuple[float, float]]
    n: int
    observed: Optional[float]
    expected: Optional[float]
    categories: tuple[str, ...] = ()
    se: Optional[float] = None

    def to_json(self) -> dict:
        return {"kappa": self.kappa, "ci95": list(self.ci95) if self.ci95 else None, "n": self.n,
                "observed_agreement": self.observed, "expected_agreement": self.expected,
                "categories": list(self.categories), "se": self.se}


def cohen_kappa_ci(pairs: Sequence[tuple[str, str]]) -> KappaResult:
    """Cohen's kappa of ``pairs`` of category names, with a 95 % interval.

    kappa = (po - pe) / (1 - pe), po the share of pairs that agree and pe the
    agreement expected from the two raters' marginal shares. The standard error
    is the large-sample one of Fleiss, Cohen & Everitt (1969); the interval is
    kappa ± 1.96 SE clipped to [-1, 1].
    """
    n = len(pairs)
    cats = tuple(sorted({a for a, _ in pairs} | {b for _, b in pairs}))
    if n == 0:
        return KappaResult(None, None, 0, None, None, cats)
    idx = {c: i for i, c in enumerate(cats)}
    k = len(cats)
    p = [[0.0] * k for _ in range(k)]
    for a, b in pairs:
        p[idx[a]][idx[b]] += 1.0 / n
    row = [sum(p[i]) for i in range(k)]
    col = [sum(p[i][j] for i in range(k)) for j in range(k)]
    po = sum(p[i][i] for i in range(k))
    pe = sum(row[i] * col[i] for i in range(k))
    if pe >= 1.0 - 1e-12:
        return KappaResult(None, None, n, po, pe, cats)
    kappa = (po - pe) / (1.0 - pe)
    a_term = sum(p[i][i] * (1.0 - (row[i] + col[i]) * (1.0 - kappa)) ** 2 for i in range(k))
    b_term = (1.0 - kappa) ** 2 * sum(p[i][j] * (col[i] + row[j]) ** 2
                                       for i in range(k) for j in range(k) if i != j)
    c_term = (kappa - pe * (1.0 - kappa)) ** 2
    var = max(a_term + b_term - c_term, 0.0) / (n * (1.0 - pe) ** 2)
    se = math.sqrt(var)
    ci = (max(-1.0, kappa - Z95 * se), min(1.0, kappa + Z95 * se)) if n > 1 else None
    return KappaResult(kappa, ci, n, po, pe, cats, se)


def wilson_interval(successes: int, n: int) -> Optional[tuple[float, float]]:
    """The 95 % Wilson score interval of a proportion, or ``None`` when ``n`` is 0."""
    if n <= 0:
        return None
    phat = successes / n
    denom = 1.0 + Z95 ** 2 / n
    centre = (phat + Z95 ** 2 / (2 * n)) / denom
    half = Z95 * math.sqrt(phat * (1 - phat) / n + Z95 ** 2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class _Rates:
    tp: int = 0
    fn: int = 0
    tn: int = 0
    fp: int = 0

    def add(self, truth: bool, said: bool) -> None:
        if truth:
            self.tp += said
            self.fn += not said
        else:
            self.fp += said
            self.tn += not said

    def to_json(self) -> dict:
        pos, neg = self.tp + self.fn, self.tn + self.fp
        return {"n_positive": pos, "n_negative": neg,
                "sensitivity": self.tp / pos if pos else None, "specificity": self.tn / neg if neg else None,
                "ci95": {"sensitivity": wilson_interval(self.tp, pos), "specificity": wilson_interval(self.tn, neg)}}


@dataclass
class TeamReport:
    """Agreement and accuracy of the reading team (see :func:`team_report`)."""

    agreement: KappaResult
    pairs: dict[str, KappaResult] = field(default_factory=dict)
    readers: dict[str, dict] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    model_version: Optional[str] = None
    classes: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"agreement": self.agreement.to_json(),
                "pairs": {name: k.to_json() for name, k in self.pairs.items()},
                "per_reader": self.readers, "cases": self.counts, "model_version": self.model_version,
                "classes": list(self.classes)}


def double_read_pairs(cases: Iterable[CaseReads]) -> list[tuple[CaseReads, str, str]]:
    """``(case, read A, read B)`` as category names for every case read twice or more.

    The first two reads of a case are its pair, ordered by reader name, so that
    with two readers the overall kappa is exactly reader A against reader B.
    """
    out = []
    for case in cases:
        if len(case.reads) >= 2:
            # orient each pair by reader name, not by who happened to read first: Cohen's kappa compares
            # two raters, and a pair flipped at random would mix their marginals
            first, second = sorted(case.reads[:2], key=lambda r: r.annotator)
            out.append((case, _category(first.classes), _category(second.classes)))
    return out


def team_report(workspace, version: Optional[str] = None) -> TeamReport:
    """Inter-reader agreement and per-reader accuracy from the workspace's double reads.

    *Agreement*: Cohen's kappa between the two reads of every case read at least
    twice (each pair oriented by reader name) (the categories are the label's class sets), overall and
    per pair of readers. *Accuracy*: for each reader and class, sensitivity and
    specificity of the reader's reads against the truth (agreed or adjudicated)
    on the cases that reader read, with Wilson intervals, and the model's
    (``version``, default the active one) on those same cases from its stored
    predictions (cases it has not predicted are left out of the model's figures).
    """
    cases = list(workspace.case_reads().values())
    triples = double_read_pairs(cases)
    overall = cohen_kappa_ci([(a, b) for _, a, b in triples])
    by_pair: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for case, a, b in triples:
        key = " & ".join(sorted(r.annotator for r in case.reads[:2]))
        by_pair[key].append((a, b))
    pairs = {key: cohen_kappa_ci(values) for key, values in sorted(by_pair.items())}
    if version is None:
        active = workspace.active_model()
        version = active.version if active else None
    predictions = workspace.predictions(version) if version else {}
    classes = tuple(workspace.classes())
    settled = [c for c in cases if c.status in (AGREED, ADJUDICATED) and c.truth is not None]
    readers: dict[str, dict] = {}
    per_reader: dict[str, dict[str, _Rates]] = defaultdict(lambda: defaultdict(_Rates))
    per_model: dict[str, dict[str, _Rates]] = defaultdict(lambda: defaultdict(_Rates))
    n_cases: Counter = Counter()
    n_model: Counter = Counter()
    for case in settled:
        truth = set(case.truth.classes)
        pred = predictions.get(case.image_id)
        said_model = set(pred.predicted.split(";")) if pred is not None and pred.predicted else None
        for read in case.reads:
            n_cases[read.annotator] += 1
            if said_model is not None:
                n_model[read.annotator] += 1
            for cls in classes:
                per_reader[read.annotator][cls].add(cls in truth, cls in read.classes)
                if said_model is not None:
                    per_model[read.annotator][cls].add(cls in truth, cls in said_model)
    roles = {r.name: r.role for r in workspace.readers()}
    for name in sorted(n_cases):
        readers[name] = {
            "role": roles.get(name, ""), "cases": n_cases[name],
            "per_class": {cls: per_reader[name][cls].to_json() for cls in classes},
            "model": {"cases": n_model[name],
                      "per_class": {cls: per_model[name][cls].to_json() for cls in classes}},
        }
    counts = Counter(c.status for c in cases)
    return TeamReport(overall, pairs, readers, dict(counts), version, classes)


def disputed(workspace) -> list[CaseReads]:
    """The adjudication queue (a thin alias so widgets and the CLI need only this module)."""
    return [c for c in workspace.adjudication_queue() if c.status == DISPUTED]
