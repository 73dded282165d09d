"""Bootstrap intervals: the vectorised resampling equals recomputing every metric on each resample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from moral_tasks import harness
from moral_tasks.metrics import core as M, intervals as I
from test_metrics import random_case

SHARED_COUNTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "scruples-dev-vote-counts"


@pytest.mark.parametrize("seed,k,n", [(0, 2, 37), (1, 5, 64), (2, 3, 9)])
def test_vectorised_resamples_equal_a_loop_over_resamples(seed, k, n):
    loglik, counts = random_case(seed, n=n, k=k)
    logq = M.log_normalize(loglik)
    draws = I.bootstrap_metrics(logq, counts, fixed_concentration=2.5, resamples=25, seed=seed)
    # The same resamples, drawn the same way, scored one by one with the plain metric code.
    idx = np.random.default_rng(seed).integers(0, n, size=(25, n))
    for r in range(25):
        expected = M.compute_metrics(logq[idx[r]], counts[idx[r]], fixed_concentration=2.5)
        for name, value in expected.items():
            tol = 1e-3 if name in ("temperature", "dirichlet_concentration") else 1e-6
            assert draws[name][r] == pytest.approx(value, rel=tol, abs=1e-9), (name, r)


def test_intervals_are_percentiles_and_reproducible():
    loglik, counts = random_case(3, n=50, k=5)
    logq = M.log_normalize(loglik)
    a = I.bootstrap_intervals(logq, counts, resamples=200, seed=7)
    b = I.bootstrap_intervals(logq, counts, resamples=200, seed=7)
    assert a == b
    draws = I.bootstrap_metrics(logq, counts, resamples=200, seed=7)
    for name, (lo, hi) in a.items():
        assert (lo, hi) == pytest.approx(tuple(np.percentile(draws[name], [2.5, 97.5])))
        assert lo <= hi
    assert set(a) == set(M.METRIC_NAMES)


def test_resample_weights_are_multisets_of_size_n():
    w = I.resample_weights(13, 40, seed=1)
    assert w.shape == (40, 13) and (w.sum(1) == 13).all() and (w >= 0).all()


@pytest.mark.skipif(not SHARED_COUNTS.is_dir(), reason="../shared/data not present")
def test_interval_of_a_mean_matches_its_standard_error_on_real_counts():
    counts = np.array(json.loads((SHARED_COUNTS / "anecdotes_dev_counts.json").read_text()))
    counts = counts[counts.sum(1) > 0]
    prior = counts.sum(0) / counts.sum()
    logq = np.log(np.tile(prior, (len(counts), 1)))
    lo, hi = I.bootstrap_intervals(logq, counts, resamples=1000, seed=0)["xentropy"]
    rows = M.xent_rows(logq, M.vote_shares(counts))
    se = rows.std(ddof=1) / np.sqrt(len(rows))
    # For a mean over 2,477 documents the percentile interval is close to +-1.96 standard errors.
    assert (hi - lo) / (2 * 1.96 * se) == pytest.approx(1.0, abs=0.15)
    assert lo < rows.mean() < hi


@pytest.mark.parametrize("path,extra", [("_default_template_yaml", []),
                                        ("moral_dilemmas/moral_dilemmas_debiased.yaml", list(harness.DEBIASED_NAMES))])
def test_yaml_reports_every_metric_and_interval(path, extra):
    """The task YAMLs list exactly the names the harness computes (a YAML cannot import Python)."""
    text = (Path(harness.__file__).parent / "tasks" / path).read_text()
    entries = yaml.load(text.replace("!function ", ""), Loader=yaml.SafeLoader)["metric_list"]
    assert [entry["metric"] for entry in entries] == list(harness.RESULT_NAMES) + extra + ["data_source"]
    for entry in entries:
        assert entry["aggregation"] == f"moral_tasks.harness.agg_{entry['metric']}"
        metric = next((m for m in M.METRICS if m.name == entry["metric"]), None)
        if metric is not None:
            assert entry["higher_is_better"] == metric.higher_is_better
