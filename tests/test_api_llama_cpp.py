"""API model types against a REAL OpenAI-compatible server: llama.cpp serving the tiny model's GGUF.

The GGUF (tests/fixtures/tiny-llama.gguf) is the same network as the HF fixture
model, so the chat-logprobs readout must reproduce `lm_eval --model hf
--apply_chat_template` on the same documents.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import BIN, offline_env, read_results, run
from llama_server import llama_server  # noqa: F401  (fixture)
from moral_tasks.data import SAMPLE_DIR

pytestmark = pytest.mark.slow
# Tolerance on option probabilities / xentropy. llama.cpp (f32 GGUF) and transformers (float32)
# agree to ~5e-5 nats per log-probability on this model (tests/test_llama_server_fixture.py);
# 1e-3 leaves room for other CPUs' kernels while a BOS or template mismatch moves them by >= 7e-3.
TOL = 1e-3


def test_chat_logprobs_match_the_hf_backend(llama_server, tiny_model, tmp_path):  # noqa: F811
    meta = ["--metadata", json.dumps({"data_dir": str(SAMPLE_DIR)}), "--limit", "8", "--log_samples",
            "--apply_chat_template", "--system_instruction", "Answer as the crowd would."]
    # The random tiny model ranks A and B far outside the top 20, so ask for the whole vocabulary
    # (llama.cpp allows it; OpenAI caps top_logprobs at 20 and the readout then imputes). The HF
    # backend scores the exact letter token only, so whitespace variants (" A") are not merged here.
    args = f"model=tiny,base_url={llama_server},top_logprobs=2048,merge_whitespace=false,cache_dir={tmp_path / 'cache'}"
    run([BIN / "lm_eval", "--model", "openai-chat-logprobs", "--tasks", "moral_dilemmas", "--output_path", tmp_path / "api",
         "--model_args", args, *meta],
        cwd=tmp_path, env=offline_env(OPENAI_API_KEY="unused-by-llama-cpp"))
    run([BIN / "lm_eval", "--model", "hf", "--model_args", f"pretrained={tiny_model},dtype=float32",
         "--tasks", "moral_dilemmas", "--output_path", tmp_path / "hf", "--device", "cpu", *meta], cwd=tmp_path)
    api_results, api = read_results(tmp_path / "api")
    hf_results, hf = read_results(tmp_path / "hf")
    q_api = {s["doc"]["id"]: s["xentropy"]["q"] for s in api["moral_dilemmas"]}
    q_hf = {s["doc"]["id"]: s["xentropy"]["q"] for s in hf["moral_dilemmas"]}
    assert set(q_api) == set(q_hf) and len(q_api) == 8
    diffs = [np.abs(np.array(q_api[k]) - np.array(q_hf[k])).max() for k in q_api]
    assert max(diffs) < TOL, diffs
    a, b = api_results["results"]["moral_dilemmas"], hf_results["results"]["moral_dilemmas"]
    assert a["xentropy,none"] == pytest.approx(b["xentropy,none"], abs=TOL)


def test_sampling_type_against_the_server(llama_server, tmp_path):  # noqa: F811
    cmd = [BIN / "lm_eval", "--model", "openai-chat-sampling", "--tasks", "moral_dilemmas", "--limit", "2",
           "--model_args", f"model=tiny,base_url={llama_server},num_samples=3,cache_dir={tmp_path / 'cache'}",
           "--metadata", json.dumps({"data_dir": str(SAMPLE_DIR)}), "--output_path", tmp_path / "o", "--log_samples"]
    proc = run(cmd, cwd=tmp_path)
    results, samples = read_results(tmp_path / "o")
    # A random model rarely writes a letter: add-one smoothing keeps every probability defined.
    for s in samples["moral_dilemmas"]:
        assert all(0 < x < 1 for x in s["xentropy"]["q"])
    assert "sampled answers had no option letter" in proc.stderr
