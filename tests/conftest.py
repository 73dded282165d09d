from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# `make test` runs one pytest-xdist worker per core: one thread each (and in the lm_eval / train
# subprocesses they start, which inherit this environment), or the workers' thread pools fight over the cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[_var] = "1"
    import torch

    torch.set_num_threads(1)

from llama_server import llama_server  # noqa: F401  (fixture, optional for board_run)
from scruples_factory import write_scruples

BIN = Path(sys.executable).parent


def offline_env(**extra) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    for var in ("MORAL_AMBIGUITY_DATA_DIR", "MORAL_AMBIGUITY_REQUIRE_FULL_DATA", "MORAL_AMBIGUITY_DISABLE_HOOK"):
        env.pop(var, None)
    env.update(extra)
    return env


def run(cmd, cwd, env=None, check=True, timeout=600) -> subprocess.CompletedProcess:
    """Run a command; on failure show its output (the real lm_eval is noisy but its errors matter)."""
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env or offline_env(), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-8000:]}")
    return proc


def read_results(output_path: Path) -> tuple[dict, dict[str, list[dict]]]:
    """The results JSON and the samples per task written by `lm_eval --output_path --log_samples`."""
    (results_file,) = output_path.rglob("results_*.json")
    results = json.loads(results_file.read_text())
    samples = {}
    for path in output_path.rglob("samples_*.jsonl"):
        task = path.name[len("samples_"):].rsplit("_", 1)[0]
        samples[task] = [json.loads(line) for line in path.read_text().splitlines()]
    return results, samples


FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The committed tiny Llama (built by make_tiny_model); tests/fixtures/tiny-llama.gguf is the same network."""
    return FIXTURES / "tiny-llama"


@pytest.fixture(scope="session")
def scruples_dir(tmp_path_factory) -> Path:
    return write_scruples(tmp_path_factory.mktemp("scruples") / "data", n=10)


# 20 epochs of the 40-row sample at lr 3e-3: enough for each loss to lower train xentropy clearly.
ADAPTER_STEPS = 100


class AdapterFactory:
    """LoRA adapters of the tiny model trained on the bundled sample, each trained once per session."""

    def __init__(self, model: Path, root: Path):
        self.model, self.root, self._done = model, root, {}

    def get(self, loss: str, steps: int = ADAPTER_STEPS) -> Path:
        if (loss, steps) not in self._done:
            from moral_tasks.data import SAMPLE_DIR

            out = self.root / f"{loss}-{steps}"
            run([BIN / "moral-ambiguity", "train", "--model_name_or_path", self.model, "--task", "moral_dilemmas",
                 "--loss", loss, "--output_dir", out, "--data_dir", SAMPLE_DIR, "--per_device_train_batch_size", "8",
                 "--seed", "0", "--max_steps", str(steps), "--learning_rate", "3e-3", "--eval_split", "none"],
                cwd=self.root)
            self._done[(loss, steps)] = out
        return self._done[(loss, steps)]


@pytest.fixture(scope="session")
def adapters(tiny_model, tmp_path_factory) -> AdapterFactory:
    return AdapterFactory(tiny_model, tmp_path_factory.mktemp("adapters"))


@pytest.fixture(scope="session")
def board_run(request, tiny_model, adapters, tmp_path_factory):
    """One leaderboard over base, two adapters (one per loss) and, where llama.cpp is installed, an API model.

    Shared by the trainer's round-trip test and the leaderboard tests: every lm_eval run is real and
    each is done once per session.
    """
    import csv
    from types import SimpleNamespace

    from moral_tasks.data import SAMPLE_DIR

    try:
        api_url = request.getfixturevalue("llama_server")
    except pytest.skip.Exception:
        api_url = None
    root = tmp_path_factory.mktemp("board")
    sce, dm = adapters.get("soft_cross_entropy"), adapters.get("dirichlet_multinomial")
    text = (
        "tasks: [moral_dilemmas]\n"
        f"metadata: {{data_dir: '{SAMPLE_DIR}', split: train, bootstrap_resamples: 200}}\n"
        "entries:\n"
        f"  - {{name: tiny-base, model: hf, model_args: 'pretrained={tiny_model}'}}\n"
        f"  - {{name: tiny-sce, model: hf, model_args: 'pretrained={tiny_model},peft={sce}'}}\n"
        f"  - {{name: tiny-dm, model: hf, model_args: 'pretrained={tiny_model},peft={dm}'}}\n"
    )
    if api_url:
        text += (f"  - {{name: tiny-api, model: openai-chat-logprobs, apply_chat_template: true,\n"
                 f"      model_args: 'model=tiny,base_url={api_url},top_logprobs=2048,cache_dir={root / 'api-cache'}'}}\n"
                 "compare: [[tiny-sce, tiny-api]]\n")
    config = root / "board.yaml"
    config.write_text(text)
    cmd = [BIN / "moral-ambiguity", "leaderboard", "--config", config, "--output", root / "out"]
    proc = run(cmd, cwd=root)
    with open(root / "out" / "leaderboard.csv") as fh:
        rows = list(csv.DictReader(fh))
    return SimpleNamespace(cmd=cmd, root=root, out=root / "out", proc=proc, rows=rows, api=api_url is not None)
