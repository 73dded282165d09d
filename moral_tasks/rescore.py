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
    return {task: paths[-1] for task, paths in runs_by_task(results_dir).items()}


def runs_by_task(results_dir: str | Path) -> dict[str, list[Path]]:
    """``{task: its samples files under results_dir, oldest first}`` (one model's folder)."""
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
        out[task] = sorted(paths, key=lambda p: _SAMPLES.search(p.name)["stamp"])
    return out


def run_config(samples: Path) -> dict | None:
    """lm-eval's ``config`` of the run that wrote ``samples`` (``results_<stamp>.json`` beside it), or None."""
    stamp = _SAMPLES.search(samples.name)["stamp"]
    try:
        return json.loads((samples.parent / f"results_{stamp}.json").read_text(encoding="utf-8")).get("config") or {}
    except (OSError, ValueError):
        return None


def _model_of(config: dict) -> dict:
    """What identifies the evaluated model: our weight fingerprint (``--model hf``) or lm-eval's model and args."""
    identity = {k: v for k, v in (config.get("model_identity") or {}).items() if k != "path"}
    return identity or {"model": config.get("model"), "model_args": config.get("model_args")}


# Settings that change what q is: a temperature fitted under one does not apply under another.
_READOUT_SETTINGS = ("merge_variants", "prompt_version", "readout", "samples", "smoothing")


def check_dev_run(path: Path, records: list[Record], dev_path: Path, dev_records: list[Record]) -> None:
    """A dev run must read the same model the same way as the run it calibrates."""
    mine, theirs = records[0].scoring, dev_records[0].scoring
    differ = [f"{k} {theirs.get(k)!r} (evaluated run: {mine.get(k)!r})" for k in _READOUT_SETTINGS
              if mine.get(k) != theirs.get(k)]
    if differ:
        raise RescoreError(f"{dev_path}: the dev run was read with other settings ({'; '.join(differ)}): its "
                           "temperature does not apply; rerun it with the same task options")
    config, dev_config = run_config(path), run_config(dev_path)
    if config is not None and dev_config is not None and _model_of(config) != _model_of(dev_config):
        raise RescoreError(f"{dev_path}: the dev run scored another model ({_model_of(dev_config)}) than {path} "
                           f"({_model_of(config)}): fit the temperature on the same model's dev run")


def score_samples(path: str | Path) -> dict[str, Any]:
    """Every metric, interval, baseline and agreement slice of one samples file, as lm-eval reported them."""
    return score_read(read_samples(path))


def score_read(records: list[Record]) -> dict[str, Any]:
    """The numbers of records read from one samples file; a generation readout's (moral_tasks.readouts)
    add the readout counts."""
    if records and records[0].generation is not None:
        return score_readouts(records)
    return score_records(records)


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
    runs = runs_by_task(results_dir)
    files = {task: paths[-1] for task, paths in runs.items()}
    dev_files = samples_files(dev_dir) if dev_dir is not None else {}
    tasks, read = {}, {}
    for task, path in files.items():
        records = read[task] = read_samples(path)
        metrics = score_read(records)
        entry: dict[str, Any] = {"samples": str(path), "metrics": metrics}
        if len(runs[task]) > 1:
            entry["ignored_runs"] = [str(p) for p in runs[task][:-1]]
            metrics["warnings"].insert(0, f"{task}: {len(runs[task])} runs in {path.parent}; the newest ({path.name}, "
                                          f"{metrics['documents']} documents) is rescored, not "
                                          f"{', '.join(p.name for p in runs[task][:-1])}")
        if dev_dir is not None:
            if task not in dev_files:
                raise RescoreError(f"{dev_dir}: no samples file for task {task} (the dev run must cover the same tasks)")
            dev_records = read_samples(dev_files[task])
            check_dev_run(path, records, dev_files[task], dev_records)
            entry["metrics"].update(dev_calibration(records, dev_records, dev_files[task]))
        tasks[task] = entry
    # Readout comparisons of the one model (moral_tasks.readouts.analysis), when their runs are here.
    for logprob_task, answer_task in consistency_pairs(list(files)):
        tasks[logprob_task]["answer_consistency"] = answer_consistency(read[logprob_task], read[answer_task])
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
