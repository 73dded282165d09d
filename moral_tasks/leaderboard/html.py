"""The leaderboard as one self-contained HTML page: sortable tables, paired comparisons and plots.

Plots are PNG data URIs and the sorting script is inline, so the page opens offline
and can be mailed or archived as a single file.
"""

from __future__ import annotations

import base64
import io
import math
import pathlib

import jinja2
import numpy as np
# The Figure API renders PNGs with Agg without pyplot, so no global backend or
# figure registry is touched (safe in threads and in callers that use pyplot).
from matplotlib.figure import Figure

MISSING = "–"
BAR_METRICS = ("xentropy", "dirichlet_nll", "acc", "jsd")
MAX_PANELS = 8  # entries in plots: keeps figures readable and the page small
N_BINS = 10
_ARROWS = {True: "↑", False: "↓"}  # None: a fitted parameter, no direction

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(pathlib.Path(__file__).parent / "templates"),
    autoescape=True,  # the template's .j2 suffix would defeat select_autoescape
    undefined=jinja2.StrictUndefined,
)


def render_html(board: dict, path: pathlib.Path) -> None:
    entries = [r for r in board["rows"] if r["kind"] == "entry"]
    tasks = [_task_view(board, task, entries) for task in board["tasks"]]
    html = _ENV.get_template("leaderboard.html.j2").render(
        title=board["title"],
        generated=[(key.replace("_", " "), value) for key, value in board["generated"].items()],
        tasks=tasks,
        comparisons=[_comparison_cells(c) for c in board.get("comparisons") or []],
    )
    pathlib.Path(path).write_text(html, encoding="utf-8")


