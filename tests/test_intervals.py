"""Bootstrap intervals against an independent loop over resamples, scipy.stats.bootstrap, and coverage."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from moral_tasks import harness
from moral_tasks.metrics import core as M, intervals as I
from test_metrics import (needs_shared_counts, random_case, real_counts, ref_acc, ref_brier, ref_dm_nll, ref_ece,
                          ref_f1_macro, ref_jsd, ref_tvd, ref_xent)

REFERENCE = {"xentropy": ref_xent, "acc": ref_acc, "f1_macro": ref_f1_macro, "brier": ref_brier, "ece": ref_ece,
             "jsd": ref_jsd, "tvd": ref_tvd, "dirichlet_nll_fixed": lambda q, c: ref_dm_nll(q, c, 2.5)}
FITTED = {"temperature": ("calibrated_xentropy", M.LOG_T_BOUNDS),
          "dirichlet_concentration": ("dirichlet_nll", M.LOG_S_BOUNDS)}


def wild_case(seed=0, n=8):
    """Few documents, confident and often wrong: resamples' best temperatures spread over many decades."""
    rng = np.random.default_rng(seed)
    logq = M.log_normalize(rng.normal(0, 4, (n, 2)))
    counts = rng.integers(0, 5, (n, 2))
    counts[counts.sum(1) == 0] = [1, 0]
    return logq, counts


def cases():
    for seed, k, n in [(0, 2, 37), (1, 5, 64), (2, 3, 9)]:
        loglik, counts = random_case(seed, n=n, k=k)
        yield pytest.param(M.log_normalize(loglik), counts, seed, id=f"random-{seed}")
    yield pytest.param(*wild_case(), 0, id="refits-spread-over-decades")


@pytest.mark.parametrize("logq, counts, seed", list(cases()))
def test_vectorised_resamples_equal_a_loop_over_resamples(logq, counts, seed):
    resamples, n = 30, len(counts)
    draws = I.bootstrap_metrics(logq, counts, fixed_concentration=2.5, resamples=resamples, seed=seed)
    # scipy.stats.bootstrap's draws for this seed, scored one resample at a time: the plain-Python
    # reference metrics, and core's Brent fit for the fitted scalars.
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    spread = 0.0
    for r in range(resamples):
        q, c = np.exp(logq[idx[r]]).tolist(), counts[idx[r]].tolist()
        for name, ref in REFERENCE.items():
            assert draws[name][r] == pytest.approx(ref(q, c), rel=1e-7, abs=1e-9), (name, r)
        expected = M.compute_metrics(logq[idx[r]], counts[idx[r]])
        for scalar, (objective, bounds) in FITTED.items():
            flag = f"{scalar}_at_bound"
            assert draws[flag][r] == expected[flag], (scalar, r)
            assert draws[objective][r] == pytest.approx(expected[objective], rel=1e-6, abs=1e-9), (objective, r)
            if not expected[flag]:  # on a bound the objective is flat: compare through it, above
                assert math.log(draws[scalar][r]) == pytest.approx(math.log(expected[scalar]), abs=2e-3), (scalar, r)
        spread = max(spread, abs(math.log(draws["temperature"][r] / M.fit_temperature(logq, counts))))
    if seed == 0 and len(counts) == 8:
        assert spread > 2.4 and draws["temperature_at_bound"].any()  # beyond the old fixed +-2.4 refit grid


def test_refits_on_a_bound_are_counted_and_logged(caplog):
    logq, counts = wild_case()
    with caplog.at_level(logging.WARNING, logger="moral_tasks.metrics.intervals"):
        result = I.bootstrap(logq, counts, resamples=40, seed=0)
    draws = I.bootstrap_metrics(logq, counts, resamples=40, seed=0)
    assert result.at_bound == {"temperature": int(draws["temperature_at_bound"].sum()),
                               "dirichlet_concentration": int(draws["dirichlet_concentration_at_bound"].sum())}
    assert result.at_bound["temperature"] > 0
    assert f"temperature: the refit of {result.at_bound['temperature']} of 40 bootstrap resamples" in caplog.text
    # The interval reaches the bound the refits hit.
    assert result.intervals["temperature"][1] == pytest.approx(1e4, rel=1e-6)


def test_percentile_intervals_equal_scipys():
    loglik, counts = random_case(3, n=50, k=5)
    logq = M.log_normalize(loglik)
    result = I.bootstrap(logq, counts, resamples=300, seed=7)
    assert result == I.bootstrap(logq, counts, resamples=300, seed=7)
    assert result.methods == {**dict.fromkeys(M.METRIC_NAMES, "percentile"), "ece": "basic"}
    per_doc = {"xentropy": [ref_xent([qi], [ci]) for qi, ci in zip(np.exp(logq).tolist(), counts.tolist())],
               "tvd": [ref_tvd([qi], [ci]) for qi, ci in zip(np.exp(logq).tolist(), counts.tolist())]}
    for name, values in per_doc.items():
        expected = stats.bootstrap((np.array(values),), np.mean, n_resamples=300, method="percentile",
                                   rng=np.random.default_rng(7)).confidence_interval
        assert result.intervals[name] == pytest.approx(tuple(expected), rel=1e-9), name


