"""Every metric against hand-worked cases and an independent plain-Python/numpy computation."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import f1_score

from moral_tasks.metrics import core as M

# ../shared beside the checkout (main or a worktree below it), wherever it is found first.
SHARED_COUNTS = next((parent / "shared" / "data" / "scruples-dev-vote-counts" for parent in Path(__file__).resolve().parents
                      if (parent / "shared" / "data" / "scruples-dev-vote-counts").is_dir()),
                     Path("../shared/data/scruples-dev-vote-counts"))
needs_shared_counts = pytest.mark.skipif(not SHARED_COUNTS.is_dir(), reason="../shared/data not present")


def real_counts(name: str) -> np.ndarray:
    """Scruples' real dev vote counts (``anecdotes`` or ``dilemmas``), rows without votes dropped."""
    counts = np.array(json.loads((SHARED_COUNTS / f"{name}_dev_counts.json").read_text()), dtype=np.float64)
    return counts[counts.sum(1) > 0]


# ---------------------------------------------------------------- independent reference implementations
# Written from the definitions with loops and math.*, sharing no code with moral_tasks.metrics.

def ref_q(loglik):
    out = []
    for row in loglik:
        m = max(row)
        e = [math.exp(x - m) for x in row]
        out.append([v / sum(e) for v in e])
    return out


def ref_p(counts):
    return [[c / sum(row) for c in row] for row in counts]


def ref_xent(q, counts):
    tot = 0.0
    for qi, pi in zip(q, ref_p(counts)):
        tot += -sum(p * math.log(x) for p, x in zip(pi, qi) if p > 0)
    return tot / len(q)


def ref_temper(q, t):
    return ref_q([[math.log(x) / t for x in row] for row in q])


def ref_dm_nll(q, counts, s):
    tot = 0.0
    for qi, ci in zip(q, counts):
        a = [s * x for x in qi]
        ll = math.lgamma(s) - math.lgamma(s + sum(ci))
        ll += sum(math.lgamma(ak + ck) - math.lgamma(ak) for ak, ck in zip(a, ci))
        tot -= ll
    return tot / len(q)


def ref_majority(row):
    best = 0
    for k, c in enumerate(row):
        if c > row[best]:
            best = k
    return best


def ref_acc(q, counts):
    return sum(ref_majority(qi) == ref_majority(ci) for qi, ci in zip(q, counts)) / len(q)


def ref_f1_macro(q, counts):
    y = [ref_majority(c) for c in counts]
    yhat = [ref_majority(x) for x in q]
    f1s = []
    for label in sorted(set(y) | set(yhat)):
        tp = sum(a == label and b == label for a, b in zip(y, yhat))
        fp = sum(a != label and b == label for a, b in zip(y, yhat))
        fn = sum(a == label and b != label for a, b in zip(y, yhat))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / len(f1s)


def ref_brier(q, counts):
    return sum(sum((a - b) ** 2 for a, b in zip(qi, pi)) for qi, pi in zip(q, ref_p(counts))) / len(q)


def ref_bins(confs, bins=10):
    """Equal-mass bins cut at confidence quantiles: the cuts are the confidences at the positions where
    equal-count bins of the sorted items would end; an item goes to the first bin whose cut it does not exceed."""
    ordered = sorted(confs)
    n, nb = len(ordered), min(bins, len(ordered))
    size, extra = divmod(n, nb)
    ends = [(b + 1) * size + min(b + 1, extra) for b in range(nb - 1)]
    cuts = [ordered[e - 1] for e in ends]
    return [sum(1 for cut in cuts if c > cut) for c in confs]


def ref_calibration_error(confs, correct, bins=10):
    groups = {}
    for b, c, ok in zip(ref_bins(confs, bins), confs, correct):
        groups.setdefault(b, []).append((c, ok))
    return sum(abs(sum(ok for _, ok in g) - sum(c for c, _ in g)) for g in groups.values()) / len(confs)


def ref_ece(q, counts, bins=10):
    return ref_calibration_error([max(qi) for qi in q], [ref_majority(qi) == ref_majority(ci)
                                                           for qi, ci in zip(q, counts)], bins)


def ref_jsd(q, counts):
    tot = 0.0
    for qi, pi in zip(q, ref_p(counts)):
        m = [(a + b) / 2 for a, b in zip(qi, pi)]
        kl = lambda x: sum(a * math.log2(a / b) for a, b in zip(x, m) if a > 0)  # noqa: E731
        tot += math.sqrt(max(0.0, (kl(qi) + kl(pi)) / 2))
    return tot / len(q)