def _num(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _stat(row: dict, task: str, metric: str) -> tuple[float | None, float | None, float | None]:
    """(value, ci_low, ci_high) of one metric; None where absent."""
    stat = ((row.get("metrics") or {}).get(task) or {}).get(metric) or {}
    return _num(stat.get("value")), _num(stat.get("ci_low")), _num(stat.get("ci_high"))


def _cell(value, low=None, high=None, best=False, fmt="{:.4f}") -> dict:
    if value is None:
        return {"value": MISSING, "ci": "", "sort": "", "best": False}
    ci = f"[{fmt.format(low)}, {fmt.format(high)}]" if low is not None and high is not None else ""
    return {"value": fmt.format(value), "ci": ci, "sort": repr(value), "best": best}


def _best(values: list[float | None], higher_is_better: bool | None) -> float | None:
    present = [v for v in values if v is not None]
    if higher_is_better is None or not present:
        return None
    return max(present) if higher_is_better else min(present)


def _task_view(board: dict, task: str, entries: list[dict]) -> dict:
    hib = board["higher_is_better"]
    # (label, higher_is_better, format, row -> (value, ci_low, ci_high))
    columns = [(m, hib.get(m), "{:.4f}", lambda r, m=m: _stat(r, task, m)) for m in board["metrics"]]
    if any(_num((e.get("gap_closed") or {}).get(task)) is not None for e in entries):
        columns.append(("gap closed", True, "{:.1%}",
                        lambda r: (_num((r.get("gap_closed") or {}).get(task)), None, None)))

    # A reference row with nothing for this task (human on anecdotes) would be a row of dashes.
    references = [r for r in board["rows"] if r["kind"] == "reference"
                  and any(get(r)[0] is not None for *_, get in columns)]
    rows = entries + references
    view_rows = [{"name": r["name"], "kind": r["kind"], "cells": []} for r in rows]
    for _, higher, fmt, get in columns:
        stats = [get(r) for r in rows]
        best = _best([s[0] for s, r in zip(stats, rows) if r["kind"] == "entry"], higher)
        for view, r, s in zip(view_rows, rows, stats):
            view["cells"].append(_cell(*s, best=r["kind"] == "entry" and s[0] == best, fmt=fmt))

    return {"name": task, "rows": view_rows,
            "columns": [{"label": label, "arrow": _ARROWS.get(higher, "")} for label, higher, *_ in columns],
            "figures": _figures(board, task, entries[:MAX_PANELS], references),
            "truncated": MAX_PANELS if len(entries) > MAX_PANELS else 0}


def _comparison_cells(c: dict) -> list[dict]:
    diff, low, high, p = (_num(c.get(k)) for k in ("mean_diff", "ci_low", "ci_high", "p_value"))
    interval = ({"value": f"[{low:.4f}, {high:.4f}]", "sort": repr(low)}  # sorts on the lower bound
                if low is not None and high is not None else _cell(None))
    return [_text_cell(c["task"]), _text_cell(c["a"]), _text_cell(c["b"]), _text_cell(c["metric"]),
            _cell(diff), interval, _cell(p), _cell(_num(c.get("n_docs")), fmt="{:.0f}")]


def _text_cell(text: str) -> dict:
    return {"value": text, "sort": text, "text": True}


def _figures(board: dict, task: str, entries: list[dict], references: list[dict]) -> list[dict]:
    figures = []
    bars = _bar_figure(board, task, entries + references)
    if bars:
        figures.append({"uri": _png(bars), "caption": f"{task}: metrics with their intervals"})
    records = {e["name"]: recs for e in entries
               if (recs := ((board.get("records") or {}).get(e["name"]) or {}).get(task))}
    if records:
        figures.append({"uri": _png(_reliability_figure(task, records)),
                        "caption": f"{task}: reliability of the top option ({N_BINS} equal-mass bins)"})
        if all(len(r["q"]) == 2 for recs in records.values() for r in recs):
            figures.append({"uri": _png(_scatter_figure(task, records)),
                            "caption": f"{task}: model vs human probability of option A"})
    return figures


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _panels(n: int, title: str) -> tuple[Figure, list]:
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(3.3 * ncols, 3.3 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig, list(axes[:n])


def _bar_figure(board: dict, task: str, rows: list[dict]) -> Figure | None:
    metrics = [m for m in BAR_METRICS if m in board["metrics"]
               and any(_stat(r, task, m)[0] is not None for r in rows)]
    if not metrics:
        return None
    fig = Figure(figsize=(max(8.0, 0.45 * len(rows) * len(metrics)), 3.6), layout="constrained")
    x = np.arange(len(rows))
    colors = ["tab:blue" if r["kind"] == "entry" else "0.65" for r in rows]
    for ax, metric in zip(fig.subplots(1, len(metrics), squeeze=False)[0], metrics):
        stats = np.array([[np.nan if s is None else s for s in _stat(r, task, metric)] for r in rows])
        ax.bar(x, stats[:, 0], color=colors)
        # Clipped at 0: an interval need not contain the point estimate (e.g. BEST's Monte-Carlo one).
        err = np.clip(np.stack([stats[:, 0] - stats[:, 1], stats[:, 2] - stats[:, 0]]), 0, None)
        has = ~np.isnan(err).any(0)
        ax.errorbar(x[has], stats[has, 0], yerr=err[:, has], fmt="none", ecolor="black", capsize=3)
        ax.set_title(f"{metric} {_ARROWS.get(board['higher_is_better'].get(metric), '')}")
        ax.set_xticks(x, [r["name"] for r in rows], rotation=45, ha="right", fontsize=8)
    fig.suptitle(f"{task} (grey: reference rows)")
    return fig


def _reliability_figure(task: str, records: dict[str, list[dict]]) -> Figure:
    fig, axes = _panels(len(records), f"{task}: reliability diagram")
    for ax, (name, recs) in zip(axes, records.items()):
        q = [np.asarray(r["q"], dtype=float) for r in recs]
        top = np.array([qi.argmax() for qi in q])
        conf = np.array([qi[t] for qi, t in zip(q, top)])
        # A hit is the same event the acc metric counts: argmax q == argmax votes (first maximum).
        hit = np.array([np.argmax(r["counts"]) == t for r, t in zip(recs, top)], dtype=float)
        bins = np.array_split(np.argsort(conf, kind="stable"), min(N_BINS, len(conf)))
        ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1)
        ax.plot([conf[b].mean() for b in bins], [hit[b].mean() for b in bins], "o-", color="tab:blue")
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), title=name,
               xlabel="P(top option)", ylabel="top option = human majority")
    return fig


def _scatter_figure(task: str, records: dict[str, list[dict]]) -> Figure:
    fig, axes = _panels(len(records), f"{task}: probability of option A")
    for ax, (name, recs) in zip(axes, records.items()):
        voted = [r for r in recs if sum(r["counts"]) > 0]
        ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1)
        ax.scatter([r["q"][0] for r in voted], [r["counts"][0] / sum(r["counts"]) for r in voted],
                   s=8, alpha=0.4, color="tab:blue")
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), title=name, xlabel="model q(A)", ylabel="human share of A")
    return fig
