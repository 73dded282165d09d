"""API model types against a recorded OpenAI response, served from 127.0.0.1.

The remote API cannot be reached here, so this stub replays OpenAI's exact
response shape (tests/fixtures/openai_chat_logprobs_response.json) and plays
back failures (429, 500, 401). The same classes are tested against a real
OpenAI-compatible server (llama.cpp) in test_api_llama_cpp.py.
"""

from __future__ import annotations

import http.server
import json
import math
import threading
from pathlib import Path

import pytest

from conftest import BIN, offline_env, read_results, run
from moral_tasks.data import SAMPLE_DIR
from moral_tasks.models.openai_chat import (APIModelError, OpenAIChatLogprobs, OpenAIChatSampling, merge_top_logprobs,
                                            readout)

RECORDED = json.loads((Path(__file__).parent / "fixtures" / "openai_chat_logprobs_response.json").read_text())
SECRET = "sk-test-DO-NOT-LEAK-4242"


class Stub:
    """Replays ``script`` (a list of (status, body) pairs, the last one repeated) and records requests."""

    def __init__(self, script):
        self.script, self.requests = list(script), []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                status, payload = outer.script.pop(0) if len(outer.script) > 1 else outer.script[0]
                if callable(payload):
                    payload = payload(body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


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


def test_merge_and_readout_hand_worked():
    top = RECORDED["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    merged = merge_top_logprobs(top)
    assert merged["A"] == pytest.approx(math.log(0.7 + 0.01))  # "A" (0.70) and " A" (0.01) are one answer
    lp, missing = readout(top, ["A", "B"])
    assert lp == {"A": pytest.approx(math.log(0.71)), "B": pytest.approx(math.log(0.3))} and missing == 0.0
    # C and D are not in the top 5: leftover mass 1 - (0.7+0.3+0.01+0.005+0.001) < 0 -> floored at 0
    lp, missing = readout(top, ["A", "B", "C"])
    assert lp["C"] == -100.0 and missing == 0.0
    top2 = [{"token": "A", "logprob": math.log(0.5)}, {"token": "B", "logprob": math.log(0.3)}]
    lp, missing = readout(top2, ["A", "B", "C", "D"])  # leftover 0.2 over 2 missing, capped by min top prob 0.3
    assert lp["C"] == pytest.approx(math.log(0.1)) and missing == pytest.approx(0.2)


def test_recorded_openai_shape_scores_and_is_cached(stub, tmp_path):
    lm = make(OpenAIChatLogprobs, stub, tmp_path)
    scores = lm.score_options("Which is less ethical?\nA. x\nB. y\nAnswer:", ["A", "B"])
    assert scores == {"A": pytest.approx(math.log(0.71)), "B": pytest.approx(math.log(0.3))}
    sent = stub.requests[0]
    assert sent["path"] == "/v1/chat/completions" and sent["auth"] == f"Bearer {SECRET}"
    assert sent["body"]["max_tokens"] == 1 and sent["body"]["logprobs"] is True and sent["body"]["top_logprobs"] == 20
    assert sent["body"]["messages"] == [{"role": "user", "content": "Which is less ethical?\nA. x\nB. y\nAnswer:"}]
    # A new instance with the same cache answers without a request (an interrupted run resumes for free).
    again = make(OpenAIChatLogprobs, stub, tmp_path).score_options("Which is less ethical?\nA. x\nB. y\nAnswer:", ["A", "B"])
    assert again == scores and len(stub.requests) == 1
    assert SECRET.encode() not in (tmp_path / "cache" / "responses.sqlite").read_bytes()


@pytest.mark.parametrize("stub", [[(429, {"error": "rate"}), (500, {"error": "oops"}), (200, RECORDED)]], indirect=True)
def test_retries_on_429_and_5xx(stub, tmp_path):
    assert make(OpenAIChatLogprobs, stub, tmp_path).score_options("q", ["A", "B"])["A"] == pytest.approx(math.log(0.71))
    assert len(stub.requests) == 3


@pytest.mark.parametrize("stub", [[(401, {"error": {"message": f"Incorrect API key provided: {SECRET}"}})]], indirect=True)
def test_401_stops_with_a_clear_error_that_never_shows_the_key(stub, tmp_path):
    with pytest.raises(APIModelError) as err:
        make(OpenAIChatLogprobs, stub, tmp_path).score_options("q", ["A", "B"])
    assert "HTTP 401" in str(err.value) and "check the API key" in str(err.value)
    assert SECRET not in str(err.value) and len(stub.requests) == 1


@pytest.mark.parametrize("stub", [[(503, {"error": "down"})]], indirect=True)
def test_gives_up_after_retries(stub, tmp_path):
    with pytest.raises(APIModelError, match="giving up after 3 attempts"):
        make(OpenAIChatLogprobs, stub, tmp_path, max_retries=2).score_options("q", ["A", "B"])


def test_key_in_model_args_is_refused(stub, tmp_path):
    with pytest.raises(ValueError, match="do not pass api_key"):
        make(OpenAIChatLogprobs, stub, tmp_path, api_key=SECRET)


def sampled(body):
    # Deterministic "sampling": the seed picks the answer text.
    texts = ["A", "B.", "Answer: A", "I cannot answer that"]
    return {**RECORDED, "choices": [{"index": 0, "message": {"role": "assistant", "content": texts[body["seed"] % 4]},
                                     "logprobs": None, "finish_reason": "stop"}]}


@pytest.mark.parametrize("stub", [[(200, sampled)]], indirect=True)
def test_sampling_counts_parsed_letters_with_add_one_smoothing(stub, tmp_path, caplog):
    lm = make(OpenAIChatSampling, stub, tmp_path, num_samples=8)
    with caplog.at_level("WARNING"):
        scores = lm.score_options("q", ["A", "B"])
        lm.report()
    # 8 samples: A, B, A, unparseable (x2): A=4, B=2, unparseable=2 -> (4+1)/8, (2+1)/8
    assert scores == {"A": pytest.approx(math.log(5 / 8)), "B": pytest.approx(math.log(3 / 8))}
    assert lm.unparseable == 2 and "2 of 8 sampled answers had no option letter" in caplog.text
    assert {r["body"]["temperature"] for r in stub.requests} == {1.0}
    assert OpenAIChatSampling.parse("(B) because", ["A", "B"]) == "B"
    assert OpenAIChatSampling.parse("Both are bad", ["A", "B"]) is None


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
    row = results["results"]["moral_dilemmas"]
    assert row["xentropy,none"] > 0 and row["acc,none"] >= 0
    assert samples["moral_dilemmas"][0]["xentropy"]["q"] == pytest.approx([0.71 / 1.01, 0.30 / 1.01])
    assert len(stub.requests) == 4  # one call per question
    for path in [*tmp_path.rglob("*.json"), *tmp_path.rglob("*.jsonl"), cache / "responses.sqlite"]:
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in proc.stdout + proc.stderr
