"""In-process lm_eval runs of our tasks, shared by the harness tests (import the fixtures you use).

One HF model for the whole session, one run of the main tasks written to disk as the lm_eval
CLI would (results + samples files), and a dev-split run for the calibration tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SETTINGS = {"bootstrap_resamples": 200, "best_samples": 200}
MAIN_TASKS = ["moral_dilemmas", "moral_dilemmas_debiased", "moral_anecdotes", "moral_anecdotes_binary"]


@pytest.fixture(scope="session")
def tiny_lm(tiny_model):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(tiny_model), batch_size=16, device="cpu", dtype="float32")


def evaluate(lm, tasks, metadata: dict, output: Path | None = None, **kwargs) -> dict:
    """``lm_eval.simple_evaluate`` on our tasks; with ``output``, files written as ``lm_eval --output_path``."""
    import lm_eval
    import torch
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    from moral_tasks.lm_eval_plugin import TASKS_DIR

    tracker = EvaluationTracker(output_path=str(output)) if output else None
    # include_defaults=False: indexing the ~10,000 built-in task YAMLs costs ~10 s per TaskManager.
    tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={**SETTINGS, **metadata})
    with torch.no_grad():
        out = lm_eval.simple_evaluate(model=lm, model_args={"pretrained": "tiny-llama"}, tasks=tasks, task_manager=tm,
                                      bootstrap_iters=0, log_samples=True, evaluation_tracker=tracker, **kwargs)
    if tracker is not None:
        samples = out.pop("samples")
        tracker.save_results_aggregated(results=out, samples=samples)
        for task in out["configs"]:
            tracker.save_results_samples(task_name=task, samples=samples[task])
        out["samples"] = samples
    return out


def read_run(output: Path) -> tuple[dict, dict[str, list[dict]], dict[str, Path]]:
    """The results JSON, the sample lines per task and the samples file per task of one written run."""
    (results_file,) = output.rglob("results_*.json")
    files = {p.name[len("samples_"):].rsplit("_", 1)[0]: p for p in output.rglob("samples_*.jsonl")}
    samples = {t: [json.loads(line) for line in p.read_text().splitlines()] for t, p in files.items()}
    return json.loads(results_file.read_text()), samples, files


@pytest.fixture(scope="session")
def main_run(tiny_lm, scruples_dir, tmp_path_factory):
    """The four tasks on the 10-document test split, written to disk."""
    out = tmp_path_factory.mktemp("main_run") / "results"
    evaluate(tiny_lm, MAIN_TASKS, {"data_dir": str(scruples_dir)}, output=out)
    return out


def _sample_run(lm, tmp_path_factory, split: str) -> Path:
    from moral_tasks.data import SAMPLE_DIR

    out = tmp_path_factory.mktemp(f"sample_{split}") / "results"
    evaluate(lm, ["moral_dilemmas", "moral_anecdotes"], {"data_dir": str(SAMPLE_DIR), "split": split}, output=out,
             limit=16)
    return out


@pytest.fixture(scope="session")
def sample_test_run(tiny_lm, tmp_path_factory):
    """Test and dev runs on the bundled sample (its splits have distinct document ids)."""
    return _sample_run(tiny_lm, tmp_path_factory, "test")


@pytest.fixture(scope="session")
def sample_dev_run(tiny_lm, tmp_path_factory):
    return _sample_run(tiny_lm, tmp_path_factory, "dev")
