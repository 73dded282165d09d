"""Distributional metrics: how well model option probabilities match human votes.

Every function takes

* ``logq``: (N, K) log-probabilities of the model over the K answer options,
  already renormalised over the options (see :func:`log_normalize`);
* ``counts``: (N, K) human vote counts in the same option order, every row
  with at least one vote (rows with zero votes are undefined in Scruples and
  are removed by the data loader before they get here).

and returns a Python float.  ``p = counts / counts.sum(1)`` is the human vote
distribution; the "majority label" is the first maximum of ``counts`` in label
order, which is how Scruples defines ``label`` / ``gold_label``.

This module is the single definition of the metrics: the lm-eval aggregations
(:mod:`moral_tasks.harness`), the Hugging Face ``evaluate`` module and the
trainer's dev evaluation all call :func:`compute_metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import gammaln, log_softmax, rel_entr
from sklearn.metrics import f1_score

ECE_BINS = 10
# Search ranges (in log space) for the two fitted scalars.  Wide enough that a
# fit landing on a bound means the data really push it there.
LOG_T_BOUNDS = (np.log(1e-4), np.log(1e4))
LOG_S_BOUNDS = (np.log(1e-3), np.log(1e6))


def log_normalize(option_loglik: np.ndarray) -> np.ndarray:
    """Softmax over the options, in log space: the model's distribution q."""
    return log_softmax(np.asarray(option_loglik, dtype=np.float64), axis=-1)


