"""Similar cases: the k nearest labelled neighbours of an image in embedding space (scikit-learn)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from core.active.diversity import l2_normalise

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Neighbour:
    """A labelled image close to the query, with its label and cosine distance."""

    image_id: str
    label: str
    distance: float

    def to_json(self) -> dict:
        """Plain JSON for the CLI and the app."""
        return {"id": self.image_id, "label": self.label, "distance": round(self.distance, 4)}


def similar_cases(query, image_ids: Sequence[str], emb, labels: Mapping[str, str], k: int = 5,
                  exclude: Sequence[str] = ()) -> list[Neighbour]:
    """The ``k`` labelled images nearest to ``query`` (a (D,) embedding), nearest first.

    ``image_ids``/``emb`` (N, D) are the cached embeddings; only images in
    ``labels`` (image id → label text) are searched, and ``exclude`` (usually the
    query image itself) is left out. Cosine distance on L2-normalised embeddings.
    Returns [] when nothing is labelled.
    """
    from sklearn.neighbors import NearestNeighbors

    skip = set(exclude)
    rows = [i for i, image_id in enumerate(image_ids) if image_id in labels and image_id not in skip]
    if not rows or k <= 0:
        return []
    x = l2_normalise(np.asarray(emb)[rows])
    q = l2_normalise(np.asarray(query, dtype=np.float32).reshape(1, -1))
    nn = NearestNeighbors(n_neighbors=min(int(k), len(rows)), metric="euclidean").fit(x)
    dist, idx = nn.kneighbors(q)
    # Euclidean distance d between unit vectors ↔ cosine distance d²/2.
    return [Neighbour(image_ids[rows[j]], labels[image_ids[rows[j]]], float(d * d / 2.0))
            for d, j in zip(dist[0], idx[0])]
