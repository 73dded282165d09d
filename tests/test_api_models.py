"""API model types against a real HTTP server on 127.0.0.1 replaying OpenAI's response shape.

The same classes are tested against a real OpenAI-compatible server (llama.cpp) in
test_api_llama_cpp.py; the fault catalogue is tests/faults/test_api_faults.py.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lm_eval.api.instance import Instance

from api_stub import RECORDED, SECRET, Stub, message_body
from conftest import BIN, offline_env, read_results, run
from moral_tasks.answers import NoReadout, is_no_readout, modal_shares, parse_answer, tally, vote_distribution
from moral_tasks.data import SAMPLE_DIR
from moral_tasks.models.openai_chat import (APIModelError, OpenAIChatLogprobs, OpenAIChatSampling, merge_top_logprobs,
                                            read_top_logprobs)


@pytest.fixture
def stub(request):
    server = Stub(request.param if hasattr(request, "param") else [(200, RECORDED)])
    yield server
    server.close()


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)


def make(cls, stub, tmp_path, **kw):
    return cls(model="gpt-4o", base_url=stub.url, cache_dir=str(tmp_path / "cache"), backoff=0.0, **kw)


def mc_requests(prompts: list[str], letters="AB", task="moral_dilemmas") -> list[Instance]:
    return [Instance("loglikelihood", {"id": f"d{i}"}, (p, letter), j, (task, i, 1))
            for i, p in enumerate(prompts) for j, letter in enumerate(letters)]


# -- the readout of a top-k list (hand-worked)

def test_merge_and_readout_hand_worked():
    top = RECORDED["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    assert merge_top_logprobs(top)["A"] == pytest.approx(math.log(0.7 + 0.01))  # "A" and " A" are one answer
    r = read_top_logprobs(top, ["A", "B"])
    assert r.loglik == {"A": pytest.approx(math.log(0.71)), "B": pytest.approx(math.log(0.3))} and r.missing == ()
    # The recorded top-5 sums to 1.016 (rounding): nothing is left for C, so C gets probability 0.
    r = read_top_logprobs(top, ["A", "B", "C"])
    assert r.missing == ("C",) and r.loglik["C"] == -math.inf and r.imputed_mass == 0.0
    assert r.topk_mass == pytest.approx(1.016)
    # 0.5 + 0.3 leave 0.2 for two missing options: 0.1 each (below the smallest top-k probability, 0.3).
    top2 = [{"token": "A", "logprob": math.log(0.5)}, {"token": "B", "logprob": math.log(0.3)}]
    r = read_top_logprobs(top2, ["A", "B", "C", "D"])
    assert r.loglik["C"] == pytest.approx(math.log(0.1)) and r.imputed_mass == pytest.approx(0.2)
    # 0.5 + 0.05 leave 0.45, but a missing option is below the smallest top-k probability: 0.05.
    top3 = [{"token": "A", "logprob": math.log(0.5)}, {"token": "x", "logprob": math.log(0.05)}]
    r = read_top_logprobs(top3, ["A", "B"])
    assert r.loglik["B"] == pytest.approx(math.log(0.05)) and r.imputed_mass == pytest.approx(0.05)
    assert not read_top_logprobs(top3, ["C", "D"]).has_readout


@given(st.lists(st.floats(1e-6, 1.0), min_size=1, max_size=8), st.integers(1, 4))
def test_imputed_mass_never_exceeds_what_is_left(probs, n_missing):
    top = [{"token": f"t{i}", "logprob": math.log(p)} for i, p in enumerate(probs)]
    options = ["t0"] + [f"missing{i}" for i in range(n_missing)]
    r = read_top_logprobs(top, options)
    assert r.imputed_mass <= max(0.0, 1.0 - sum(probs)) + 1e-12
    for o in r.missing:
        assert r.loglik[o] == -math.inf or math.exp(r.loglik[o]) <= min(probs) * (1 + 1e-12)


# -- the strict answer parser and vote aggregation (moral_tasks/answers.py)

@pytest.mark.parametrize("reply, answer", [
    ("A", "A"), ("B.", "B"), ("(A)", "A"), ("[B]", "B"), ("Answer: B", "B"), ("The answer is (A)", "A"),
    ("**B**", "B"), ("A. The author", "A"), ("  B\n\nBecause it hurts someone.", "B"), ("Option A", "A"),
    ("A: B.", None), ("A or B", None), ("I think A", None), ("a", None), ("Both are bad", None),
    ("B. A person should not lie", None), ("answer: b", None), ("AB", None), ("A's", None), ("", None), (None, None),
    ("C", None),
])
def test_parse_answer_is_strict(reply, answer):
    assert parse_answer(reply, ["A", "B"]) == answer


@given(st.text(alphabet="AB ab.:()*\nThe answer is", max_size=24))
def test_parse_answer_favours_no_position_and_never_answers_with_two_letters(reply):
    answer = parse_answer(reply, ["A", "B"])
    assert answer == parse_answer(reply, ["B", "A"])  # the order options are listed in plays no part
    swapped = parse_answer(reply.translate(str.maketrans("AB", "BA")), ["A", "B"])
    assert swapped == {"A": "B", "B": "A", None: None}[answer]  # nor does which letter it is


def test_tally_and_smoothing_hand_worked():
    t = tally(["A", "B.", "Answer: A", "A: B.", "I cannot answer that", "(A)"], ["A", "B"])
    assert t.counts == [3, 1] and t.unparsed == 2 and t.parse_rate == pytest.approx(4 / 6)
    assert vote_distribution([3, 1]) == pytest.approx([4 / 6, 2 / 6])
    assert vote_distribution([0, 0, 0]) == pytest.approx([1 / 3] * 3)


@given(st.lists(st.integers(0, 5), min_size=2, max_size=5), st.randoms(use_true_random=False))
def test_modal_shares_split_ties_and_favour_no_position(votes, rnd):
    shares = modal_shares(votes)
    assert sum(shares) == pytest.approx(1.0)
    winners = [i for i, v in enumerate(votes) if v == max(votes)]
    assert shares == pytest.approx([1 / len(winners) if i in winners else 0.0 for i in range(len(votes))])
    order = list(range(len(votes)))
    rnd.shuffle(order)
    assert modal_shares([votes[i] for i in order]) == pytest.approx([shares[i] for i in order])


def test_no_readout_marker_refuses_to_be_a_number():
    marker = NoReadout("no option letter among the top-20 tokens")
    assert is_no_readout((marker, False)) and not is_no_readout((-1.0, True))
    with pytest.raises(TypeError):
        float(marker)


# -- the client against a real HTTP server

def test_recorded_openai_shape_scores_and_is_cached(stub, tmp_path):
    lm = make(OpenAIChatLogprobs, stub, tmp_path)
    prompt = "Which is less ethical?\nA. x\nB. y\nAnswer:"
    out = lm.loglikelihood(mc_requests([prompt]))
    assert [ll for ll, _ in out] == [pytest.approx(math.log(0.71)), pytest.approx(math.log(0.3))]
    assert [greedy for _, greedy in out] == [True, False]
    sent = stub.requests[0]
    assert sent["path"] == "/v1/chat/completions" and sent["auth"] == f"Bearer {SECRET}"
    assert sent["body"]["max_tokens"] == 1 and sent["body"]["logprobs"] is True and sent["body"]["top_logprobs"] == 20
    assert sent["body"]["messages"] == [{"role": "user", "content": prompt}]
    info = lm.get_model_info()["api"]
    assert info["served_models"] == ["gpt-4o-2024-08-06"] and info["cache_identity"] == "served:gpt-4o-2024-08-06"
    # A new instance with the same cache asks once (to learn which model is served), then uses the cache.
    again = make(OpenAIChatLogprobs, stub, tmp_path)
    assert again.loglikelihood(mc_requests([prompt])) == out and len(stub.requests) == 2
    assert again.loglikelihood(mc_requests([prompt])) == out and len(stub.requests) == 2
    assert again.get_model_info()["api"]["cached_responses"] == 1
    assert SECRET.encode() not in (tmp_path / "cache" / "responses.sqlite").read_bytes()


@pytest.mark.parametrize("stub", [[(429, {"error": "rate"}), (500, {"error": "oops"}), (200, RECORDED)]], indirect=True)
def test_sdk_retries_429_and_5xx(stub, tmp_path):
    assert make(OpenAIChatLogprobs, stub, tmp_path).loglikelihood(mc_requests(["q"]))[0][0] == pytest.approx(
        math.log(0.71))
    assert len(stub.requests) == 3


@pytest.mark.parametrize("stub", [[(401, {"error": {"message": f"Incorrect API key provided: {SECRET}"}})]],
                         indirect=True)
def test_401_stops_with_a_clear_error_that_never_shows_the_key(stub, tmp_path):
    with pytest.raises(APIModelError) as err:
        make(OpenAIChatLogprobs, stub, tmp_path).loglikelihood(mc_requests(["q"]))
    assert "HTTP 401" in str(err.value) and "check the API key" in str(err.value)
    assert SECRET not in str(err.value) and len(stub.requests) == 1


@pytest.mark.parametrize("stub", [[(503, {"error": "down"})]], indirect=True)
def test_gives_up_after_retries(stub, tmp_path):
    with pytest.raises(APIModelError, match="HTTP 503"):
        make(OpenAIChatLogprobs, stub, tmp_path, max_retries=2).loglikelihood(mc_requests(["q"]))
    assert len(stub.requests) == 3


def test_no_server_gives_up_after_the_sdks_retries(tmp_path):
    import socket

    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    lm = OpenAIChatLogprobs(model="gpt-4o", base_url=url, cache_dir=str(tmp_path / "cache"), max_retries=1)
    with pytest.raises(APIModelError, match=r"/chat/completions: no answer after 2 attempts \(APIConnectionError"):
        lm.loglikelihood(mc_requests(["q"]))


def test_key_in_model_args_is_refused(stub, tmp_path):
    with pytest.raises(APIModelError, match="do not pass api_key"):
        make(OpenAIChatLogprobs, stub, tmp_path, api_key=SECRET)


def sampled(body):
    # Deterministic "sampling": the seed picks the reply.
    return message_body(["A", "B.", "Answer: A", "I cannot answer that"][body["seed"] % 4])


@pytest.mark.parametrize("stub", [[(200, sampled)]], indirect=True)
def test_sampling_counts_strictly_parsed_letters_with_add_one_smoothing(stub, tmp_path, caplog):
    lm = make(OpenAIChatSampling, stub, tmp_path, num_samples=8)
    with caplog.at_level("WARNING"):
        out = lm.loglikelihood(mc_requests(["q"]))
    # 8 samples: A, B, A, unparseable (x2): A=4, B=2 -> (4+1)/8, (2+1)/8
    assert [ll for ll, _ in out] == [pytest.approx(math.log(5 / 8)), pytest.approx(math.log(3 / 8))]
    account = lm.get_model_info()["api"]["readout"]["moral_dilemmas"]
    assert account["replies"] == 8 and account["parsed"] == 6 and account["parse_rate"] == 0.75
    assert "6 of 8 sampled replies (75.0%) state an option letter" in caplog.text
    assert {r["body"]["temperature"] for r in stub.requests} == {1.0}
    assert sorted(r["body"]["seed"] for r in stub.requests) == list(range(8))


def echo_generation(body):
    return message_body(f"seed={body.get('seed')} t={body['temperature']} | The answer is A.\n\nQ: next")


@pytest.mark.parametrize("stub", [[(200, echo_generation)]], indirect=True)
@pytest.mark.parametrize("cls", [OpenAIChatLogprobs, OpenAIChatSampling])
def test_generate_until_cuts_at_stop_gives_repeats_their_own_seed_and_caches(stub, tmp_path, cls):
    greedy = {"until": ["\n\n"], "max_gen_toks": 32, "do_sample": False}
    sampled_ = {"until": ["Q:", "\n\n"], "temperature": 1.0, "do_sample": True}
    reqs = [Instance("generate_until", {"id": "d0"}, ("prompt", kwargs), 0, ("moral_dilemmas_verbalized", 0, 3))
            for kwargs in (greedy, sampled_, sampled_, sampled_)]
    lm = make(cls, stub, tmp_path)
    texts = lm.generate_until(reqs)
    assert texts == ["seed=None t=0.0 | The answer is A.", "seed=0 t=1.0 | The answer is A.",
                     "seed=1 t=1.0 | The answer is A.", "seed=2 t=1.0 | The answer is A."]
    assert stub.requests[0]["body"]["max_tokens"] == 32 and stub.requests[0]["body"]["stop"] == ["\n\n"]
    assert make(cls, stub, tmp_path).generate_until(reqs) == texts
    assert len(stub.requests) == 5  # the rerun's one identity probe; everything else from the cache


@pytest.mark.slow
def test_lm_eval_cli_with_the_api_model_type(stub, tmp_path):
    """The real lm_eval executable finds the model type (startup hook) and scores a task through it."""
    env = offline_env(OPENAI_API_KEY=SECRET)
    cache = tmp_path / "cache"
    cmd = [BIN / "lm_eval", "--model", "openai-chat-logprobs",
           "--model_args", f"model=gpt-4o,base_url={stub.url},cache_dir={cache},num_concurrent=2",
           "--tasks", "moral_dilemmas", "--limit", "4", "--metadata", json.dumps({"data_dir": str(SAMPLE_DIR)}),
           "--log_samples", "--output_path", tmp_path / "o"]
    proc = run(cmd, cwd=tmp_path, env=env)
    results, samples = read_results(tmp_path / "o")
    first = samples["moral_dilemmas"][0]
    assert (first.get("record") or first["xentropy"])["q"] == pytest.approx([0.71 / 1.01, 0.30 / 1.01])
    assert results["config"]["api"]["served_models"] == ["gpt-4o-2024-08-06"]
    assert results["config"]["api"]["readout"]["moral_dilemmas"]["documents"] == 4
    assert len(stub.requests) == 4  # one call per question
    for path in [*tmp_path.rglob("*.json"), *tmp_path.rglob("*.jsonl"), cache / "responses.sqlite"]:
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in proc.stdout + proc.stderr
