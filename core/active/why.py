""""Why this case": a queue item's score breakdown in words an annotator reads at a glance.

The acquisition code (``acquire.py``, ``cold_start.py``) stores a breakdown dict
with every queued case; :func:`describe_pick` turns it into one or two
sentences, leading with the reason and then the figures behind it, e.g.
"Uncertain or costly to miss. Entropy 0.88 (1 = coin toss); P(normal) 0.30 ×
miss cost 5 = expected miss cost 1.51. Score rank 1, diversity rank 1." With several
rare (or costly) classes the breakdown names the one the case is most about
(``rare_class``: the highest P × miss cost, or the class a rare-share or audit pick
serves) and ``risk_class``, the class whose miss drives the cost-weighted risk.
Unknown keys (other strategies, future fields) are listed plainly at the end,
so nothing the breakdown holds is hidden.
"""

from __future__ import annotations

from typing import Any

#: Keys described by the sentences below; everything else is appended as "key value".
#: Plain names of the single-score strategies' keys.
_SCORE_NAMES = {"bald": "BALD (MC-dropout disagreement)", "tta": "test-time-augmentation variance",
                "least_confidence": "least confidence", "margin": "margin (1 − gap between the top two)",
                "entropy": "entropy", "cost": "expected cost", "random": "random draw"}

_DESCRIBED = {"reason", "entropy", "risk", "combined", "rare_class", "p_rare", "miss_cost", "expected_miss_cost",
              "score_rank", "diversity_rank", "audit", "target_class", "labels_of_class", "coverage_rank",
              "risk_class", "flagged_image", "similarity"}


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _cap(text: str) -> str:
    """``text`` with its first letter upper-case (``str.capitalize`` would lower the rest)."""
    return text[:1].upper() + text[1:]


def _rare_part(why: dict) -> str:
    if "p_rare" not in why:
        return ""
    rare = why.get("rare_class") or "rare class"
    text = f"P({rare}) {_num(why['p_rare'])}"
    if "miss_cost" in why and "expected_miss_cost" in why:
        text += f" × miss cost {why['miss_cost']:g} = expected miss cost {_num(why['expected_miss_cost'])}"
    return text


def _ranks(why: dict) -> str:
    ranks = [f"{label} {why[key]}" for key, label in (("score_rank", "score rank"),
                                                       ("diversity_rank", "diversity rank"),
                                                       ("coverage_rank", "coverage rank")) if key in why]
    return (_cap(", ".join(ranks)) + ".") if ranks else ""


def describe_pick(why: dict) -> str:
    """One or two sentences saying why a case was queued, from its score breakdown.

    Works for every strategy: the ``default`` strategy's reasons (uncertain /
    costly, rare share, audit, cold start) get their own wording; the single
    score of ``entropy``, ``margin``, ``bald`` … is shown as is.
    """
    why = dict(why or {})
    reason = str(why.get("reason", ""))
    sentences: list[str] = []
    rare = why.get("rare_class") or "the rare class"
    if reason == "audit":
        p = f"P({rare}) {_num(why['p_rare'])}" if "p_rare" in why else "low P(rare)"
        sentences.append(f"Audit: a confident negative ({p}), drawn at random so "
                         f"the rate of missed {rare} among cases the model would pass can be measured.")
    elif reason == "near flagged":
        sim = f" (similarity {_num(why['similarity'])})" if "similarity" in why else ""
        sentences.append(f"Looks like case {why.get('flagged_image', '?')}, which a reader flagged "
                         f"\"model was wrong\"{sim}: the model may err here too.")
    elif reason == "rare share":
        sentences.append(f"Keeps the batch's share of likely {rare} cases: {_rare_part(why)}.")
    elif reason == "cold start" and "target_class" in why:
        target = why["target_class"]
        p = next((v for k, v in why.items() if k == f"P({target})"), None)
        sentences.append(f"Cold start: '{target}' has only {why.get('labels_of_class', 'a few')} confirmed label(s); "
                         f"this is one of the cases most likely to be {target}"
                         + (f" (P {_num(p)})." if p is not None else "."))
    elif reason == "cold start":
        sentences.append("Cold start: covers a part of the data no labelled case is near.")
    elif reason:
        sentences.append("Uncertain or costly to miss." if reason == "uncertain / costly" else f"{_cap(reason)}.")
    figures = []
    if "entropy" in why and reason and reason != "audit":  # the default strategy's entropy is normalised
        figures.append(f"entropy {_num(why['entropy'])} (1 = coin toss)")
    if reason in ("uncertain / costly", "") and _rare_part(why):
        figures.append(_rare_part(why))
    if why.get("risk_class") and reason in ("uncertain / costly", "rare share", ""):
        figures.append(f"the cost-weighted risk comes mostly from missing {why['risk_class']}")
    if figures:
        sentences.append(_cap("; ".join(figures)) + ".")
    ranks = _ranks(why)
    if ranks:
        sentences.append(ranks)
    extra = [f"{_SCORE_NAMES.get(k, k.replace('_', ' '))} {_num(v)}" for k, v in why.items()
             if (k not in _DESCRIBED or (k == "entropy" and not reason))
             and not (k.startswith("P(") and reason == "cold start")]
    if extra:
        sentences.append(_cap(", ".join(extra)) + ".")
    return " ".join(s for s in sentences if s)
