"""Fault catalogue, API model types: each case is the real fault, served by a real HTTP server on
127.0.0.1 (tests/api_stub.py), driven through lm-eval's entry point (``lm_eval.simple_evaluate``
in-process; one real ``lm_eval`` command line), checking the message and that nothing good is lost.
"""

from __future__ import annotations

import json
import math
import sqlite3

import pytest

from api_stub import RECORDED, SECRET, Stub, logprobs_body, message_body
from conftest import BIN, offline_env, run
from moral_tasks.answers import NoReadout
from moral_tasks.data import SAMPLE_DIR
from moral_tasks.models.openai_chat import APIModelError, OpenAIChatSampling

GOOD = (200, RECORDED)  # q = (0.71, 0.30) / 1.01 on every dilemma


@pytest.fixture
def stub():
    server = Stub([GOOD])
    yield server
    server.close()


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)


@pytest.fixture(scope="module")
def task_manager():
    import lm_eval.evaluator

    # simple_evaluate lists the pip packages and CUDA setup into every result (a second per call
    # in subprocesses); these tests read no environment information.
    patch = pytest.MonkeyPatch()
    patch.setattr(lm_eval.evaluator, "add_env_info", lambda results: None)
    yield _task_manager()
    patch.undo()


def _task_manager():
    from lm_eval.tasks import TaskManager

    from moral_tasks.lm_eval_plugin import TASKS_DIR

    # Our tasks only: indexing lm-eval's thousands of tasks takes ~25 s on 2 cores.
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False,
                       metadata={"data_dir": str(SAMPLE_DIR), "bootstrap_resamples": 0})


def evaluate(task_manager, stub, tmp_path, model="openai-chat-logprobs", task="moral_dilemmas", limit=4, **args):
    import lm_eval

    model_args = {"model": "gpt-4o", "base_url": stub.url, "cache_dir": str(tmp_path / "cache"), "backoff": 0.0,
                  "max_retries": 2, **args}
    return lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=[task], task_manager=task_manager,
                                   limit=limit, bootstrap_iters=0, log_samples=True)


def q_of(out, task="moral_dilemmas") -> list[list[float]]:
    samples = out["samples"][task]
    return [(s.get("record") or s["xentropy"])["q"] for s in samples]


def test_http_200_error_object_is_retried_never_cached_and_the_run_resumes_once_fixed(task_manager, stub, tmp_path):
    good = evaluate(task_manager, stub, tmp_path, limit=2)
    stub.set([(200, {"error": {"message": "The server is overloaded", "type": "server_error"}})])
    with pytest.raises(APIModelError) as err:
        evaluate(task_manager, stub, tmp_path, limit=4)
    message = str(err.value)
    assert "HTTP 200 with an unusable response 3 times" in message and "an error object" in message
    assert "overloaded" in message and "\n" not in message
    assert len(stub.requests) == 2 + 3  # two good answers, then three tries of the broken one
    stub.set([GOOD])
    fixed = evaluate(task_manager, stub, tmp_path, limit=4)
    # The two earlier answers came from the cache; the error object was never cached.
    assert len(stub.requests) == 5 + 1 + 2
    assert q_of(fixed)[:2] == q_of(good)
    assert fixed["config"]["api"]["cached_responses"] == 1  # the identity probe re-asked one of the two


def test_http_200_without_logprobs_is_retried_then_fails_naming_the_fix(task_manager, stub, tmp_path):
    stub.set([(200, message_body("A"))])
    with pytest.raises(APIModelError, match="top_logprobs.*openai-chat-sampling"):
        evaluate(task_manager, stub, tmp_path)
    assert len(stub.requests) == 3
    with sqlite3.connect(tmp_path / "cache" / "responses.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM responses").fetchone() == (0,)


