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

Each document's sample line holds ONE :class:`~moral_tasks.records.Record` under ``record``, like the
log-probability tasks', with the account of its replies in ``generation`` (kind, replies, parsed, votes or
stated shares). A document none of whose replies could be read has ``no_readout`` (the reason) and is left
out of the metrics and counted (``no_readout``); ``parse_rate`` is the share of replies parsed. A record's
``q`` is the readout's distribution, ``option_loglik`` its log and ``option_mass`` 1 (the readout
is a distribution over the options by construction); ``variant_mass`` is null.

Task metadata, besides the log-probability tasks' (:mod:`moral_tasks.task`): ``samples`` (sampling
only; default 20, :data:`.readout.DEFAULT_SAMPLES`), ``smoothing`` (default 1; > 0: a stated or sampled
0 would make the cross-entropy infinite).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from lm_eval.api.task import ConfigurableTask
from lm_eval.filters import build_filter_ensemble

from .. import harness
from ..prompts import get_task
from ..records import RECORD_KEY
from ..task import MoralTask
from .readout import KINDS, read_replies, readout_settings, score_readouts
from .verbalized import format_distribution


def agg_readout(records: list) -> int:
    """Scores the corpus (every other key of the task reads it); reports the number of documents asked."""
    return harness.publish_corpus(harness.parse_records(records), score_readouts)


def agg_parse_rate(tags: list) -> Any:
    """Share of the generated replies that could be read (verbalized: a stated distribution; sampling and answer: one option)."""
    return harness.corpus_value("parse_rate", tags)


def agg_no_readout(tags: list) -> Any:
    """Documents none of whose replies could be read (left out of every other metric), with the reasons."""
    return harness.corpus_value("no_readout", tags)


_READOUT_METRICS = [
    {"metric": RECORD_KEY, "aggregation": agg_readout, "higher_is_better": None},
    {"metric": "parse_rate", "aggregation": agg_parse_rate, "higher_is_better": True},
    {"metric": "no_readout", "aggregation": agg_no_readout, "higher_is_better": None},
]


# Keys of the log-probability template that a generated readout has no value for.
_NOT_READ = {RECORD_KEY, "variant_mass"}  # the record key comes back with agg_readout


class ReadoutTask(MoralTask):
    """A generation readout of a moral_ambiguity task: the included template's metric list, with its
    ``record`` key aggregated by :func:`agg_readout`, the readout counts added and ``variant_mass`` (surface variants of a
    first token) left out (see the module docstring)."""

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
        config["metric_list"] = _READOUT_METRICS + [m for m in config["metric_list"] if m["metric"] not in _NOT_READ]
        config["repeats"] = self.readout["samples"]
        ConfigurableTask.__init__(self, config=config)
        # Every reply reaches process_results (lm-eval's default filter keeps the first).
        self._filters = [build_filter_ensemble("none", [["take_first_k", {"k": self.readout["samples"]}]])]
        self._reported = [n for n in self._aggregation_list if n != RECORD_KEY and self._reports(n)]

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
        record = read_replies(self.config.task, doc["id"], self.spec.readout, list(replies), self.spec.labels,
                               self.spec.letters, doc["counts"], doc["human_counts"], self.scoring)
        return self._result(record)


