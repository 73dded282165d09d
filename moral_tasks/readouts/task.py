"""The lm-eval task class of the generation readouts (YAML ``class: !function moral_tasks.readouts.task.ReadoutTask``).

Same documents, data, scoring settings and metric list as the log-probability task
(:class:`moral_tasks.task.MoralTask`); the model writes its answer instead:

* ``verbalized``: one greedy reply stating a percentage per option as a JSON object
  (:func:`moral_tasks.readouts.verbalized.parse_distribution`); the stated shares are read as the
  votes of 100 people and smoothed like sampled votes (add-``smoothing``).
* ``sampling``: ``samples`` replies at temperature 1 (lm-eval's ``repeats``) to the log-probability
  task's own prompt, each parsed by :func:`moral_tasks.answers.parse_answer`; q is the
  add-``smoothing`` vote distribution (:func:`moral_tasks.answers.vote_distribution`).
* ``answer``: one greedy reply to the same prompt, parsed the same way (one vote). Its record
  scores the written answer; :func:`moral_tasks.readouts.analysis.answer_consistency` compares it
  with the log-probability run's first-token argmax.

Each document's sample line holds ONE readout under ``readout`` (format :data:`READOUT_FORMAT`):
its replies parsed, and its :class:`~moral_tasks.records.Record` under ``record``, or null when no
reply could be read. Such documents are left out of the metrics and counted
(``documents_without_readout``); ``parse_rate`` is the share of replies parsed. A record's
``q`` is the readout's distribution, ``option_loglik`` its log and ``option_mass`` 1 (the readout
is a distribution over the options by construction); ``variant_mass`` is null.

Task metadata, besides the log-probability tasks' (:mod:`moral_tasks.task`): ``samples`` (sampling
only; default :data:`DEFAULT_SAMPLES`), ``smoothing`` (default 1; > 0: a stated or sampled 0
would make the cross-entropy infinite).
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from lm_eval.api.task import ConfigurableTask
from lm_eval.filters import build_filter_ensemble

from .. import harness
from ..answers import tally, vote_distribution
from ..prompts import get_task
from ..records import RECORD_KEY, Record
from ..scoring import CorpusError, score_records
from ..task import MoralTask
from .verbalized import format_distribution, parse_distribution

log = logging.getLogger("lm_eval.moral_ambiguity")

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
    format: str = READOUT_FORMAT

    def to_json(self) -> dict:
        out = dict(self.__dict__)
        out["record"] = None if self.record is None else self.record.to_json()
        return out

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "Readout":
        if not isinstance(obj, dict) or obj.get("format") != READOUT_FORMAT:
            raise CorpusError(f"{where}: not a readout of format {READOUT_FORMAT!r}: rerun lm_eval with this version")
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
                   stated=stated, reason=reason, record=record)


def score_readouts(readouts: Sequence[Readout]) -> dict[str, Any]:
    """Every number of a readout task: the metrics of the documents with a readout
    (:func:`moral_tasks.scoring.score_records`), ``parse_rate``, ``documents_without_readout`` and
    ``no_readout_reasons``. With no readout at all every metric is None."""
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
    values: dict[str, Any] = score_records(records) if records else defaultdict(lambda: None, documents=0, warnings=[])
    replies = sum(r.replies for r in readouts)
    values["parse_rate"] = sum(r.parsed for r in readouts) / replies
    values["documents_without_readout"] = len(readouts) - len(records)
    values["no_readout_reasons"] = dict(sorted(Counter(r.reason for r in readouts if r.record is None).items()))
    warnings = list(values["warnings"])
    if values["parse_rate"] < LOW_PARSE_RATE:
        warnings.append(f"{tasks[0]}: parse_rate {values['parse_rate']:.3f} < {LOW_PARSE_RATE}: "
                        f"{replies - sum(r.parsed for r in readouts)} of {replies} replies could not be read; "
                        f"{values['documents_without_readout']} of {len(readouts)} documents have no readout and "
                        "are left out of the metrics")
    values["warnings"] = warnings
    return values


def agg_readout(readouts: list) -> int:
    """Scores the corpus (every other key of the task reads it); reports the number of documents."""
    parsed = [r if isinstance(r, Readout) else Readout.from_json(r, f"readout of document {r.get('doc_id')!r}")
              for r in readouts]
    values = score_readouts(parsed)
    for message in values["warnings"]:
        log.warning("%s", message)
    harness.remember_corpus([r.doc_id for r in parsed], values)
    return len(parsed)


def agg_parse_rate(doc_ids: list) -> Any:
    """Share of the generated replies that could be read (verbalized: a stated distribution; sampling and answer: one option)."""
    return harness.corpus_value("parse_rate", doc_ids)


def agg_documents_without_readout(doc_ids: list) -> Any:
    """Documents none of whose replies could be read: left out of every other metric."""
    return harness.corpus_value("documents_without_readout", doc_ids)


def agg_no_readout_reasons(doc_ids: list) -> Any:
    """Why documents have no readout: {reason: number of documents}."""
    return harness.corpus_value("no_readout_reasons", doc_ids)


_READOUT_METRICS = [
    {"metric": READOUT_KEY, "aggregation": agg_readout, "higher_is_better": None},
    {"metric": "parse_rate", "aggregation": agg_parse_rate, "higher_is_better": True},
    {"metric": "documents_without_readout", "aggregation": agg_documents_without_readout, "higher_is_better": None},
    {"metric": "no_readout_reasons", "aggregation": agg_no_readout_reasons, "higher_is_better": None},
]


class ReadoutTask(MoralTask):
    """A generation readout of a moral_ambiguity task: the included template's metric list, with its
    ``record`` key replaced by ``readout`` and the readout counts added (see the module docstring)."""

    def __init__(self, config: dict | None = None):
        config = dict(config or {})
        config.pop("class", None)
        config["process_results"] = f"{__name__}.ReadoutTask.process_results"
        self.spec = get_task(config["task"])
        if self.spec.readout not in KINDS:
            raise ValueError(f"{config['task']}: readout {self.spec.readout!r} is not a generation readout {KINDS}")
        if config.get("output_type") != "generate_until":
            raise ValueError(f"{config['task']}: a generation readout needs output_type: generate_until")
        self.readout = readout_settings(config["task"], self.spec.readout, config.get("metadata") or {})
        config["metric_list"] = _READOUT_METRICS + [m for m in config["metric_list"] if m["metric"] != RECORD_KEY]
        config["repeats"] = self.readout["samples"]
        ConfigurableTask.__init__(self, config=config)
        # Every reply reaches process_results (lm-eval's default filter keeps the first).
        self._filters = [build_filter_ensemble("none", [["take_first_k", {"k": self.readout["samples"]}]])]
        self._reported = [n for n in self._aggregation_list if n != READOUT_KEY and self._reports(n)]

    def download(self, dataset_kwargs: dict | None = None, **kwargs) -> None:
        super().download(dataset_kwargs, **kwargs)
        self.scoring = {**self.scoring, **self.readout}

    def doc_to_target(self, doc: dict, doc_to_target=None):
        if self.spec.readout == "verbalized":  # a few-shot example answers with the human vote shares
            counts = np.asarray(doc["counts"], dtype=np.float64)
            return format_distribution((counts / counts.sum()).tolist(), self.spec.letters)
        return super().doc_to_target(doc, doc_to_target)

    def construct_requests(self, doc: dict, ctx, **kwargs):
        return ConfigurableTask.construct_requests(self, doc, ctx, **kwargs)

    def process_results(self, doc: dict, results: list) -> dict:
        (replies,) = results
        readout = read_replies(self.config.task, doc["id"], self.spec.readout, list(replies), self.spec.labels,
                               self.spec.letters, doc["counts"], doc["human_counts"], self.scoring)
        return {READOUT_KEY: readout.to_json(), **{name: doc["id"] for name in self._reported}}


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

