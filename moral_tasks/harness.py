"""lm-eval's aggregations for the moral_ambiguity tasks.

Each document's ``process_results`` (:class:`moral_tasks.task.MoralTask`) returns ONE record,
under the key ``record``, and the document's tag (:func:`moral_tasks.records.corpus_tag`) under
every metric key. lm-eval aggregates the keys in that order, so :func:`agg_record` scores the
whole corpus first (one call of :func:`moral_tasks.scoring.score_records`) and every metric's
aggregation below looks its value up by the same documents' tags. If that corpus is not found
(the tags differ), the aggregation raises: it never reports a number of another corpus.
"""

from __future__ import annotations

import logging
from typing import Any

from .records import RECORD_KEY, Record, attach_scoring, corpus_tag
from .scoring import CorpusError, score_records

# Under lm-eval's logger, so that the warnings appear in its log with its format.
log = logging.getLogger("lm_eval.moral_ambiguity")
# The last corpus scored by agg_record: (sorted document tags, values).
_SCORED: dict[str, Any] = {}


def agg_record(records: list) -> int:
    """Scores the corpus (every other key of the task reads it); reports the number of documents."""
    return publish_corpus(parse_records(records), score_records)


def parse_records(records: list) -> list[Record]:
    """lm-eval hands an aggregation the records as process_results returned them (JSON objects)."""
    parsed = [r if isinstance(r, Record) else Record.from_json(r, f"record of document {r.get('doc_id')!r}")
              for r in records]
    return attach_scoring(parsed, f"the {len(parsed)} records lm-eval aggregates")


def publish_corpus(records: list[Record], score) -> int:
    """Scores ``records`` with ``score`` (:func:`moral_tasks.scoring.score_records`, or the generation
    readouts' :func:`moral_tasks.readouts.readout.score_readouts`), logs its warnings and makes it the
    corpus every metric key of these documents reads; returns the number of documents asked."""
    values = score(records)
    for message in values["warnings"]:
        log.warning("%s", message)
    _SCORED.clear()
    _SCORED.update(tags=sorted(corpus_tag(r.task, r.doc_id) for r in records), values=values)
    return values.get("readout_documents", values["documents"])


def corpus_value(name: str, tags: list) -> Any:
    """The value of ``name`` in the corpus scored by :func:`agg_record` for exactly these documents."""
    if _SCORED.get("tags") != sorted(tags):
        raise CorpusError(
            f"aggregation of {name!r}: no scored corpus for these {len(tags)} documents; the {RECORD_KEY!r} "
            "key must be aggregated before the metric keys (process_results returns it first)"
        )
    try:
        return _SCORED["values"][name]
    except KeyError:
        raise CorpusError(f"aggregation of {name!r}: this corpus does not report it") from None


def agg_xentropy(tags: list) -> Any:
    """Scruples' soft cross-entropy, mean over documents of -sum_k p_k log q_k (nats)."""
    return corpus_value("xentropy", tags)


def agg_calibrated_xentropy_insample(tags: list) -> Any:
    """xentropy after the temperature that minimises it ON THE EVALUATED SPLIT (an oracle, in-sample value; Scruples' dev-fitted protocol is `moral-ambiguity rescore --dev`)."""
    return corpus_value("calibrated_xentropy_insample", tags)


def agg_temperature_insample(tags: list) -> Any:
    """The temperature T of calibrated_xentropy_insample (q -> softmax(log q / T))."""
    return corpus_value("temperature_insample", tags)


def agg_dirichlet_nll(tags: list) -> Any:
    """Dirichlet-multinomial NLL of the votes, alpha = s * q, s fitted by maximum likelihood."""
    return corpus_value("dirichlet_nll", tags)


def agg_dirichlet_concentration(tags: list) -> Any:
    """The maximum-likelihood s of dirichlet_nll."""
    return corpus_value("dirichlet_concentration", tags)


def agg_dirichlet_nll_fixed(tags: list) -> Any:
    """Dirichlet-multinomial NLL at the task's fixed concentration (metadata dirichlet_concentration)."""
    return corpus_value("dirichlet_nll_fixed", tags)


def agg_acc(tags: list) -> Any:
    """Accuracy of argmax q against the majority vote (first maximum)."""
    return corpus_value("acc", tags)


def agg_f1_macro(tags: list) -> Any:
    """Macro F1 of argmax q against the majority vote, over the labels that occur."""
    return corpus_value("f1_macro", tags)


def agg_brier(tags: list) -> Any:
    """Brier score, mean of sum_k (q_k - p_k)^2."""
    return corpus_value("brier", tags)


