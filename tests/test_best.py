"""BEST oracle ceiling (moral_tasks.best) against a plain re-implementation of Scruples' algorithm."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.optimize import approx_fprime, minimize
from scipy.special import digamma, gammaln
from sklearn.metrics import accuracy_score, f1_score

from moral_tasks.metrics import best
from moral_tasks.metrics.best import best_scores, dirichlet_multinomial_loglik, fit_dirichlet_prior, main
from test_metrics import needs_shared_counts, real_counts, ref_brier, ref_ece, ref_jsd, ref_tvd

METRICS = ("xentropy", "accuracy", "f1_macro", "tvd", "jsd", "brier", "ece")


# --- the reference: Scruples' utils.estimate_dirichlet_multinomial_parameters + oracle_performance,
# written as plainly as possible (finite-difference gradient instead of autograd, a Python loop per draw
# and per item, sklearn metrics, Scruples' xentropy formula).

def reference_fit(counts):
    counts = np.asarray(counts, dtype=float)

    def nll(params):
        return -np.sum(gammaln(np.sum(params)) - gammaln(np.sum(params) + np.sum(counts, axis=1))
                       + np.sum(gammaln(counts + params) - gammaln(params), axis=1))

    k = counts.shape[1]
    return minimize(nll, x0=[1.0] * k, bounds=[(1e-10, None)] * k, method="L-BFGS-B").x


def reference_best(counts, n_samples, seed, alpha=None):
    """Per-draw scores of Scruples' oracle estimate: {metric: array of n_samples values}.

    Beyond Scruples' three metrics, each draw is scored by the plain-Python reference metrics of
    test_metrics (TVD, JSD, Brier, ECE) as a prediction of the observed votes."""
    counts = np.asarray(counts, dtype=float)
    alpha = reference_fit(counts) if alpha is None else np.asarray(alpha)
    rng = np.random.default_rng(seed)
    y_soft = counts / counts.sum(axis=1, keepdims=True)
    y_label = np.argmax(y_soft, axis=1)
    scores = {name: [] for name in METRICS}
    extra = {"tvd": ref_tvd, "jsd": ref_jsd, "brier": ref_brier, "ece": ref_ece}
    for _ in range(n_samples):
        p = np.array([rng.dirichlet(alpha + row) for row in counts])
        scores["xentropy"].append(np.mean(-np.sum(np.log(p ** y_soft), axis=1)))
        scores["accuracy"].append(accuracy_score(y_label, np.argmax(p, axis=1)))
        scores["f1_macro"].append(f1_score(y_label, np.argmax(p, axis=1), average="macro", zero_division=0))
        for name, ref in extra.items():
            scores[name].append(ref(p.tolist(), counts.tolist()))
    return {name: np.array(values) for name, values in scores.items()}


def assert_agrees(ours: dict, ref: dict, z: float = 5.0):
    """Means agree within z standard errors of their difference (pooled per-draw variance)."""
    n_ours = ours["n_samples"]
    for name in METRICS:
        ref_scores, n_ref = ref[name], len(ref[name])
        ours_var = ours[f"{name}_stderr"] ** 2 * n_ours  # stderr = std / sqrt(n)
        var = (ours_var * n_ours + ref_scores.var() * n_ref) / (n_ours + n_ref)
        tolerance = z * np.sqrt(var * (1 / n_ours + 1 / n_ref)) + 1e-9
        assert abs(ours[name] - ref_scores.mean()) <= tolerance, (name, ours[name], ref_scores.mean(), tolerance)


def dirmult_sample(alpha, n_items, votes, seed):
    rng = np.random.default_rng(seed)
    return np.array([rng.multinomial(v, p) for v, p in zip(votes, rng.dirichlet(alpha, size=n_items))])


# --- agreement with the reference (the "Done when" of the issue)

@pytest.mark.slow
@pytest.mark.parametrize("alpha, n_items, max_votes, seed", [
    ([0.8, 0.4], 60, 5, 1),
    ([2.0, 0.5, 1.0], 120, 12, 2),
    ([0.5, 1.5, 0.2, 0.3, 0.15], 150, 30, 3),  # anecdote-like
    ([0.3, 0.3, 0.3, 0.3], 40, 3, 4),
])
def test_agrees_with_scruples_reference(alpha, n_items, max_votes, seed):
    votes = np.random.default_rng(seed).integers(1, max_votes + 1, size=n_items)
    counts = dirmult_sample(alpha, n_items, votes, seed)
    ours = best_scores(counts, n_samples=2000, seed=seed)
    np.testing.assert_allclose(ours["alpha"], reference_fit(counts), rtol=2e-3)
    assert_agrees(ours, reference_best(counts, n_samples=300, seed=seed + 100))


def test_f1_averages_over_labels_that_are_only_predicted():
    # Class 2 is never the majority but the oracle often predicts it: sklearn's default labels (those in
    # y_true or y_pred) then include it with F1 = 0.  The ties [3, 0, 3] and [0, 3, 3] also check that the
    # majority is the first maximum.
    counts = np.array([[6, 0, 0], [0, 6, 0], [3, 0, 3], [0, 3, 3], [4, 1, 3], [1, 4, 3], [5, 0, 1], [0, 2, 1]] * 8)
    ours = best_scores(counts, n_samples=2000, seed=5)
    assert_agrees(ours, reference_best(counts, n_samples=150, seed=6))


count_matrices = st.integers(2, 5).flatmap(lambda k: st.lists(
    st.lists(st.integers(0, 8), min_size=k, max_size=k).map(lambda row: row if sum(row) else [1, *row[1:]]),
    min_size=1, max_size=25))


# No shrinking: each example runs the slow reference, and an unshrunk failing matrix is still readable.
@pytest.mark.slow
@settings(max_examples=10, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow])
@given(count_matrices)
def test_any_count_matrix_agrees_and_fit_is_at_least_as_good(counts):
    """On arbitrary counts (often with the likelihood maximised at alpha -> 0 or inf, where optimisers stop
    at different places) our fit is never worse than Scruples' and, given that alpha, the sampling and
    scoring agree with the reference."""
    ours = best_scores(counts, n_samples=1000, seed=0)
    y = np.asarray(counts, dtype=float)
    ll_ours = dirichlet_multinomial_loglik(np.asarray(ours["alpha"]), y)[0]
    ll_ref = dirichlet_multinomial_loglik(reference_fit(y), y)[0]
    assert ll_ours >= ll_ref - 1e-6 * max(1.0, abs(ll_ref))
    assert_agrees(ours, reference_best(counts, n_samples=120, seed=1, alpha=ours["alpha"]))


@settings(max_examples=25, deadline=None, derandomize=True)
@given(count_matrices)
def test_bounds_hold_on_any_count_matrix(counts):
    """Per draw, cross-entropy >= entropy of the soft labels (Gibbs), so the mean is too."""
    result = best_scores(counts, n_samples=20, seed=0)
    y = np.asarray(counts, dtype=float)
    soft = y / y.sum(1, keepdims=True)
    entropy = np.mean(stats.entropy(soft, axis=1))
    assert result["xentropy"] >= entropy - 1e-9
    assert 0 <= result["accuracy"] <= 1 and 0 <= result["f1_macro"] <= 1
    assert result["n_items"] == len(counts) and len(result["alpha"]) == y.shape[1]


# --- the prior fit

def test_fit_recovers_known_alpha():
    alpha = np.array([2.0, 0.5, 1.0])
    counts = dirmult_sample(alpha, 3000, [20] * 3000, seed=7)
    np.testing.assert_allclose(fit_dirichlet_prior(counts), alpha, rtol=0.1)


def test_gradient_matches_finite_differences():
    counts = dirmult_sample([0.7, 1.3, 0.4, 2.0], 200, [9] * 200, seed=3).astype(float)
    for alpha in ([0.7, 1.3, 0.4, 2.0], [0.05, 5.0, 1.0, 0.3]):
        alpha = np.array(alpha)
        numeric = approx_fprime(alpha, lambda a: dirichlet_multinomial_loglik(a, counts)[0], 1e-6)
        np.testing.assert_allclose(dirichlet_multinomial_loglik(alpha, counts)[1], numeric, rtol=1e-4, atol=1e-3)


def test_fitted_alpha_is_a_local_maximum():
    counts = dirmult_sample([0.5, 1.5, 0.2], 500, [10] * 500, seed=5).astype(float)
    alpha = fit_dirichlet_prior(counts)
    best_ll = dirichlet_multinomial_loglik(alpha, counts)[0]
    rng = np.random.default_rng(0)
    for step in [*np.eye(3) * 0.01, *-np.eye(3) * 0.01, *rng.normal(scale=0.02, size=(10, 3))]:
        assert dirichlet_multinomial_loglik(alpha * np.exp(step), counts)[0] <= best_ll


def test_loglik_matches_closed_form_single_item():
    # One item, counts (1, 0), alpha (a, b): P = a / (a + b) (the multinomial coefficient is 1).
    value, grad = dirichlet_multinomial_loglik(np.array([2.0, 3.0]), np.array([[1.0, 0.0]]))
    assert value == pytest.approx(np.log(2 / 5))
    np.testing.assert_allclose(grad, [1 / 2 - 1 / 5, -1 / 5])


# --- hand-worked and limit cases

def test_xentropy_and_binary_accuracy_match_closed_forms():
    """Given alpha, E[xentropy] = -mean_i sum_k yhat_ik (psi(b_ik) - psi(sum_k b_ik)) with b = alpha + y,
    and for K = 2 E[accuracy] = mean_i P(p_majority > 1/2) under the Beta posterior."""
    counts = dirmult_sample([1.0, 0.9], 400, np.random.default_rng(0).integers(1, 8, 400), seed=11)
    counts = counts[counts[:, 0] != counts[:, 1]]  # no ties, so argmax picks the unique majority
    result = best_scores(counts, n_samples=4000, seed=2)
    post = np.asarray(result["alpha"]) + counts
    soft = counts / counts.sum(1, keepdims=True)
    xent = np.mean(-np.sum(soft * (digamma(post) - digamma(post.sum(1, keepdims=True))), axis=1))
    maj = counts.argmax(1)
    acc = np.mean(stats.beta.sf(0.5, post[np.arange(len(post)), maj], post[np.arange(len(post)), 1 - maj]))
    assert abs(result["xentropy"] - xent) <= 5 * result["xentropy_stderr"]
    assert abs(result["accuracy"] - acc) <= 5 * result["accuracy_stderr"]


def test_unanimous_huge_counts_make_a_perfect_oracle():
    counts = np.zeros((30, 3), dtype=int)
    counts[np.arange(30), np.arange(30) % 3] = 10_000
    result = best_scores(counts, n_samples=200)
    assert result["accuracy"] == 1.0 and result["f1_macro"] == 1.0
    assert -1e-12 < result["xentropy"] < 1e-3  # exact 0 up to rounding


def test_prior_counts_fit_the_prior_and_counts_the_posterior():
    gold = dirmult_sample([1.0, 1.0], 300, [5] * 300, seed=12)
    extra = dirmult_sample([1.0, 1.0], 300, [5] * 300, seed=13)
    same = best_scores(gold, prior_counts=gold, n_samples=100)
    assert same == best_scores(gold, n_samples=100)
    split = best_scores(gold, prior_counts=gold + extra, n_samples=100)
    np.testing.assert_allclose(split["alpha"], fit_dirichlet_prior(gold + extra))
    assert split["n_items"] == 300
    with pytest.raises(ValueError, match="prior_counts has 3 classes but counts has 2"):
        best_scores(gold, prior_counts=[[1, 2, 3]])


def test_chunking_does_not_change_the_result(monkeypatch):
    counts = dirmult_sample([0.5, 1.0, 2.0], 37, [6] * 37, seed=14)
    whole = best_scores(counts, n_samples=101, seed=3)
    monkeypatch.setattr(best, "CHUNK_ELEMENTS", 300)  # 2 draws per chunk, last one partial
    chunked = best_scores(counts, n_samples=101, seed=3)
    for key in whole:
        np.testing.assert_allclose(chunked[key], whole[key], rtol=1e-12)
    assert best_scores(counts, n_samples=101, seed=4) != whole


@pytest.mark.parametrize("counts, message", [
    ([1, 2, 3], "must be a 2-D list of lists"),
    ("abc", "must be a 2-D list of lists"),
    ([], "non-empty 2-D matrix"),
    ([[1, 2], [3, 4, 5]], "row 1 has 3 classes but row 0 has 2"),
    ([[1, 2], [3, "4"]], "row 1 has an entry that is not a number"),
    ([[1, 2], [True, 4]], "row 1 has an entry that is not a number"),
    ([[3], [4]], "at least 2 classes"),
    ([[1, 2], [3, -1]], "row 1 has a negative count"),
    ([[1, 2], [1, 2], [0.5, 2]], "row 2 has a non-integer count"),
    ([[1, float("nan")]], "row 0 has a non-finite count"),
    ([[1, 2]] * 17 + [[0, 0]], "row 17 has zero votes"),
    (np.ones((2, 2, 2)), "non-empty 2-D matrix"),
    (np.array([["a", "b"]]), "must hold numbers"),
])
def test_bad_counts_raise_clear_errors(counts, message):
    with pytest.raises(ValueError, match=message):
        best_scores(counts, n_samples=10)


def test_bad_n_samples():
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        best_scores([[1, 2]], n_samples=0)


# --- real Scruples dev counts

@pytest.mark.slow
@needs_shared_counts
def test_real_dilemmas_dev_counts_match_closed_forms():
    """On Scruples' 2,340 real dev dilemmas (K = 2), given the fitted alpha, the posterior of item i's
    first-option share is Beta(b_i0, b_i1) with b = alpha + y, and several ceilings have closed forms:
    E[xentropy] = -mean sum_k yhat_k (psi(b_k) - psi(sum b)); E[accuracy] = mean P(p_majority > 1/2);
    E[Brier] = mean sum_k Var p_k + (E p_k - yhat_k)^2; E[TVD] = mean E|p_0 - yhat_0|."""
    counts = real_counts("dilemmas")
    assert counts.shape == (2340, 2)
    result = best_scores(counts.astype(int), n_samples=1000, seed=0)
    b = np.asarray(result["alpha"]) + counts
    total = b.sum(1, keepdims=True)
    soft = counts / counts.sum(1, keepdims=True)
    xent = np.mean(-np.sum(soft * (digamma(b) - digamma(total)), axis=1))
    rows = np.arange(len(b))
    maj = counts.argmax(1)  # dilemmas have 5 votes: no ties
    acc = np.mean(stats.beta.sf(0.5, b[rows, maj], b[rows, 1 - maj]))
    mean = b / total
    brier = np.mean(np.sum(b * (total - b) / (total ** 2 * (total + 1)) + (mean - soft) ** 2, axis=1))
    a0, a1, c = b[:, 0], b[:, 1], soft[:, 0]
    below = c * stats.beta.cdf(c, a0, a1) - a0 / (a0 + a1) * stats.beta.cdf(c, a0 + 1, a1)  # E[(c - X)+]
    tvd = np.mean(a0 / (a0 + a1) - c + 2 * below)
    for name, expected in (("xentropy", xent), ("accuracy", acc), ("brier", brier), ("tvd", tvd)):
        assert abs(result[name] - expected) <= 5 * result[f"{name}_stderr"] + 1e-12, (name, result[name], expected)


@pytest.mark.slow
@needs_shared_counts
def test_real_anecdotes_dev_counts_agree_with_the_loop():
    counts = real_counts("anecdotes").astype(int)[:400]  # the loop reference is slow: 400 real anecdotes
    empty = np.vstack([counts, [[0, 0, 0, 0, 0]]])
    with pytest.raises(ValueError, match="row 400 has zero votes"):
        best_scores(empty)
    ours = best_scores(counts, n_samples=1000, seed=0)
    assert_agrees(ours, reference_best(counts, n_samples=100, seed=1, alpha=ours["alpha"]))


# --- CLI

def test_cli_prints_one_json_object(tmp_path, capsys):
    path = tmp_path / "counts.json"
    path.write_text(json.dumps([[3, 1, 0], [0, 4, 1], [2, 2, 5], [1, 0, 0]]))
    prior = tmp_path / "prior.json"
    prior.write_text(json.dumps([[6, 2, 0], [0, 8, 2], [4, 4, 10], [2, 0, 0], [1, 1, 1]]))
    assert main(["--counts", str(path), "--samples", "50", "--seed", "3", "--prior-counts", str(prior)]) == 0
    out, err = capsys.readouterr()
    assert err == "" and len(out.strip().splitlines()) == 1
    result = json.loads(out)
    assert set(result) == {"alpha", "n_items", "n_samples", "seed", *METRICS, *(f"{m}_stderr" for m in METRICS)}
    assert (result["n_items"], result["n_samples"], result["seed"]) == (4, 50, 3)
    assert result == best_scores([[3, 1, 0], [0, 4, 1], [2, 2, 5], [1, 0, 0]], n_samples=50, seed=3,
                                 prior_counts=json.loads(prior.read_text()))


@pytest.mark.parametrize("content, message", [
    ("[[1, 2], [0, 0]]", "row 1 has zero votes"),
    ("[[1, 2], [1, 2, 3]]", "row 1 has 3 classes"),
    ("[[1, 2],", "is not valid JSON"),
    (None, "cannot read"),
])
def test_cli_bad_files(tmp_path, capsys, content, message):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    assert main(["--counts", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("moral-ambiguity best: error: ") and str(path) in err and message in err


def test_cli_bad_prior_file_is_named(tmp_path, capsys):
    counts, prior = tmp_path / "counts.json", tmp_path / "prior.json"
    counts.write_text("[[1, 2], [2, 1]]")
    prior.write_text("[[1, 2, 3]]")
    assert main(["--counts", str(counts), "--prior-counts", str(prior)]) == 2
    err = capsys.readouterr().err
    assert str(prior) in err and "3 classes" in err


def test_tiny_corpus_without_over_dispersion_fits_without_overflow():
    """Three identical dilemmas, 1 vote against 4 each (the leaderboard fault tests' corpus).

    Worked by hand: identical rows show no over-dispersion, so the likelihood grows without
    bound as sum(alpha) -> inf at the pooled mean 3/15 = 0.2, 12/15 = 0.8.  The fit must stop
    at a finite, large alpha with that mean and raise no overflow or NaN warning on the way.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        alpha = fit_dirichlet_prior(np.array([[1, 4]] * 3))
    assert np.isfinite(alpha).all() and alpha.sum() > 1e6
    np.testing.assert_allclose(alpha / alpha.sum(), [0.2, 0.8], atol=1e-3)
