"""``moral-ambiguity rescore``: every number of an lm-eval run, recomputed from its samples files.

The numbers come from :func:`moral_tasks.scoring.score_records`, the function lm-eval's
aggregations call, so they equal the run's results file. Given a second run of the same
model on the dev split, rescoring adds Scruples' calibration protocol, which one lm_eval
run cannot give: the temperature fitted on the dev run's records and applied to the
evaluated run (``calibrated_xentropy``, ``temperature``, with the split it was fitted on).
The generation readouts (:mod:`moral_tasks.readouts`) are rescored from their records' ``generation`` the same way, and when a
run holds a task and its answer readout, or several prompt templates of a task, their comparisons
are added (``answer_consistency``, ``prompt_sensitivity``).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import core as M
from .metrics import intervals
from .prompts import get_task, template_siblings
from .readouts.analysis import answer_consistency, consistency_pairs, template_spread
from .readouts.readout import score_readouts
from .records import Record, read_samples
from .scoring import score_records

RESCORE_FORMAT = "moral-ambiguity/rescore/1"
_SAMPLES = re.compile(r"samples_(?P<task>.+)_(?P<stamp>\d{4}-\d{2}-\d{2}T[\d\-.]+)\.jsonl$")


class RescoreError(ValueError):
    """A results folder that cannot be rescored; the message says which and why."""


def samples_files(results_dir: str | Path) -> dict[str, Path]:
    """``{task: newest samples file}`` of the one lm-eval run under ``results_dir``."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise RescoreError(f"{results_dir}: not a folder")
    found: dict[str, list[Path]] = {}
    for path in results_dir.rglob("samples_*.jsonl"):
        match = _SAMPLES.search(path.name)
        if match:
            found.setdefault(match["task"], []).append(path)
    if not found:
        raise RescoreError(f"{results_dir}: no lm-eval samples files (samples_<task>_<date>.jsonl); "
                           "run lm_eval with --log_samples --output_path")
    out = {}
    for task, paths in sorted(found.items()):
        folders = sorted({str(p.parent) for p in paths})
        if len(folders) > 1:
            raise RescoreError(f"{results_dir}: task {task} was run by several models ({', '.join(folders)}); "
                               "pass one model's folder")
        out[task] = max(paths, key=lambda p: _SAMPLES.search(p.name)["stamp"])  # the newest run
    return out


def score_samples(path: str | Path) -> dict[str, Any]:
    """Every metric, interval, baseline and agreement slice of one samples file, as lm-eval reported them."""
    return _read_and_score(path)[1]


def _read_and_score(path: str | Path) -> tuple[list[Record], dict[str, Any]]:
    """The records of a samples file and its numbers; a generation readout's (moral_tasks.readouts) numbers
    add the readout counts."""
    records = read_samples(path)
    if records and records[0].generation is not None:
        return records, score_readouts(records)
    return records, score_records(records)


def _logq_counts(records: list[Record]) -> tuple[np.ndarray, np.ndarray]:
    return np.log(np.array([r.q for r in records])), np.array([r.counts for r in records], dtype=np.float64)


def dev_calibration(records: list[Record], dev_records: list[Record], dev_path: str | Path) -> dict[str, Any]:
    """Scruples' protocol: T fitted on the dev records, applied to ``records``."""
    shared = {r.doc_id for r in records} & {r.doc_id for r in dev_records}
    if shared:
        raise RescoreError(f"{dev_path}: the dev run shares {len(shared)} document(s) with the evaluated run "
                           f"(e.g. {sorted(shared)[0]}): fit the temperature on a different split")
    # Documents without a readout are counted by score_records; they have no q to calibrate.
    records = sorted((r for r in records if r.no_readout is None), key=lambda r: r.doc_id)
    dev_records = [r for r in dev_records if r.no_readout is None]
    logq, counts = _logq_counts(records)
    fit = M.dev_calibration(*_logq_counts(dev_records), logq, counts)
    t = fit["temperature"]
    calibrated = M.log_normalize(logq / t)
    out = {"calibrated_xentropy": fit["calibrated_xentropy"], "temperature": t,
           "temperature_at_bound": fit["temperature_at_bound"],
           "temperature_fitted_on": {"samples": str(dev_path), "data_source": dev_records[0].scoring.get("data_source"),
                                     "documents": len(dev_records)}}
    scoring = records[0].scoring
    if scoring["bootstrap_resamples"]:
        rows = M.xent_rows(calibrated, M.vote_shares(counts))  # T is fixed: only the test documents vary
        out["calibrated_xentropy_ci95"] = list(intervals.mean_interval(rows, scoring["bootstrap_resamples"],
                                                                       scoring["bootstrap_seed"]))
    return out


def rescore(results_dir: str | Path, dev_dir: str | Path | None = None) -> dict[str, Any]:
    """The rescored numbers of every task of a run, with dev-fitted calibration when ``dev_dir`` is given."""
    files = samples_files(results_dir)
    dev_files = samples_files(dev_dir) if dev_dir is not None else {}
    tasks = {}
    for task, path in files.items():
        records, metrics = _read_and_score(path)
        entry: dict[str, Any] = {"samples": str(path), "metrics": metrics}
        if dev_dir is not None:
            if task not in dev_files:
                raise RescoreError(f"{dev_dir}: no samples file for task {task} (the dev run must cover the same tasks)")
            entry["metrics"].update(dev_calibration(records, _read_and_score(dev_files[task])[0], dev_files[task]))
        tasks[task] = entry
    # Readout comparisons of the one model (moral_tasks.readouts.analysis), when their runs are here.
    for logprob_task, answer_task in consistency_pairs(list(files)):
        tasks[logprob_task]["answer_consistency"] = answer_consistency(read_samples(files[logprob_task]),
                                                                       read_samples(files[answer_task]))
    sensitivity = {}
    for task in files:
        siblings = [t for t in template_siblings(task) if t in files]
        if len(siblings) > 1 and task == siblings[0]:
            sensitivity[get_task(task).name] = template_spread({t: tasks[t]["metrics"] for t in siblings}, task)
    return {"format": RESCORE_FORMAT, "results_dir": str(results_dir),
            "dev_results_dir": None if dev_dir is None else str(dev_dir), "tasks": tasks,
            **({"prompt_sensitivity": sensitivity} if sensitivity else {})}


def main(results_dir: str, dev: str | None = None, output: str | None = None) -> int:
    result = rescore(results_dir, dev)
    for entry in result["tasks"].values():
        for message in entry["metrics"]["warnings"]:
            print(f"moral-ambiguity: warning: {message}", file=sys.stderr)
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if output:
        Path(output).write_text(text + "\n", encoding="utf-8")
        print(f"rescored {len(result['tasks'])} task(s) into {output}")
    else:
        print(text)
    return 0
