"""Comparisons across runs of one model: answer consistency and the spread over prompt templates.

* :func:`answer_consistency`: how often the option the model writes when it answers greedily
  (``<task>_answer``) differs from the argmax of its first-token distribution (``<task>``, the
  same prompt). Wang et al. 2024 ("My answer is C") found more than 60% disagreement for some
  instruction-tuned models.
* :func:`template_spread`: min, max and standard deviation of each headline metric over the
  prompt templates of one task (:data:`moral_tasks.prompts.TEMPLATES`: the base prompt, a paraphrase,
  option labels 1/2/...), for one model.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..prompts import LM_EVAL_TASKS, get_task, template_siblings
from ..records import Record
from ..scoring import CorpusError

HEADLINE_METRICS = ("xentropy", "dirichlet_nll", "acc", "f1_macro", "ece", "tvd", "option_mass")


def consistency_pairs(tasks: Sequence[str]) -> list[tuple[str, str]]:
    """``(log-probability task, answer task)`` for every answer task among ``tasks`` whose log-probability
    task (same prompt, one presentation order) is also there."""
    present = set(tasks)
    pairs = []
    for name in sorted(present):
        spec = LM_EVAL_TASKS.get(name)
        if spec is not None and spec.readout == "answer" and spec.base_name in present:
            pairs.append((spec.base_name, name))
    return pairs


def answer_consistency(logprob_records: Sequence[Record], answers: Sequence[Record]) -> dict[str, Any]:
    """Rate at which the first-token argmax (of ``q``; ties go to the first option) differs from the
    written answer, over the documents of both runs whose reply names one option.

    Returns ``rate`` (None when no document can be compared), ``compared``, ``differ``, ``unparsed``
    (answer replies naming no single option, left out), ``unmatched`` (documents in one run only),
    and ``by_option``: per label, how often the argmax and the written answer pick it.
    """
    if not logprob_records or not answers:
        raise CorpusError("answer consistency needs the records of both runs")
    lp_task, ans_task = logprob_records[0].task, answers[0].task
    if get_task(ans_task).readout != "answer" or get_task(ans_task).base_name != get_task(lp_task).name:
        raise CorpusError(f"{ans_task} is not the answer readout of {lp_task}")
    if any(r.generation is None or r.generation["kind"] != "answer" for r in answers):
        raise CorpusError(f"{ans_task}: the answer records lack their replies' account (generation)")
    # A log-probability document without a readout has no argmax: it counts as unmatched.
    by_id = {r.doc_id: r for r in logprob_records if r.no_readout is None}
    labels = logprob_records[0].labels
    compared = differ = unparsed = 0
    argmax_counts, written_counts = np.zeros(len(labels), int), np.zeros(len(labels), int)
    matched = set()
    for readout in answers:
        record = by_id.get(readout.doc_id)
        if record is None:
            continue
        matched.add(readout.doc_id)
        if not readout.generation["parsed"]:
            unparsed += 1
            continue
        first, written = int(np.argmax(record.q)), int(np.argmax(readout.generation["votes"]))
        compared += 1
        differ += first != written
        argmax_counts[first] += 1
        written_counts[written] += 1
    unmatched = len({r.doc_id for r in logprob_records}) + len(answers) - 2 * len(matched)
    return {"rate": differ / compared if compared else None, "compared": compared, "differ": differ,
            "unparsed": unparsed, "unmatched": unmatched, "logprob_task": lp_task, "answer_task": ans_task,
            "by_option": {label: {"argmax": int(a), "written": int(w)}
                          for label, a, w in zip(labels, argmax_counts, written_counts)}}


def template_spread(metrics_by_task: Mapping[str, Mapping[str, Any]], task: str,
                    metrics: Sequence[str] = HEADLINE_METRICS) -> dict[str, Any]:
    """The spread of each metric over the prompt templates of ``task`` present in ``metrics_by_task``
    (``{task name: {metric: value}}`` of one model, e.g. ``rescore(...)["tasks"][t]["metrics"]``).

    Per metric: ``min``, ``max``, ``std`` (population standard deviation over the templates, ddof=0)
    and the value per template. A metric that is None for some template is reported over the others,
    with ``n``. Raises when fewer than two templates were run.
    """
    siblings = [t for t in template_siblings(task) if t in metrics_by_task]
    if len(siblings) < 2:
        raise CorpusError(f"{task}: the spread over prompt templates needs at least two of "
                          f"{template_siblings(task)}; got {siblings}")
    out: dict[str, Any] = {"tasks": siblings}
    for name in metrics:
        values = {get_task(t).template: metrics_by_task[t].get(name) for t in siblings}
        present = np.array([v for v in values.values() if v is not None], dtype=np.float64)
        out[name] = {"min": float(present.min()) if len(present) else None,
                     "max": float(present.max()) if len(present) else None,
                     "std": float(present.std()) if len(present) else None,
                     "n": int(len(present)), "templates": values}
    return out
