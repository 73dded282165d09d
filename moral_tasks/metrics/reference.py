"""Reference rows computed from the human votes alone, printed beside models and BEST.

* ``uniform``: q = 1/K for every document, the know-nothing baseline;
* ``prior``: q = the corpus's mean vote distribution for every document, the
  best constant prediction (it minimises mean cross-entropy over constants);
* ``human`` (dilemmas dev/test): the majority of the 5 extra human-performance
  annotators scored against the gold majority, Scruples' human performance.
  Only hard-label metrics exist for it (a 5-vote majority has no probabilities).
"""

from __future__ import annotations

import numpy as np

from . import core as M


def constant_predictions(counts) -> dict[str, np.ndarray]:
    """log q of the uniform and the prior rows, one row per document."""
    counts = np.asarray(counts, dtype=np.float64)
    n, k = counts.shape
    return {"uniform": np.full((n, k), -np.log(k)), "prior": np.tile(np.log(M.vote_shares(counts).mean(0)), (n, 1))}


def constant_rows(counts, fixed_concentration: float | None = None) -> dict[str, dict[str, float]]:
    return {name: M.compute_metrics(logq, counts, fixed_concentration)
            for name, logq in constant_predictions(counts).items()}


def human_row(gold_counts, human_counts) -> dict[str, float]:
    gold, human = np.asarray(gold_counts, dtype=np.float64), np.asarray(human_counts, dtype=np.float64)
    if gold.shape != human.shape:
        raise ValueError(f"gold {gold.shape} and human-performance {human.shape} counts differ in shape")
    if (human.sum(1) == 0).any():
        raise ValueError("human-performance votes are missing (all zero) for some documents: no human row")
    # The human majority as a one-hot "prediction": only argmax-based metrics are meaningful.
    one_hot = np.log(np.eye(gold.shape[1])[M.majority(human)] + 1e-300)
    return {"acc": M.accuracy(one_hot, gold), "f1_macro": M.f1_macro(one_hot, gold)}
