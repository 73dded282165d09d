"""``moral-ambiguity demo``: the three tasks through lm-eval, offline, on the bundled sample."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def run_demo(model_dir: str | None = None, output_path: str | None = None, limit: int | None = None,
             batch_size: int = 8) -> dict:
    # Nothing here may touch the network: the model is local and the data bundled.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import lm_eval
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import make_table

    from ..data import SAMPLE_DIR
    from ..lm_eval_plugin import TASKS_DIR
    from .tiny_model import make_tiny_model

    with tempfile.TemporaryDirectory(prefix="moral-ambiguity-demo-") as tmp:
        if model_dir is None:
            model_dir = str(make_tiny_model(Path(tmp) / "tiny-llama"))
            print(f"Built a tiny random Llama in {model_dir} (random weights: expect near-chance numbers).")
        tracker = EvaluationTracker(output_path=output_path) if output_path else None
        results = lm_eval.simple_evaluate(
            model="hf",
            model_args={"pretrained": model_dir, "dtype": "float32"},
            tasks=["moral_ambiguity"],
            task_manager=TaskManager(include_path=str(TASKS_DIR), metadata={"data_dir": str(SAMPLE_DIR)}),
            batch_size=batch_size,
            device="cpu",
            limit=limit,
            log_samples=tracker is not None,
            evaluation_tracker=tracker,
            bootstrap_iters=0,
        )
        if tracker is not None:
            samples = results.pop("samples")
            tracker.save_results_aggregated(results=results, samples=samples)
            for task in results["configs"]:
                tracker.save_results_samples(task_name=task, samples=samples[task])
    print(make_table(results))
    print("Data: the bundled 40-item SAMPLE (hand-written, NOT Scruples); see data_source in the table.")
    return results
