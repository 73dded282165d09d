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

import logging
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import gammaln, log_softmax, xlogy

log = logging.getLogger(__name__)

ECE_BINS = 10
# Search ranges (in log space) for the two fitted scalars.  Wide enough that a
# fit landing on a bound means the data really push it there.
LOG_T_BOUNDS = (np.log(1e-4), np.log(1e4))
LOG_S_BOUNDS = (np.log(1e-3), np.log(1e6))
# A log-space minimiser this close to a search bound counts as "at the bound"
# (bounded Brent stops about 1e-7 short of an end it is pushed against).
AT_BOUND_TOL = 1e-5
GRID_POINTS = 121  # coarse grid of the global-then-local 1-D search
FLAT_TOL = 1e-9  # relative difference below which two objective values count as equal (gammaln rounding at s ~ 1e6 is ~1e-10)


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
    for problem, bad in (("a non-finite vote count", ~np.isfinite(counts).all(1)),
                         ("a NaN or +inf log-probability", (np.isnan(logq) | (logq == np.inf)).any(1)),
                         ("no probability on any option", (logq == -np.inf).all(1))):
        if bad.any():
            raise ValueError(f"document row {int(np.argmax(bad))} has {problem}: it cannot be scored")
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


class Fit(NamedTuple):
    """A fitted scalar and whether its search ran into a bound of its range."""

    value: float
    at_bound: bool


def at_bound(log_x, bounds: tuple[float, float]):
    """Whether log-space minimisers lie on (within :data:`AT_BOUND_TOL` of) either search bound."""
    log_x = np.asarray(log_x)
    return (log_x - bounds[0] <= AT_BOUND_TOL) | (bounds[1] - log_x <= AT_BOUND_TOL)


def _argmin_1d(f: Callable[[float], float], bounds: tuple[float, float]) -> float:
    """Global-then-local 1-D minimisation: a coarse grid picks the basin, bounded Brent refines it."""
    xs = np.linspace(*bounds, GRID_POINTS)
    ys = np.array([f(x) for x in xs])
    i = int(np.nanargmin(ys))
    lo, hi = xs[max(i - 1, 0)], xs[min(i + 1, GRID_POINTS - 1)]
    res = minimize_scalar(f, bounds=(lo, hi), method="bounded", options={"xatol": 1e-10})
    x, y = (float(res.x), res.fun) if res.fun <= ys[i] else (float(xs[i]), ys[i])
    # An objective that is flat from the minimum out to a bound (e.g. xentropy underflowing
    # to exactly 0 as T -> 0) has its minimum on that bound too: report the bound.
    for end in (0, -1):
        if ys[end] <= y + FLAT_TOL * max(1.0, abs(y)):
            return float(xs[end])
    return x


def _fit_log_scale(objective: Callable[[float], float], bounds: tuple[float, float], name: str,
                   meaning: dict[str, str]) -> Fit:
    """Minimise ``objective(log x)`` over log-space ``bounds``; a bound hit is logged with what it means."""
    log_x = _argmin_1d(objective, bounds)
    fit = Fit(float(np.exp(log_x)), bool(at_bound(log_x, bounds)))
    if fit.at_bound:
        side = "lower" if log_x - bounds[0] <= AT_BOUND_TOL else "upper"
        log.warning("%s fit ran to its %s search bound (%.3g): %s", name, side, fit.value, meaning[side])
    return fit


TEMPERATURE_AT_BOUND = {
    "upper": "the model's option probabilities are worse than uninformative, so the best temperature flattens "
             "them to the uniform distribution and calibrated_xentropy equals the uniform row's",
    "lower": "sharpening the model's probabilities towards its top option keeps improving xentropy",
}
CONCENTRATION_AT_BOUND = {
    "upper": "the votes are no more spread than draws from q itself: dirichlet_nll is the multinomial limit",
    "lower": "the votes are far more one-sided than q (e.g. unanimous where q hedges), so the Dirichlet-multinomial "
             "prefers almost no concentration on q",
}


def temperature_has_no_effect(logq: np.ndarray) -> bool:
    """True when q is uniform in every document: q ** (1/T) renormalised is q for every T."""
    return bool((logq == logq[:, :1]).all())


