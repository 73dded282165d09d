"""Hand-made lm-eval results folders in the samples format of moral_tasks.records (one record per document).

What ``lm_eval --output_path OUT --log_samples`` writes for one model:
``OUT/<model>/results_<date>.json`` and ``OUT/<model>/samples_<task>_<date>.jsonl``.
The tests choose every number, so the expected leaderboard values can be worked out by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from moral_tasks.records import RECORD_FORMAT, RECORD_KEY, Record

DATE = "2026-01-01T00-00-00.000001"
SCORING = {"fixed_concentration": 2.0, "bootstrap_resamples": 0, "bootstrap_seed": 0, "best_samples": 50}
LABELS = {"moral_dilemmas": ["FIRST", "SECOND"], "moral_dilemmas_debiased": ["FIRST", "SECOND"],
          "moral_anecdotes": ["AUTHOR", "OTHER", "EVERYBODY", "NOBODY", "INFO"],
          "moral_anecdotes_binary": ["RIGHT", "WRONG"]}


def record(task: str, doc_id: str, q: list[float], counts: list[int], mass: float = 0.9, scoring=None,
           human_counts=None) -> dict:
    return Record(task=task, doc_id=doc_id, labels=LABELS[task], option_loglik=[math.log(mass * x) for x in q],
                  q=list(q), option_mass=mass, counts=list(counts), scoring=dict(scoring or SCORING),
                  human_counts=human_counts).to_json()


def write_run(out: Path, model: str, runs: dict[str, dict], date: str = DATE, model_args: str = "pretrained=x",
              limit: int | None = None) -> Path:
    """``runs``: {task: {"records": [record...], "metrics": {name: value or (value, low, high)},
    "data_source": str, "metadata": {...}}}. Returns the model folder."""
    folder = out / model.replace("/", "__")
    folder.mkdir(parents=True, exist_ok=True)
    results = {"results": {}, "configs": {}, "higher_is_better": {}, "model_name": model,
               "config": {"model": "hf", "model_args": model_args, "limit": limit}, "lm_eval_version": "0.4.13",
               "transformers_version": "5.0"}
    for task, run in runs.items():
        row = {"alias": task, "record_format,none": run.get("record_format", RECORD_FORMAT),
               "data_source,none": run.get("data_source", f"full:scruples-v1.0/x/test rows=2 "
                                                         "skipped_zero_votes=0 sha256:0123456789abcdef")}
        for name, value in run.get("metrics", {}).items():
            value, low, high = value if isinstance(value, tuple) else (value, None, None)
            row[f"{name},none"], row[f"{name}_stderr,none"] = value, "N/A"
            if low is not None:
                row[f"{name}_ci95,none"] = [low, high]
        results["results"][task] = row
        results["configs"][task] = {"task": task, "metadata": {"version": 2.0, **run.get("metadata", {})}}
        results["higher_is_better"][task] = {"xentropy": False, "acc": True}
        lines = [json.dumps({"doc_id": i, RECORD_KEY: r, "xentropy": r["doc_id"]})
                 for i, r in enumerate(run["records"])]
        (folder / f"samples_{task}_{date}.jsonl").write_text("".join(line + "\n" for line in lines))
    (folder / f"results_{date}.json").write_text(json.dumps(results, indent=1))
    return folder
