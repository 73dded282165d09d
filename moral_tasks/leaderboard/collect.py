"""Read lm-eval results folders: metrics with intervals, and per-document records.

Robust to lm-eval's quirks: stderr ``"N/A"`` strings, bare ``NaN`` in JSON,
stringified ``resps``, and folder names that are random ids.
"""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np

from moral_tasks.metrics import core as M
from moral_tasks.harness import BEST_NAMES, DEBIASED_NAMES, debias

REPORTED = (*M.METRIC_NAMES, *BEST_NAMES, DEBIASED_NAMES[0])


def _number(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None  # "N/A", NaN, None, strings


def _metric(row: dict, name: str) -> dict | None:
    value = _number(row.get(f"{name},none"))
    if value is None:
        return None
    ci = row.get(f"{name}_ci95,none")
    low, high = (ci if isinstance(ci, list) and len(ci) == 2 else (None, None))
    return {"value": value, "ci_low": _number(low), "ci_high": _number(high)}


def _unstring(value):
    """lm-eval may write a response as a list, a JSON string or a Python repr string."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return ast.literal_eval(value)


def _record(sample: dict) -> dict:
    """Our per-document record; rebuilt from ``filtered_resps`` when the metric field is missing."""
    record = sample.get("xentropy")
    if isinstance(record, dict) and "q" in record:
        return record
    loglik = [float(_unstring(r)[0]) for r in sample["filtered_resps"]]
    doc = sample["doc"]
    return {"doc_id": doc.get("id", sample["doc_id"]), "option_loglik": loglik,
            "q": np.exp(M.log_normalize(loglik)).tolist(), "counts": doc["counts"],
            "human_counts": doc.get("human_counts"), **({"order": doc["order"]} if "order" in doc else {})}


def documents(records: list[dict]) -> list[dict]:
    """One record per document: a debiased task's two orders are combined as the task does."""
    if records and "order" in records[0]:
        combined, _ = debias(records)
        return [{**r, "q": np.exp(M.log_normalize(r["option_loglik"])).tolist()} for r in combined]
    return records


def read_results_folder(folder: Path) -> dict[str, dict]:
    """{model_name: {task: {"metrics": {...}, "records": [...], "data_source": str, "config": {...}}}}."""
    out: dict[str, dict] = {}
    for results_file in sorted(Path(folder).rglob("results_*.json")):
        results = json.loads(results_file.read_text())  # Python's json reads bare NaN
        name = results.get("model_name") or results_file.parent.name
        model = out.setdefault(name, {})
        for task, row in results.get("results", {}).items():
            samples = sorted(results_file.parent.glob(f"samples_{task}_*.jsonl"))
            records = []
            if samples:
                records = [_record(json.loads(line)) for line in samples[-1].read_text().splitlines() if line.strip()]
            model[task] = {
                "metrics": {m: v for m in REPORTED if (v := _metric(row, m)) is not None},
                "records": documents(records),
                "data_source": row.get("data_source,none"),
                "config": {k: results.get("config", {}).get(k) for k in ("model", "model_args")},
            }
    return out
