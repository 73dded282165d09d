"""The generation readouts (verbalized, sampling, answer), answer consistency and the spread over
prompt templates, on hand-made replies with hand-worked expected values (no model needed)."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from moral_tasks.prompts import LM_EVAL_TASKS, TEMPLATES, get_task, option_variants, template_siblings
from moral_tasks.readouts.analysis import answer_consistency, consistency_pairs, template_spread
from moral_tasks.readouts.readout import read_replies, readout_settings, score_readouts
from moral_tasks.records import Record, RecordFormatError, read_samples
from moral_tasks.readouts.verbalized import format_distribution, parse_distribution
from moral_tasks.scoring import CorpusError
from test_metrics import ref_acc, ref_tvd, ref_xent
from test_scoring import SCORING, rec

LABELS, LETTERS = ("FIRST", "SECOND"), ("A", "B")


def scoring(kind, samples=1):
    return {**SCORING, "bootstrap_resamples": 0, "readout": kind, "samples": samples, "smoothing": 1.0}


def read(kind, doc_id, replies, counts, task=None):
    task = task or f"moral_dilemmas_{kind}"
    return read_replies(task, doc_id, kind, replies, LABELS, LETTERS, counts, None, scoring(kind, len(replies)))


# ---------------------------------------------------------------- the verbalized parser

@pytest.mark.parametrize("reply, shares", [
    ('{"A": 30, "B": 70}', [0.3, 0.7]),
    ('  {"B": 1, "A": 3} because most people...', [0.75, 0.25]),  # key order free, trailing text ignored
    ('```json\n{"A": 0.9, "B": 0.1}\n```', [0.9, 0.1]),
    ('{"A": 45, "B": 45}', [0.5, 0.5]),  # sums to 90: renormalised
    ('{"A": 0, "B": 100}', [0.0, 1.0]),
])
def test_verbalized_parser_reads_and_renormalises(reply, shares):
    stated = parse_distribution(reply, LETTERS)
    assert stated.reason is None and stated.shares == pytest.approx(shares)


@pytest.mark.parametrize("reply, reason", [
    ("", "empty reply"),
    ("A: 50%, B: 50%", "no JSON object at the start of the reply"),
    ("Sure! {\"A\": 50, \"B\": 50}", "no JSON object at the start of the reply"),
    ('{"A": 50, "B": 50', "invalid JSON object"),
    ('{"A": 50}', "keys ['A'] are not the options ['A', 'B']"),
    ('{"A": 50, "B": 40, "C": 10}', "keys ['A', 'B', 'C'] are not the options ['A', 'B']"),
    ('{"a": 50, "b": 50}', "keys ['a', 'b'] are not the options ['A', 'B']"),
    ('{"A": "40%", "B": 60}', "the value of A is not a finite number"),
    ('{"A": true, "B": 60}', "the value of A is not a finite number"),
    ('{"A": NaN, "B": 60}', "the value of A is not a finite number"),
    ('{"A": 50, "B": -5}', "the value of B is negative"),
    ('{"A": 0, "B": 0}', "the values sum to 0"),
])
def test_verbalized_parser_refuses(reply, reason):
    assert parse_distribution(reply, LETTERS).shares is None
    assert parse_distribution(reply, LETTERS).reason == reason


def test_few_shot_answer_is_the_json_the_prompt_asks_for():
    assert format_distribution([0.6, 0.4], LETTERS) == '{"A": 60, "B": 40}'
    assert parse_distribution(format_distribution([0.6, 0.4], LETTERS), LETTERS).shares == pytest.approx([0.6, 0.4])


# ---------------------------------------------------------------- readouts to metrics

def test_verbalized_readout_hand_worked_metrics():
    readouts = [
        read("verbalized", "d1", ['{"A": 30, "B": 70}'], [3, 2]),
        read("verbalized", "d2", ['```json\n{"A": 0.9, "B": 0.1}\n```'], [5, 0]),
        read("verbalized", "d3", ["A: 50%, B: 50%"], [1, 4]),
        read("verbalized", "d4", ['{"A": 1, "B": 3} because'], [2, 3]),
    ]
    # Stated shares read as the votes of 100 people, add-one smoothed: (100 s + 1) / 102.
    assert readouts[0].q == pytest.approx([31 / 102, 71 / 102])
    assert readouts[0].generation["stated"] == pytest.approx([0.3, 0.7]) and readouts[0].option_mass == 1.0
    assert readouts[2].no_readout == "no JSON object at the start of the reply" and readouts[2].generation["parsed"] == 0
    values = score_readouts(readouts)
    q = [[31 / 102, 71 / 102], [91 / 102, 11 / 102], [26 / 102, 76 / 102]]
    counts = [[3, 2], [5, 0], [2, 3]]
    by_hand = (-(0.6 * math.log(31 / 102) + 0.4 * math.log(71 / 102)) - math.log(91 / 102)
               - (0.4 * math.log(26 / 102) + 0.6 * math.log(76 / 102))) / 3
    assert values["xentropy"] == pytest.approx(by_hand, rel=1e-12) == pytest.approx(ref_xent(q, counts), rel=1e-12)
    assert values["acc"] == pytest.approx(2 / 3) == pytest.approx(ref_acc(q, counts))  # d1 says B, humans A
    tvd = (abs(31 / 102 - 0.6) + abs(91 / 102 - 1) + abs(26 / 102 - 0.4)) / 3
    assert values["tvd"] == pytest.approx(tvd) == pytest.approx(ref_tvd(q, counts))
    assert values["parse_rate"] == 0.75
    assert values["documents"] == 3 and values["readout_documents"] == 4 and values["option_mass"] == 1.0
    assert values["no_readout"] == {"documents": 1, "reasons": {"no JSON object at the start of the reply": 1}}
    assert any("parse_rate 0.750 < 0.9: 1 of 4 replies" in w for w in values["warnings"])


def test_sampling_readout_add_one_votes_and_pooled_parse_rate():
    a = read("sampling", "d1", ["A", "B.", "(A)", "I think A", "Answer: A"], [3, 2])
    b = read("sampling", "d2", ["", "hmm", "A or B", "a", "C"], [1, 4])
    assert a.generation["votes"] == [3, 1] and a.generation["parsed"] == 4 and a.q == pytest.approx([4 / 6, 2 / 6])
    assert b.q == [] and b.generation["votes"] == [0, 0] and b.no_readout == "none of the 5 replies names exactly one option"
    values = score_readouts([a, b])
    assert values["parse_rate"] == pytest.approx(4 / 10)  # pooled over the 10 replies
    assert values["no_readout"]["documents"] == 1 and values["documents"] == 1
    assert values["xentropy"] == pytest.approx(-(0.6 * math.log(4 / 6) + 0.4 * math.log(2 / 6)))


def test_identical_samples_everywhere_are_flagged():
    same = score_readouts([read("sampling", f"d{i}", ["A", "A", "A"], [3, 2]) for i in range(3)])
    assert any("the 3 sampled replies of every document are identical" in w for w in same["warnings"])
    varied = score_readouts([read("sampling", "d0", ["A", "A", "A"], [3, 2]), read("sampling", "d1", ["A", "A", "A."], [3, 2])])
    assert not any("identical" in w for w in varied["warnings"])


def test_no_readout_at_all_reports_counts_and_no_metrics():
    values = score_readouts([read("answer", f"d{i}", ["no idea"], [3, 2]) for i in range(3)])
    assert values["parse_rate"] == 0 and values["no_readout"]["documents"] == 3 and values["documents"] == 0
    assert values["xentropy"] is None and values["acc"] is None
    assert values["no_readout"]["reasons"] == {"none of the 1 replies names exactly one option": 3}


def test_readouts_read_back_from_json():
    for r in (read("sampling", "d1", ["A", "B"], [3, 2]), read("sampling", "d2", ["?", "??"], [3, 2])):
        back = Record.from_json(r.to_json(), "here")
        assert back == r
    assert back.no_readout and back.generation == {"kind": "sampling", "replies": 2, "parsed": 0, "distinct": 2,
                                                   "votes": [0, 0], "stated": None}


def test_readout_line_of_the_old_format_is_refused_with_rerun(tmp_path):
    old = {"format": "moral-ambiguity/readout/1", "task": "moral_dilemmas_answer", "doc_id": "d1", "kind": "answer",
           "replies": 1, "parsed": 1, "record": None}
    path = tmp_path / "samples_moral_dilemmas_answer_2026-01-01T00-00-00.jsonl"
    path.write_text(json.dumps({"doc_id": 0, "readout": old}) + "\n")
    with pytest.raises(RecordFormatError, match=r"samples_moral_dilemmas_answer_.*jsonl:1: no 'record' field.*rerun lm_eval"):
        read_samples(path)
    path.write_text(json.dumps({"doc_id": 0, "record": {**old, "format": "moral-ambiguity/record/2"}}) + "\n")
    with pytest.raises(RecordFormatError, match=r"jsonl:1: record format 'moral-ambiguity/record/2' is not .*rerun lm_eval"):
        read_samples(path)


def test_log_probability_records_are_not_scored_as_readouts():
    with pytest.raises(CorpusError, match="document d1 has no generation readout"):
        score_readouts([rec("d1", [0.5, 0.5], [3, 2])])


def test_documents_read_twice_are_refused():
    with pytest.raises(CorpusError, match="document.s. read twice: d1"):
        score_readouts([read("answer", "d1", ["A"], [3, 2]), read("answer", "d1", ["B"], [3, 2])])


@pytest.mark.parametrize("metadata, message", [
    ({"samples": 0}, "samples must be a whole number >= 1, got 0"),
    ({"samples": 2.5}, "samples must be a whole number >= 1, got 2.5"),
    ({"smoothing": 0}, "smoothing must be a number > 0, got 0"),
    ({"smoothing": "1"}, "smoothing must be a number > 0, got '1'"),
])
def test_bad_readout_settings_are_refused(metadata, message):
    with pytest.raises(ValueError, match=f"moral_dilemmas_sampling: metadata {message}"):
        readout_settings("moral_dilemmas_sampling", "sampling", metadata)


def test_samples_only_apply_to_sampling():
    assert readout_settings("t", "sampling", {}) == {"readout": "sampling", "samples": 20, "smoothing": 1.0}
    assert readout_settings("t", "verbalized", {"samples": 7})["samples"] == 1


# ---------------------------------------------------------------- answer consistency

def test_answer_consistency_by_hand():
    records = [rec("d1", [0.7, 0.3], [3, 2]), rec("d2", [0.4, 0.6], [3, 2]), rec("d3", [0.5, 0.5], [3, 2]),
               rec("d4", [0.2, 0.8], [3, 2])]
    answers = [read("answer", "d1", ["B"], [3, 2]), read("answer", "d2", ["B. Because"], [3, 2]),
               read("answer", "d3", ["Both"], [3, 2]), read("answer", "d5", ["A"], [3, 2])]
    out = answer_consistency(records, answers)
    # d1: argmax A, wrote B (differ); d2: B and B; d3 unparsed; d4 and d5 in one run only.
    assert (out["rate"], out["compared"], out["differ"], out["unparsed"], out["unmatched"]) == (0.5, 2, 1, 1, 2)
    assert out["by_option"] == {"FIRST": {"argmax": 1, "written": 0}, "SECOND": {"argmax": 1, "written": 2}}


def test_answer_consistency_pairs_only_the_same_prompt():
    assert consistency_pairs(["moral_dilemmas", "moral_dilemmas_answer", "moral_anecdotes_answer",
                              "moral_dilemmas_debiased"]) == [("moral_dilemmas", "moral_dilemmas_answer")]
    with pytest.raises(CorpusError, match="moral_anecdotes_answer is not the answer readout of moral_dilemmas"):
        answer_consistency([rec("d1", [0.5, 0.5], [3, 2])], [read("answer", "d1", ["A"], [3, 2],
                                                                  task="moral_anecdotes_answer")])


def test_answer_and_sampling_tasks_ask_the_log_probability_prompt():
    doc = {"actions": [{"description": "lying"}, {"description": "stealing"}]}
    for kind in ("answer", "sampling"):
        assert get_task(f"moral_dilemmas_{kind}").prompt(doc) == get_task("moral_dilemmas").prompt(doc)
    assert '{"A": <percent>, "B": <percent>}' in get_task("moral_dilemmas_verbalized").prompt(doc)


# ---------------------------------------------------------------- prompt templates

def test_numbered_template_labels_are_data_on_the_spec():
    spec = get_task("moral_dilemmas_numbered")
    assert spec.letters == ("1", "2") and spec.labels == get_task("moral_dilemmas").labels
    assert option_variants(spec, " ") == ((" 1", "1"), (" 2", "2"))
    text = spec.prompt({"actions": [{"description": "lying"}, {"description": "stealing"}]})
    assert "1. lying\n2. stealing\n" in text and text.endswith("Answer with 1 or 2.\nAnswer:")
    assert get_task("moral_anecdotes_numbered").letters == ("1", "2", "3", "4", "5")


def test_every_template_has_a_distinct_prompt_and_the_base_data():
    doc = {"actions": [{"description": "lying"}, {"description": "stealing"}], "title": "t", "text": "x"}
    for name, spec in TEMPLATES.items():
        base = LM_EVAL_TASKS[spec.base]
        assert spec.prompt(doc) != base.prompt(doc) and spec.counts is base.counts and spec.readout == "logprob"
    assert template_siblings("moral_dilemmas_numbered") == ["moral_dilemmas", "moral_dilemmas_paraphrase",
                                                             "moral_dilemmas_numbered"]


def test_template_spread_by_hand():
    metrics = {"moral_dilemmas": {"xentropy": 0.7, "acc": 0.5}, "moral_dilemmas_paraphrase": {"xentropy": 0.6, "acc": None},
               "moral_dilemmas_numbered": {"xentropy": 0.9, "acc": 0.7}, "moral_anecdotes": {"xentropy": 9.0}}
    out = template_spread(metrics, "moral_dilemmas", metrics=("xentropy", "acc"))
    assert out["tasks"] == ["moral_dilemmas", "moral_dilemmas_paraphrase", "moral_dilemmas_numbered"]
    x = out["xentropy"]
    assert (x["min"], x["max"], x["n"]) == (0.6, 0.9, 3)
    assert x["std"] == pytest.approx(statistics.pstdev([0.7, 0.6, 0.9]))
    assert x["templates"] == {"default": 0.7, "paraphrase": 0.6, "numbered": 0.9}
    assert out["acc"]["n"] == 2 and out["acc"]["std"] == pytest.approx(0.1)


def test_template_spread_needs_two_templates():
    with pytest.raises(CorpusError, match="needs at least two of"):
        template_spread({"moral_dilemmas": {"xentropy": 0.7}}, "moral_dilemmas")


def test_dominant_option_warning_names_the_templates_own_label():
    from moral_tasks.scoring import score_records
    records = [rec(f"d{i}", [0.2, 0.8], [3, 2], task="moral_dilemmas_numbered") for i in range(4)]
    warnings = " ".join(score_records(records)["warnings"])
    assert "option 2 (SECOND) is the model's choice for 100% of documents" in warnings
    assert "option B" not in warnings
