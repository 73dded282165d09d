"""From log-likelihoods to a record (one document), and from records to every reported number (a corpus).

:func:`read_out` turns one document's option log-likelihoods (every presentation order,
every surface variant of every option) into its :class:`~moral_tasks.records.Record`.
:func:`score_records` computes every metric, interval, baseline, agreement slice and
diagnostic of a list of records. The lm-eval aggregations (:mod:`moral_tasks.harness`) and
``moral-ambiguity rescore`` both call :func:`score_records`, so a samples file always
rescores to the numbers lm-eval reported.

Records are put in a canonical order (by document id) first: the bootstrap and BEST
Monte-Carlo draws index documents by position, so without it a result would depend on the
number of processes, the batch size or the order of requests.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
from collections import Counter
from typing import Any, Sequence

import numpy as np
from scipy.special import logsumexp

from .metrics import core as M
from .metrics import intervals
from .metrics.best import best_scores
from .prompts import VARIANTS, get_task
from .records import Record

# Inside one lm_eval run the temperature can only be fitted on the evaluated split itself:
# an oracle, in-sample value. Scruples fits it on dev and applies it to test; that is
# `moral-ambiguity rescore --dev`.
IN_SAMPLE = {"calibrated_xentropy": "calibrated_xentropy_insample", "temperature": "temperature_insample",
             "temperature_at_bound": "temperature_insample_at_bound"}
CORE_NAMES = tuple(IN_SAMPLE.get(name, name) for name in M.METRIC_NAMES)
# BEST: the Scruples oracle ceiling for the documents evaluated; its _ci95 is +-1.96
# Monte-Carlo standard errors of the estimate, not a sampling interval.
BEST_NAMES = {"best_xentropy": "xentropy", "best_acc": "accuracy", "best_f1_macro": "f1_macro", "best_tvd": "tvd",
              "best_jsd": "jsd", "best_brier": "brier", "best_ece": "ece"}
AGREEMENT_LEVELS = ("low", "mid", "high")
AGREEMENT_METRICS = ("xentropy", "acc", "f1_macro", "tvd", "jsd", "brier")

# Diagnostic thresholds (see docs/harness.md, "Warnings").
LOW_OPTION_MASS = 0.5
DOMINANT_OPTION_SHARE = 0.9


class CorpusError(ValueError):
    """Records that cannot be scored together; the message names the documents."""


# ---------------------------------------------------------------- one document


def read_out(task: str, doc_id: str, labels: Sequence[str], orders: Sequence[tuple[str, Sequence[int]]],
             logliks: np.ndarray, counts: list, human_counts: list | None, scoring: dict,
             merge_variants: bool = False) -> Record:
    """The record of one document.

    ``logliks[o, v, i]``: log-likelihood of presented option ``i``'s surface variant ``v``
    (``v = 0`` the primary string lm-eval scores, see :func:`moral_tasks.prompts.option_variants`)
    in presentation order ``o``, whose permutation says that presented option ``i`` is label
    ``perm[i]``. With ``merge_variants`` an option's readout is the logsumexp over its variants,
    else the primary string's log-likelihood.
    """
    logliks = np.asarray(logliks, dtype=np.float64)
    readout = logsumexp(logliks, axis=1) if merge_variants else logliks[:, 0]
    # A variant may have probability 0 (log -inf: e.g. a classifier has no surface variants),
    # but NaN, +inf or an option without any probability leaves no distribution to score.
    # An option may have probability 0 too (an API's top-k that already holds all the mass), as
    # long as some option has probability: then q exists, and xentropy is honestly infinite
    # wherever people voted for the impossible option.
    if np.isnan(logliks).any() or (logliks == np.inf).any() or not np.isfinite(readout).any(axis=-1).all():
        raise CorpusError(f"{task} document {doc_id}: the model returned a non-finite log-likelihood {logliks.tolist()}")
    by_order = {}
    for (name, perm), ll in zip(orders, readout):
        back = np.argsort(perm)  # presented option i is label perm[i]: argsort maps back to label order
        by_order[name] = np.exp(M.log_normalize(ll))[back]
    q = np.mean(list(by_order.values()), axis=0)
    if len(orders) == 1:
        option_loglik = readout[0][np.argsort(orders[0][1])]
    else:  # the mean probability of each option over the orders, before renormalisation
        option_loglik = logsumexp([ll[np.argsort(perm)] for (_, perm), ll in zip(orders, readout)], axis=0) \
            - np.log(len(orders))
    mass = np.exp(logliks).sum(axis=2).mean(axis=0)  # per variant, mean over orders
    return Record(
        task=task, doc_id=doc_id, labels=list(labels), option_loglik=option_loglik.tolist(), q=q.tolist(),
        option_mass=float(mass[0]), variant_mass=float(mass[1:].sum()) if len(mass) > 1 else None,
        counts=list(counts), human_counts=human_counts, scoring=scoring,
        orders={name: v.tolist() for name, v in by_order.items()} if len(orders) > 1 else None,
    )


# ---------------------------------------------------------------- a corpus


def canonical(records: Sequence[Record]) -> list[Record]:
    """The records sorted by document id, checked to form one corpus of one task."""
    records = sorted(records, key=lambda r: r.doc_id)
    if not records:
        raise CorpusError("no records to score")
    tasks = sorted({r.task for r in records})
    if len(tasks) != 1:
        raise CorpusError(f"records of several tasks cannot be scored together: {tasks}")
    dupes = sorted({a.doc_id for a, b in zip(records, records[1:]) if a.doc_id == b.doc_id})
    if dupes:
        raise CorpusError(f"{tasks[0]}: document(s) scored twice: {', '.join(dupes[:5])}")
    settings = {repr(sorted(r.scoring.items())) for r in records}
    if len(settings) != 1:
        raise CorpusError(f"{tasks[0]}: documents disagree on their scoring settings: {sorted(settings)}")
    return records


def score_records(records: Sequence[Record]) -> dict[str, Any]:
    """Every number lm-eval reports for these records (any order: they are sorted by document id first)."""
    records = canonical(records)
    scored_task = _SCORED_TASK.set(records[0].task)
    try:
        return _score(records)
    finally:
        _SCORED_TASK.reset(scored_task)


# The task score_records is scoring: the metric modules' warnings (a fit at its search bound) know
# nothing of tasks, and lm-eval aggregates one task after another into one log.
_SCORED_TASK: contextvars.ContextVar[str | None] = contextvars.ContextVar("moral_ambiguity_scored_task", default=None)


class _NameTheTask(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        task = _SCORED_TASK.get()
        if task is not None:
            record.msg = f"{task}: {record.msg}"
        return True


for _logger in (M.log, intervals.log):
    _logger.addFilter(_NameTheTask())


def _score(records: list[Record]) -> dict[str, Any]:
    no_readout = Counter(r.no_readout for r in records if r.no_readout is not None)
    records = [r for r in records if r.no_readout is None]
    if not records:
        raise CorpusError(f"no document has a readout ({dict(no_readout)}): nothing to score")
    scoring = records[0].scoring
    resamples, seed = scoring["bootstrap_resamples"], scoring["bootstrap_seed"]
    logq = np.log(np.array([r.q for r in records], dtype=np.float64))
    counts = np.array([r.counts for r in records], dtype=np.float64)
    n, k = counts.shape

    full = M.compute_metrics(logq, counts, scoring["fixed_concentration"])
    values: dict[str, Any] = {IN_SAMPLE.get(name, name): v for name, v in full.items()}
    if resamples:
        cis = intervals.bootstrap_intervals(logq, counts, scoring["fixed_concentration"], resamples, seed,
                                            full_sample=full)
        values.update({f"{IN_SAMPLE.get(name, name)}_ci95": list(ci) for name, ci in cis.items()})
    values.update(_ceilings(counts, records, scoring))

    mass = np.array([r.option_mass for r in records])
    values["option_mass"] = float(mass.mean())
    if resamples:
        values["option_mass_ci95"] = list(intervals.mean_interval(mass, resamples, seed))
    if all(r.variant_mass is not None for r in records):
        values["variant_mass"] = float(np.mean([r.variant_mass for r in records]))

    values["xentropy_uniform"] = float(np.log(k))  # -sum_k p_k log(1/K) = log K for every document
    prior = scoring.get("prior")
    values["xentropy_prior"] = None
    unvoted = [] if prior is None else [i for i, share in enumerate(prior) if share == 0 and counts[:, i].any()]
    if prior is not None and not unvoted:
        with np.errstate(divide="ignore"):  # a zero share where no document has a vote costs nothing
            values["xentropy_prior"] = M.xentropy(np.tile(np.log(prior), (n, 1)), counts)

    if records[0].orders is not None:
        effects = order_effects(records)
        values["order_effect"] = float(effects.mean())
        if resamples:
            values["order_effect_ci95"] = list(intervals.mean_interval(effects, resamples, seed))

    values.update(agreement_slices(logq, counts, scoring.get("agreement_cuts")))
    values["data_source"] = scoring.get("data_source")
    values["record_format"] = records[0].format  # of the records scored (rescore reads format 3 files too)
    values["documents"] = n
    values["no_readout"] = {"documents": sum(no_readout.values()), "reasons": dict(no_readout)}
    values["warnings"] = diagnostics(records[0].task, values, np.argmax(logq, -1), records[0].labels,
                                     [records[0].labels[i] for i in unvoted], scoring.get("prior_split"))
    return values


def _ceilings(counts: np.ndarray, records: list[Record], scoring: dict) -> dict:
    """Oracle ceilings of the documents evaluated (BEST, posterior-predictive): for xentropy,
    accuracy and macro F1 as Scruples, and the same scheme for TVD, JSD, Brier and ECE, so that
    every distance has its floor. ``_ci95`` is +-1.96 Monte-Carlo standard errors."""
    human = [r.human_counts for r in records]
    # As Scruples: for dilemmas the prior is fitted on gold + human-performance votes.
    prior = counts + np.array(human) if all(h is not None for h in human) else None
    est = best_scores(counts.astype(np.int64), prior_counts=None if prior is None else prior.astype(np.int64),
                      n_samples=scoring["best_samples"], seed=scoring["bootstrap_seed"])
    out = {}
    for name, key in BEST_NAMES.items():
        half = 1.96 * est[f"{key}_stderr"]
        out[name], out[f"{name}_ci95"] = est[key], [est[key] - half, est[key] + half]
    return out


def order_effects(records: Sequence[Record]) -> np.ndarray:
    """Per document, the mean total-variation distance between its presentation orders' distributions
    (over all pairs of orders, so a variant with more than two orders reuses it)."""
    out = []
    for r in records:
        qs = [np.asarray(q) for q in r.orders.values()]
        out.append(np.mean([M.tvd_rows(a, b) for a, b in itertools.combinations(qs, 2)]))
    return np.array(out)


def majority_share(counts: np.ndarray) -> np.ndarray:
    return counts.max(1) / counts.sum(1)


def agreement_cut_points(shares: np.ndarray, cuts: Sequence[float] | None) -> tuple[float, float]:
    """The two cut points: the task's fixed ones, else the terciles of the evaluated documents' shares."""
    if cuts is not None:
        return float(cuts[0]), float(cuts[1])
    c1, c2 = np.quantile(shares, [1 / 3, 2 / 3])
    return float(c1), float(c2)


def agreement_slices(logq: np.ndarray, counts: np.ndarray, cuts: Sequence[float] | None) -> dict:
    """The main metrics by level of human agreement (majority share s): low s <= c1 < mid s <= c2 < high."""
    shares = majority_share(counts)
    c1, c2 = agreement_cut_points(shares, cuts)
    bounds = {"low": (0.0, c1), "mid": (c1, c2), "high": (c2, 1.0)}
    out = {}
    for level, (lo, hi) in bounds.items():
        idx = np.flatnonzero((shares > lo) & (shares <= hi)) if level != "low" else np.flatnonzero(shares <= hi)
        entry: dict[str, Any] = {"majority_share": [lo, hi], "n": int(len(idx))}
        for name in AGREEMENT_METRICS:
            entry[name] = _METRIC_FUNCTIONS[name](logq[idx], counts[idx]) if len(idx) else None
        out[f"agreement_{level}"] = entry
    return out


_METRIC_FUNCTIONS = {"xentropy": M.xentropy, "acc": M.accuracy, "f1_macro": M.f1_macro, "tvd": M.tvd, "jsd": M.jsd,
                     "brier": M.brier}


def _dominant_option(task: str, index: int, label: str, share: float) -> str:
    """The warning for one option chosen on (nearly) every document, with what it can mean for this task."""
    try:
        spec = get_task(task)
    except ValueError:  # records of a task this version does not define: say the position
        return f"{task}: option #{index + 1} ({label}) is the model's choice for {share:.0%} of documents"
    if len(spec.presentation_orders) > 1:
        return (f"{task}: {label} is the model's choice for {share:.0%} of documents with the presentation orders "
                "averaged (so not a position effect)")
    debiased = next((name for name, v in VARIANTS.items() if v.base_name == spec.base_name), None)
    return (f"{task}: option {spec.letters[index]} ({label}) is the model's choice for {share:.0%} of documents "
            "(a position or letter preference, not a judgment" + (f"; see {debiased}" if debiased else "") + ")")


def diagnostics(task: str, values: dict, argmax: np.ndarray, labels: Sequence[str], unvoted: Sequence[str] = (),
                prior_split: str | None = None) -> list[str]:
    """Readouts a reader must not trust without a second look (the lm-eval aggregation and rescore log them).
    ``unvoted``: the labels the prior split gives no vote while an evaluated document has one."""
    out = []
    skipped = values["no_readout"]["documents"]
    if skipped:
        out.append(f"{task}: {skipped} document(s) had no readout and are left out of every metric "
                   f"({values['no_readout']['reasons']})")
    if values["option_mass"] < LOW_OPTION_MASS:
        out.append(f"{task}: option_mass {values['option_mass']:.3f} < {LOW_OPTION_MASS}: the model puts most of its "
                   "next-token probability outside the answer options, so q is a renormalised remainder "
                   "(see variant_mass; try merge_variants or a chat template)")
    if values["xentropy"] > values["xentropy_uniform"]:
        out.append(f"{task}: xentropy {values['xentropy']:.4f} is worse than the uniform distribution's "
                   f"{values['xentropy_uniform']:.4f}")
    if values.get("temperature_insample_at_bound") and values["temperature_insample"] > 1:
        out.append(f"{task}: the in-sample temperature ran to its upper search bound "
                   f"({values['temperature_insample']:.4g}), so calibrated_xentropy_insample is (nearly) the uniform "
                   "distribution's: the readout carries no usable signal at any temperature")
    elif values.get("temperature_insample_at_bound"):
        out.append(f"{task}: the in-sample temperature ran to its lower search bound "
                   f"({values['temperature_insample']:.4g}): sharpening q all the way to its top option keeps lowering "
                   "xentropy, i.e. the top option takes (nearly) every vote on every document and q is far too flat")
    share = np.bincount(argmax, minlength=len(labels)) / len(argmax)
    top = int(share.argmax())
    if share[top] > DOMINANT_OPTION_SHARE:
        out.append(_dominant_option(task, top, labels[top], share[top]))
    if unvoted:
        # Its xentropy would be infinite (not valid JSON); say why there is no prior row instead.
        out.append(f"{task}: no xentropy_prior: the {prior_split} split gives {', '.join(unvoted)} no vote, and some "
                   "evaluated document has one")
    return out
