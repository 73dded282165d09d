"""One document's readout from its generated replies, the readout sample format, and corpus scoring.

No lm-eval import here: ``moral-ambiguity rescore`` and the leaderboard read samples files with it.
See :mod:`moral_tasks.readouts.task` for the tasks and what a readout means.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..answers import tally, vote_distribution
from ..prompts import get_task
from ..records import RECORD_FORMAT, RECORD_KEY, Record
from ..scoring import AGREEMENT_LEVELS, BEST_NAMES, CORE_NAMES, CorpusError, score_records
from .verbalized import parse_distribution

READOUT_KEY = "readout"
READOUT_FORMAT = "moral-ambiguity/readout/1"
DEFAULT_SAMPLES = 20  # add-one on 20 votes: q moves in steps of 1/22 (K=2); the cost is 20 short generations per item
DEFAULT_SMOOTHING = 1.0
STATED_PEOPLE = 100  # the verbalized prompts ask for percentages "of 100 people"
LOW_PARSE_RATE = 0.9
KINDS = ("verbalized", "sampling", "answer")


@dataclass
class Readout:
    """One document's readout (the ``readout`` field of its sample line)."""

    task: str
    doc_id: str
    kind: str
    replies: int  # replies generated
    parsed: int  # of them, read
    votes: list[int] | None  # sampling/answer: parsed answers per option, label order
    stated: list[float] | None  # verbalized: the stated shares, renormalised, before smoothing
    reason: str | None  # why the document has no readout (record None)
    record: Record | None
    distinct: int | None = None  # different reply texts among the replies
    format: str = READOUT_FORMAT

    def to_json(self) -> dict:
        out = dict(self.__dict__)
        out["record"] = None if self.record is None else self.record.to_json()
        return out

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "Readout":
        if not isinstance(obj, dict) or obj.get("format") != READOUT_FORMAT:
            raise CorpusError(f"{where}: not a readout of format {READOUT_FORMAT!r}: rerun lm_eval with this version")
        missing = [k for k in ("task", "doc_id", "kind", "replies", "parsed") if not isinstance(obj.get(k), (str, int))]
        if missing:
            raise CorpusError(f"{where}: readout lacks {', '.join(missing)}")
        fields = {k: obj.get(k) for k in cls.__dataclass_fields__ if k != "record"}
        record = obj.get(RECORD_KEY)
        return cls(**fields, record=None if record is None else Record.from_json(record, where))


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
                 letters: Sequence[str], counts: list, human_counts: list | None, scoring: dict) -> Readout:
    """The readout of one document from its replies (one for verbalized and answer, N for sampling)."""
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
    record = None
    if q is not None:
        record = Record(task=task, doc_id=doc_id, labels=list(labels), option_loglik=np.log(q).tolist(), q=q,
                        option_mass=1.0, variant_mass=None, counts=list(counts), human_counts=human_counts,
                        scoring=scoring)
    return Readout(task=task, doc_id=doc_id, kind=kind, replies=len(replies), parsed=n_parsed, votes=votes,
                   stated=stated, reason=reason, record=record, distinct=len(set(replies)))


def score_readouts(readouts: Sequence[Readout]) -> dict[str, Any]:
    """Every number of a readout task: the metrics of the documents with a readout
    (:func:`moral_tasks.scoring.score_records`), ``parse_rate``, ``no_readout``
    (``{"documents": n, "reasons": {reason: n}}``, the key the log-probability tasks use for documents a
    model type could not read) and ``readout_documents`` (every document asked). With no readout at all every metric is None."""
    if not readouts:
        raise CorpusError("no readouts to score")
    tasks = sorted({r.task for r in readouts})
    if len(tasks) != 1:
        raise CorpusError(f"readouts of several tasks cannot be scored together: {tasks}")
    ids = [r.doc_id for r in readouts]
    dupes = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dupes:
        raise CorpusError(f"{tasks[0]}: document(s) read twice: {', '.join(dupes[:5])}")
    records = [r.record for r in readouts if r.record is not None]
    values = score_records(records) if records else _no_metrics()
    replies = sum(r.replies for r in readouts)
    values["readout_documents"] = len(readouts)
    values["parse_rate"] = sum(r.parsed for r in readouts) / replies
    reasons = dict(sorted(Counter(r.reason for r in readouts if r.record is None).items()))
    values["no_readout"] = {"documents": len(readouts) - len(records), "reasons": reasons}
    warnings = list(values["warnings"])
    if values["parse_rate"] < LOW_PARSE_RATE:
        warnings.append(f"{tasks[0]}: parse_rate {values['parse_rate']:.3f} < {LOW_PARSE_RATE}: "
                        f"{replies - sum(r.parsed for r in readouts)} of {replies} replies could not be read; "
                        f"{values['no_readout']['documents']} of {len(readouts)} documents have no readout and "
                        "are left out of the metrics")
    if all(r.replies > 1 and r.distinct == 1 for r in readouts):
        warnings.append(f"{tasks[0]}: the {readouts[0].replies} sampled replies of every document are identical: the "
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


def read_readouts(path) -> list[Readout]:
    """The readouts of one lm-eval samples file of a readout task, in file order."""
    path = Path(path)
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            sample = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{where}: invalid JSON ({exc.msg})") from None
        if not isinstance(sample, dict) or READOUT_KEY not in sample:
            raise CorpusError(f"{where}: no {READOUT_KEY!r} field: not the samples file of a readout task")
        out.append(Readout.from_json(sample[READOUT_KEY], where))
    return out


def is_readout_task(task: str) -> bool:
    try:
        return get_task(task).readout in KINDS
    except ValueError:
        return False

