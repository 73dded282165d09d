"""The readout tasks through the real lm_eval, in process: a scripted model whose replies give
hand-worked numbers, and the tiny HF model for the plumbing (its replies are mostly unreadable)."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
from lm_eval.api.model import LM

from harness_runs import evaluate, read_run, tiny_lm  # noqa: F401
from moral_tasks.answers import parse_answer
from moral_tasks.readouts.verbalized import parse_distribution
from moral_tasks.rescore import rescore
from test_metrics import ref_acc, ref_tvd, ref_xent
from test_rescore import assert_rescore_reproduces

pytestmark = pytest.mark.slow

READOUT_TASKS = ["moral_dilemmas_verbalized", "moral_dilemmas_sampling", "moral_dilemmas_answer"]

# What the scripted model writes, per task and document (one entry per repeat for sampling).
REPLIES = {
    "moral_dilemmas_verbalized": {"dil0000": ['{"A": 80, "B": 20}'], "dil0001": ['{"A": 10, "B": 90}'],
                                  "dil0002": ["I cannot say"], "dil0003": ['{"A": 50, "B": 50}']},
    "moral_dilemmas_sampling": {"dil0000": ["A", "A", "B"], "dil0001": ["B", "B", "B"], "dil0002": ["x", "y", "z"],
                                "dil0003": ["A", "nope", "B"]},
    "moral_dilemmas_answer": {"dil0000": ["A"], "dil0001": ["A"], "dil0002": ["B"], "dil0003": ["Hmm"]},
}
# First-token probabilities of " A" and " B" (the variants "A", "B" get 0.01 each).
FIRST_TOKEN = {"dil0000": (0.6, 0.2), "dil0001": (0.2, 0.6), "dil0002": (0.2, 0.6), "dil0003": (0.5, 0.3)}


class ScriptedLM(LM):
    """A model that answers from the script above: the real lm_eval runs everything else."""

    def __init__(self):
        super().__init__()
        self.calls = Counter()
        self.gen_kwargs = {}

    def generate_until(self, requests):
        out = []
        for req in requests:
            key = (req.task_name, req.doc["id"])
            out.append(REPLIES[req.task_name][req.doc["id"]][self.calls[key]])
            self.calls[key] += 1
            self.gen_kwargs[req.task_name] = req.args[1]
        return out

    def loglikelihood(self, requests):
        out = []
        for req in requests:
            cont = req.args[1]
            p = FIRST_TOKEN[req.doc["id"]]["AB".index(cont.strip())] if cont.startswith(" ") else 0.01
            out.append((math.log(p), False))
        return out

    def loglikelihood_rolling(self, requests):
        raise NotImplementedError


@pytest.fixture(scope="module")
def scripted_run(scruples_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("scripted") / "results"
    lm = ScriptedLM()
    evaluate(lm, ["moral_dilemmas", *READOUT_TASKS], {"data_dir": str(scruples_dir), "samples": 3}, output=out,
             limit=4)
    return out, lm


def _metric(results, task, name):
    return results["results"][task][f"{name},none"]


def test_scripted_replies_give_the_hand_worked_numbers(scripted_run):
    out, lm = scripted_run
    results, samples, _ = read_run(out)
    counts = {s["doc"]["id"]: s["doc"]["counts"] for s in samples["moral_dilemmas"]}

    def check(task, q_by_doc, parse_rate, without):
        ids = sorted(q_by_doc)
        q, c = [q_by_doc[i] for i in ids], [counts[i] for i in ids]
        assert _metric(results, task, "xentropy") == pytest.approx(ref_xent(q, c), rel=1e-12)
        assert _metric(results, task, "acc") == pytest.approx(ref_acc(q, c))
        assert _metric(results, task, "tvd") == pytest.approx(ref_tvd(q, c))
        assert _metric(results, task, "parse_rate") == pytest.approx(parse_rate)
        assert _metric(results, task, "no_readout")["documents"] == without
        assert _metric(results, task, "record") == 4 and _metric(results, task, "option_mass") == 1.0

    # Verbalized: stated shares as 100 votes, add-one; dil0002 states nothing.
    check("moral_dilemmas_verbalized", {"dil0000": [81 / 102, 21 / 102], "dil0001": [11 / 102, 91 / 102],
                                        "dil0003": [51 / 102, 51 / 102]}, 3 / 4, 1)
    # Sampling: votes (2, 1), (0, 3), none, (1, 1) of 3 replies each, add-one.
    check("moral_dilemmas_sampling", {"dil0000": [3 / 5, 2 / 5], "dil0001": [1 / 5, 4 / 5], "dil0003": [1 / 2, 1 / 2]},
          8 / 12, 1)
    assert lm.gen_kwargs["moral_dilemmas_sampling"]["do_sample"] is True
    assert lm.gen_kwargs["moral_dilemmas_sampling"]["temperature"] == 1.0
    assert lm.gen_kwargs["moral_dilemmas_answer"]["do_sample"] is False
    assert sum(n for (task, _), n in lm.calls.items() if task == "moral_dilemmas_sampling") == 12
    # Every reply is in the samples file next to its record, whose generation account reads them.
    line = next(s for s in samples["moral_dilemmas_sampling"] if s["doc"]["id"] == "dil0003")
    assert line["filtered_resps"] == [["A", "nope", "B"]]
    generation = line["record"]["generation"]
    assert generation["votes"] == [1, 1] and generation["parsed"] == 2 and line["record"]["q"] == [0.5, 0.5]


def test_rescore_reproduces_the_readout_numbers_and_adds_answer_consistency(scripted_run):
    out, _ = scripted_run
    results, _, _ = read_run(out)
    rescored = rescore(out)
    for task in READOUT_TASKS:
        assert_rescore_reproduces(results, rescored["tasks"][task]["metrics"], task, ("record", "readout_documents"))
    consistency = rescored["tasks"]["moral_dilemmas"]["answer_consistency"]
    # argmax A/B/B/A; written A, A, B, unreadable: one of three compared documents differs.
    assert consistency["rate"] == pytest.approx(1 / 3)
    assert (consistency["compared"], consistency["differ"], consistency["unparsed"]) == (3, 1, 1)


def test_tiny_model_runs_every_readout_and_template(tiny_lm, scruples_dir, tmp_path):  # noqa: F811
    tasks = ["moral_dilemmas", "moral_dilemmas_paraphrase", "moral_dilemmas_numbered", *READOUT_TASKS,
             "moral_anecdotes_verbalized", "moral_anecdotes_sampling", "moral_anecdotes_answer"]
    out = tmp_path / "results"
    evaluate(tiny_lm, tasks, {"data_dir": str(scruples_dir), "samples": 2, "bootstrap_resamples": 0}, output=out,
             limit=3)
    results, samples, _ = read_run(out)
    assert sorted(samples) == sorted(tasks)
    for task in tasks:
        if "verbalized" not in task and "sampling" not in task and "answer" not in task:
            assert len(samples[task]) == 3 and all("record" in s for s in samples[task])
            continue
        letters = "ABCDE"[: 2 if "dilemmas" in task else 5]
        replies = [r for s in samples[task] for r in s["filtered_resps"][0]]
        assert len(replies) == 3 * (2 if "sampling" in task else 1)
        if "verbalized" in task:
            parsed = sum(parse_distribution(r, letters).shares is not None for r in replies)
        else:
            parsed = sum(parse_answer(r, letters) is not None for r in replies)
        assert _metric(results, task, "parse_rate") == pytest.approx(parsed / len(replies))
        assert all(s["record"]["generation"]["replies"] == len(s["filtered_resps"][0]) for s in samples[task])
    rescored = rescore(out)
    spread = rescored["prompt_sensitivity"]["moral_dilemmas"]
    assert spread["tasks"] == ["moral_dilemmas", "moral_dilemmas_paraphrase", "moral_dilemmas_numbered"]
    assert spread["xentropy"]["n"] == 3 and spread["xentropy"]["min"] <= spread["xentropy"]["max"]
    assert rescored["tasks"]["moral_dilemmas"]["answer_consistency"]["answer_task"] == "moral_dilemmas_answer"
    json.dumps(rescored)  # the rescore output is plain JSON


def test_the_readouts_group_holds_the_six_tasks():
    from lm_eval.tasks import TaskManager

    from moral_tasks.lm_eval_plugin import TASKS_DIR
    from moral_tasks.prompts import READOUT_TASKS

    loaded = TaskManager(include_path=str(TASKS_DIR), include_defaults=False).load(["moral_readouts"])
    names = {getattr(t, "task_name", None) or t.config.task for t in _leaves(loaded)}
    assert names == set(READOUT_TASKS)


def _leaves(tree):
    items = tree.values() if isinstance(tree, dict) else tree
    for item in items:
        if isinstance(item, (dict, list)):
            yield from _leaves(item)
        elif hasattr(item, "config"):
            yield item
