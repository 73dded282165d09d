"""Records and corpus scoring, against hand-worked values (no model needed)."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import zlib

import numpy as np
import pytest

from moral_tasks import harness
from moral_tasks.records import Record
from moral_tasks.scoring import CorpusError, order_effects, read_out, score_records
from test_metrics import random_case

SCORING = {"fixed_concentration": 2.0, "bootstrap_resamples": 50, "bootstrap_seed": 0, "best_samples": 100,
           "merge_variants": False, "agreement_cuts": [0.7, 0.9], "prompt_version": "1", "data_source": "test data",
           "prior": [0.7, 0.3], "prior_split": "train"}
ONE_ORDER = (("data", (0, 1)),)
BOTH_ORDERS = (("AB", (0, 1)), ("BA", (1, 0)))


def rec(doc_id, q, counts, mass=0.9, scoring=SCORING, orders=None, task="moral_dilemmas"):
    labels = ["FIRST", "SECOND", "THIRD", "FOURTH", "FIFTH"][: len(q)]
    return Record(task=task, doc_id=doc_id, labels=labels, option_loglik=np.log(q).tolist(), q=list(q),
                  option_mass=mass, variant_mass=0.01, counts=list(counts), human_counts=None, scoring=scoring,
                  orders=orders)


def test_readout_primary_strings_and_variant_mass():
    # P(" A") = .3, P(" B") = .1 (scored), P("A") = .2, P("B") = .05 (variants).
    logliks = np.log([[[0.3, 0.1], [0.2, 0.05]]])
    r = read_out("moral_dilemmas", "d", ["FIRST", "SECOND"], ONE_ORDER, logliks, [3, 2], None, SCORING)
    assert r.q == pytest.approx([0.75, 0.25])
    assert r.option_mass == pytest.approx(0.4) and r.variant_mass == pytest.approx(0.25)
    assert r.option_loglik == pytest.approx(np.log([0.3, 0.1]).tolist())
    assert r.orders is None


def test_readout_merged_variants_is_the_logsumexp():
    logliks = np.log([[[0.3, 0.1], [0.2, 0.05]]])
    r = read_out("moral_dilemmas", "d", ["FIRST", "SECOND"], ONE_ORDER, logliks, [3, 2], None, SCORING,
                 merge_variants=True)
    assert r.q == pytest.approx([0.5 / 0.65, 0.15 / 0.65])
    assert r.option_loglik == pytest.approx(np.log([0.5, 0.15]).tolist())
    assert r.option_mass == pytest.approx(0.4) and r.variant_mass == pytest.approx(0.25)


def test_readout_debiased_maps_the_swapped_order_back_and_averages():
    # AB: P(A) = .4, P(B) = .1, so q_AB = (.8, .2). BA shows the second action as A: P(A) = .3 and
    # P(B) = .2, i.e. q over the presented options (.6, .4), over the labels (.4, .6).
    logliks = np.log([[[0.4, 0.1]], [[0.3, 0.2]]])
    r = read_out("moral_dilemmas_debiased", "d", ["FIRST", "SECOND"], BOTH_ORDERS, logliks, [4, 1], None, SCORING)
    assert r.orders["AB"] == pytest.approx([0.8, 0.2]) and r.orders["BA"] == pytest.approx([0.4, 0.6])
    assert r.q == pytest.approx([0.6, 0.4])
    assert r.option_mass == pytest.approx(0.5) and r.variant_mass is None
    # Mean probability of each label over the orders: AB (.4, .1), BA mapped back (.2, .3).
    assert r.option_loglik == pytest.approx(np.log([0.3, 0.2]).tolist())
    assert order_effects([r]) == pytest.approx([0.4])  # TVD(.8/.2, .4/.6)


def test_order_effect_is_the_mean_pairwise_tvd_for_more_orders():
    r = rec("d", [0.4, 0.3, 0.3], [1, 1, 1],
            orders={"x": [0.5, 0.3, 0.2], "y": [0.2, 0.3, 0.5], "z": [0.5, 0.3, 0.2]})
    assert order_effects([r]) == pytest.approx([(0.3 + 0.0 + 0.3) / 3])


def test_non_finite_loglik_is_a_clear_error():
    with pytest.raises(CorpusError, match="moral_dilemmas document d7: .*non-finite"):
        read_out("moral_dilemmas", "d7", ["FIRST", "SECOND"], ONE_ORDER, np.array([[[np.nan, -1.0]]]), [1, 1], None,
                 SCORING)


def test_baselines_by_hand():
    values = score_records([rec("a", [0.5, 0.5], [4, 1]), rec("b", [0.5, 0.5], [1, 4])])
    assert values["xentropy_uniform"] == pytest.approx(math.log(2))
    by_hand = (-(0.8 * math.log(0.7) + 0.2 * math.log(0.3)) - (0.2 * math.log(0.7) + 0.8 * math.log(0.3))) / 2
    assert values["xentropy_prior"] == pytest.approx(by_hand, rel=1e-12)
    assert values["option_mass"] == pytest.approx(0.9) and values["variant_mass"] == pytest.approx(0.01)


def test_no_train_prior_reports_none():
    scoring = {**SCORING, "prior": None}
    values = score_records([rec("a", [0.5, 0.5], [4, 1], scoring=scoring)])
    assert values["xentropy_prior"] is None


def test_agreement_levels_of_dilemmas_by_hand():
    q = [0.6, 0.4]
    values = score_records([rec("a", q, [3, 2]), rec("b", q, [1, 4]), rec("c", q, [0, 5]), rec("d", q, [2, 3])])
    low, mid, high = values["agreement_low"], values["agreement_mid"], values["agreement_high"]
    assert (low["n"], mid["n"], high["n"]) == (2, 1, 1)
    assert low["majority_share"] == [0.0, 0.7] and mid["majority_share"] == [0.7, 0.9]
    xent_32 = -(0.6 * math.log(0.6) + 0.4 * math.log(0.4))
    xent_23 = -(0.4 * math.log(0.6) + 0.6 * math.log(0.4))
    assert low["xentropy"] == pytest.approx((xent_32 + xent_23) / 2, rel=1e-12)
    assert low["acc"] == 0.5 and mid["acc"] == 0.0 and high["acc"] == 0.0
    assert high["xentropy"] == pytest.approx(-math.log(0.4), rel=1e-12)
    assert high["tvd"] == pytest.approx(0.6)


def test_agreement_terciles_of_anecdotes_by_hand():
    scoring = {**SCORING, "agreement_cuts": None, "prior": None}
    shares = [3, 4, 5, 6, 7, 8]  # majority votes out of 10 on 5 options
    records = [rec(f"d{m}", [0.2] * 5, [m] + [(10 - m) // 4 + (i < (10 - m) % 4) for i in range(4)], scoring=scoring)
               for m in shares]
    assert all(sum(r.counts) == 10 and max(r.counts) == r.counts[0] for r in records)
    values = score_records(records)
    c1, c2 = 0.4 + 0.1 * 2 / 3, 0.6 + 0.1 / 3  # linear-interpolated 1/3 and 2/3 quantiles of .3 ... .8
    assert values["agreement_low"]["majority_share"] == pytest.approx([0.0, c1])
    assert values["agreement_mid"]["majority_share"] == pytest.approx([c1, c2])
    assert [values[f"agreement_{x}"]["n"] for x in ("low", "mid", "high")] == [2, 2, 2]


def test_an_empty_level_reports_n_zero_and_no_values():
    values = score_records([rec("a", [0.6, 0.4], [5, 0])])
    assert values["agreement_low"]["n"] == 0 and values["agreement_low"]["xentropy"] is None


def _random_records(seed, n=30, orders=False):
    loglik, counts = random_case(seed, n=n, k=2)
    q = np.exp(loglik) / np.exp(loglik).sum(1, keepdims=True)
    rng = np.random.default_rng(seed)
    return [rec(f"doc{i:03d}", q[i].tolist(), counts[i].tolist(), mass=float(rng.uniform(0.5, 1)),
                orders={"AB": q[i].tolist(), "BA": q[i][::-1].tolist()} if orders else None) for i in range(n)]


@pytest.mark.parametrize("orders", [False, True])
def test_shuffled_records_give_identical_results_in_every_number(orders):
    records = _random_records(3, orders=orders)
    reference = score_records(records)
    for seed in range(3):
        shuffled = records[:]
        random.Random(seed).shuffle(shuffled)
        assert score_records(shuffled) == reference  # every value, intervals and BEST draws included


def test_warnings_low_mass_worse_than_uniform_and_one_dominant_option(caplog):
    records = [rec(f"d{i}", [0.9, 0.1], [0, 5], mass=0.3) for i in range(10)]
    harness.agg_record([r.to_json() for r in records])  # lm-eval's aggregation logs them
    values = score_records(records)
    text = " | ".join(values["warnings"])
    assert "option_mass 0.300 < 0.5" in text
    assert "worse than the uniform distribution's 0.6931" in text
    assert ("option A (FIRST) is the model's choice for 100% of documents (a position or letter preference, not a "
            "judgment; see moral_dilemmas_debiased)") in text
    # Every document prefers the option nobody chose: only T -> infinity (uniform) helps.
    assert values["temperature_insample_at_bound"] is True
    assert "in-sample temperature ran to its upper search bound" in text
    assert abs(values["calibrated_xentropy_insample"] - 0.6931) < 1e-3
    logged = [r for r in caplog.records if r.levelname == "WARNING" and r.name == "lm_eval.moral_ambiguity"]
    assert [r.getMessage() for r in logged] == values["warnings"]
    # The metric modules' own warnings (a fit at its bound) name the task being scored, and only while it is.
    fits = [r.getMessage() for r in caplog.records if r.name.startswith("moral_tasks.metrics")]
    assert fits and all(m.startswith("moral_dilemmas: ") for m in fits)
    assert any("temperature fit ran to its upper search bound" in m for m in fits)
    caplog.clear()
    from moral_tasks.metrics import core as M

    M.compute_metrics(np.log([[0.9, 0.1]] * 10), [[0, 5]] * 10)
    assert caplog.records and not any(r.getMessage().startswith("moral_dilemmas") for r in caplog.records)


def test_the_dominant_option_warning_says_what_it_can_mean_for_the_task():
    five = {**SCORING, "prior": None, "agreement_cuts": None}
    anecdotes = [rec(f"d{i}", [0.1, 0.1, 0.1, 0.1, 0.6], [5, 0, 0, 0, 1], scoring=five, task="moral_anecdotes")
                 for i in range(10)]
    (text,) = [w for w in score_records(anecdotes)["warnings"] if "choice" in w]
    # no order-debiased anecdote task to point to
    assert text == ("moral_anecdotes: option E (FIFTH) is the model's choice for 100% of documents (a position or "
                    "letter preference, not a judgment)")
    debiased = [rec(f"d{i}", [0.9, 0.1], [0, 5], task="moral_dilemmas_debiased") for i in range(10)]
    (text,) = [w for w in score_records(debiased)["warnings"] if "choice" in w]
    assert text == ("moral_dilemmas_debiased: FIRST is the model's choice for 100% of documents with the presentation "
                    "orders averaged (so not a position effect)")


def test_a_temperature_at_its_lower_bound_is_read_as_too_flat_not_as_no_signal():
    # Always right on unanimous votes with q = 0.6: T -> 0 drives xentropy to 0 (hand-checked: at T = 1 it is -ln 0.6).
    records = [rec(f"d{i}", [0.6, 0.4] if i % 2 else [0.4, 0.6], [5, 0] if i % 2 else [0, 5]) for i in range(20)]
    values = score_records(records)
    assert values["acc"] == 1.0 and values["xentropy"] == pytest.approx(-math.log(0.6))
    assert values["temperature_insample_at_bound"] is True and values["temperature_insample"] < 1
    (text,) = [w for w in values["warnings"] if "temperature" in w]
    assert "lower search bound" in text and "far too flat" in text and "no usable signal" not in text


def test_no_warnings_for_a_sound_readout():
    q = [[0.7, 0.3], [0.3, 0.7], [0.6, 0.4]]
    values = score_records([rec(f"d{i}", q[i], c) for i, c in enumerate([[4, 1], [1, 4], [3, 2]])])
    assert values["warnings"] == []


def test_in_sample_calibration_is_named_so():
    values = score_records(_random_records(1))
    assert "calibrated_xentropy_insample" in values and "temperature_insample" in values
    assert "calibrated_xentropy" not in values and "temperature" not in values


def test_aggregations_find_the_corpus_by_the_documents_tags():
    records = [r.to_json() for r in _random_records(2, n=8)]
    assert harness.agg_record(records) == 8

    def tags(task):  # what process_results puts under each metric key: crc32 of "task NUL doc id", 16 bits
        return [zlib.crc32(f"{task}\0{r['doc_id']}".encode()) % 65536 for r in records][::-1]

    assert harness.agg_xentropy(tags(records[0]["task"])) == score_records(_random_records(2, n=8))["xentropy"]
    with pytest.raises(CorpusError, match="no scored corpus for these 7 documents"):
        harness.agg_xentropy(tags(records[0]["task"])[:7])
    # the same documents of another task (e.g. the debiased variant) are another corpus
    with pytest.raises(CorpusError, match="no scored corpus for these 8 documents"):
        harness.agg_xentropy(tags("moral_dilemmas_debiased"))


def test_corpus_errors_name_the_problem():
    with pytest.raises(CorpusError, match="scored twice: a"):
        score_records([rec("a", [0.5, 0.5], [1, 1]), rec("a", [0.5, 0.5], [1, 1])])
    with pytest.raises(CorpusError, match="several tasks"):
        score_records([rec("a", [0.5, 0.5], [1, 1]), rec("b", [0.5, 0.5], [1, 1], task="moral_dilemmas_debiased")])
    with pytest.raises(CorpusError, match="disagree on their scoring settings"):
        score_records([rec("a", [0.5, 0.5], [1, 1]), rec("b", [0.5, 0.5], [1, 1], scoring={**SCORING, "bootstrap_seed": 1})])


def test_request_layout_runs_over_orders_then_variants_then_options():
    from moral_tasks.prompts import get_task, request_layout

    spec = get_task("moral_dilemmas_debiased")
    got = [request_layout(spec, i) for i in range(8)]
    assert got == [("AB", 0, 0), ("AB", 0, 1), ("AB", 1, 0), ("AB", 1, 1),
                   ("BA", 0, 1), ("BA", 0, 0), ("BA", 1, 1), ("BA", 1, 0)]
    assert request_layout(get_task("moral_anecdotes"), 7) == ("data", 1, 2)


def test_reordering_a_chat_json_context_and_a_context_without_the_prompt():
    from lm_eval.models.api_models import JsonChatStr

    from moral_tasks.task import _swap_text

    old, new = "A. x\nB. y", "A. y\nB. x"
    chat = JsonChatStr(json.dumps([{"role": "user", "content": "Q\n" + old}]))
    swapped = _swap_text(chat, old, new, "d1")
    assert isinstance(swapped, JsonChatStr) and json.loads(swapped.prompt)[0]["content"] == "Q\n" + new
    with pytest.raises(ValueError, match="document d1: its prompt does not occur in the context"):
        _swap_text("something else", old, new, "d1")


def test_a_samples_file_writes_the_settings_once_and_reads_format_3_too(tmp_path):
    from moral_tasks.records import read_samples

    records = _random_records(4, n=5)
    # Format 4 as the task writes it: settings on the first record only, null fields left out.
    lines = [{"record": {**r.to_json(), **({} if i == 0 else {"scoring": None})}} for i, r in enumerate(records)]
    lines = [{"record": {k: v for k, v in line["record"].items() if v is not None}} for line in lines]
    assert "orders" not in lines[0]["record"] and "scoring" not in lines[1]["record"]
    v4 = tmp_path / "v4.jsonl"
    v4.write_text("".join(json.dumps(line) + "\n" for line in lines))
    # Format 3 (moral-ambiguity before this change): every field on every line, settings repeated.
    v3 = tmp_path / "v3.jsonl"
    v3.write_text("".join(json.dumps({"record": {**dataclasses.asdict(r), "format": "moral-ambiguity/record/3"}}) + "\n"
                          for r in records))
    for path in (v4, v3):
        got = read_samples(path)
        assert [r.scoring for r in got] == [SCORING] * 5 and [r.q for r in got] == [r.q for r in records]
        assert score_records(got)["xentropy"] == score_records(records)["xentropy"]
        assert score_records(got)["record_format"] == {v4: "moral-ambiguity/record/4", v3: "moral-ambiguity/record/3"}[path]


def test_a_prior_with_a_zero_share_reports_no_prior_row_and_says_why():
    # The train split never voted SECOND; an evaluated document did: -ln 0 would be infinite.
    records = [rec(f"d{i}", [0.6, 0.4], [3, 2], scoring={**SCORING, "prior": [1.0, 0.0]}) for i in range(4)]
    values = score_records(records)
    assert values["xentropy_prior"] is None
    assert ("moral_dilemmas: no xentropy_prior: the train split gives SECOND no vote, and some evaluated document "
            "has one") in values["warnings"]
    # Where no evaluated document votes for it, the zero share costs nothing: -ln 1 = 0.
    unanimous = [rec(f"d{i}", [0.6, 0.4], [5, 0], scoring={**SCORING, "prior": [1.0, 0.0]}) for i in range(4)]
    assert score_records(unanimous)["xentropy_prior"] == 0.0