def ref_tvd(q, counts):
    return sum(0.5 * sum(abs(a - b) for a, b in zip(qi, pi)) for qi, pi in zip(q, ref_p(counts))) / len(q)


def grid_argmin(f, lo, hi):
    """Argmin of f on a grid of spacing 0.025 over [lo, hi], then of spacing 5e-4 around it."""
    xs = np.arange(lo, hi + 1e-9, 0.025)
    x = xs[int(np.argmin([f(v) for v in xs]))]
    fine = np.arange(x - 0.05, x + 0.05 + 1e-9, 5e-4)
    return fine[int(np.argmin([f(v) for v in fine]))]


def random_case(seed, n=40, k=5):
    """An over-confident model of the votes: finite optimal temperature and concentration."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(0, 1, size=(n, k))
    p = np.exp(truth) / np.exp(truth).sum(1, keepdims=True)
    counts = np.array([rng.multinomial(rng.integers(1, 25), row) for row in p])
    loglik = 2.0 * truth + rng.normal(0, 0.5, size=(n, k))
    return loglik, counts


# ---------------------------------------------------------------- hand-worked cases

def test_xentropy_hand_worked():
    # p = (3/4, 1/4), q = (1/2, 1/2): -(3/4 ln 1/2 + 1/4 ln 1/2) = ln 2
    assert M.xentropy(np.log([[0.5, 0.5]]), [[3, 1]]) == pytest.approx(math.log(2))
    # p = (1, 0), q = (0.8, 0.2): -ln 0.8; an option with no votes costs nothing even at q = 0
    assert M.xentropy(np.log([[0.8, 0.2]]), [[5, 0]]) == pytest.approx(-math.log(0.8))
    assert M.xentropy(np.array([[0.0, -np.inf]]), [[5, 0]]) == 0.0


def test_scruples_dirichlet_reference_values():
    # Scruples' tests/scruples/baselines/test_loss.py: alpha = [1, 1] with counts [0.5, 0.5]
    # gives 0.9347116558304358; alpha -> 0 with counts [3, 0] gives ln 2.
    assert M.dirichlet_nll(np.log([[0.5, 0.5]]), [[0.5, 0.5]], 2.0) == pytest.approx(0.9347116558304358, abs=1e-12)
    assert M.dirichlet_nll(np.log([[0.5, 0.5]]), [[3, 0]], 2e-20) == pytest.approx(math.log(2), abs=1e-12)


def test_dirichlet_hand_worked():
    # alpha = (1, 1), one vote for option 0: P = alpha_0 / sum(alpha) = 1/2
    assert M.dirichlet_nll(np.log([[0.5, 0.5]]), [[1, 0]], 2.0) == pytest.approx(math.log(2))
    # alpha = (2, 1), votes (1, 1) in sequence: P = 2/3 * 1/4 = 1/6 (no multinomial coefficient)
    assert M.dirichlet_nll(np.log([[2 / 3, 1 / 3]]), [[1, 1]], 3.0) == pytest.approx(math.log(6))


def test_acc_f1_brier_ece_tvd_hand_worked():
    logq = np.log([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    counts = [[5, 0], [1, 4], [2, 3], [4, 1]]  # majority: 0, 1, 1, 0; predicted: 0, 0, 1, 1
    assert M.accuracy(logq, counts) == 0.5
    assert M.f1_macro(logq, counts) == pytest.approx(0.5)  # both classes: tp=1, fp=1, fn=1
    # Brier: (0.1^2*2) + (0.4^2*2) + (0.1^2*2) + (0.6^2*2), / 4
    assert M.brier(logq, counts) == pytest.approx((0.02 + 0.32 + 0.02 + 0.72) / 4)
    assert M.tvd(logq, counts) == pytest.approx((0.1 + 0.4 + 0.1 + 0.6) / 4)
    # ECE with 4 docs -> 4 bins of one doc; sorted conf 0.6 (wrong), 0.7 (right), 0.8 (wrong), 0.9 (right)
    assert M.ece(logq, counts) == pytest.approx((0.6 + 0.3 + 0.8 + 0.1) / 4)


def binary_case(confs, correct):
    """log q with top option 0 at each confidence, and 5 votes whose majority is 0 exactly where ``correct``."""
    q = np.array([[c, 1 - c] for c in confs])
    return np.log(q), np.array([[3, 2] if ok else [2, 3] for ok in correct])


def test_ece_with_tied_confidences_hand_worked():
    # bins = 2 on 6 docs: the cut is the 3rd smallest confidence, 0.7, and all three 0.7s
    # fall below it together: bin 0 = {0.6 right, 0.7 right, 0.7 wrong, 0.7 wrong}, bin 1 = {0.9, 0.9 right}.
    # |(1 + 1 + 0 + 0) - (0.6 + 2.1)| + |2 - 1.8| = 0.7 + 0.2, over 6 docs.
    confs, correct = [0.7, 0.6, 0.9, 0.7, 0.9, 0.7], [True, True, True, False, True, False]
    logq, counts = binary_case(confs, correct)
    assert M.ece(logq, counts, bins=2) == pytest.approx(0.9 / 6)
    assert M.equal_mass_bins(confs, bins=2).tolist() == [0, 0, 1, 0, 1, 0]
    mean_conf, accuracy, size = M.reliability_points(confs, correct, bins=2)
    assert mean_conf.tolist() == pytest.approx([2.7 / 4, 0.9]) and accuracy.tolist() == [0.5, 1.0]
    assert size.tolist() == [4, 2]
    # All tied: one bin, ECE = |accuracy - confidence|.
    assert M.calibration_error([0.8] * 5, [1, 1, 0, 1, 1]) == pytest.approx(0.0)
    assert M.calibration_error([0.8] * 5, [1, 0, 0, 1, 1]) == pytest.approx(0.2)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.5, 0.55, 0.7, 0.7, 0.9, 1.0]), st.booleans()), min_size=1, max_size=40),
       st.integers(1, 12), st.randoms(use_true_random=False))
def test_ece_does_not_depend_on_the_order_of_tied_rows(rows, bins, rnd):
    confs, correct = [c for c, _ in rows], [ok for _, ok in rows]
    expected = ref_calibration_error(confs, correct, bins)
    assert M.calibration_error(confs, correct, bins) == pytest.approx(expected, abs=1e-12)
    rnd.shuffle(rows)
    shuffled = M.calibration_error([c for c, _ in rows], [ok for _, ok in rows], bins)
    assert shuffled == pytest.approx(expected, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.5, 0.6, 0.6, 0.75, 0.8, 0.95]), st.booleans(), st.integers(0, 3)),
                min_size=1, max_size=30).filter(lambda rows: sum(w for *_, w in rows) > 0), st.integers(1, 12))
def test_weights_bin_like_repeated_items(rows, bins):
    """A weight of w is w copies of the item (a bootstrap resample), batched rows are binned on their own."""
    confs, correct, weights = (list(x) for x in zip(*rows))
    expanded = [(c, ok) for c, ok, w in rows for _ in range(w)]
    expected = ref_calibration_error([c for c, _ in expanded], [ok for _, ok in expanded], bins)
    assert M.calibration_error(confs, correct, bins, weights) == pytest.approx(expected, abs=1e-12)
    kept_bins = [b for b, w in zip(M.equal_mass_bins(confs, bins, weights), weights) if w]
    assert kept_bins == [b for b, (_, _, w) in zip(ref_bins([c for c, _ in expanded], bins), rows) if w] or \
        kept_bins == [ref_bins([c for c, _ in expanded], bins)[sum(w for *_, w in rows[:i])]
                      for i, (*_, w) in enumerate(rows) if w]
    batched = M.calibration_error(confs, correct, bins, np.array([weights, [1] * len(rows)]))
    assert batched[0] == pytest.approx(expected, abs=1e-12)
    assert batched[1] == pytest.approx(ref_calibration_error(confs, correct, bins), abs=1e-12)


def test_bins_without_ties_are_array_split_of_the_sorted_items():
    confs = np.random.default_rng(0).permutation(np.linspace(0.3, 1.0, 23))
    expected = np.empty(23, dtype=int)
    for b, idx in enumerate(np.array_split(np.argsort(confs), 10)):
        expected[idx] = b
    assert M.equal_mass_bins(confs).tolist() == expected.tolist()


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 5).flatmap(lambda k: st.tuples(
    st.just(k), st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1), st.integers(0, 3)), min_size=1,
                         max_size=30).filter(lambda rows: sum(w for *_, w in rows) > 0))))
def test_macro_f1_is_sklearns_with_weights_as_repeats(case):
    k, rows = case
    true, pred, weights = (np.array(x) for x in zip(*rows))
    expected = f1_score(np.repeat(true, weights), np.repeat(pred, weights), average="macro", zero_division=0)
    assert M.macro_f1(true, pred, k, weights) == pytest.approx(expected, abs=1e-12)
    batched = M.macro_f1(true, np.stack([pred, true]), k, weights)
    assert batched.tolist() == pytest.approx([expected, 1.0])


def test_jsd_hand_worked():
    # disjoint supports: JS distance (base 2) is exactly 1; identical: 0
    assert M.jsd(np.array([[0.0, -np.inf]]), [[0, 3]]) == pytest.approx(1.0)
    assert M.jsd(np.log([[0.25, 0.75]]), [[1, 3]]) == pytest.approx(0.0, abs=1e-7)


def test_majority_ties_take_the_first_label():
    assert M.majority(np.array([[2, 2, 1]]))[0] == 0
    assert M.accuracy(np.log([[0.2, 0.5, 0.3]]), [[1, 3, 3]]) == 1.0


# ---------------------------------------------------------------- against the independent implementation

@pytest.mark.parametrize("seed,k", [(0, 2), (1, 5), (2, 5), (3, 2)])
def test_all_metrics_match_reference(seed, k):
    loglik, counts = random_case(seed, k=k)
    logq = M.log_normalize(loglik)
    q = ref_q(loglik.tolist())
    c = counts.tolist()
    got = M.compute_metrics(logq, counts, fixed_concentration=3.0)
    assert got["xentropy"] == pytest.approx(ref_xent(q, c), rel=1e-10)
    assert got["dirichlet_nll_fixed"] == pytest.approx(ref_dm_nll(q, c, 3.0), rel=1e-10)
    assert got["acc"] == pytest.approx(ref_acc(q, c))
    assert got["f1_macro"] == pytest.approx(ref_f1_macro(q, c))
    assert got["brier"] == pytest.approx(ref_brier(q, c), rel=1e-10)
    assert got["ece"] == pytest.approx(ref_ece(q, c), rel=1e-10)
    assert got["jsd"] == pytest.approx(ref_jsd(q, c), rel=1e-7)
    assert got["tvd"] == pytest.approx(ref_tvd(q, c), rel=1e-10)

    # Fitted scalars: the optimum of a fine grid search on the reference objective.
    log_t = grid_argmin(lambda lt: ref_xent(ref_temper(q, math.exp(lt)), c), -3, 3)
    assert math.log(got["temperature"]) == pytest.approx(log_t, abs=2e-3)
    assert got["calibrated_xentropy"] == pytest.approx(ref_xent(ref_temper(q, got["temperature"]), c), rel=1e-10)
    assert got["calibrated_xentropy"] <= ref_xent(ref_temper(q, math.exp(log_t)), c) + 1e-12
    log_s = grid_argmin(lambda ls: ref_dm_nll(q, c, math.exp(ls)), -4, 8)
    assert math.log(got["dirichlet_concentration"]) == pytest.approx(log_s, abs=5e-3)
    assert got["dirichlet_nll"] == pytest.approx(ref_dm_nll(q, c, got["dirichlet_concentration"]), rel=1e-10)
    assert got["dirichlet_nll"] <= ref_dm_nll(q, c, math.exp(log_s)) + 1e-12


def test_default_fixed_concentration_is_number_of_options():
    loglik, counts = random_case(5, k=5)
    got = M.compute_metrics(M.log_normalize(loglik), counts)["dirichlet_nll_fixed"]
    assert got == pytest.approx(ref_dm_nll(ref_q(loglik.tolist()), counts.tolist(), 5.0), rel=1e-10)


@needs_shared_counts
@pytest.mark.parametrize("name", ["anecdotes", "dilemmas"])
def test_real_scruples_counts_prior_model(name):
    counts = real_counts(name)
    prior = counts.sum(0) / counts.sum()
    logq = np.log(np.tile(prior, (len(counts), 1)))
    got = M.compute_metrics(logq, counts)
    q, c = np.exp(logq).tolist(), counts.tolist()
    assert got["xentropy"] == pytest.approx(ref_xent(q, c), rel=1e-10)
    assert got["dirichlet_nll_fixed"] == pytest.approx(ref_dm_nll(q, c, float(counts.shape[1])), rel=1e-10)
    # A constant prediction: one ECE bin, so ECE = |accuracy - confidence|.
    assert got["ece"] == pytest.approx(abs(ref_acc(q, c) - prior.max()), abs=1e-12)
    assert got["ece"] == pytest.approx(ref_ece(q, c), abs=1e-12)


# ---------------------------------------------------------------- fitted scalars and their bounds

def test_temperature_of_a_model_worse_than_uniform_runs_to_its_upper_bound(caplog):
    # The model puts 0.9 on the option the voters mostly reject: flattening q always helps,
    # so the best temperature is the largest allowed and calibration reproduces uniform.
    logq = np.log([[0.9, 0.1], [0.1, 0.9]] * 10)
    counts = np.array([[1, 4], [4, 1]] * 10)
    with caplog.at_level(logging.WARNING, logger="moral_tasks.metrics.core"):
        got = M.compute_metrics(logq, counts)
    assert got["temperature_at_bound"] is True and got["temperature"] == pytest.approx(1e4, rel=1e-4)
    assert got["calibrated_xentropy"] == pytest.approx(math.log(2), abs=1e-4)
    assert "temperature fit ran to its upper search bound" in caplog.text and "uniform" in caplog.text


def test_temperature_of_an_underconfident_right_model_runs_to_its_lower_bound():
    # Unanimous votes for the top option: sharpening towards it keeps improving xentropy.
    fit = M.temperature_fit(np.log([[0.6, 0.4], [0.3, 0.7]]), [[5, 0], [0, 5]])
    assert fit.at_bound and fit.value == pytest.approx(1e-4, rel=1e-4)


def test_interior_fits_are_not_flagged(caplog):
    loglik, counts = random_case(0)
    with caplog.at_level(logging.WARNING):
        got = M.compute_metrics(M.log_normalize(loglik), counts)
    assert got["temperature_at_bound"] is False and got["dirichlet_concentration_at_bound"] is False
    assert caplog.text == ""


def test_uniform_predictions_have_no_temperature_to_fit(caplog):
    with caplog.at_level(logging.WARNING):
        fit = M.temperature_fit(np.full((3, 2), -math.log(2)), [[1, 4], [2, 3], [5, 0]])
    assert fit == (1.0, False) and caplog.text == ""


@pytest.mark.parametrize("logq, counts, side", [
    # Votes less spread than draws from q itself (every document exactly 2:2): s -> infinity.
    (np.log([[0.5, 0.5]] * 6), [[2, 2]] * 6, 1e6),
    # q = 0.99 on the option nobody chose: a tiny concentration makes unanimity likely at least.
    (np.log([[0.99, 0.01]] * 6), [[0, 5]] * 6, 1e-3),
])
def test_dirichlet_concentration_bounds_are_flagged(logq, counts, side):
    got = M.compute_metrics(logq, counts)
    assert got["dirichlet_concentration_at_bound"] is True
    assert got["dirichlet_concentration"] == pytest.approx(side, rel=1e-4)


def test_dev_calibration_fits_on_dev_and_scores_test():
    dev_loglik, dev_counts = random_case(11)
    test_loglik, test_counts = random_case(12)
    got = M.dev_calibration(M.log_normalize(dev_loglik), dev_counts, M.log_normalize(test_loglik), test_counts)
    dev_q, test_q = ref_q(dev_loglik.tolist()), ref_q(test_loglik.tolist())
    log_t = grid_argmin(lambda lt: ref_xent(ref_temper(dev_q, math.exp(lt)), dev_counts.tolist()), -3, 3)
    assert math.log(got["temperature"]) == pytest.approx(log_t, abs=2e-3)
    assert got["temperature_split"] == "dev" and got["temperature_at_bound"] is False
    assert got["calibrated_xentropy"] == pytest.approx(
        ref_xent(ref_temper(test_q, got["temperature"]), test_counts.tolist()), rel=1e-10)
    log_s = grid_argmin(lambda ls: ref_dm_nll(dev_q, dev_counts.tolist(), math.exp(ls)), -4, 8)
    assert math.log(got["dirichlet_concentration"]) == pytest.approx(log_s, abs=5e-3)
    assert got["dirichlet_nll"] == pytest.approx(ref_dm_nll(test_q, test_counts.tolist(), got["dirichlet_concentration"]),
                                                 rel=1e-10)
    # Fitted on test itself the temperature would differ: the dev value is what gets applied.
    assert abs(math.log(M.fit_temperature(M.log_normalize(test_loglik), test_counts)) - log_t) > 0.01
    with pytest.raises(ValueError, match="dev has 5 options but test has 2"):
        M.dev_calibration(M.log_normalize(dev_loglik), dev_counts, np.log([[0.5, 0.5]]), [[1, 1]])


# ---------------------------------------------------------------- invariants

def count_matrices(k):
    return arrays(np.int64, st.tuples(st.integers(1, 12), st.just(k)), elements=st.integers(0, 30)).filter(
        lambda c: (c.sum(1) > 0).all()
    )


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 5).flatmap(lambda k: st.tuples(count_matrices(k), st.integers(0, 10_000))))
def test_invariants(case):
    counts, seed = case
    k = counts.shape[1]
    rng = np.random.default_rng(seed)
    logq = M.log_normalize(rng.normal(0, 3, size=counts.shape))
    p = counts / counts.sum(1, keepdims=True)
    with np.errstate(divide="ignore"):
        logp = np.log(p)

    # Gibbs: q = p minimises the cross-entropy; a perfect model has jsd = tvd = brier = 0.
    assert M.xentropy(logp, counts) <= M.xentropy(logq, counts) + 1e-12
    assert M.jsd(logp, counts) == pytest.approx(0.0, abs=1e-7)
    assert M.tvd(logp, counts) == pytest.approx(0.0, abs=1e-12)
    assert M.brier(logp, counts) == pytest.approx(0.0, abs=1e-12)

    # Calibration and ML fits can only improve on the raw / fixed values.
    got = M.compute_metrics(logq, counts, fixed_concentration=float(k))
    assert got["calibrated_xentropy"] <= got["xentropy"] + 1e-9
    assert got["dirichlet_nll"] <= got["dirichlet_nll_fixed"] + 1e-9
    for name in ("jsd", "tvd", "acc", "f1_macro", "ece"):
        assert 0.0 <= got[name] <= 1.0 + 1e-12

    # Permuting options consistently in q and counts changes nothing (ties would change
    # the first-maximum rule, so the hard-label metrics are compared only without ties).
    perm = rng.permutation(k)
    permuted = M.compute_metrics(logq[:, perm], counts[:, perm], fixed_concentration=float(k))
    # (The fitted temperature and concentration themselves are ill-conditioned where the
    # objective is flat, so they are compared through the objective they minimise.)
    soft = ["xentropy", "calibrated_xentropy", "dirichlet_nll", "dirichlet_nll_fixed", "brier", "jsd", "tvd"]
    for name in soft:
        assert permuted[name] == pytest.approx(got[name], rel=1e-6, abs=1e-9), name
    sorted_counts = np.sort(counts, 1)
    if (sorted_counts[:, -1] > sorted_counts[:, -2]).all():
        for name in ("acc", "f1_macro", "ece"):
            assert permuted[name] == pytest.approx(got[name], abs=1e-12), name

    # Permuting documents changes nothing either (corpus metrics are order-free).
    order = rng.permutation(len(counts))
    shuffled = M.compute_metrics(logq[order], counts[order], fixed_concentration=float(k))
    for name in soft + ["acc", "f1_macro", "ece"]:
        assert shuffled[name] == pytest.approx(got[name], rel=1e-6, abs=1e-9), name


def test_bad_input_is_rejected_not_nan():
    with pytest.raises(ValueError, match="at least one vote"):
        M.xentropy(np.log([[0.5, 0.5]]), [[0, 0]])
    with pytest.raises(ValueError, match="non-negative"):
        M.xentropy(np.log([[0.5, 0.5]]), [[-1, 2]])
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        M.xentropy(np.log([[0.5, 0.5]]), [[1, 2, 3]])
    with pytest.raises(ValueError, match="no documents"):
        M.xentropy(np.zeros((0, 2)), np.zeros((0, 2)))
    with pytest.raises(ValueError, match="concentration"):
        M.dirichlet_nll(np.log([[0.5, 0.5]]), [[1, 2]], 0.0)
    with pytest.raises(ValueError, match="positive mass"):
        M.probs_to_logq([[0.0, 0.0]])
