"""API model types against a REAL OpenAI-compatible server: llama.cpp serving the tiny model's GGUF.

The GGUF (tests/fixtures/tiny-llama.gguf) is the same network as the HF fixture
model, so the chat-logprobs readout must reproduce `lm_eval --model hf
--apply_chat_template` on the same documents, and greedy generation through the
API must write what transformers writes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from lm_eval.api.instance import Instance

from llama_server import MODEL_ALIAS, llama_server  # noqa: F401  (fixture)
from moral_tasks.data import SAMPLE_DIR
from moral_tasks.models.openai_chat import APIModelError, OpenAIChatLogprobs, OpenAIChatSampling

pytestmark = pytest.mark.slow
# Tolerance on option probabilities / xentropy. llama.cpp (f32 GGUF) and transformers (float32)
# agree to ~5e-5 nats per log-probability on this model (tests/test_llama_server_fixture.py);
# 1e-3 leaves room for other CPUs' kernels while a BOS or template mismatch moves them by >= 7e-3.
TOL = 1e-3


def q_by_id(samples: list[dict]) -> dict:
    return {s["doc"]["id"]: (s.get("record") or s["xentropy"])["q"] for s in samples}


@pytest.fixture(scope="module")
def task_manager():
    from lm_eval.tasks import TaskManager

    from moral_tasks.lm_eval_plugin import TASKS_DIR

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False,
                       metadata={"data_dir": str(SAMPLE_DIR), "bootstrap_resamples": 0})


def test_chat_logprobs_match_the_hf_backend(llama_server, tiny_model, task_manager, tmp_path):  # noqa: F811
    import lm_eval

    common = dict(tasks=["moral_dilemmas"], task_manager=task_manager, limit=8, bootstrap_iters=0, log_samples=True,
                  apply_chat_template=True, system_instruction="Answer as the crowd would.")
    # The random tiny model ranks A and B far outside the top 20, so ask for the whole vocabulary
    # (llama.cpp allows it; OpenAI caps top_logprobs at 20 and the readout then imputes). The HF
    # backend scores the exact letter token only, so whitespace variants (" A") are not merged here.
    api = lm_eval.simple_evaluate(model="openai-chat-logprobs", model_args={
        "model": MODEL_ALIAS, "base_url": llama_server, "top_logprobs": 2048, "merge_whitespace": False,
        "cache_dir": str(tmp_path / "cache")}, **common)
    hf = lm_eval.simple_evaluate(model="hf", model_args={"pretrained": str(tiny_model), "dtype": "float32"},
                                 device="cpu", **common)
    q_api, q_hf = q_by_id(api["samples"]["moral_dilemmas"]), q_by_id(hf["samples"]["moral_dilemmas"])
    assert set(q_api) == set(q_hf) and len(q_api) == 8
    diffs = [np.abs(np.array(q_api[k]) - np.array(q_hf[k])).max() for k in q_api]
    assert max(diffs) < TOL, diffs
    a, b = api["results"]["moral_dilemmas"], hf["results"]["moral_dilemmas"]
    assert a["xentropy,none"] == pytest.approx(b["xentropy,none"], abs=TOL)
    assert api["config"]["api"]["served_models"] == [MODEL_ALIAS]
    assert api["config"]["api"]["readout"]["moral_dilemmas"] == {"documents": 8}  # all read, nothing imputed


def test_greedy_generation_through_the_client_is_the_servers_greedy_text(llama_server, tiny_model, tmp_path):  # noqa: F811
    import urllib.request

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from moral_tasks.prompts import dilemma_prompt

    rows = [json.loads(line) for line in
            (SAMPLE_DIR / "dilemmas" / "test.scruples-dilemmas.jsonl").read_text().splitlines()[:3]]
    prompts = [dilemma_prompt(row) for row in rows]
    gen = {"until": ["Monday"], "max_gen_toks": 12, "do_sample": False}
    reqs = [Instance("generate_until", {"id": r["id"]}, (p, gen), 0, ("moral_dilemmas_verbalized", i, 1))
            for i, (r, p) in enumerate(zip(rows, prompts))]
    lm = OpenAIChatLogprobs(model=MODEL_ALIAS, base_url=llama_server, cache_dir=str(tmp_path / "cache"))
    texts = lm.generate_until(reqs)

    # Independently: the same chat asked with plain HTTP, the stop sequence applied by hand.
    for prompt, text in zip(prompts, texts):
        body = {"model": MODEL_ALIAS, "messages": [{"role": "user", "content": prompt}], "max_tokens": 12,
                "temperature": 0}
        request = urllib.request.Request(llama_server + "/chat/completions", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as resp:
            direct = json.load(resp)["choices"][0]["message"]["content"]
        assert text == direct.split("Monday")[0]
    # And the first token is transformers' greedy choice on the same weights (later tokens differ:
    # llama.cpp applies a repeat penalty of 1.1 that the OpenAI API has no field to switch off).
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    for prompt, text in zip(prompts, texts):
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      return_dict=True, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            first = int(model(ids).logits[0, -1].argmax())
        assert text.startswith(tok.decode([first]))
    # Cached: a second model instance asks only its identity probe.
    again = OpenAIChatLogprobs(model=MODEL_ALIAS, base_url=llama_server, cache_dir=str(tmp_path / "cache"))
    assert again.generate_until(reqs) == texts
    assert again.get_model_info()["api"]["live_requests"] == 1


def test_sampled_generation_repeats_are_distinct_cached_samples(llama_server, tmp_path):  # noqa: F811
    kwargs = {"until": ["\n"], "max_gen_toks": 8, "do_sample": True, "temperature": 1.0}
    reqs = [Instance("generate_until", {"id": "d"}, ("Say something.", kwargs), 0, ("moral_dilemmas_sampling", 0, 4))
            for _ in range(4)]
    lm = OpenAIChatSampling(model=MODEL_ALIAS, base_url=llama_server, cache_dir=str(tmp_path / "cache"))
    texts = lm.generate_until(reqs)
    assert len(set(texts)) > 1  # four seeds, not one cached reply four times
    again = OpenAIChatSampling(model=MODEL_ALIAS, base_url=llama_server, cache_dir=str(tmp_path / "cache"))
    assert again.generate_until(reqs) == texts and again.get_model_info()["api"]["live_requests"] == 1


def test_sampling_type_on_a_model_that_writes_no_letter_fails_on_its_parse_rate(llama_server, tmp_path):  # noqa: F811
    import lm_eval
    from lm_eval.tasks import TaskManager

    from moral_tasks.lm_eval_plugin import TASKS_DIR

    tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=False,
                     metadata={"data_dir": str(SAMPLE_DIR), "bootstrap_resamples": 0})
    args = {"model": MODEL_ALIAS, "base_url": llama_server, "num_samples": 3, "cache_dir": str(tmp_path / "cache")}

    def evaluate(**extra):
        return lm_eval.simple_evaluate(model="openai-chat-sampling", model_args={**args, **extra},
                                       tasks=["moral_dilemmas"], task_manager=tm, limit=2, bootstrap_iters=0)

    # The random tiny model rarely writes an answer letter: the run stops instead of scoring noise.
    with pytest.raises(APIModelError, match=r"moral_dilemmas: only \d of 6 sampled replies"):
        evaluate()
    # Accepting it on purpose: every document imputed uniform, and counted.
    out = evaluate(min_parse_rate=0, no_readout="uniform")
    account = out["config"]["api"]["readout"]["moral_dilemmas"]
    assert account["replies"] == 6 and account["documents"] == 2 and out["config"]["api"]["live_requests"] == 1
