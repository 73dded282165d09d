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


def _metric_list(name):
    from moral_tasks.lm_eval_plugin import TASKS_DIR

    text = (TASKS_DIR / name).read_text()
    return yaml.load(text.replace("!function ", ""), Loader=yaml.SafeLoader)["metric_list"]


HEADLINE = ["xentropy", "dirichlet_nll", "acc", "f1_macro", "ece", "tvd", "option_mass"]
ALWAYS = ["variant_mass", "xentropy_uniform", "xentropy_prior", "order_effect", "order_effect_ci95", "agreement_low",
          "agreement_mid", "agreement_high", "warnings", "data_source", "record_format"]


@pytest.mark.parametrize("template", ["_default_template_yaml", "_full_template_yaml"])
def test_yaml_metric_lists_name_explicit_aggregations(template):
    """`record` first (its aggregation scores the corpus), then names whose aggregation is a plain function."""
    from moral_tasks.scoring import IN_SAMPLE

    entries = _metric_list(template)
    assert entries[0]["metric"] == "record"
    hib = {IN_SAMPLE.get(m.name, m.name): m.higher_is_better for m in M.METRICS}
    for entry in entries:
        assert entry["aggregation"] == f"moral_tasks.harness.agg_{entry['metric']}"
        assert callable(getattr(harness, f"agg_{entry['metric']}"))
        if entry["metric"] in hib:
            assert entry["higher_is_better"] == hib[entry["metric"]], entry


def test_headline_and_full_lists():
    from moral_tasks.scoring import BEST_NAMES, CORE_NAMES

    headline = [e["metric"] for e in _metric_list("_default_template_yaml")]
    assert headline == ["record"] + [n for m in HEADLINE for n in (m, f"{m}_ci95")] + ALWAYS
    full = [e["metric"] for e in _metric_list("_full_template_yaml")]
    with_ci = [*CORE_NAMES, *BEST_NAMES, "option_mass"]
    assert full == ["record"] + [n for m in with_ci for n in (m, f"{m}_ci95")] + ALWAYS
