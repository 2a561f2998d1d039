"""The annotator's progress at a glance: labelled / queued / disagreement counts and the retrain countdown.

One rule, read from the workspace, for the window and the ``loupe`` command line:
the worklist statuses come from :func:`core.worklist.status_of` (so the counters
and the worklist can never disagree) and "labels since the last training" is
:func:`core.active.loop.new_confirmed_labels` against the ``retrain_after_labels``
setting (:func:`core.active.loop.retrain_threshold`).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Optional, Sequence

from core.worklist import STATUSES, WorklistRow

logger = logging.getLogger(__name__)

#: The worklist statuses of an image with a current label, whatever the model says.
LABELLED_STATUSES = ("labelled", "flagged", "disagreement")


def labelled_count(statuses: dict) -> int:
    """Images with a current label, from ``{status: count}`` (the reading panel's and the worklist's rule)."""
    return sum(statuses.get(s, 0) for s in LABELLED_STATUSES)


@dataclass(frozen=True)
class LabellingProgress:
    """Counts the reading panel shows after every commit.

    ``statuses`` maps each worklist status to its count; ``labelled`` counts every
    image with a current label (``labelled`` + ``flagged`` + ``disagreement``);
    ``new_labels`` are confirmed labels written since the last training started and
    ``retrain_at`` the ``retrain_after_labels`` setting (``None`` without an active model).
    """

    images: int
    statuses: dict
    queued: int
    new_labels: int
    retrain_at: Optional[int]

    @property
    def labelled(self) -> int:
        """Images with a current label, whatever the model says."""
        return labelled_count(self.statuses)

    @property
    def disagreement(self) -> int:
        """Labelled images the active model predicts otherwise."""
        return self.statuses.get("disagreement", 0)

    @property
    def retrain_due(self) -> bool:
        """Whether enough confirmed labels arrived since the last training started."""
        return self.retrain_at is not None and self.new_labels >= self.retrain_at

    def text(self) -> str:
        """"118 labelled · 30 queued · 4 disagreement · 7 labels since the last training (retrain at 20)"."""
        parts = [f"{self.labelled} labelled", f"{self.queued} queued", f"{self.disagreement} disagreement"]
        if self.retrain_at is not None:
            parts.append(f"{self.new_labels} label{'s' if self.new_labels != 1 else ''} since the last training "
                         f"(retrain at {self.retrain_at})")
        return " · ".join(parts)

    def to_json(self) -> dict:
        """Plain JSON form (the CLI prints it)."""
        return {"images": self.images, "labelled": self.labelled, "queued": self.queued,
                "disagreement": self.disagreement, "statuses": dict(self.statuses), "new_labels": self.new_labels,
                "retrain_at": self.retrain_at, "retrain_due": self.retrain_due}


def labelling_progress(ws, rows: Optional[Sequence[WorklistRow]] = None) -> LabellingProgress:
    """The counters of workspace ``ws`` (``rows``: worklist rows already read, to save reading them again).

    ``queued`` counts the cases still waiting in the stored queue (a case leaves it
    when a confirmed label for it is committed, by any process).
    """
    from core.active.loop import new_confirmed_labels, retrain_threshold
    from core.worklist import worklist_rows

    rows = list(worklist_rows(ws) if rows is None else rows)
    tally = Counter(r.status for r in rows)
    has_model = ws.active_model() is not None
    return LabellingProgress(images=len(rows), statuses={s: tally.get(s, 0) for s in STATUSES},
                             queued=len(ws.queue()),
                             new_labels=new_confirmed_labels(ws) if has_model else 0,
                             retrain_at=retrain_threshold(ws) if has_model else None)