def temperature_fit(logq, counts) -> Fit:
    """The T minimising xentropy(softmax(log q / T)) (Scruples' calibration), and whether it hit a bound.

    A bound hit is logged as a warning.  When q is uniform in every document T has
    no effect, and ``Fit(1.0, False)`` is returned.
    """
    logq, counts = check_inputs(logq, counts)
    if temperature_has_no_effect(logq):
        return Fit(1.0, False)
    p = vote_shares(counts)
    return _fit_log_scale(lambda lt: xent_rows(log_softmax(logq / np.exp(lt), axis=-1), p).mean(),
                          LOG_T_BOUNDS, "temperature", TEMPERATURE_AT_BOUND)


def fit_temperature(logq, counts) -> float:
    """The fitted temperature alone (see :func:`temperature_fit`)."""
    return temperature_fit(logq, counts).value


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


def concentration_fit(logq, counts) -> Fit:
    """Maximum-likelihood s for alpha = s * q over the corpus, and whether it hit a bound (logged)."""
    logq, counts = check_inputs(logq, counts)
    return _fit_log_scale(lambda ls: dm_nll_rows(logq, counts, np.exp(ls)).mean(),
                          LOG_S_BOUNDS, "Dirichlet concentration", CONCENTRATION_AT_BOUND)


def fit_concentration(logq, counts) -> float:
    """The fitted concentration alone (see :func:`concentration_fit`)."""
    return concentration_fit(logq, counts).value


def accuracy(logq, counts) -> float:
    logq, counts = check_inputs(logq, counts)
    return float((np.argmax(logq, -1) == majority(counts)).mean())


def macro_f1(true, pred, n_labels: int, weights=None):
    """sklearn's ``f1_score(average="macro")``, batched: the one macro-F1 of the project.

    ``true`` and ``pred`` hold label ids in ``range(n_labels)``, ``weights`` how many
    times each document counts (a bootstrap resample); all broadcast to (..., N),
    and one F1 is returned per leading index (a float for 1-D input).  As sklearn's
    default, the mean runs over the labels that occur (with positive weight) in
    ``true`` or ``pred``; a label never predicted correctly scores 0.
    """
    true, pred = np.asarray(true), np.asarray(pred)
    w = np.ones(()) if weights is None else np.asarray(weights, dtype=np.float64)
    shape = np.broadcast_shapes(true.shape, pred.shape, w.shape)
    true, pred, w = (np.broadcast_to(a, shape).reshape(-1, shape[-1]) for a in (true, pred, w))
    rows = len(true)
    offset = n_labels * np.arange(rows)[:, None]

    def per_label(labels, weights_):
        return np.bincount((offset + labels).ravel(), weights_.ravel(), rows * n_labels).reshape(rows, n_labels)

    both = per_label(true, w) + per_label(pred, w)  # support + predicted = 2 TP + FP + FN
    hits = per_label(pred, w * (pred == true))
    present = both > 0
    f1 = np.where(present, 2 * hits / np.where(present, both, 1.0), 0.0).sum(-1) / present.sum(-1)
    return float(f1[0]) if len(shape) == 1 else f1.reshape(shape[:-1])


def f1_macro(logq, counts) -> float:
    """Macro F1 against the majority label over the labels that occur (sklearn's default, as Scruples)."""
    logq, counts = check_inputs(logq, counts)
    return macro_f1(majority(counts), np.argmax(logq, -1), logq.shape[1])