@pytest.mark.slow
def test_http_200_non_json_body_fails_in_one_line_from_the_lm_eval_cli(stub, tmp_path):
    stub.set([(200, b"<html><body>502 Bad Gateway</body></html>")])
    proc = run([BIN / "lm_eval", "--model", "openai-chat-logprobs", "--model_args",
                f"model=gpt-4o,base_url={stub.url},cache_dir={tmp_path / 'cache'},backoff=0,max_retries=1",
                "--tasks", "moral_dilemmas", "--limit", "2", "--metadata", json.dumps({"data_dir": str(SAMPLE_DIR)})],
               cwd=tmp_path, env=offline_env(OPENAI_API_KEY=SECRET), check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("lm_eval: error: ") and "not JSON" in last and "502 Bad Gateway" in last, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr


def test_topk_summing_to_one_gives_missing_options_nothing_and_counts_them(task_manager, stub, tmp_path):
    # Five anecdote options; the top-k (rounded, as APIs do) sums to 1.01 and holds only A and B.
    stub.set([(200, logprobs_body({"A": 0.7, "B": 0.3, "The": 0.01}))])
    out = evaluate(task_manager, stub, tmp_path, task="moral_anecdotes", limit=3)
    for q in q_of(out, "moral_anecdotes"):
        assert q == pytest.approx([0.7, 0.3, 0.0, 0.0, 0.0])
    account = out["config"]["api"]["readout"]["moral_anecdotes"]
    assert account["documents_with_missing_options"] == 3 and account["options_with_nothing_left"] == 9
    assert account["imputed_mass_total"] == 0.0


def test_topk_with_mass_left_shares_it_and_never_exceeds_it(task_manager, stub, tmp_path):
    # 0.6 + 0.2 + 0.1 leave 0.1 for C, D, E: 1/30 each (below the smallest top-k probability, 0.1).
    stub.set([(200, logprobs_body({"A": 0.6, "B": 0.2, "x": 0.1}))])
    out = evaluate(task_manager, stub, tmp_path, task="moral_anecdotes", limit=2,
                   readout_path=str(tmp_path / "readout.jsonl"))
    lines = [json.loads(line) for line in (tmp_path / "readout.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and lines[0]["missing"] == ["C", "D", "E"]
    assert lines[0]["imputed_mass"] == pytest.approx(0.1) and lines[0]["topk_mass"] == pytest.approx(0.9)
    for q in q_of(out, "moral_anecdotes"):
        assert q == pytest.approx([0.6 / 0.9, 0.2 / 0.9] + [(0.1 / 3) / 0.9] * 3)
    account = out["config"]["api"]["readout"]["moral_anecdotes"]
    assert account["imputed_mass_total"] == pytest.approx(0.2) and account["imputed_mass_max"] == pytest.approx(0.1)


def no_option_for_second_dilemma(body):
    # Dilemma prompts differ; the one of the sample's second test dilemma gets no option letter.
    content = body["messages"][-1]["content"]
    return logprobs_body({"The": 0.6, "I": 0.3} if content == SECOND_PROMPT[0] else {"A": 0.71, "B": 0.3})


SECOND_PROMPT: list[str] = []


@pytest.fixture
def second_prompt():
    from moral_tasks.prompts import dilemma_prompt

    row = json.loads((SAMPLE_DIR / "dilemmas" / "test.scruples-dilemmas.jsonl").read_text().splitlines()[1])
    SECOND_PROMPT[:] = [dilemma_prompt(row)]
    yield row["id"]
    SECOND_PROMPT.clear()


def test_no_option_in_topk_is_returned_as_no_readout_and_counted(stub, tmp_path, second_prompt, caplog):
    from lm_eval.api.instance import Instance

    from moral_tasks.models.openai_chat import OpenAIChatLogprobs

    stub.set([(200, no_option_for_second_dilemma)])
    lm = OpenAIChatLogprobs(model="gpt-4o", base_url=stub.url, cache_dir=str(tmp_path / "cache"), backoff=0)
    reqs = [Instance("loglikelihood", {"id": doc_id}, (prompt, letter), 0, ("moral_dilemmas", i, 1))
            for i, (doc_id, prompt) in enumerate([("first", "another prompt"), (second_prompt, SECOND_PROMPT[0])])
            for letter in "AB"]
    with caplog.at_level("WARNING"):
        out = lm.loglikelihood(reqs)
    assert out[0][0] == pytest.approx(math.log(0.71))
    assert out[2] == out[3] == (NoReadout("no option letter among the top-20 tokens"), False)
    account = lm.get_model_info()["api"]["readout"]["moral_dilemmas"]
    assert account["no_readout"] == 1 and account["no_readout_docs"] == [second_prompt]
    assert "1 of 2 documents have no readout (no option letter among the top-20 tokens), left out" in caplog.text


def test_no_option_in_topk_leaves_the_document_out_of_the_metrics(task_manager, stub, tmp_path, second_prompt):
    stub.set([(200, no_option_for_second_dilemma)])
    out = evaluate(task_manager, stub, tmp_path, limit=3)
    assert len(out["samples"]["moral_dilemmas"]) == 3
    assert out["config"]["api"]["readout"]["moral_dilemmas"]["no_readout"] == 1
    assert math.isfinite(out["results"]["moral_dilemmas"]["xentropy,none"])
    row = out["results"]["moral_dilemmas"]
    assert row["record,none"] == 2 and row["no_readout,none"]["documents"] == 1
    assert any("had no readout and are left out" in w for w in row["warnings,none"])


def test_no_option_in_topk_with_no_readout_uniform_is_imputed_and_counted(task_manager, stub, tmp_path,
                                                                          second_prompt):
    stub.set([(200, no_option_for_second_dilemma)])
    out = evaluate(task_manager, stub, tmp_path, limit=3, no_readout="uniform")
    assert q_of(out) == [pytest.approx([0.71 / 1.01, 0.3 / 1.01]), [0.5, 0.5],
                         pytest.approx([0.71 / 1.01, 0.3 / 1.01])]
    assert out["config"]["api"]["readout"]["moral_dilemmas"]["imputed_uniform"] == 1


def replies(texts):
    return lambda body: message_body(texts[body["seed"] % len(texts)])


def test_sampling_reply_a_colon_b_is_not_a_vote_for_a(task_manager, stub, tmp_path):
    stub.set([(200, replies(["A: B.", "B", "B.", "Answer: B"]))])
    out = evaluate(task_manager, stub, tmp_path, model="openai-chat-sampling", limit=2, num_samples=4)
    # B = 3 votes, "A: B." unparseable: add-one smoothing (0 + 1, 3 + 1) / (3 + 2).
    assert q_of(out) == [pytest.approx([1 / 5, 4 / 5])] * 2
    assert out["config"]["api"]["readout"]["moral_dilemmas"]["parse_rate"] == 0.75


def test_sampling_tied_vote_is_split_evenly(stub, tmp_path):
    from lm_eval.api.instance import Instance

    stub.set([(200, replies(["B", "A"]))])
    lm = OpenAIChatSampling(model="gpt-4o", base_url=stub.url, cache_dir=str(tmp_path / "cache"), backoff=0,
                            num_samples=4)
    out = lm.loglikelihood([Instance("loglikelihood", {"id": "d"}, ("q", c), 0, ("moral_dilemmas", 0, 1))
                            for c in "AB"])
    assert out == [(pytest.approx(math.log(0.5)), True), (pytest.approx(math.log(0.5)), True)]


def test_sampling_all_unparseable_fails_below_the_parse_rate(task_manager, stub, tmp_path):
    stub.set([(200, replies(["I cannot choose.", "Both are wrong."]))])
    with pytest.raises(APIModelError) as err:
        evaluate(task_manager, stub, tmp_path, model="openai-chat-sampling", limit=2, num_samples=2)
    assert "only 0 of 4 sampled replies (0.0%)" in str(err.value) and "min_parse_rate=0.5" in str(err.value)
    asked = len(stub.requests)
    # The replies are cached: accepting the low parse rate costs no new request (beyond the identity probe).
    out = evaluate(task_manager, stub, tmp_path, model="openai-chat-sampling", limit=2, num_samples=2,
                   min_parse_rate=0, no_readout="uniform")
    assert len(stub.requests) == asked + 1
    assert q_of(out) == [[0.5, 0.5]] * 2
    assert out["config"]["api"]["readout"]["moral_dilemmas"]["imputed_uniform"] == 2


def test_corrupt_cache_file_names_the_file_and_how_to_clear_it(task_manager, stub, tmp_path):
    evaluate(task_manager, stub, tmp_path, limit=2)
    cache = tmp_path / "cache" / "responses.sqlite"
    data = bytearray(cache.read_bytes())
    data[:16] = b"\x00garbage-header"  # a real corruption of SQLite's file header
    cache.write_bytes(bytes(data))
    with pytest.raises(APIModelError) as err:
        evaluate(task_manager, stub, tmp_path, limit=2)
    assert str(cache) in str(err.value) and "delete that file" in str(err.value) and "cache_dir=" in str(err.value)
    assert cache.read_bytes() == bytes(data)  # left for the user to inspect, not silently replaced


def test_same_alias_serving_another_model_does_not_reuse_its_answers(task_manager, stub, tmp_path):
    stub.set([(200, logprobs_body({"A": 0.9, "B": 0.1}, model="acme-v1"))])
    first = evaluate(task_manager, stub, tmp_path, limit=2)
    stub.set([(200, logprobs_body({"A": 0.2, "B": 0.8}, model="acme-v2"))])
    second = evaluate(task_manager, stub, tmp_path, limit=2)
    assert q_of(first) == [pytest.approx([0.9, 0.1])] * 2 and q_of(second) == [pytest.approx([0.2, 0.8])] * 2
    assert first["config"]["api"]["served_models"] == ["acme-v1"]
    assert second["config"]["api"]["served_models"] == ["acme-v2"]
    assert second["config"]["api"]["cache_identity"] == "served:acme-v2"


def test_revision_model_arg_keys_the_cache_and_is_recorded(task_manager, stub, tmp_path):
    evaluate(task_manager, stub, tmp_path, limit=2, revision="r1")
    assert len(stub.requests) == 2  # no identity probe: the user said which model it is
    again = evaluate(task_manager, stub, tmp_path, limit=2, revision="r1")
    assert len(stub.requests) == 2 and again["config"]["api"]["revision"] == "r1"
    other = evaluate(task_manager, stub, tmp_path, limit=2, revision="r2")
    assert len(stub.requests) == 4 and other["config"]["api"]["cache_identity"] == "revision:r2"


def test_error_body_echoing_the_key_never_leaks_a_prefix_of_it(task_manager, stub, tmp_path):
    # The key starts at character 290 of the body: cutting at 300 before redacting leaked "sk-test-DO".
    body = {"error": {"message": "x" * (290 - len('{"error": {"message": "')) + SECRET}}
    assert json.dumps(body).index(SECRET) == 290
    stub.set([(400, body)])
    with pytest.raises(APIModelError) as err:
        evaluate(task_manager, stub, tmp_path)
    message = str(err.value)
    assert "HTTP 400" in message and "***" in message
    assert not any(SECRET[:k] in message for k in range(4, len(SECRET) + 1))


def test_counters_updated_from_worker_threads_are_exact(task_manager, stub, tmp_path):
    stub.set([(200, replies(["A", "B", "B."]))])
    out = evaluate(task_manager, stub, tmp_path, model="openai-chat-sampling", limit=12, num_samples=5,
                   num_concurrent=8)
    api = out["config"]["api"]
    assert api["live_requests"] == 60 and api["cached_responses"] == 0
    assert api["readout"]["moral_dilemmas"]["replies"] == 60 and len(stub.requests) == 60
