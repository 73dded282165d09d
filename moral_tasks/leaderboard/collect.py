"""Read lm-eval results folders: metrics with intervals, and the per-document records.

A results file ``results_<date>.json`` and its samples files
``samples_<task>_<date>.jsonl`` share lm-eval's date id, so the samples of a
task are found by its *exact* name (``samples_moral_anecdotes_*`` would also
match ``moral_anecdotes_binary``). Records are read only through
:func:`moral_tasks.records.read_samples`, which refuses formats it does not
know. Robust to lm-eval's quirks: stderr ``"N/A"`` strings, bare ``NaN`` in
JSON, folder names that are random ids.

Where ``moral_tasks.rescore`` exists, every metric is recomputed from the
samples file by the code lm-eval's aggregations call (so metrics defined after
a run appear too), and a reported number that the samples do not reproduce is
flagged: the samples file is not the one that produced the results.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from moral_tasks.prompts import LM_EVAL_TASKS
from moral_tasks.records import READABLE_FORMATS, RecordFormatError, read_samples

SAMPLES_NAME = re.compile(r"^samples_(?P<task>.+)_(?P<date>\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:\.\d+)?)\.jsonl$")
# lm-eval metadata keys that say nothing about how a task was scored.
_NOT_SETTINGS = ("version", "config_source", "pretrained", "model_args")


class CollectError(ValueError):
    """A results folder we cannot read; the message names the file."""


def _number(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None  # "N/A", NaN, None, strings


def metrics_of(row: dict) -> dict[str, dict]:
    """Every numeric metric of one lm-eval results row, with its ``<metric>_ci95`` interval when present."""
    out = {}
    for key, value in row.items():
        name, _, filt = key.partition(",")
        if filt != "none" or name.endswith(("_ci95", "_stderr")) or (v := _number(value)) is None:
            continue
        ci = row.get(f"{name}_ci95,none")
        low, high = ci if isinstance(ci, list) and len(ci) == 2 else (None, None)
        out[name] = {"value": v, "ci_low": _number(low), "ci_high": _number(high)}
    return out


def rescored(records: list) -> dict[str, dict] | None:
    """Every metric recomputed from the records of a samples file; None where this version has no rescoring."""
    try:
        from moral_tasks.rescore import score_read
    except ImportError:  # moral-ambiguity without `rescore`: lm-eval's reported numbers are all there is
        return None
    return metrics_of({f"{name},none": value for name, value in score_read(records).items()})


def disagreements(reported: dict[str, dict], recomputed: dict[str, dict], tol: float = 1e-9) -> list[str]:
    """Metrics whose reported value the samples do not reproduce."""
    return sorted(m for m, v in reported.items() if m in recomputed
                  and abs(v["value"] - recomputed[m]["value"]) > tol * max(1.0, abs(v["value"])))


def samples_file(results_file: Path, task: str) -> Path | None:
    """The samples of exactly ``task`` written with ``results_file`` (else the newest of exactly ``task``)."""
    date = results_file.stem.removeprefix("results_")
    same_run = results_file.parent / f"samples_{task}_{date}.jsonl"
    if same_run.is_file():
        return same_run
    found = sorted((m["date"], p) for p in results_file.parent.glob("samples_*.jsonl")
                   if (m := SAMPLES_NAME.match(p.name)) and m["task"] == task)
    return found[-1][1] if found else None


def read_results_folder(folder: Path) -> dict[str, dict]:
    """{model_name: {task: {"metrics", "higher_is_better", "records", "data_source", "metadata", "config",
    "results_file", "samples_file", "versions", "earlier_runs", "limit"}}}: the newest run of each model and task
    (``earlier_runs``: the results files it replaced; ``limit``: lm_eval's ``--limit``)."""
    out: dict[str, dict] = {}
    files = sorted(Path(folder).rglob("results_*.json"))
    if not files:
        raise CollectError(f"{folder}: no lm-eval results_*.json file in it")
    for results_file in files:
        try:
            results = json.loads(results_file.read_text(encoding="utf-8"))  # Python's json reads bare NaN
        except (ValueError, OSError) as exc:
            raise CollectError(f"{results_file}: not a readable lm-eval results file ({exc})") from None
        if not isinstance(results, dict) or not isinstance(results.get("results"), dict):
            raise CollectError(f"{results_file}: no 'results' mapping: not an lm-eval results file")
        name = results.get("model_name") or results_file.parent.name
        model = out.setdefault(name, {})
        config = results.get("config") or {}
        for task, row in results["results"].items():
            samples = samples_file(results_file, task)
            fmt = row.get("record_format,none")
            if task in LM_EVAL_TASKS and samples is None and fmt not in READABLE_FORMATS:
                # Samples are read (and their format checked) and rescored; without them the reported
                # numbers are all there is: refuse another version's rather than mix versions.
                raise CollectError(f"{results_file}: {task} was scored by another version of moral-ambiguity "
                                   f"(record format {fmt!r}; this version reads {', '.join(READABLE_FORMATS)}): "
                                   "rerun lm_eval with this version (see CHANGELOG.md)")
            try:
                records = read_samples(samples) if samples else []
            except RecordFormatError as exc:
                raise CollectError(str(exc)) from None
            metadata = ((results.get("configs") or {}).get(task) or {}).get("metadata") or {}
            reported = metrics_of(row)
            recomputed = rescored(records) if records else None
            earlier = model.get(task)  # files are read oldest first: a later run of the model replaces it
            model[task] = {
                "earlier_runs": [] if earlier is None else [*earlier["earlier_runs"], earlier["results_file"]],
                "limit": config.get("limit"),
                "metrics": reported if recomputed is None else recomputed,
                "disagreements": [] if recomputed is None else disagreements(reported, recomputed),
                "higher_is_better": (results.get("higher_is_better") or {}).get(task) or {},
                # Documents without a readout are counted by the results (no_readout), not compared.
                "records": [r for r in records if r.no_readout is None],
                "unread": [r for r in records if r.no_readout is not None],  # answer consistency counts them
                "data_source": row.get("data_source,none"),
                "metadata": {k: v for k, v in metadata.items() if k not in _NOT_SETTINGS},
                "config": {"model": config.get("model"), "model_args": config.get("model_args")},
                "results_file": str(results_file),
                "samples_file": str(samples) if samples else None,
                "versions": {"lm_eval": results.get("lm_eval_version"),
                             "transformers": results.get("transformers_version")},
            }
    return out
