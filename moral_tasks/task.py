"""The lm-eval task class of every moral_ambiguity task (YAML ``class: !function moral_tasks.task.MoralTask``).

One document per Scruples item. Its requests read every presentation order of the spec
(one for plain tasks, both action orders for ``moral_dilemmas_debiased``) and every surface
variant of every option (" A" and "A"): variants share their context, so with the HF
backend's logits cache a document costs one forward pass per order. ``process_results``
returns one record (:mod:`moral_tasks.records`) under ``record`` and a short tag of the
document under every metric key; :mod:`moral_tasks.harness` aggregates them.

Task metadata (YAML ``metadata:`` or ``--metadata '{...}'``): ``split`` (default test),
``data_dir``, ``dirichlet_concentration`` (default K), ``bootstrap_resamples`` (default 1000,
0 = no intervals), ``bootstrap_seed`` (0), ``best_samples`` (1000), ``merge_variants``
(default false: read each option as lm-eval scores it; true: logsumexp over its variants).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from lm_eval.api.instance import Instance
from lm_eval.api.task import ConfigurableTask

from .dataset import DEFAULT_SPLIT, PRIOR_SPLIT, build_documents, train_prior
from .answers import is_no_readout
from .records import RECORD_KEY, Record, corpus_tag
from .metrics import core as M
from .metrics import intervals
from .prompts import PROMPT_VERSION, get_task, option_variants
from .scoring import read_out

DEFAULT_BEST_SAMPLES = 1000  # Monte-Carlo SE ~1e-4 on Scruples dev: far below the bootstrap interval widths


def scoring_settings(task: str, metadata: dict) -> dict:
    """The scoring settings of a run (they travel in every record), checked."""
    spec = get_task(task)
    given = metadata.get("dirichlet_concentration")
    s_fixed = float(given) if given is not None else M.default_concentration(len(spec.labels))
    if not s_fixed > 0:
        raise ValueError(f"{task}: metadata dirichlet_concentration must be > 0, got {given!r}")
    settings = {"fixed_concentration": s_fixed}
    for name, default, least in (("bootstrap_resamples", intervals.DEFAULT_RESAMPLES, 0),
                                 ("bootstrap_seed", intervals.DEFAULT_SEED, 0),
                                 ("best_samples", DEFAULT_BEST_SAMPLES, 1)):
        value = metadata.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{task}: metadata {name} must be a whole number >= {least}, got {value!r}")
        settings[name] = value
    merge = metadata.get("merge_variants", False)
    if not isinstance(merge, bool):
        raise ValueError(f"{task}: metadata merge_variants must be true or false, got {merge!r}")
    settings["merge_variants"] = merge
    settings["agreement_cuts"] = list(spec.agreement_cuts) if spec.agreement_cuts else None
    settings["prompt_version"] = PROMPT_VERSION
    return settings


def _swap_text(ctx: Any, old: str, new: str, doc_id: str) -> Any:
    """``ctx`` with the last occurrence of the document's prompt ``old`` replaced by ``new``.

    The context lm-eval built (few-shot examples, system prompt, chat template) is kept as
    it is; only the document's own text changes. A chat context of an API model is JSON text.
    """
    if not isinstance(ctx, str):  # lm_eval.models.api_models.JsonChatStr
        old_json, new_json = json.dumps(old)[1:-1], json.dumps(new)[1:-1]
        return type(ctx)(_swap_text(ctx.prompt, old_json, new_json, doc_id))
    head, found, tail = ctx.rpartition(old)
    if not found:
        raise ValueError(f"document {doc_id}: its prompt does not occur in the context lm-eval built (a chat "
                         "template that rewrites the text?), so its options cannot be presented in another order")
    return head + new + tail


class MoralTask(ConfigurableTask):
    def __init__(self, config: dict | None = None):
        config = dict(config or {})
        config.pop("class", None)
        # Non-empty: metric names are then ours, not looked up in lm-eval's registry.
        config["process_results"] = f"{__name__}.MoralTask.process_results"
        self.spec = get_task(config["task"])
        super().__init__(config=config)
        names = list(self._aggregation_list)
        if names[:1] != [RECORD_KEY]:
            # lm-eval aggregates in this order, and the record's aggregation scores the corpus the others read.
            raise ValueError(f"{self.config.task}: metric_list must declare {RECORD_KEY!r} first, got {names[:3]}")
        self._reported = [n for n in names[1:] if self._reports(n)]

    def _reports(self, name: str) -> bool:
        if name.startswith("order_effect") and len(self.spec.presentation_orders) < 2:
            return False
        if name.endswith("_ci95") and not name.startswith("best_") and not self.scoring["bootstrap_resamples"]:
            return False
        return True

    def download(self, dataset_kwargs: dict | None = None, **kwargs) -> None:
        meta = self.config.metadata or {}
        settings = scoring_settings(self.config.task, meta)
        data_dir = meta.get("data_dir")
        self.dataset, source = build_documents(self.spec, meta.get("split", DEFAULT_SPLIT), data_dir)
        if "validation" not in self.dataset:  # a data_dir with the evaluated file only: no few-shot pool
            self.config.validation_split = None
        self.scoring = {**settings, "data_source": source, "prior": train_prior(self.spec, data_dir),
                        "prior_split": PRIOR_SPLIT}
        self._scoring_doc = None  # see _result

    def build_all_requests(self, **kwargs) -> None:
        # lm-eval builds the requests once per evaluation: the next record written carries the scoring settings
        # again (a task object can be evaluated twice, on other documents).
        self._scoring_doc = None
        super().build_all_requests(**kwargs)

    def doc_to_text(self, doc: dict, doc_to_text=None) -> str:
        return self.spec.prompt(doc)

    def construct_requests(self, doc: dict, ctx, **kwargs) -> list:
        # lm-eval's own requests fix the context and the delimiter it scores (" " or "" under a chat template).
        base = super().construct_requests(doc, ctx, **kwargs)
        cont = base[0].arguments[1]
        delimiter = cont[: len(cont) - len(self.doc_to_choice(doc)[0])]
        variants = option_variants(self.spec, delimiter)
        requests = []
        for _, perm in self.spec.presentation_orders:
            ctx_o = ctx
            if list(perm) != sorted(perm):
                ctx_o = _swap_text(ctx, self.spec.prompt(doc), self.spec.prompt(self.spec.reorder(doc, perm)), doc["id"])
            for v in range(len(variants[0])):  # the layout prompts.request_layout describes
                for option in variants:
                    # New instances (dataclasses.replace would share the template's resps list).
                    requests.append(Instance(request_type=base[0].request_type, doc=doc, arguments=(ctx_o, option[v]),
                                             idx=len(requests), metadata=base[0].metadata))
        return requests

    def process_results(self, doc: dict, results: list) -> dict:
        orders = self.spec.presentation_orders
        k = len(self.spec.labels)
        missing = next((r[0] for r in results if is_no_readout(r)), None)
        if missing is not None:
            # The model type could not read this document (see moral_tasks.answers.NoReadout):
            # it is counted, never scored with a made-up distribution.
            record = Record(task=self.config.task, doc_id=doc["id"], labels=list(self.spec.labels), option_loglik=[],
                            q=[], option_mass=0.0, counts=doc["counts"], scoring=self.scoring,
                            human_counts=doc["human_counts"], no_readout=missing.reason)
            return self._result(record)
        logliks = np.array([float(r[0]) for r in results]).reshape(len(orders), -1, k)
        record = read_out(self.config.task, doc["id"], self.spec.labels, orders, logliks, doc["counts"],
                          doc["human_counts"], self.scoring, merge_variants=self.scoring["merge_variants"])
        return self._result(record)

    def _result(self, record: Record) -> dict:
        """What process_results returns: the record, which carries the run's scoring settings only
        if it is this process's first document (records.py), and the document's tag under every
        metric key."""
        if self._scoring_doc is None:
            self._scoring_doc = record.doc_id
        if record.doc_id != self._scoring_doc:
            record.scoring = None
        tag = corpus_tag(record.task, record.doc_id)
        return {RECORD_KEY: record.to_json(), **{name: tag for name in self._reported}}
