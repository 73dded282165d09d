"""BEST ("Bayesian Estimated Score Terminus"): the Scruples oracle ceiling.

No model can be expected to beat an oracle that knows each item's *true* vote
distribution, because the observed votes are only a finite sample of it.
Scruples (Lourie et al. 2021; ``allenai/scruples``, ``src/scruples/utils.py``:
``estimate_dirichlet_multinomial_parameters`` and ``oracle_performance``)
estimates that oracle's expected score by empirical Bayes:

1. fit one shared Dirichlet prior ``alpha`` to the N x K vote counts by maximum
   likelihood under a Dirichlet-multinomial (L-BFGS-B, ``alpha >= 1e-10``,
   started at all ones);
2. item ``i``'s true distribution has posterior ``Dir(alpha + y_i)``; one draw
   samples ``p_i`` from it for *every* item (normalised gammas);
3. each draw is scored as a prediction against the observed votes: xentropy
   against the soft labels ``y_i / sum(y_i)``, accuracy and macro F1 with
   ``argmax(p_i)`` against ``argmax(y_i)`` (the first maximum, i.e. the
   majority label);
4. the BEST value is the mean over draws, and its Monte-Carlo standard error is
   ``std(per-draw scores) / sqrt(n_samples)`` (``np.std``, ddof=0, as Scruples).

Beyond Scruples, the same draws give the ceiling of every other distance of
:mod:`.core` by the same posterior-predictive scheme: TVD, Jensen-Shannon
distance and Brier against the soft labels, and ECE of ``max(p_i)`` against
"``argmax(p_i)`` is the majority label", with the metrics' own definitions
(:func:`core.tvd_rows`, :func:`core.jsd_rows`, :func:`core.brier_rows`,
:func:`core.calibration_error`).  Unlike xentropy these are floors of a
distance between the oracle and a *finite sample* of votes: with 5 votes per
dilemma even the true distribution is far from the observed shares.

Deviations from the Scruples code, none of which changes the estimand:

* Scruples differentiates the likelihood with autograd and optimises ``alpha``
  directly; here the gradient is analytic (digamma) and the optimisation runs
  in ``log alpha`` (same bound, ``alpha >= 1e-10``) with the likelihood scaled
  by ``1/N``, which only changes how the optimiser's tolerances read.
* Scruples draws fresh posterior samples for each metric; here one set of
  draws scores all three, so the three estimates are correlated but each is
  unbiased.
* Scruples' release scripts score accuracy/F1 against the dataset's
  ``label`` / ``gold_label`` field, its ``utils.oracle_performance`` (used by
  the scoracle demo) against ``argmax`` of the counts.  Scruples keeps only
  anecdotes with a unique top label and dilemmas have 5 votes on 2 options, so
  the two agree there; on other data the first maximum is used (a guess where
  ``label`` would have broken a tie differently).
* For dilemmas Scruples fitted ``alpha`` on the gold plus the human-performance
  annotations and conditioned the posterior on the gold ones only:
  ``prior_counts`` reproduces that.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import digamma, gammaln, xlogy

from . import core as M

ALPHA_MIN = 1e-10
# Counts with no over-dispersion have their maximum at sum(alpha) -> inf; the search stops
# here instead of letting exp(log alpha) overflow to inf (and gammaln differences to NaN).
# At 1e12 the prior's mean outweighs any corpus's votes, so the posterior is its limit.
ALPHA_MAX = 1e12
# Gamma variates per sampling chunk (~2 MB of float64): bounds memory whatever
# N, K and n_samples are, and keeps the scoring passes in cache.
CHUNK_ELEMENTS = 1 << 18


def validate_counts(counts, name: str = "counts") -> np.ndarray:
    """Check an N x K vote-count matrix and return it as float64.

    Raises ``ValueError`` naming ``name`` (and the 0-based row) for anything
    that is not a non-empty rectangular matrix of finite non-negative integers
    with at least 2 classes and at least one vote in every row.
    """
    if not isinstance(counts, np.ndarray):
        if not isinstance(counts, (list, tuple)) or not all(isinstance(row, (list, tuple)) for row in counts):
            raise ValueError(f"{name} must be a 2-D list of lists (items x classes)")
        for i, row in enumerate(counts):
            if len(row) != len(counts[0]):
                raise ValueError(f"{name} row {i} has {len(row)} classes but row 0 has {len(counts[0])}")
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in row):
                raise ValueError(f"{name} row {i} has an entry that is not a number")
    array = np.asarray(counts)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D matrix (items x classes), got shape {array.shape}")
    if array.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold numbers, got dtype {array.dtype}")
    if array.shape[1] < 2:
        raise ValueError(f"{name} needs at least 2 classes, got {array.shape[1]}")
    array = array.astype(np.float64)
    for problem, bad in (
        ("a non-finite count", ~np.isfinite(array).all(1)),
        ("a negative count", (array < 0).any(1)),
        ("a non-integer count", (array != np.round(array)).any(1)),
        ("zero votes", array.sum(1) == 0),
    ):
        if bad.any():
            raise ValueError(f"{name} row {int(np.argmax(bad))} has {problem}")
    return array


def dirichlet_multinomial_loglik(alpha: np.ndarray, counts: np.ndarray) -> tuple[float, np.ndarray]:
    """Log-likelihood of ``counts`` under DirMult(``alpha``) and its gradient in ``alpha``.

    The multinomial coefficient is left out: it does not depend on ``alpha``.
    ``counts`` is a validated float N x K matrix.
    """
    total = alpha.sum()
    votes = counts.sum(1)
    n = counts.shape[0]
    value = n * gammaln(total) - gammaln(total + votes).sum() + (gammaln(counts + alpha) - gammaln(alpha)).sum()
    grad = n * digamma(total) - digamma(total + votes).sum() + (digamma(counts + alpha) - digamma(alpha)).sum(0)
    return float(value), grad


def fit_dirichlet_prior(counts: np.ndarray) -> np.ndarray:
    """Maximum-likelihood Dirichlet-multinomial ``alpha`` for an N x K count matrix.

    L-BFGS-B in ``log alpha`` from ``alpha = 1`` with ``alpha >= 1e-10``, as in
    Scruples, and ``alpha <= ALPHA_MAX``.  When the counts show no over-dispersion the
    maximum is at ``sum(alpha) -> inf`` and the optimiser stops at some large ``alpha``.
    """
    counts = validate_counts(counts)
    n = counts.shape[0]

    def objective(log_alpha):
        alpha = np.exp(log_alpha)
        value, grad = dirichlet_multinomial_loglik(alpha, counts)
        return -value / n, -grad * alpha / n

    result = minimize(objective, np.zeros(counts.shape[1]), jac=True, method="L-BFGS-B",
                      bounds=[(np.log(ALPHA_MIN), np.log(ALPHA_MAX))] * counts.shape[1],
                      options={"ftol": 1e-14, "gtol": 1e-9, "maxiter": 10_000})
    return np.clip(np.exp(result.x), ALPHA_MIN, ALPHA_MAX)


METRICS = ("xentropy", "accuracy", "f1_macro", "tvd", "jsd", "brier", "ece")


def _score_draws(gammas: np.ndarray, soft: np.ndarray, majority: np.ndarray) -> np.ndarray:
    """Per-draw scores (len(METRICS) x S) of S x N x K unnormalised gamma draws."""
    total = gammas.sum(-1)
    # -sum_k yhat_k log(g_k / total), with 0 * log 0 = 0 like Scruples' log(p ** yhat).
    xent = (np.log(total) - xlogy(soft, gammas).sum(-1)).mean(-1)
    p = gammas / total[..., None]
    pred = gammas.argmax(-1)
    correct = pred == majority
    return np.stack([
        xent,
        correct.mean(-1),
        M.macro_f1(majority, pred, gammas.shape[-1]),
        M.tvd_rows(p, soft).mean(-1),
        M.jsd_rows(p, soft).mean(-1),
        M.brier_rows(p, soft).mean(-1),
        M.calibration_error(p.max(-1), correct),
    ])


def best_scores(counts, *, prior_counts=None, n_samples: int = 2000, seed: int = 0) -> dict:
    """BEST: the oracle's expected score on ``counts`` for every metric of :data:`METRICS`.

    Each metric comes with ``<metric>_stderr``, its Monte-Carlo standard error.

    ``counts`` is N x K vote counts (rows with zero votes are rejected: their
    soft label is undefined).  ``prior_counts`` (M x K), when given, is what the
    prior ``alpha`` is fitted on, while the posterior still conditions on
    ``counts`` (Scruples' dilemmas setting).  Draws come from
    ``np.random.default_rng(seed)`` in chunks, so the result is reproducible.
    """
    counts = validate_counts(counts, "counts")
    prior = counts if prior_counts is None else validate_counts(prior_counts, "prior_counts")
    if prior.shape[1] != counts.shape[1]:
        raise ValueError(f"prior_counts has {prior.shape[1]} classes but counts has {counts.shape[1]}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    n, k = counts.shape
    alpha = fit_dirichlet_prior(prior)
    posterior = alpha + counts
    soft = counts / counts.sum(1, keepdims=True)
    majority = counts.argmax(1)

    rng = np.random.default_rng(seed)
    chunk = max(1, CHUNK_ELEMENTS // counts.size)
    per_draw = np.empty((len(METRICS), n_samples))
    for start in range(0, n_samples, chunk):
        size = min(chunk, n_samples - start)
        gammas = rng.gamma(posterior, size=(size, n, k))
        per_draw[:, start:start + size] = _score_draws(gammas, soft, majority)

    result = {"alpha": alpha.tolist()}
    for name, scores in zip(METRICS, per_draw):
        result[name] = float(scores.mean())
        result[f"{name}_stderr"] = float(scores.std() / np.sqrt(n_samples))
    result.update(n_items=n, n_samples=int(n_samples), seed=seed)
    return result


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _load_counts(path: str) -> np.ndarray:
    """Read and validate a JSON count matrix; every error message names the file."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    return validate_counts(data, path)


def main(argv: list[str] | None = None) -> int:
    """``moral-ambiguity best``: print the BEST ceiling of a JSON count matrix as one JSON object."""
    parser = argparse.ArgumentParser(
        prog="moral-ambiguity best",
        description="Scruples' BEST oracle ceiling (the expected xentropy, accuracy, macro F1, TVD, JSD, Brier "
                    "and ECE of an oracle that knows each item's true vote distribution, with Monte-Carlo standard "
                    "errors) for an N x K vote-count matrix.")
    parser.add_argument("--counts", required=True, metavar="FILE.json",
                        help="JSON list of per-item vote-count lists (N x K)")
    parser.add_argument("--samples", type=_positive_int, default=2000, help="posterior draws (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed for numpy.random.default_rng (default 0)")
    parser.add_argument("--prior-counts", metavar="FILE.json",
                        help="fit the prior on these counts instead (Scruples dilemmas: gold + human-perf votes)")
    args = parser.parse_args(argv)
    try:
        counts = _load_counts(args.counts)
        prior = None if args.prior_counts is None else _load_counts(args.prior_counts)
        if prior is not None and prior.shape[1] != counts.shape[1]:
            raise ValueError(f"{args.prior_counts} has {prior.shape[1]} classes but {args.counts} has "
                             f"{counts.shape[1]}")
    except ValueError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(best_scores(counts, prior_counts=prior, n_samples=args.samples, seed=args.seed)))
    return 0
