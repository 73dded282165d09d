"""Reference rows, gap closed, paired comparisons, and the CSV and Markdown leaderboards."""

from __future__ import annotations

import csv
import datetime
from pathlib import Path

import numpy as np

from moral_tasks import __version__
from moral_tasks.metrics import core as M
from moral_tasks.metrics.intervals import bootstrap_intervals, mean_interval, resample_weights
from moral_tasks.metrics.reference import constant_predictions, human_row

HEADLINE = ("xentropy", "dirichlet_nll")
SHOWN = ("xentropy", "calibrated_xentropy", "dirichlet_nll", "dirichlet_nll_fixed", "acc", "f1_macro", "brier", "ece",
         "jsd", "tvd", "order_effect")
REFERENCES = ("BEST", "human", "prior", "uniform")
PAIRED_RESAMPLES = 5000


def _arrays(records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    q = np.array([r["q"] for r in records], dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.log(q), np.array([r["counts"] for r in records], dtype=np.float64)


def reference_rows(task_results: list[dict]) -> dict[str, dict]:
    """BEST from the task's own report; human, prior and uniform from the documents' votes."""
    first = task_results[0]
    rows = {"BEST": {m.removeprefix("best_"): v for m, v in first["metrics"].items() if m.startswith("best_")}}
    records = first["records"]
    if not records:
        return rows
    _, counts = _arrays(records)
    for name, logq in constant_predictions(counts).items():
        values, cis = M.compute_metrics(logq, counts), bootstrap_intervals(logq, counts)
        rows[name] = {m: {"value": v, "ci_low": cis[m][0], "ci_high": cis[m][1]} for m, v in values.items()}
    human = [r.get("human_counts") for r in records]
    if all(h is not None for h in human):
        scores = human_row(counts, human)
        correct = (M.majority(np.array(human)) == M.majority(counts)).astype(float)
        low, high = mean_interval(correct)
        rows["human"] = {"acc": {"value": scores["acc"], "ci_low": low, "ci_high": high},
                         "f1_macro": {"value": scores["f1_macro"], "ci_low": None, "ci_high": None}}
    return rows


def gap_closed(tuned: dict, base: dict, best: dict) -> float | None:
    """(base - tuned) / (base - BEST) on xentropy: the share of the reachable improvement achieved."""
    try:
        b, t, ceiling = base["xentropy"]["value"], tuned["xentropy"]["value"], best["xentropy"]["value"]
    except (KeyError, TypeError):
        return None
    return None if b == ceiling else (b - t) / (b - ceiling)


def paired_comparison(records_a: list[dict], records_b: list[dict], resamples: int = PAIRED_RESAMPLES,
                      seed: int = 0) -> dict:
    """Paired bootstrap on per-document xentropy (a - b) over the documents both entries scored."""
    by_id_b = {r["doc_id"]: r for r in records_b}
    pairs = [(r, by_id_b[r["doc_id"]]) for r in records_a if r["doc_id"] in by_id_b]
    if len(pairs) < 2:
        raise ValueError("fewer than two documents in common: cannot compare")
    logq_a, counts = _arrays([a for a, _ in pairs])
    logq_b, _ = _arrays([b for _, b in pairs])
    p = M.vote_shares(counts)
    diff = M.xent_rows(logq_a, p) - M.xent_rows(logq_b, p)
    weights = resample_weights(len(diff), resamples, seed)
    observed = diff.mean()
    # Two-sided p-value of "no difference": resample the centred differences (null imposed).
    null = weights @ (diff - observed) / len(diff)
    p_value = (np.sum(np.abs(null) >= abs(observed)) + 1) / (resamples + 1)
    low, high = np.percentile(weights @ diff / len(diff), [2.5, 97.5])
    return {"metric": "xentropy", "mean_diff": float(observed), "ci_low": float(low), "ci_high": float(high),
            "p_value": float(p_value), "n_docs": len(diff)}


def build_board(board, results: dict[str, dict[str, dict]], title: str = "moral-ambiguity leaderboard") -> dict:
    """The leaderboard as one dict (what the CSV, Markdown and HTML writers render)."""
    import lm_eval

    rows = []
    references = {task: reference_rows([results[e.name][task] for e in board.entries if task in results[e.name]])
                  for task in board.tasks}
    for entry in board.entries:
        metrics = {task: results[entry.name][task]["metrics"] for task in board.tasks if task in results[entry.name]}
        gaps = {}
        if entry.base:
            for task in board.tasks:
                base = results.get(entry.base, {}).get(task)
                if base and task in metrics:
                    gaps[task] = gap_closed(metrics[task], base["metrics"], references[task].get("BEST", {}))
        rows.append({"name": entry.name, "kind": "entry", "model": entry.model, "base": entry.base, "gap_closed": gaps,
                     "metrics": metrics})
    for ref in REFERENCES:
        metrics = {task: references[task][ref] for task in board.tasks if ref in references[task]}
        if metrics:
            rows.append({"name": ref, "kind": "reference", "metrics": metrics})
    comparisons = []
    pairs = list(board.compare) + [(e.name, e.base) for e in board.entries if e.base]
    for a, b in dict.fromkeys(pairs):
        for task in board.tasks:
            if task in results.get(a, {}) and task in results.get(b, {}):
                comparisons.append({"task": task, "a": a, "b": b,
                                    **paired_comparison(results[a][task]["records"], results[b][task]["records"])})
    return {
        "title": title,
        "generated": {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                      "moral_ambiguity_version": __version__, "lm_eval_version": lm_eval.__version__,
                      "config": board.source},
        "tasks": board.tasks,
        "metrics": [m for m in SHOWN],
        "higher_is_better": {m.name: m.higher_is_better for m in M.METRICS} | {"order_effect": False},
        "rows": rows,
        "records": {e.name: {t: results[e.name][t]["records"] for t in board.tasks if t in results[e.name]}
                    for e in board.entries},
        "comparisons": comparisons,
        "data_sources": {task: sorted({results[e.name][task]["data_source"] or "?" for e in board.entries
                                       if task in results[e.name]}) for task in board.tasks},
    }


def write_csv(board: dict, path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["entry", "task", "metric", "value", "ci_low", "ci_high"])
        for row in board["rows"]:
            for task, metrics in row["metrics"].items():
                for metric, v in metrics.items():
                    writer.writerow([row["name"], task, metric, v["value"], v.get("ci_low"), v.get("ci_high")])


def _cell(v: dict | None) -> str:
    if not v or v.get("value") is None:
        return "–"
    if v.get("ci_low") is None:
        return f"{v['value']:.4f}"
    return f"{v['value']:.4f} [{v['ci_low']:.4f}, {v['ci_high']:.4f}]"


def write_markdown(board: dict, path: Path) -> None:
    lines = [f"# {board['title']}", "",
             f"Generated {board['generated']['date']} by moral-ambiguity {board['generated']['moral_ambiguity_version']}"
             f" (lm-eval {board['generated']['lm_eval_version']}) from `{board['generated']['config']}`.",
             "Values are followed by 95% bootstrap intervals; BEST's interval is its Monte-Carlo error.", ""]
    for task, sources in board["data_sources"].items():
        lines.append(f"- data of `{task}`: " + "; ".join(f"`{s}`" for s in sources))
    lines += ["", "## Headline: cross-entropy and Dirichlet NLL (lower is better)", ""]
    header = ["entry"] + [f"{t} {m}" for t in board["tasks"] for m in HEADLINE] + \
             [f"{t} gap closed" for t in board["tasks"]]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in board["rows"]:
        cells = [row["name"] if row["kind"] == "entry" else f"*{row['name']}*"]
        cells += [_cell(row["metrics"].get(t, {}).get(m)) for t in board["tasks"] for m in HEADLINE]
        gaps = row.get("gap_closed", {})
        cells += ["–" if gaps.get(t) is None else f"{100 * gaps[t]:.1f}%" for t in board["tasks"]]
        lines.append("| " + " | ".join(cells) + " |")
    for task in board["tasks"]:
        shown = [m for m in board["metrics"] if any(m in r["metrics"].get(task, {}) for r in board["rows"])]
        lines += ["", f"## {task}", "", "| entry | " + " | ".join(shown) + " |", "|---|" + "---|" * len(shown)]
        for row in board["rows"]:
            if task in row["metrics"]:
                name = row["name"] if row["kind"] == "entry" else f"*{row['name']}*"
                lines.append(f"| {name} | " + " | ".join(_cell(row["metrics"][task].get(m)) for m in shown) + " |")
    if board["comparisons"]:
        lines += ["", "## Paired comparisons (per-document xentropy, a - b; paired bootstrap)", "",
                  "| task | a | b | mean diff [95% CI] | p-value | documents |", "|---|---|---|---|---|---|"]
        for c in board["comparisons"]:
            lines.append(f"| {c['task']} | {c['a']} | {c['b']} | {c['mean_diff']:+.4f} [{c['ci_low']:+.4f}, "
                         f"{c['ci_high']:+.4f}] | {c['p_value']:.4f} | {c['n_docs']} |")
    path.write_text("\n".join(lines) + "\n")