def agg_ece(tags: list) -> Any:
    """Expected calibration error of the top option against the majority vote, 10 equal-mass bins."""
    return corpus_value("ece", tags)


def agg_jsd(tags: list) -> Any:
    """Jensen-Shannon distance (base 2) between q and the vote distribution p."""
    return corpus_value("jsd", tags)


def agg_tvd(tags: list) -> Any:
    """Total-variation distance 0.5 * sum_k |q_k - p_k|."""
    return corpus_value("tvd", tags)


def agg_xentropy_ci95(tags: list) -> Any:
    """95% percentile-bootstrap interval of xentropy (documents resampled; fitted values refitted in each resample)."""
    return corpus_value("xentropy_ci95", tags)


def agg_calibrated_xentropy_insample_ci95(tags: list) -> Any:
    """95% percentile-bootstrap interval of calibrated_xentropy_insample (documents resampled; fitted values refitted in each resample)."""
    return corpus_value("calibrated_xentropy_insample_ci95", tags)


def agg_temperature_insample_ci95(tags: list) -> Any:
    """95% percentile-bootstrap interval of temperature_insample (documents resampled; fitted values refitted in each resample)."""
    return corpus_value("temperature_insample_ci95", tags)


def agg_dirichlet_nll_ci95(tags: list) -> Any:
    """95% percentile-bootstrap interval of dirichlet_nll (documents resampled; fitted values refitted in each resample)."""
    return corpus_value("dirichlet_nll_ci95", tags)


def agg_dirichlet_concentration_ci95(tags: list) -> Any:
    """95% percentile-bootstrap interval of dirichlet_concentration (documents resampled; fitted values refitted in each resample)."""
    return corpus_value("dirichlet_concentration_ci95", tags)


def agg_dirichlet_nll_fixed_ci95(tags: list) -> Any:
    """95% percentile-bootstrap interval of dirichlet_nll_fixed (documents resampled; fitted values refitted in each resample)."""
    return corpus_value("dirichlet_nll_fixed_ci95", tags)


def agg_acc_ci95(tags: list) -> Any:
    """95% percentile-bootstrap interval of acc (documents resampled; fitted values refitted in each resample)."""
    return corpus_value("acc_ci95", tags)


def agg_f1_macro_ci95(tags: list) -> Any:
    """95% percentile-bootstrap interval of f1_macro (documents resampled; fitted values refitted in each resample)."""
    return corpus_value("f1_macro_ci95", tags)


def agg_brier_ci95(tags: list) -> Any:
    """95% percentile-bootstrap interval of brier (documents resampled; fitted values refitted in each resample)."""
    return corpus_value("brier_ci95", tags)


def agg_ece_ci95(tags: list) -> Any:
    """95% percentile-bootstrap interval of ece (documents resampled; fitted values refitted in each resample)."""
    return corpus_value("ece_ci95", tags)


def agg_jsd_ci95(tags: list) -> Any:
    """95% percentile-bootstrap interval of jsd (documents resampled; fitted values refitted in each resample)."""
    return corpus_value("jsd_ci95", tags)


def agg_tvd_ci95(tags: list) -> Any:
    """95% percentile-bootstrap interval of tvd (documents resampled; fitted values refitted in each resample)."""
    return corpus_value("tvd_ci95", tags)


def agg_best_xentropy(tags: list) -> Any:
    """BEST (Scruples' oracle ceiling): the expected xentropy of an oracle knowing each document's true vote distribution."""
    return corpus_value("best_xentropy", tags)


def agg_best_xentropy_ci95(tags: list) -> Any:
    """+-1.96 Monte-Carlo standard errors of best_xentropy (the estimate's precision, not a sampling interval)."""
    return corpus_value("best_xentropy_ci95", tags)


def agg_best_acc(tags: list) -> Any:
    """BEST (Scruples' oracle ceiling): the expected accuracy of an oracle knowing each document's true vote distribution."""
    return corpus_value("best_acc", tags)


def agg_best_acc_ci95(tags: list) -> Any:
    """+-1.96 Monte-Carlo standard errors of best_acc (the estimate's precision, not a sampling interval)."""
    return corpus_value("best_acc_ci95", tags)


def agg_best_f1_macro(tags: list) -> Any:
    """BEST (Scruples' oracle ceiling): the expected macro F1 of an oracle knowing each document's true vote distribution."""
    return corpus_value("best_f1_macro", tags)


def agg_best_f1_macro_ci95(tags: list) -> Any:
    """+-1.96 Monte-Carlo standard errors of best_f1_macro (the estimate's precision, not a sampling interval)."""
    return corpus_value("best_f1_macro_ci95", tags)


