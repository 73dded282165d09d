"""Reference rows (uniform, prior, human) against hand-worked values."""

import math

import numpy as np
import pytest

from moral_tasks.metrics.reference import constant_rows, human_row


def test_uniform_and_prior_rows():
    counts = np.array([[3, 1], [1, 3], [4, 0]])
    rows = constant_rows(counts)
    assert rows["uniform"]["xentropy"] == pytest.approx(math.log(2))
    # mean vote distribution: ((.75+.25+1)/3, (.25+.75+0)/3) = (2/3, 1/3)
    p = [[0.75, 0.25], [0.25, 0.75], [1.0, 0.0]]
    expected = np.mean([-(a * math.log(2 / 3) + b * math.log(1 / 3)) for a, b in p])
    assert rows["prior"]["xentropy"] == pytest.approx(expected)
    assert rows["prior"]["acc"] == pytest.approx(2 / 3)  # always predicts option 0
    assert rows["prior"]["xentropy"] <= rows["uniform"]["xentropy"]


def test_human_row_scores_the_human_majority_against_gold():
    gold = [[4, 1], [1, 4], [3, 2], [0, 5]]
    human = [[5, 0], [2, 3], [1, 4], [1, 4]]  # majorities 0, 1, 1, 1 vs gold 0, 1, 0, 1
    row = human_row(gold, human)
    assert row["acc"] == pytest.approx(0.75)
    assert row["f1_macro"] == pytest.approx((2 / 3 + 0.8) / 2)
    with pytest.raises(ValueError, match="missing"):
        human_row(gold, [[0, 0]] * 4)
