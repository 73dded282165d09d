"""``moral-ambiguity demo``: the three tasks through lm-eval, offline, on the bundled sample."""

from __future__ import annotations

import io
import os
import re
import subprocess
import tempfile
from pathlib import Path
from unittest import mock

from ..prompts import GROUP
from ..records import RECORD_KEY

INTERVAL_SUFFIX = "_ci95"


def _quiet_git_hash() -> str | None:
    """lm-eval's ``get_git_commit_hash`` without git's "fatal: not a git repository" on the user's terminal.

    lm-eval runs ``git describe --always`` in the working directory and lets git's stderr through; outside
    a checkout (where the demo usually runs) that is a stray error line. Same result, stderr captured.
    """
    from lm_eval.loggers.utils import get_commit_from_path

    try:
        proc = subprocess.run(["git", "describe", "--always"], capture_output=True, text=True, check=False)
    except FileNotFoundError:  # no git
        return get_commit_from_path(os.getcwd())
    return proc.stdout.strip() if proc.returncode == 0 else get_commit_from_path(os.getcwd())


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:#.4g}".rstrip(".")


def _data_line(results: dict) -> str:
    """One short line saying which data every number comes from (the full record is ``data_source`` in the JSON)."""
    sources = sorted({row["data_source,none"] for row in results["results"].values() if "data_source,none" in row})
    kinds, parts = set(), []
    for source in sources:
        found = re.match(r"(\w+):scruples-[^/]+/(\S+) rows=(\d+) .*sha256:(\w{8})", source)
        if found is None:
            kinds.add("?")
            parts.append(source)
            continue
        kinds.add(found[1])
        parts.append(f"{found[2]} {found[3]} rows sha256:{found[4]}")
    what = {"sample": "the bundled SAMPLE, hand-written, NOT Scruples", "full": "Scruples v1.0"}.get(
        kinds.pop() if len(kinds) == 1 else "", "mixed sources")
    return f"Data: {what} ({'; '.join(parts)})"


def compact_table(results: dict) -> str:
    """Task, metric, value and 95% interval to 4 significant digits, as a Markdown table."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.MARKDOWN, show_edge=True)
    for column, justify in (("task", "left"), ("metric", "left"), ("value", "right"), ("95% interval", "right")):
        table.add_column(column, justify=justify)
    for task in sorted(results["results"]):
        row = results["results"][task]
        first = True
        for key, value in row.items():
            metric, _, filter_name = key.partition(",")
            if filter_name != "none" or metric.endswith(INTERVAL_SUFFIX) or not isinstance(value, (int, float)) \
                    or isinstance(value, bool):
                continue
            interval = row.get(f"{metric}{INTERVAL_SUFFIX},none")
            shown = f"[{_number(interval[0])}, {_number(interval[1])}]" if isinstance(interval, list) else ""
            # lm-eval reports the number of documents under the record key (moral_tasks.harness.agg_record)
            table.add_row(task if first else "", "documents" if metric == RECORD_KEY else metric, _number(value), shown)
            first = False
    out = io.StringIO()
    Console(file=out, width=100).print(table)
    return "".join(line.rstrip() + "\n" for line in out.getvalue().splitlines() if line.strip())


def run_demo(model_dir: str | None = None, output_path: str | None = None, limit: int | None = None,
             batch_size: int = 8) -> dict:
    # Nothing here may touch the network: the model is local and the data bundled.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import lm_eval
    import lm_eval.evaluator
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    from ..data import SAMPLE_DIR
    from ..lm_eval_plugin import TASKS_DIR
    from .tiny_model import make_tiny_model

    with tempfile.TemporaryDirectory(prefix="moral-ambiguity-demo-") as tmp:
        if model_dir is None:
            model_dir = str(make_tiny_model(Path(tmp) / "tiny-llama"))
            print(f"Built a tiny random Llama in {model_dir} (random weights: expect near-chance numbers).")
        tracker = EvaluationTracker(output_path=output_path) if output_path else None
        with mock.patch.object(lm_eval.evaluator, "get_git_commit_hash", _quiet_git_hash):
            results = lm_eval.simple_evaluate(
                model="hf",
                model_args={"pretrained": model_dir, "dtype": "float32"},
                tasks=[GROUP],
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
    print(compact_table(results), end="")
    print(_data_line(results))
    return results
