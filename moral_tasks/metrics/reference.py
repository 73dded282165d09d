"""Reference rows computed from the human votes alone, printed beside models and BEST.

* ``uniform``: q = 1/K for every document, the know-nothing baseline;
* ``prior``: q = the mean vote share of the TRAIN split for every document
  (Scruples' class-prior baseline).  It is fitted on train, never on the split
  being scored: the evaluated split's own mean would use its labels, and is the
  best constant on it only in hindsight;
* ``human`` (dilemmas dev/test): the majority of the 5 extra human-performance
  annotators scored against the gold majority, Scruples' human performance.
  Only hard-label metrics exist for it (a 5-vote majority has no probabilities).
"""

from __future__ import annotations

import numpy as np

from . import core as M


def class_prior(train_counts) -> np.ndarray:
    """Mean vote share over the documents of the train split: the ``prior`` row's distribution (K,)."""
    train_counts = np.asarray(train_counts, dtype=np.float64)
    if train_counts.ndim != 2 or len(train_counts) == 0:
        raise ValueError(f"train vote counts must be a non-empty (N, K) matrix, got shape {train_counts.shape}")
    if (train_counts < 0).any() or (train_counts.sum(1) <= 0).any():
        raise ValueError("every row of train vote counts must be non-negative with at least one vote")
    return M.vote_shares(train_counts).mean(0)


def constant_logq(distribution, n_docs: int) -> np.ndarray:
    """log q of predicting ``distribution`` (K,) for each of ``n_docs`` documents."""
    distribution = np.asarray(distribution, dtype=np.float64)
    with np.errstate(divide="ignore"):  # an option no train vote chose has q = 0
        return np.tile(np.log(distribution / distribution.sum()), (n_docs, 1))


def human_row(gold_counts, human_counts) -> dict[str, float]:
    gold, human = np.asarray(gold_counts, dtype=np.float64), np.asarray(human_counts, dtype=np.float64)
    if gold.shape != human.shape:
        raise ValueError(f"gold {gold.shape} and human-performance {human.shape} counts differ in shape")
    if (human.sum(1) == 0).any():
        raise ValueError("human-performance votes are missing (all zero) for some documents: no human row")
    # The human majority as a one-hot "prediction": only argmax-based metrics are meaningful.
    one_hot = np.log(np.eye(gold.shape[1])[M.majority(human)] + 1e-300)
    return {"acc": M.accuracy(one_hot, gold), "f1_macro": M.f1_macro(one_hot, gold)}