def agg_best_tvd(tags: list) -> Any:
    """BEST ceiling of total-variation distance: its expected value for an oracle knowing each document's true vote distribution."""
    return corpus_value("best_tvd", tags)


def agg_best_tvd_ci95(tags: list) -> Any:
    """+-1.96 Monte-Carlo standard errors of best_tvd (the estimate's precision, not a sampling interval)."""
    return corpus_value("best_tvd_ci95", tags)

def agg_best_jsd(tags: list) -> Any:
    """BEST ceiling of Jensen-Shannon distance: its expected value for an oracle knowing each document's true vote distribution."""
    return corpus_value("best_jsd", tags)


def agg_best_jsd_ci95(tags: list) -> Any:
    """+-1.96 Monte-Carlo standard errors of best_jsd (the estimate's precision, not a sampling interval)."""
    return corpus_value("best_jsd_ci95", tags)

def agg_best_brier(tags: list) -> Any:
    """BEST ceiling of Brier score: its expected value for an oracle knowing each document's true vote distribution."""
    return corpus_value("best_brier", tags)


def agg_best_brier_ci95(tags: list) -> Any:
    """+-1.96 Monte-Carlo standard errors of best_brier (the estimate's precision, not a sampling interval)."""
    return corpus_value("best_brier_ci95", tags)

def agg_best_ece(tags: list) -> Any:
    """BEST ceiling of ECE: its expected value for an oracle knowing each document's true vote distribution."""
    return corpus_value("best_ece", tags)


def agg_best_ece_ci95(tags: list) -> Any:
    """+-1.96 Monte-Carlo standard errors of best_ece (the estimate's precision, not a sampling interval)."""
    return corpus_value("best_ece_ci95", tags)


def agg_temperature_insample_at_bound(tags: list) -> Any:
    """True when the in-sample temperature fit ran to its search bound (the readout has no usable signal)."""
    return corpus_value("temperature_insample_at_bound", tags)


def agg_dirichlet_concentration_at_bound(tags: list) -> Any:
    """True when the Dirichlet concentration fit ran to its search bound."""
    return corpus_value("dirichlet_concentration_at_bound", tags)

def agg_no_readout(tags: list) -> Any:
    """Documents the model gave no distribution for (left out of every metric), with the reasons."""
    return corpus_value("no_readout", tags)

def agg_option_mass(tags: list) -> Any:
    """Mean over documents of the total next-token probability on the options' scored strings (before renormalising)."""
    return corpus_value("option_mass", tags)


def agg_option_mass_ci95(tags: list) -> Any:
    """95% percentile-bootstrap interval of option_mass."""
    return corpus_value("option_mass_ci95", tags)


def agg_variant_mass(tags: list) -> Any:
    """Mean over documents of the extra probability on the options' other surface variants ("A" when " A" is scored)."""
    return corpus_value("variant_mass", tags)


def agg_xentropy_uniform(tags: list) -> Any:
    """xentropy of the uniform distribution on the same documents: log K."""
    return corpus_value("xentropy_uniform", tags)


def agg_xentropy_prior(tags: list) -> Any:
    """xentropy of the TRAIN split's mean vote share on the same documents (Scruples' class prior); None without a train file."""
    return corpus_value("xentropy_prior", tags)


def agg_order_effect(tags: list) -> Any:
    """Order-debiased tasks: mean over documents of the mean total-variation distance between the presentation orders' distributions."""
    return corpus_value("order_effect", tags)


def agg_order_effect_ci95(tags: list) -> Any:
    """95% percentile-bootstrap interval of order_effect."""
    return corpus_value("order_effect_ci95", tags)


def agg_agreement_low(tags: list) -> Any:
    """The main metrics on the documents of low human agreement (majority share <= the first cut point), with n and the share range."""
    return corpus_value("agreement_low", tags)


def agg_agreement_mid(tags: list) -> Any:
    """The main metrics on the documents of middle human agreement (first cut point < majority share <= second), with n and the share range."""
    return corpus_value("agreement_mid", tags)


def agg_agreement_high(tags: list) -> Any:
    """The main metrics on the documents of high human agreement (majority share > the second cut point), with n and the share range."""
    return corpus_value("agreement_high", tags)


def agg_data_source(tags: list) -> Any:
    """Provenance of the evaluated split (full or sample, split, rows, checksum)."""
    return corpus_value("data_source", tags)


def agg_record_format(tags: list) -> Any:
    """Format version of the records in the samples file (moral_tasks.records.RECORD_FORMAT)."""
    return corpus_value("record_format", tags)


def agg_warnings(tags: list) -> Any:
    """Diagnostics a reader must see (low option mass, worse than uniform, one dominant option); also logged."""
    return corpus_value("warnings", tags)
