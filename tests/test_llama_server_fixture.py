"""The llama.cpp server fixture serves the same network as the HF tiny model (tests/fixtures).

Chat template and BOS (the trap this file guards against): the template starts
with ``{{ bos_token }}`` and the tokenizer's post-processor also prepends BOS.
- HF: ``apply_chat_template(..., tokenize=True)`` tokenizes the rendered text
  with ``add_special_tokens=False``, so there is one BOS (the template's).  But
  ``tokenizer(rendered_text)`` would give two (``[0, 0, ...]``).
- llama-cpp-python: the server renders the GGUF's template with its Jinja2
  formatter (bos_token/eos_token = the vocab's texts, trim_blocks and
  lstrip_blocks as in transformers), which reports ``added_special=True``; the
  prompt is then tokenized with ``add_bos=False, special=True``, so the BOS
  text becomes the single BOS token.  (Its ``/extras/tokenize`` endpoint, by
  contrast, adds BOS itself: ``[0, 0, ...]`` for text that starts with the BOS text.)
So both sides see the same string and the same ids, which the tests check.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from llama_server import GGUF_PATH, HF_MODEL_DIR, MODEL_ALIAS, llama_server  # noqa: F401  (fixture)
from moral_tasks.data import SAMPLE_DIR
from moral_tasks.prompts import dilemma_prompt

# Both sides compute in float32 from identical weights; what differs is kernel arithmetic
# (ggml vs torch matmul, RMSNorm, RoPE, softmax summation order).  Measured: about 3e-5
# nats over the whole vocabulary at the answer position.  1e-3 leaves a 30x margin for
# other CPUs/SIMD paths, and is still well below what a real mismatch does to this
# random model: an extra BOS moves log P(A), log P(B) by 0.007-0.011 nats (0.05 over the
# vocabulary), a missing BOS by 0.009-0.017 (0.07).
TOLERANCE = 1e-3


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.load(resp)


def _chat(base_url: str, content: str, top_logprobs: int) -> dict:
    return _post(base_url + "/chat/completions", {
        "model": MODEL_ALIAS,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 1,
        "logprobs": True,
        "top_logprobs": top_logprobs,
        "temperature": 0,
    })


@pytest.fixture(scope="module")
def messages() -> list[dict]:
    path = SAMPLE_DIR / "dilemmas" / "test.scruples-dilemmas.jsonl"
    row = json.loads(path.read_text().splitlines()[0])
    return [{"role": "user", "content": dilemma_prompt(row)}]


@pytest.fixture(scope="module")
def hf(messages):
    """HF tokenizer, the chat-rendered prompt (text and ids) and float32 log-probs at its last position."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(HF_MODEL_DIR)
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = list(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                       return_dict=True)["input_ids"])
    model = AutoModelForCausalLM.from_pretrained(HF_MODEL_DIR, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1]
    logprobs = torch.log_softmax(logits.double(), dim=-1).tolist()
    return {"tok": tok, "text": text, "ids": ids, "logprobs": logprobs}


def test_chat_completions_return_top_logprobs(llama_server, messages):
    resp = _chat(llama_server, messages[0]["content"], top_logprobs=20)
    assert resp["model"] == MODEL_ALIAS
    (choice,) = resp["choices"]
    (first,) = choice["logprobs"]["content"]
    top = first["top_logprobs"]
    # Entries are keyed by decoded text, so duplicates merge: at most 20, maybe fewer.
    assert 1 <= len(top) <= 20
    values = [entry["logprob"] for entry in top]
    assert all(isinstance(entry["token"], str) for entry in top)
    assert all(v <= 0 for v in values) and values == sorted(values, reverse=True)
    # temperature 0: the generated token is the most likely one.
    assert first["token"] == top[0]["token"] == choice["message"]["content"]


def test_server_builds_the_same_prompt_as_hf(llama_server, messages, hf):
    llama_cpp = pytest.importorskip("llama_cpp")
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    tok, ids = hf["tok"], hf["ids"]
    # One BOS, from the template; tokenizing the rendered text again would add a second one.
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id
    assert tok(hf["text"])["input_ids"][:2] == [tok.bos_token_id] * 2

    # What the server does (llama_cpp.Llama.__init__ + chat_formatter_to_chat_completion_handler).
    llm = llama_cpp.Llama(model_path=str(GGUF_PATH), vocab_only=True, verbose=False)
    assert llm.metadata["tokenizer.ggml.add_bos_token"] == "true"
    assert llm.metadata["tokenizer.chat_template"] == tok.chat_template
    formatter = Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"],
        bos_token=llm.detokenize([llm.token_bos()], special=True).decode(),
        eos_token=llm.detokenize([llm.token_eos()], special=True).decode(),
    )
    result = formatter(messages=messages)
    assert result.prompt == hf["text"]
    assert llm.tokenize(result.prompt.encode(), add_bos=not result.added_special, special=True) == ids

    # And the live server agrees on the length of the prompt it evaluated.
    resp = _chat(llama_server, messages[0]["content"], top_logprobs=1)
    assert resp["usage"]["prompt_tokens"] == len(ids)


def test_chat_logprobs_match_hf(llama_server, messages, hf):
    tok, hf_logprobs = hf["tok"], hf["logprobs"]
    # A random model puts "A" and "B" far outside the top 20 (here 815th and 1959th of 2048), so
    # ask for the whole vocabulary: llama-cpp-python does not cap top_logprobs at 20 as OpenAI does.
    resp = _chat(llama_server, messages[0]["content"], top_logprobs=len(tok))
    server = {e["token"]: e["logprob"] for e in resp["choices"][0]["logprobs"]["content"][0]["top_logprobs"]}

    diffs = {}
    for letter in ("A", "B"):
        (token_id,) = tok(letter, add_special_tokens=False)["input_ids"]
        assert letter in server, f"{letter!r} missing from the server's top_logprobs"
        diffs[letter] = abs(server[letter] - hf_logprobs[token_id])
    # Every other token whose decoded text is unambiguous (merged duplicates and "" are skipped).
    by_text: dict[str, list[int]] = {}
    for token_id in range(len(tok)):
        by_text.setdefault(tok.decode([token_id]), []).append(token_id)
    vocab_diffs = [abs(server[text] - hf_logprobs[i]) for text, (i, *rest) in by_text.items()
                   if not rest and text and text in server]
    assert len(vocab_diffs) > 0.9 * len(tok)

    print(f"\nHF vs llama.cpp server, chat answer position: |d log P(A)| = {diffs['A']:.2e}, "
          f"|d log P(B)| = {diffs['B']:.2e}, max over {len(vocab_diffs)} tokens = {max(vocab_diffs):.2e} nats")
    assert max(diffs.values()) < TOLERANCE, diffs
    assert max(vocab_diffs) < TOLERANCE
