"""Reference rows (uniform, prior, human) against hand-worked values."""

import math

import numpy as np
import pytest

from moral_tasks.metrics import core as M
from moral_tasks.metrics.reference import class_prior, constant_logq, human_row
from test_metrics import needs_shared_counts, real_counts, ref_acc, ref_xent


def constant_metrics(distribution, counts):
    """Every metric of predicting ``distribution`` for each document: how the leaderboard scores its rows."""
    return M.compute_metrics(constant_logq(distribution, len(counts)), counts)


def test_prior_is_the_mean_vote_share_of_the_train_split():
    train = [[3, 1], [1, 3], [4, 0]]  # shares (.75, .25), (.25, .75), (1, 0): mean (2/3, 1/3)
    assert class_prior(train).tolist() == pytest.approx([2 / 3, 1 / 3])
    scored = np.array([[0, 2], [1, 1]])  # its own mean share would be (1/4, 3/4)
    prior = constant_metrics(class_prior(train), scored)
    # p = (0, 1): -ln 1/3; p = (1/2, 1/2): -(ln 2/3 + ln 1/3) / 2
    expected = (math.log(3) - (math.log(2 / 3) + math.log(1 / 3)) / 2) / 2
    assert prior["xentropy"] == pytest.approx(expected)
    assert prior["acc"] == pytest.approx(0.5)  # always option 0; majorities 1 and 0 (first maximum)
    assert constant_metrics([1, 1], scored)["xentropy"] == pytest.approx(math.log(2))
    # Nothing of the scored split leaks into the prior row.
    assert constant_metrics(class_prior([[1, 3]]), scored)["xentropy"] != prior["xentropy"]


def test_constant_metrics_of_any_distribution():
    counts = [[3, 1, 0], [0, 2, 2]]
    got = constant_metrics([0.5, 0.25, 0.25], counts)
    # -(3/4 ln 1/2 + 1/4 ln 1/4) and -(1/2 ln 1/4 + 1/2 ln 1/4)
    assert got["xentropy"] == pytest.approx((0.75 * math.log(2) + 0.25 * math.log(4) + math.log(4)) / 2)
    assert got["tvd"] == pytest.approx((0.25 + 0.5) / 2)  # |(.5,.25,.25) - (.75,.25,0)|/2 = .25; vs (0,.5,.5): .5
    # One bin (all confidences 1/2); top option 0 vs majorities 0 and 1: accuracy 1/2, so ECE = 0.
    assert got["ece"] == pytest.approx(0.0, abs=1e-15)
    assert constant_metrics([0.7, 0.2, 0.1], counts)["ece"] == pytest.approx(0.2)
    assert constant_metrics([2, 1, 1], counts)["xentropy"] == pytest.approx(got["xentropy"])  # renormalised


def test_train_counts_are_checked():
    with pytest.raises(ValueError, match="non-empty"):
        class_prior([])
    with pytest.raises(ValueError, match="at least one vote"):
        class_prior([[1, 2], [0, 0]])


@needs_shared_counts
def test_prior_row_on_real_counts_matches_a_plain_computation():
    counts = real_counts("anecdotes")
    train, scored = counts[:2000], counts[2000:]  # stand-ins for the train and evaluated splits
    prior = [sum(row[k] / sum(row) for row in train.tolist()) / len(train) for k in range(5)]
    row = constant_metrics(class_prior(train), scored)
    q = [prior] * len(scored)
    assert row["xentropy"] == pytest.approx(ref_xent(q, scored.tolist()), rel=1e-10)
    assert row["acc"] == pytest.approx(ref_acc(q, scored.tolist()))
    assert row["temperature_at_bound"] is False


def test_human_row_scores_the_human_majority_against_gold():
    gold = [[4, 1], [1, 4], [3, 2], [0, 5]]
    human = [[5, 0], [2, 3], [1, 4], [1, 4]]  # majorities 0, 1, 1, 1 vs gold 0, 1, 0, 1
    row = human_row(gold, human)
    assert row["acc"] == pytest.approx(0.75)
    assert row["f1_macro"] == pytest.approx((2 / 3 + 0.8) / 2)
    with pytest.raises(ValueError, match="missing"):
        human_row(gold, [[0, 0]] * 4)
