"""A real pretrained model end to end: SmolLM2-135M-Instruct (fetch-model), lm_eval, llama.cpp.

Run alone with ``pytest -m real_model``. The model and one lm_eval run are shared by the
whole group (tests/real_model/smollm2_fixtures.py).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from conftest import BIN, run
from moral_tasks.data import SAMPLE_DIR, load_split
from moral_tasks.prompts import TASKS as SPECS
from smollm2_fixtures import LIMIT, METADATA, TASKS, smollm2, smollm2_run  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.real_model, pytest.mark.slow]



def option_logliks(sample: dict, task: str) -> np.ndarray:
    """The options' log-likelihoods as lm-eval itself logged them (independent of our records).

    A plain task's first K requests are the options as lm-eval scores them; the harness may
    add requests for other surface variants after them (prompts.request_layout).
    """
    k = len(SPECS[task].labels)
    return np.array([r[0] if isinstance(r, (list, tuple)) else r for r in sample["filtered_resps"][:k]], dtype=float)


def softmax(loglik: np.ndarray) -> np.ndarray:
    q = np.exp(loglik - loglik.max())
    return q / q.sum()


def test_fetched_folder_says_what_it_is(smollm2):  # noqa: F811
    meta = smollm2.meta
    assert meta["stands_in_for"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "dequantized from Q4_1 GGUF" in meta["label"]
    digest = hashlib.sha256(smollm2.q4_gguf.read_bytes()).hexdigest()
    assert meta["gguf_sha256"] == digest


def test_second_fetch_reuses_the_cache(smollm2, tmp_path):  # noqa: F811
    weights = smollm2.folder / "model.safetensors"
    before = weights.stat().st_mtime_ns
    proc = run([BIN / "moral-ambiguity", "fetch-model", "smollm2"], cwd=tmp_path)
    assert proc.stdout.strip() == str(smollm2.folder)  # stdout: the folder only, for M=$(...)
    assert "already in" in proc.stderr and "downloading" not in proc.stderr
    assert weights.stat().st_mtime_ns == before


def test_lm_eval_cli_runs_and_results_carry_the_model_identity(smollm2, smollm2_run):  # noqa: F811
    identity = smollm2_run.results["config"]["model_identity"]
    assert identity["path"] == str(smollm2.folder.resolve())
    assert identity["label"] == smollm2.meta["label"]
    assert identity["stands_in_for"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert identity["quantization"] == "Q4_1 GGUF, dequantized to float32"
    assert identity["dtype"] == "float32"
    weights = smollm2.folder / "model.safetensors"
    assert identity["weights_sha256"] == {"model.safetensors": hashlib.sha256(weights.read_bytes()).hexdigest()}
    assert identity["gguf_sha256"] == smollm2.meta["gguf_sha256"]
    for task in TASKS:
        assert smollm2_run.results["results"][task]["xentropy,none"] > 0
    assert len(smollm2_run.samples["moral_dilemmas"]) == LIMIT


def test_hf_and_llama_cpp_agree_on_the_same_weights(smollm2, smollm2_run, tmp_path):  # noqa: F811
    """The chat-logprobs API readout from llama.cpp serving the F32 GGUF of the very weights in the HF folder.

    Measured on the 40-item sample (moral_dilemmas + moral_anecdotes, 20 documents, chat template):
    max |dq| 0.0006 with the F32 GGUF (float rounding over 30 layers: llama.cpp's kernels vs torch's);
    0.030 with the original Q4_1 GGUF (the quantization, which transformers removed when it
    dequantized). A BOS, chat-template or letter-token mismatch moves q by far more than 0.005,
    so the F32 comparison checks the readout path, which the Q4_1 one could not.
    """
    import lm_eval
    from llama_server import start_server

    tol = 5e-3
    base_url, stop = start_server(smollm2.f32_gguf, tmp_path / "server", timeout=120)
    try:
        # The HF backend scores the exact letter token, so whitespace variants are not merged here;
        # top 100 holds both letters for every sample document (the option mass is ~0.78).
        out = lm_eval.simple_evaluate(
            model="openai-chat-logprobs", tasks=["moral_dilemmas", "moral_anecdotes"], limit=LIMIT,
            model_args=f"model=tiny,base_url={base_url},top_logprobs=100,merge_whitespace=false,"
                       f"cache_dir={tmp_path / 'cache'}",
            apply_chat_template=True, log_samples=True, metadata=METADATA)
    finally:
        stop()
    worst = {}
    for task in ("moral_dilemmas", "moral_anecdotes"):
        api = {s["doc"]["id"]: softmax(option_logliks(s, task)) for s in out["samples"][task]}
        hf = {s["doc"]["id"]: softmax(option_logliks(s, task)) for s in smollm2_run.samples[task]}
        assert set(api) == set(hf) and len(api) == LIMIT
        worst[task] = max(float(np.abs(api[k] - hf[k]).max()) for k in api)
    assert max(worst.values()) < tol, worst


def test_option_mass_is_the_mean_total_probability_on_the_options(smollm2_run):  # noqa: F811
    for task in ("moral_dilemmas", "moral_anecdotes"):
        expected = np.mean([np.exp(option_logliks(s, task)).sum() for s in smollm2_run.samples[task]])
        assert smollm2_run.results["results"][task]["option_mass,none"] == pytest.approx(expected, abs=1e-6)
    assert 0 < smollm2_run.results["results"]["moral_dilemmas_debiased"]["option_mass,none"] <= 1


def test_uniform_and_train_prior_baselines(smollm2_run):  # noqa: F811
    for task in ("moral_dilemmas", "moral_anecdotes"):
        spec = SPECS[task]
        k = len(spec.labels)
        result = smollm2_run.results["results"][task]
        # -sum_k p_k log(1/K) = log K for every document.
        assert result["xentropy_uniform,none"] == pytest.approx(np.log(k), abs=1e-9)
        train = np.array(load_split(spec, "train", SAMPLE_DIR).counts, dtype=float)
        prior = (train / train.sum(1, keepdims=True)).mean(0)
        counts = np.array([s["doc"]["counts"] for s in smollm2_run.samples[task]], dtype=float)
        p = counts / counts.sum(1, keepdims=True)
        assert result["xentropy_prior,none"] == pytest.approx(float(-(p * np.log(prior)).sum(1).mean()), abs=1e-9)


def test_debiased_task_has_one_record_per_dilemma_and_order_effect_is_the_mean_tvd(smollm2_run):  # noqa: F811
    from moral_tasks.records import read_samples

    (path,) = smollm2_run.out.rglob("samples_moral_dilemmas_debiased_*.jsonl")
    records = read_samples(path)
    assert len(records) == LIMIT and len({r.doc_id for r in records}) == LIMIT
    tvd = [0.5 * np.abs(np.array(r.orders["AB"]) - np.array(r.orders["BA"])).sum() for r in records]
    for r in records:
        assert r.q == pytest.approx(list((np.array(r.orders["AB"]) + np.array(r.orders["BA"])) / 2), abs=1e-9)
    result = smollm2_run.results["results"]["moral_dilemmas_debiased"]
    assert result["order_effect,none"] == pytest.approx(float(np.mean(tvd)), abs=1e-9)