def check_inputs(logq: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logq = np.asarray(logq, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    if logq.ndim != 2 or logq.shape != counts.shape:
        raise ValueError(f"predictions {logq.shape} and vote counts {counts.shape} must both be (N, K)")
    if len(counts) == 0:
        raise ValueError("no documents to score")
    if (counts < 0).any() or (counts.sum(1) <= 0).any():
        raise ValueError("every row of vote counts must be non-negative with at least one vote")
    return logq, counts


def vote_shares(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    return counts / counts.sum(-1, keepdims=True)


def majority(counts: np.ndarray) -> np.ndarray:
    return np.argmax(counts, axis=-1)


def xent_rows(logq: np.ndarray, p: np.ndarray) -> np.ndarray:
    # xlogy-style product so that p = 0 contributes 0 even where q = 0.
    return -(p * np.where(p > 0, logq, 0.0)).sum(-1)


def xentropy(logq, counts) -> float:
    """Scruples' soft cross-entropy: mean over docs of -sum_k p_k log q_k (nats)."""
    logq, counts = check_inputs(logq, counts)
    return float(xent_rows(logq, vote_shares(counts)).mean())


def _argmin_1d(f: Callable[[float], float], bounds: tuple[float, float], grid: int = 121) -> float:
    """Global-then-local 1-D minimisation: a coarse grid picks the basin, bounded Brent refines it."""
    xs = np.linspace(*bounds, grid)
    ys = np.array([f(x) for x in xs])
    i = int(np.nanargmin(ys))
    lo, hi = xs[max(i - 1, 0)], xs[min(i + 1, grid - 1)]
    res = minimize_scalar(f, bounds=(lo, hi), method="bounded", options={"xatol": 1e-10})
    return float(res.x) if res.fun <= ys[i] else float(xs[i])


def fit_temperature(logq, counts) -> float:
    """The T minimising xentropy(softmax(log q / T)) (Scruples' calibration)."""
    logq, counts = check_inputs(logq, counts)
    p = vote_shares(counts)
    log_t = _argmin_1d(lambda lt: xent_rows(log_softmax(logq / np.exp(lt), axis=-1), p).mean(), LOG_T_BOUNDS)
    return float(np.exp(log_t))


def calibrated_xentropy(logq, counts, temperature: float | None = None) -> float:
    logq, counts = check_inputs(logq, counts)
    t = fit_temperature(logq, counts) if temperature is None else temperature
    return xentropy(log_softmax(logq / t, axis=-1), counts)


def dm_nll_rows(logq: np.ndarray, counts: np.ndarray, s: float) -> np.ndarray:
    alpha = s * np.exp(logq)
    n = counts.sum(-1)
    # Options with zero votes contribute lgamma(alpha) - lgamma(alpha) = 0; masking
    # them keeps an underflowed alpha = 0 from producing inf - inf = NaN.
    per_option = np.where(counts > 0, gammaln(alpha + counts) - gammaln(np.where(counts > 0, alpha, 1.0)), 0.0)
    return -(gammaln(s) - gammaln(s + n) + per_option.sum(-1))


def dirichlet_nll(logq, counts, concentration: float) -> float:
    """Dirichlet-multinomial NLL of the votes with alpha = s * q, mean over docs.

    Scruples' form: the likelihood of the observed *sequence* of votes, i.e.
    without the multinomial coefficient, so it grows with the number of votes
    per item and must never be compared across datasets.
    """
    logq, counts = check_inputs(logq, counts)
    if not concentration > 0:
        raise ValueError(f"Dirichlet concentration must be > 0, got {concentration}")
    return float(dm_nll_rows(logq, counts, float(concentration)).mean())


def fit_concentration(logq, counts) -> float:
    """Maximum-likelihood s for alpha = s * q over the corpus."""
    logq, counts = check_inputs(logq, counts)
    log_s = _argmin_1d(lambda ls: dm_nll_rows(logq, counts, np.exp(ls)).mean(), LOG_S_BOUNDS)
    return float(np.exp(log_s))


def accuracy(logq, counts) -> float:
    logq, counts = check_inputs(logq, counts)
    return float((np.argmax(logq, -1) == majority(counts)).mean())


def f1_macro(logq, counts) -> float:
    """Macro F1 against the majority label over the labels that occur (sklearn's default, as Scruples)."""
    logq, counts = check_inputs(logq, counts)
    return float(f1_score(majority(counts), np.argmax(logq, -1), average="macro", zero_division=0))


def brier_rows(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    return ((q - p) ** 2).sum(-1)


def brier(logq, counts) -> float:
    """Multi-class Brier score against the vote distribution: mean of sum_k (q_k - p_k)^2."""
    logq, counts = check_inputs(logq, counts)
    return float(brier_rows(np.exp(logq), vote_shares(counts)).mean())


def ece(logq, counts, bins: int = ECE_BINS) -> float:
    """Expected calibration error of the top option against the majority label, equal-mass bins."""
    logq, counts = check_inputs(logq, counts)
    conf = np.exp(logq.max(-1))
    correct = (np.argmax(logq, -1) == majority(counts)).astype(np.float64)
    order = np.argsort(conf, kind="stable")
    total = 0.0
    for idx in np.array_split(order, min(bins, len(order))):
        total += len(idx) * abs(correct[idx].mean() - conf[idx].mean())
    return float(total / len(order))


def jsd_rows(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    m = (q + p) / 2
    divergence = (rel_entr(q, m) + rel_entr(p, m)).sum(-1) / (2 * np.log(2))
    # scipy.spatial.distance.jensenshannon takes sqrt of a rounding-negative divergence
    # (NaN for q == p); clipping at 0 keeps a perfect model at exactly 0.
    return np.sqrt(np.clip(divergence, 0.0, None))


def jsd(logq, counts) -> float:
    """Mean Jensen-Shannon distance (base 2, so in [0, 1]) between q and p."""
    logq, counts = check_inputs(logq, counts)
    return float(jsd_rows(np.exp(logq), vote_shares(counts)).mean())


def tvd_rows(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    return 0.5 * np.abs(q - p).sum(-1)


def tvd(logq, counts) -> float:
    """Mean total-variation distance 0.5 * sum_k |q_k - p_k|."""
    logq, counts = check_inputs(logq, counts)
    return float(tvd_rows(np.exp(logq), vote_shares(counts)).mean())


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool | None  # None: a fitted parameter, not a score
    description: str


METRICS: tuple[Metric, ...] = (
    Metric("xentropy", False, "soft cross-entropy -sum p log q (nats)"),
    Metric("calibrated_xentropy", False, "xentropy after the single best temperature"),
    Metric("temperature", None, "temperature fitted for calibrated_xentropy"),
    Metric("dirichlet_nll", False, "Dirichlet-multinomial NLL, alpha = s*q, s fitted by ML"),
    Metric("dirichlet_concentration", None, "ML concentration s of dirichlet_nll"),
    Metric("dirichlet_nll_fixed", False, "Dirichlet-multinomial NLL at the fixed s of task metadata"),
    Metric("acc", True, "accuracy of argmax q against the majority vote"),
    Metric("f1_macro", True, "macro F1 against the majority vote"),
    Metric("brier", False, "sum_k (q_k - p_k)^2"),
    Metric("ece", False, "ECE of the top option vs majority vote, 10 equal-mass bins"),
    Metric("jsd", False, "Jensen-Shannon distance, base 2"),
    Metric("tvd", False, "total-variation distance"),
)
METRIC_NAMES = tuple(m.name for m in METRICS)


def default_concentration(n_options: int) -> float:
    """Fixed Dirichlet scale when none is given: alpha = K * q is the flat Dirichlet for a uniform q."""
    return float(n_options)


def compute_metrics(logq, counts, fixed_concentration: float | None = None) -> dict[str, float]:
    """All metrics of :data:`METRICS` for one corpus."""
    logq, counts = check_inputs(logq, counts)
    if fixed_concentration is None:
        fixed_concentration = default_concentration(logq.shape[1])
    t = fit_temperature(logq, counts)
    s = fit_concentration(logq, counts)
    return {
        "xentropy": xentropy(logq, counts),
        "calibrated_xentropy": calibrated_xentropy(logq, counts, temperature=t),
        "temperature": t,
        "dirichlet_nll": dirichlet_nll(logq, counts, s),
        "dirichlet_concentration": s,
        "dirichlet_nll_fixed": dirichlet_nll(logq, counts, fixed_concentration),
        "acc": accuracy(logq, counts),
        "f1_macro": f1_macro(logq, counts),
        "brier": brier(logq, counts),
        "ece": ece(logq, counts),
        "jsd": jsd(logq, counts),
        "tvd": tvd(logq, counts),
    }


def probs_to_logq(probs) -> np.ndarray:
    """Log of option probabilities renormalised to sum to one (for callers holding probabilities)."""
    probs = np.asarray(probs, dtype=np.float64)
    if (probs < 0).any() or not np.isfinite(probs).all():
        raise ValueError("option probabilities must be finite and non-negative")
    totals = probs.sum(-1, keepdims=True)
    if (totals <= 0).any():
        raise ValueError("every row of option probabilities must have positive mass")
    with np.errstate(divide="ignore"):
        return np.log(probs / totals)


__all__ = [
    "METRICS",
    "METRIC_NAMES",
    "compute_metrics",
    "default_concentration",
    "log_normalize",
    "probs_to_logq",
    "xentropy",
    "calibrated_xentropy",
    "fit_temperature",
    "dirichlet_nll",
    "fit_concentration",
    "accuracy",
    "f1_macro",
    "brier",
    "ece",
    "jsd",
    "tvd",
    "vote_shares",
    "majority",
]