def brier_rows(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    return ((q - p) ** 2).sum(-1)


def brier(logq, counts) -> float:
    """Multi-class Brier score against the vote distribution: mean of sum_k (q_k - p_k)^2."""
    logq, counts = check_inputs(logq, counts)
    return float(brier_rows(np.exp(logq), vote_shares(counts)).mean())


def _equal_mass_layout(conf, bins: int, weights) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sort each row of ``conf`` and find where its equal-mass bins end (see :func:`equal_mass_bins`).

    Returns the sort order (conf's shape), the weights in that order and their
    row totals (the broadcast shape, and its leading shape), and ``ends``
    (leading shape + (bins,)): how many sorted items lie in bins 0..j.
    """
    conf = np.asarray(conf, dtype=np.float64)
    w = np.ones(conf.shape[-1]) if weights is None else np.asarray(weights, dtype=np.float64)
    shape = np.broadcast_shapes(conf.shape, w.shape)
    n = shape[-1]
    order = np.argsort(conf, axis=-1)  # any order of ties will do: ties end up in one bin
    sorted_conf = np.take_along_axis(conf, order, -1)
    sorted_w = np.take_along_axis(np.broadcast_to(w, shape), np.broadcast_to(order, shape), -1)
    cum = np.cumsum(sorted_w, -1)
    total = np.rint(cum[..., -1])
    n_bins = np.minimum(bins, total)[..., None]
    size, extra = np.floor_divide(total[..., None], n_bins), np.remainder(total[..., None], n_bins)
    j = np.arange(1, bins)
    # Boundaries as np.array_split puts them on `total` items; rows with fewer items than
    # bins put their surplus cuts after the last item, where they split nothing.
    edges = np.where(j < n_bins, j * size + np.minimum(j, extra), total[..., None])
    cum_rows = cum.reshape(-1, n)
    edge_rows = edges.reshape(len(cum_rows), bins - 1)
    conf_rows = np.broadcast_to(sorted_conf, shape).reshape(-1, n)
    ends = np.full((len(cum_rows), bins), n, dtype=np.intp)
    for r, (row_cum, row_edges, row_conf) in enumerate(zip(cum_rows, edge_rows, conf_rows)):
        # The cut is the confidence of the item holding position e (weights are integers);
        # the bin ends after the last item with that confidence, so ties stay together.
        holder = np.minimum(np.searchsorted(row_cum, row_edges - 0.5), n - 1)
        ends[r, :-1] = np.searchsorted(row_conf, row_conf[holder], side="right")
    return order, sorted_w, total, ends.reshape(shape[:-1] + (bins,))


def equal_mass_bins(conf, bins: int = ECE_BINS, weights=None) -> np.ndarray:
    """Bin number (0 .. bins-1) of every confidence: equal-mass bins that keep ties together.

    The one binning of the project (ECE, its bootstrap, BEST's ECE ceiling, the
    leaderboard's reliability diagram).  ``conf`` is (..., N): each row is binned on
    its own; ``weights`` (broadcastable to it) says how many times each item counts,
    e.g. a bootstrap resample, default once.  With M = total weight of a row, the
    cut between bins j-1 and j is the confidence at sorted (weighted) position e_j,
    where e_j are the boundaries ``np.array_split`` places on M items (a quantile
    of the confidences); an item goes to the lowest bin whose cut is >= its
    confidence.  Without ties this is ``array_split`` of the sorted items; items
    with equal confidence always share a bin (which then holds more, and a later
    one fewer or none), so the bins do not depend on the order of the items.
    """
    order, sorted_w, _, ends = _equal_mass_layout(conf, bins, weights)
    position = np.arange(sorted_w.shape[-1])
    sorted_bin = (position >= ends[..., :-1, None]).sum(-2)
    out = np.empty(sorted_w.shape, dtype=np.intp)
    np.put_along_axis(out, np.broadcast_to(order, out.shape), sorted_bin, -1)
    return out


def reliability_points(conf, correct, bins: int = ECE_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean confidence, accuracy, size) of each non-empty bin of :func:`equal_mass_bins`: a reliability diagram."""
    conf, correct = np.asarray(conf, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    bin_of = equal_mass_bins(conf, bins)
    size = np.bincount(bin_of, minlength=bins)
    used = size > 0
    mean_conf = np.bincount(bin_of, conf, bins)[used] / size[used]
    return mean_conf, np.bincount(bin_of, correct, bins)[used] / size[used], size[used]


def calibration_error(conf, correct, bins: int = ECE_BINS, weights=None):
    """ECE of confidences ``conf`` against 0/1 outcomes ``correct`` in :func:`equal_mass_bins`.

    sum over bins of |sum_{i in bin} w_i (correct_i - conf_i)| / sum_i w_i, i.e. the
    bin-size-weighted mean of |accuracy - mean confidence|.  Batched like
    :func:`equal_mass_bins` (``correct`` has conf's shape): one value per leading
    index, a float for 1-D input.
    """
    conf = np.asarray(conf, dtype=np.float64)
    order, sorted_w, total, ends = _equal_mass_layout(conf, bins, weights)
    gap = np.take_along_axis(np.asarray(correct, dtype=np.float64) - conf, order, -1)
    cum_gap = np.cumsum(sorted_w * gap, -1)
    at_ends = np.take_along_axis(np.concatenate([np.zeros(cum_gap.shape[:-1] + (1,)), cum_gap], -1), ends, -1)
    result = np.abs(np.diff(at_ends, prepend=0.0, axis=-1)).sum(-1) / total
    return float(result) if result.ndim == 0 else result


def ece(logq, counts, bins: int = ECE_BINS) -> float:
    """Expected calibration error of the top option against the majority label (:func:`calibration_error`)."""
    logq, counts = check_inputs(logq, counts)
    correct = np.argmax(logq, -1) == majority(counts)
    return calibration_error(np.exp(logq.max(-1)), correct, bins)


def jsd_rows(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    # KL(q||m) + KL(p||m) = sum q log q + p log p - 2 m log m: one logarithm fewer per element,
    # and p log p is computed at p's own shape when q is a stack of draws (BEST).
    m = (q + p) / 2
    divergence = (xlogy(q, q).sum(-1) + xlogy(p, p).sum(-1) - 2 * xlogy(m, m).sum(-1)) / (2 * np.log(2))
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


# Booleans beside the scores: whether a fitted scalar ran into its search bound.
FIT_FLAGS = ("temperature_at_bound", "dirichlet_concentration_at_bound")


def compute_metrics(logq, counts, fixed_concentration: float | None = None) -> dict[str, float | bool]:
    """All metrics of :data:`METRICS` for one corpus, plus the :data:`FIT_FLAGS`.

    The temperature and concentration are fitted on these same documents (the
    in-sample, oracle calibration); :func:`dev_calibration` fits them on another split.
    """
    logq, counts = check_inputs(logq, counts)
    if fixed_concentration is None:
        fixed_concentration = default_concentration(logq.shape[1])
    t = temperature_fit(logq, counts)
    s = concentration_fit(logq, counts)
    return {
        "xentropy": xentropy(logq, counts),
        "calibrated_xentropy": calibrated_xentropy(logq, counts, temperature=t.value),
        "temperature": t.value,
        "dirichlet_nll": dirichlet_nll(logq, counts, s.value),
        "dirichlet_concentration": s.value,
        "dirichlet_nll_fixed": dirichlet_nll(logq, counts, fixed_concentration),
        "acc": accuracy(logq, counts),
        "f1_macro": f1_macro(logq, counts),
        "brier": brier(logq, counts),
        "ece": ece(logq, counts),
        "jsd": jsd(logq, counts),
        "tvd": tvd(logq, counts),
        "temperature_at_bound": t.at_bound,
        "dirichlet_concentration_at_bound": s.at_bound,
    }


def dev_calibration(dev_logq, dev_counts, test_logq, test_counts) -> dict[str, float | bool | str]:
    """Scruples' calibration protocol: T (and s) fitted on dev, applied to test.

    Returns the fitted values, where they were fitted, whether they hit a search
    bound, and the test split's ``calibrated_xentropy`` at the dev temperature and
    ``dirichlet_nll`` at the dev concentration.
    """
    dev_logq, dev_counts = check_inputs(dev_logq, dev_counts)
    test_logq, test_counts = check_inputs(test_logq, test_counts)
    if dev_logq.shape[1] != test_logq.shape[1]:
        raise ValueError(f"dev has {dev_logq.shape[1]} options but test has {test_logq.shape[1]}")
    t = temperature_fit(dev_logq, dev_counts)
    s = concentration_fit(dev_logq, dev_counts)
    return {
        "temperature": t.value,
        "temperature_split": "dev",
        "temperature_at_bound": t.at_bound,
        "calibrated_xentropy": calibrated_xentropy(test_logq, test_counts, temperature=t.value),
        "dirichlet_concentration": s.value,
        "dirichlet_concentration_at_bound": s.at_bound,
        "dirichlet_nll": dirichlet_nll(test_logq, test_counts, s.value),
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
    "FIT_FLAGS",
    "Fit",
    "compute_metrics",
    "dev_calibration",
    "default_concentration",
    "log_normalize",
    "probs_to_logq",
    "xentropy",
    "calibrated_xentropy",
    "fit_temperature",
    "temperature_fit",
    "dirichlet_nll",
    "fit_concentration",
    "concentration_fit",
    "accuracy",
    "f1_macro",
    "macro_f1",
    "brier",
    "ece",
    "calibration_error",
    "equal_mass_bins",
    "reliability_points",
    "jsd",
    "tvd",
    "vote_shares",
    "majority",
]