def test_ece_interval_is_scipys_basic_interval():
    loglik, counts = random_case(4, n=60, k=3)
    logq = M.log_normalize(loglik)
    q = np.exp(logq).tolist()

    def ece_of(idx, axis=-1):
        return ref_ece([q[i] for i in idx], [counts[i].tolist() for i in idx])

    expected = stats.bootstrap((np.arange(60),), ece_of, n_resamples=300, method="basic", vectorized=False,
                               rng=np.random.default_rng(5)).confidence_interval
    low, high = I.bootstrap_intervals(logq, counts, resamples=300, seed=5)["ece"]
    assert (low, high) == pytest.approx((max(0.0, expected.low), expected.high), rel=1e-9)


def test_resample_weights_are_multisets_of_size_n():
    w = I.resample_weights(13, 40, seed=1)
    assert w.shape == (40, 13) and (w.sum(1) == 13).all() and (w >= 0).all()


@needs_shared_counts
@pytest.mark.parametrize("name", ["anecdotes", "dilemmas"])
@pytest.mark.parametrize("row", ["prior", "uniform"])
def test_constant_rows_intervals_contain_their_estimates_on_real_counts(name, row):
    """The reported case: a constant prior's ECE 0.1239 had the interval [0.149, 0.35]. (Before
    tie-aware bins, the dilemmas prior's ECE 0.0192 had [0.0204, 0.0482] on these counts.)"""
    counts = real_counts(name)
    share = (counts / counts.sum(1, keepdims=True)).mean(0) if row == "prior" else np.full(counts.shape[1], 1.0)
    logq = np.log(np.tile(share / share.sum(), (len(counts), 1)))
    estimates = M.compute_metrics(logq, counts)
    for metric, (low, high) in I.bootstrap_intervals(logq, counts, resamples=1000, seed=0).items():
        slack = 1e-12 * max(1.0, abs(estimates[metric]))  # a constant's resampled mean differs in rounding only
        assert low - slack <= estimates[metric] <= high + slack, (metric, estimates[metric], low, high)


@needs_shared_counts
def test_interval_of_a_mean_matches_its_standard_error_on_real_counts():
    counts = real_counts("anecdotes")
    prior = counts.sum(0) / counts.sum()
    logq = np.log(np.tile(prior, (len(counts), 1)))
    lo, hi = I.bootstrap_intervals(logq, counts, resamples=1000, seed=0)["xentropy"]
    rows = np.array([ref_xent([qi], [ci]) for qi, ci in zip(np.exp(logq).tolist(), counts.tolist())])
    se = rows.std(ddof=1) / np.sqrt(len(rows))
    # For a mean over 2,477 documents the percentile interval is close to +-1.96 standard errors.
    assert (hi - lo) / (2 * 1.96 * se) == pytest.approx(1.0, abs=0.15)
    assert lo < rows.mean() < hi


@pytest.mark.slow
def test_ece_interval_covers_the_true_ece_where_percentile_does_not():
    """Confidences U(0.5, 1), accuracy 0.05 below them: the population ECE is 0.05 in every bin."""
    hits = {"basic": 0, "percentile": 0}
    for rep in range(40):
        rng = np.random.default_rng(rep)
        conf = rng.uniform(0.5, 1.0, 300)
        logq, counts = np.log(np.stack([conf, 1 - conf], 1)), np.where((rng.random(300) < conf - 0.05)[:, None],
                                                                        [[3, 2]], [[2, 3]])
        low, high = I.bootstrap_intervals(logq, counts, resamples=400, seed=rep)["ece"]
        hits["basic"] += low <= 0.05 <= high
        low, high = I.percentile_interval(I.bootstrap_metrics(logq, counts, resamples=400, seed=rep)["ece"])
        hits["percentile"] += low <= 0.05 <= high
    assert hits["basic"] >= 32 and hits["percentile"] <= 16, hits


def _metric_list(name):
    from moral_tasks.lm_eval_plugin import TASKS_DIR

    text = (TASKS_DIR / name).read_text()
    return yaml.load(text.replace("!function ", ""), Loader=yaml.SafeLoader)["metric_list"]


HEADLINE = ["xentropy", "dirichlet_nll", "acc", "f1_macro", "ece", "tvd", "option_mass"]
ALWAYS = ["variant_mass", "xentropy_uniform", "xentropy_prior", "order_effect", "order_effect_ci95", "no_readout",
          "warnings", "data_source", "record_format"]
AGREEMENT = ["agreement_low", "agreement_mid", "agreement_high"]  # dicts: the full set only (they widen the table)


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
    expected = ["record"]
    for m in with_ci:
        expected += [m, f"{m}_ci95"]
        # The fits' bound flags follow their fitted value (they have no interval).
        expected += {"temperature_insample": ["temperature_insample_at_bound"],
                     "dirichlet_concentration": ["dirichlet_concentration_at_bound"]}.get(m, [])
    assert full == expected + ALWAYS[:5] + AGREEMENT + ALWAYS[5:]
