"""One document's readout from its generated replies, and corpus scoring.

No lm-eval import here: ``moral-ambiguity rescore`` and the leaderboard read samples files with
:func:`moral_tasks.records.read_samples`; a generation readout's record carries its replies' account
in ``generation`` (see :mod:`moral_tasks.records`). See :mod:`moral_tasks.readouts.task` for the tasks
and what a readout means.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import numpy as np

from ..answers import tally, vote_distribution
from ..records import RECORD_FORMAT, Record
from ..scoring import AGREEMENT_LEVELS, BEST_NAMES, CORE_NAMES, CorpusError, score_records
from .verbalized import parse_distribution

DEFAULT_SAMPLES = 20  # add-one on 20 votes: q moves in steps of 1/22 (K=2); the cost is 20 short generations per item
DEFAULT_SMOOTHING = 1.0
STATED_PEOPLE = 100  # the verbalized prompts ask for percentages "of 100 people"
LOW_PARSE_RATE = 0.9
KINDS = ("verbalized", "sampling", "answer")


def readout_settings(task: str, kind: str, metadata: dict) -> dict:
    """The readout's settings (they travel in every record), checked."""
    smoothing = metadata.get("smoothing", DEFAULT_SMOOTHING)
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not smoothing > 0:
        raise ValueError(f"{task}: metadata smoothing must be a number > 0, got {smoothing!r}")
    samples = 1
    if kind == "sampling":
        samples = metadata.get("samples", DEFAULT_SAMPLES)
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"{task}: metadata samples must be a whole number >= 1, got {samples!r}")
    return {"readout": kind, "samples": samples, "smoothing": float(smoothing)}


def read_replies(task: str, doc_id: str, kind: str, replies: Sequence[str], labels: Sequence[str],
                 letters: Sequence[str], counts: list, human_counts: list | None, scoring: dict) -> Record:
    """The record of one document from its replies (one for verbalized and answer, N for sampling);
    ``no_readout`` says why when none could be read."""
    smoothing = scoring["smoothing"]
    votes = stated = None
    if kind == "verbalized":
        parsed = parse_distribution(replies[0], letters)
        stated, reason, n_parsed = parsed.shares, parsed.reason, int(parsed.shares is not None)
        q = None if stated is None else vote_distribution([STATED_PEOPLE * s for s in stated], smoothing)
    else:
        result = tally(replies, letters)
        votes, n_parsed = result.counts, sum(result.counts)
        reason = None if n_parsed else f"none of the {len(replies)} replies names exactly one option"
        q = vote_distribution(votes, smoothing) if n_parsed else None
    generation = {"kind": kind, "replies": len(replies), "parsed": n_parsed, "distinct": len(set(replies)),
                  "votes": votes, "stated": stated}
    if q is None:
        return Record(task=task, doc_id=doc_id, labels=list(labels), option_loglik=[], q=[], option_mass=0.0,
                      counts=list(counts), human_counts=human_counts, scoring=scoring, no_readout=reason,
                      generation=generation)
    return Record(task=task, doc_id=doc_id, labels=list(labels), option_loglik=np.log(q).tolist(), q=q,
                  option_mass=1.0, variant_mass=None, counts=list(counts), human_counts=human_counts,
                  scoring=scoring, generation=generation)


def score_readouts(readouts: Sequence[Record]) -> dict[str, Any]:
    """Every number of a readout task (its records, :func:`read_replies`): the metrics of the documents with a readout
    (:func:`moral_tasks.scoring.score_records`), ``parse_rate``, ``no_readout``
    (``{"documents": n, "reasons": {reason: n}}``, the key the log-probability tasks use for documents a
    model type could not read) and ``readout_documents`` (every document asked). With no readout at all every metric is None."""
    if not readouts:
        raise CorpusError("no readouts to score")
    lacking = next((r for r in readouts if r.generation is None), None)
    if lacking is not None:
        raise CorpusError(f"{lacking.task}: document {lacking.doc_id} has no generation readout (a log-probability "
                          "record): score it with moral_tasks.scoring.score_records")
    tasks = sorted({r.task for r in readouts})
    if len(tasks) != 1:
        raise CorpusError(f"readouts of several tasks cannot be scored together: {tasks}")
    ids = [r.doc_id for r in readouts]
    dupes = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dupes:
        raise CorpusError(f"{tasks[0]}: document(s) read twice: {', '.join(dupes[:5])}")
    records = [r for r in readouts if r.no_readout is None]
    values = score_records(records) if records else _no_metrics()
    replies = sum(r.generation["replies"] for r in readouts)
    parsed = sum(r.generation["parsed"] for r in readouts)
    values["readout_documents"] = len(readouts)
    values["parse_rate"] = parsed / replies
    reasons = dict(sorted(Counter(r.no_readout for r in readouts if r.no_readout is not None).items()))
    values["no_readout"] = {"documents": len(readouts) - len(records), "reasons": reasons}
    warnings = list(values["warnings"])
    if values["parse_rate"] < LOW_PARSE_RATE:
        warnings.append(f"{tasks[0]}: parse_rate {values['parse_rate']:.3f} < {LOW_PARSE_RATE}: "
                        f"{replies - parsed} of {replies} replies could not be read; "
                        f"{values['no_readout']['documents']} of {len(readouts)} documents have no readout and "
                        "are left out of the metrics")
    if all(r.generation["replies"] > 1 and r.generation["distinct"] == 1 for r in readouts):
        warnings.append(f"{tasks[0]}: the {readouts[0].generation['replies']} sampled replies of every document are identical: the "
                        "backend may not be sampling (lm-eval's API model types send seed=1234 with every request, "
                        "which a provider honouring seeds answers alike); q is then one answer, not a distribution")
    values["warnings"] = warnings
    return values


class _NoMetrics(dict):
    """The values of a corpus with no readout: every metric None, including one not listed here
    (a metric added to score_records later must not make such a run fail)."""

    def __missing__(self, key: str) -> None:
        return None


def _no_metrics() -> dict[str, Any]:
    """What :func:`moral_tasks.scoring.score_records` reports, with no document to score: every value None."""
    names = [*CORE_NAMES, *BEST_NAMES, "option_mass", "order_effect"]
    values: dict[str, Any] = _NoMetrics({name: None for name in names})
    values.update({f"{name}_ci95": None for name in names})
    values.update({f"agreement_{level}": None for level in AGREEMENT_LEVELS})
    values.update(xentropy_uniform=None, xentropy_prior=None, data_source=None, record_format=RECORD_FORMAT,
                  documents=0, warnings=[])
    return values
