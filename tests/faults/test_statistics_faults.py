"""Statistical faults, each driven through a public entry point: the Hugging Face ``evaluate`` module
(what the trainer and outside users call), or the metrics package's bootstrap and calibration functions
(what lm-eval's aggregation, ``rescore`` and the leaderboard call).

Each case builds the real situation (tied confidences, a model worse than uniform, a constant
prediction, resamples whose refit runs off its range) and checks what the user sees: the value,
the flag beside it, and the logged warning.
"""

from __future__ import annotations

import logging
import math

import evaluate
import numpy as np
import pytest

from moral_tasks.metrics import core as M, intervals as I
from moral_tasks.metrics.hf_evaluate import MODULE_PATH


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(MODULE_PATH)


def test_tied_confidences_in_any_order_give_one_ece(metric):
    # 40 documents, 4 distinct confidences; the accuracy of the tied ones varies along the list,
    # so binning by position (the old behaviour) gave different ECEs for different orders.
    confs = np.repeat([0.55, 0.7, 0.8, 0.95], 10)
    correct = np.array([i % 10 < (3, 5, 9, 10)[i // 10] for i in range(40)])
    probs = np.stack([confs, 1 - confs], 1)
    counts = np.where(correct[:, None], [[3, 2]], [[2, 3]])
    # Four bins of ten, each one tie group: |3 - 5.5| + |5 - 7| + |9 - 8| + |10 - 9.5| = 6, over 40.
    expected = 6 / 40
    for seed in range(5):
        order = np.random.default_rng(seed).permutation(40)
        got = metric.compute(predictions=probs[order].tolist(), references=counts[order].tolist())
        assert got["ece"] == pytest.approx(expected, abs=1e-12)


def test_model_worse_than_uniform_flags_its_temperature(metric, caplog):
    # 0.9 on the option four of five voters reject: the best temperature is the largest allowed.
    probs = [[0.9, 0.1], [0.1, 0.9]] * 10
    counts = [[1, 4], [4, 1]] * 10
    with caplog.at_level(logging.WARNING, logger="moral_tasks.metrics.core"):
        got = metric.compute(predictions=probs, references=counts)
    assert got["temperature_at_bound"] is True and got["temperature"] == pytest.approx(1e4, rel=1e-4)
    assert got["calibrated_xentropy"] == pytest.approx(math.log(2), abs=1e-4)  # the uniform row's value
    assert got["xentropy"] > math.log(2)
    assert "temperature fit ran to its upper search bound (1e+04)" in caplog.text


def test_votes_less_spread_than_the_model_flag_the_concentration(metric, caplog):
    with caplog.at_level(logging.WARNING, logger="moral_tasks.metrics.core"):
        got = metric.compute(predictions=[[0.5, 0.5]] * 6, references=[[2, 2]] * 6)
    assert got["dirichlet_concentration_at_bound"] is True
    assert got["dirichlet_concentration"] == pytest.approx(1e6, rel=1e-4)
    assert "Dirichlet concentration fit ran to its upper search bound" in caplog.text


def test_dev_temperature_at_its_bound_is_flagged(caplog):
    dev_logq, dev_counts = np.log([[0.9, 0.1], [0.1, 0.9]] * 10), np.array([[1, 4], [4, 1]] * 10)
    test_logq, test_counts = np.log([[0.8, 0.2], [0.3, 0.7]]), np.array([[5, 0], [0, 5]])
    with caplog.at_level(logging.WARNING, logger="moral_tasks.metrics.core"):
        got = M.dev_calibration(dev_logq, dev_counts, test_logq, test_counts)
    assert got["temperature_split"] == "dev" and got["temperature_at_bound"] is True
    assert got["calibrated_xentropy"] == pytest.approx(math.log(2), abs=1e-3)
    assert "upper search bound" in caplog.text


def test_bootstrap_refits_that_run_off_the_old_grid_are_refitted_and_counted(caplog):
    rng = np.random.default_rng(0)
    logq = M.log_normalize(rng.normal(0, 4, (8, 2)))
    counts = rng.integers(0, 5, (8, 2))
    counts[counts.sum(1) == 0] = [1, 0]
    t = M.fit_temperature(logq, counts)
    with caplog.at_level(logging.WARNING, logger="moral_tasks.metrics.intervals"):
        result = I.bootstrap(logq, counts, resamples=40, seed=0)
    low, high = result.intervals["temperature"]
    assert high / t > math.exp(2.4)  # the old refit grid stopped at a factor e^2.4 = 11 from t
    assert high == pytest.approx(1e4, rel=1e-6) and result.at_bound["temperature"] > 0
    assert "temperature: the refit of" in caplog.text and "bootstrap resamples ran to a search bound" in caplog.text


def test_ece_interval_of_a_constant_prediction_contains_its_estimate():
    # The prior row: one confidence for every document, accuracy drifting along the document order.
    n = 600
    logq = np.log(np.tile([0.6, 0.4], (n, 1)))
    majority_first = np.arange(n) < 420  # first 420 documents agree with the top option
    counts = np.where(majority_first[:, None], [[4, 1]], [[1, 4]])
    estimate = M.ece(logq, counts)
    assert estimate == pytest.approx(abs(0.7 - 0.6))  # one bin: |accuracy - confidence|
    low, high = I.bootstrap_intervals(logq, counts, resamples=1000, seed=0)["ece"]
    assert low <= estimate <= high


@pytest.mark.parametrize("row, message", [
    ([float("nan"), -0.5], "a NaN or \\+inf log-probability"),
    ([float("-inf"), float("-inf")], "no probability on any option"),
])
def test_a_broken_prediction_is_named_not_scored_as_nan(row, message):
    logq = np.log([[0.5, 0.5], [0.7, 0.3], [0.2, 0.8]])
    logq[1] = row
    with pytest.raises(ValueError, match=f"document row 1 has {message}"):
        M.compute_metrics(logq, [[1, 2], [3, 1], [0, 4]])
    with pytest.raises(ValueError, match="document row 1"):
        I.bootstrap_intervals(logq, [[1, 2], [3, 1], [0, 4]], resamples=10)
