"""The leaderboard as one self-contained HTML page: summary, provenance, sortable tables, plots.

Plots are PNG data URIs and the sorting script is inline, so the page opens offline
and can be mailed or archived as a single file. The layout fits a 1280 px window:
tables have a fixed layout that wraps long names and intervals instead of scrolling.
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

from moral_tasks.metrics import core as M

from .report import sig

MISSING = "–"
FULL_COLUMNS = 10  # metric columns per "all metrics" table: more are split over several tables
MAX_PANELS = 12  # entries in reliability plots: keeps figures readable and the page small
NAME_CHARS = 40  # longer names are shortened in the tables (full name on hover)
N_BINS = M.ECE_BINS
_ARROWS = {True: "↑", False: "↓"}  # None: a fitted parameter, no direction
_REFERENCE_STYLE = {"uniform": ("0.5", ":"), "prior": ("tab:orange", "--"), "BEST": ("tab:green", "-")}

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(pathlib.Path(__file__).parent / "templates"),
    autoescape=True,  # the template's .j2 suffix would defeat select_autoescape
    undefined=jinja2.StrictUndefined,
)


def render_html(board: dict, path: pathlib.Path) -> None:
    entries = [r for r in board["rows"] if r["kind"] == "entry"]
    html = _ENV.get_template("leaderboard.html.j2").render(
        title=board["title"],
        summary=board.get("summary") or [],
        summary_figures=_summary_figures(board, entries),
        provenance=_provenance(board),
        warnings=board.get("warnings") or [],
        tasks=[_task_view(board, task, entries) for task in board["tasks"]],
        comparisons=[_comparison_cells(c) for c in board.get("comparisons") or []],
        consistency=[{"entry": r["name"], "task": task, **c} for r in entries
                     for task, c in (r.get("answer_consistency") or {}).items()],
        spreads=[{"entry": r["name"], "task": task, **s["xentropy"]} for r in entries
                 for task, s in (r.get("template_spread") or {}).items() if s["xentropy"]["n"]],
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


def _cell(value, low=None, high=None, best=False, fmt=sig, missing=MISSING) -> dict:
    if value is None:
        return {"value": missing, "ci": "", "sort": "", "best": False}
    ci = f"[{fmt(low, 3)}, {fmt(high, 3)}]" if low is not None and high is not None else ""
    return {"value": fmt(value), "ci": ci, "sort": repr(value), "best": best}


def _percent(x, digits=None) -> str:
    return f"{x:.0%}"


def _best(values: list[float | None], higher_is_better: bool | None) -> float | None:
    present = [v for v in values if v is not None]
    if higher_is_better is None or not present:
        return None
    return max(present) if higher_is_better else min(present)


def _label(metric: str) -> str:
    return metric.replace("_", " ")


def _table(board: dict, task: str, rows: list[dict], metrics: list[str], extra: bool, readouts: bool) -> dict:
    """One sortable table: entry rows, then reference rows that have a value in it (never a row of blanks)."""
    hib = board["higher_is_better"]
    # (label, title, higher_is_better, format, row -> (value, ci_low, ci_high))
    columns = [(_label(m), m, hib.get(m), sig, lambda r, m=m: _stat(r, task, m)) for m in metrics]
    if extra and any(_num((e.get("gap_closed") or {}).get(task)) is not None for e in rows):
        columns.append(("gap closed", "(base − entry) / (base − BEST) on xentropy", True, _percent,
                        lambda r: (_num((r.get("gap_closed") or {}).get(task)), None, None)))
    if extra and any(_num((e.get("option_mass") or {}).get(task)) is not None for e in rows):
        columns.append(("option mass", "mean probability of the option tokens before renormalising", True, sig,
                        lambda r: (_num((r.get("option_mass") or {}).get(task)), None, None)))
    references = [r for r in board["rows"] if r["kind"] == "reference"
                  and any(get(r)[0] is not None for *_, get in columns)]
    shown = rows + references
    view_rows = [{"name": r["name"], "short": _short(r["name"]), "kind": r["kind"], "cells": [],
                  "adapter": bool(r.get("base")), "base": r.get("base") or "", "error": _error_text(r, task),
                  "readout": (r.get("readout") or {}).get(task, "")} for r in shown]
    for _, _, higher, fmt, get in columns:
        stats = [get(r) for r in shown]
        best = _best([s[0] for s, r in zip(stats, shown) if r["kind"] == "entry"], higher)
        for view, r, s in zip(view_rows, shown, stats):
            # A reference row shows only what it defines (the human row has no probabilities): blank, not a dash.
            view["cells"].append(_cell(*s, best=r["kind"] == "entry" and s[0] == best, fmt=fmt,
                                       missing="" if r["kind"] == "reference" else MISSING))
    return {"rows": view_rows, "readout_column": readouts,
            "columns": [{"label": label, "title": title, "arrow": _ARROWS.get(higher, "")}
                        for label, title, higher, *_ in columns]}


def _short(name: str, chars: int = NAME_CHARS) -> str:
    """Shortened in the middle: both a path's start and a checkpoint's end tell entries apart."""
    if len(name) <= chars:
        return name
    head = (chars - 1) // 2
    return name[:head] + "…" + name[len(name) - (chars - 1 - head):]


def _error_text(row: dict, task: str) -> str:
    errors = row.get("error") or {}
    if task in (row.get("metrics") or {}):
        return ""
    return errors.get(task) or errors.get("*") or ""


def _task_view(board: dict, task: str, entries: list[dict]) -> dict:
    on_task = [e for e in entries if task in e["metrics"] or _error_text(e, task)]
    headline = [m for m in board.get("headline") or [] if any(m in e["metrics"].get(task, {}) for e in on_task)]
    everything = [m for m in board["metrics"] if any(m in r["metrics"].get(task, {}) for r in board["rows"])]
    facts = (board.get("task_facts") or {}).get(task) or {}
    # Once a board compares readouts (log-probabilities, verbalized, sampling), every table says which it holds.
    readouts = len({f.get("readout") for f in (board.get("task_facts") or {}).values()}) > 1
    return {"name": task, "readout": facts.get("readout", ""), "n_docs": facts.get("n_docs"),
            "headline": _table(board, task, on_task, headline, extra=True, readouts=readouts),
            "full": [_table(board, task, on_task, everything[i:i + FULL_COLUMNS], extra=False, readouts=readouts)
                     for i in range(0, len(everything), FULL_COLUMNS)],
            "figures": _task_figures(board, task, on_task[:MAX_PANELS]),
            "truncated": MAX_PANELS if len(on_task) > MAX_PANELS else 0}


def _provenance(board: dict) -> dict:
    g = board["generated"]
    tasks = []
    for task in board["tasks"]:
        facts = (board.get("task_facts") or {}).get(task) or {}
        # The scalar settings (the prior and provenance in a record's scoring are shown elsewhere).
        scoring = {k: v for k, v in (facts.get("scoring") or {}).items()
                   if isinstance(v, (int, float, bool, str)) and k != "data_source"}
        tasks.append({"name": task, "data": facts.get("data") or [], "train": facts.get("train"),
                      "n_docs": facts.get("n_docs"), "scoring": scoring})
    return {"date": g["date"], "config": g.get("config"), "config_sha256": g.get("config_sha256"),
            "versions": g.get("versions") or {}, "runs": g.get("runs") or [], "tasks": tasks}


def _comparison_cells(c: dict) -> list[dict]:
    diff, low, high = (_num(c.get(k)) for k in ("mean_diff", "ci_low", "ci_high"))
    interval = ({"value": f"[{sig(low, 3)}, {sig(high, 3)}]", "sort": repr(low)}  # sorts on the lower bound
                if low is not None and high is not None else _cell(None))
    p, holm = _num(c.get("p_value")), _num(c.get("p_holm"))
    return [_text_cell(c["task"]), _text_cell(c["a"]), _text_cell(c["b"]), _cell(diff, fmt=lambda x, d=3: f"{x:+.3g}"),
            interval, _cell(p, fmt=lambda x, d=3: f"{x:.3g}"), _cell(holm, fmt=lambda x, d=3: f"{x:.3g}"),
            _text_cell("yes" if c.get("significant") else "no"),
            _cell(_num(c.get("n_docs")), fmt=lambda x, d=0: f"{x:.0f}")]


def _text_cell(text: str) -> dict:
    return {"value": text, "sort": text, "text": True}


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _summary_figures(board: dict, entries: list[dict]) -> list[dict]:
    figures = []
    scored = [t for t in board["tasks"] if any(_stat(e, t, "xentropy")[0] is not None for e in entries)]
    if scored:
        figures.append({"uri": _png(_xentropy_figure(board, scored, entries)),
                        "caption": "Cross-entropy per entry and task with 95% intervals (lower is better); "
                                   "vertical lines: reference rows"})
    gapped = [t for t in board["tasks"] if any(_num(e["gap_closed"].get(t)) is not None for e in entries)]
    if gapped:
        figures.append({"uri": _png(_gap_figure(gapped, entries)),
                        "caption": "Gap closed: the share of the distance from the base model to BEST that each "
                                   "adapter covers (100% = BEST, below 0 = worse than its base)"})
    return figures


def _task_figures(board: dict, task: str, entries: list[dict]) -> list[dict]:
    figures = []
    records = {e["name"]: recs for e in entries if (recs := ((board.get("records") or {}).get(e["name"]) or {})
                                                   .get(task))}
    if records:
        figures.append({"uri": _png(_reliability_figure(task, records)),
                        "caption": f"{task}: reliability of the top option ({N_BINS} equal-mass bins)"})
        if all(len(r.q) == 2 for recs in records.values() for r in recs):
            figures.append({"uri": _png(_scatter_figure(task, records)),
                            "caption": f"{task}: model vs human probability of option A"})
    return figures


def _xentropy_figure(board: dict, tasks: list[str], entries: list[dict]) -> Figure:
    references = {r["name"]: r for r in board["rows"] if r["kind"] == "reference"}
    fig = Figure(figsize=(min(13.5, 4.5 * len(tasks) + 2.5), 1.2 + 0.32 * len(entries)), layout="constrained")
    axes = fig.subplots(1, len(tasks), squeeze=False, sharey=True)[0]
    y = np.arange(len(entries))[::-1]
    for ax, task in zip(axes, tasks):
        stats = np.array([[np.nan if s is None else s for s in _stat(e, task, "xentropy")] for e in entries])
        err = np.clip(np.stack([stats[:, 0] - stats[:, 1], stats[:, 2] - stats[:, 0]]), 0, None)
        err = np.nan_to_num(err)
        ax.errorbar(stats[:, 0], y, xerr=err, fmt="o", color="tab:blue", ecolor="tab:blue", capsize=3)
        for name, (color, style) in _REFERENCE_STYLE.items():
            value = _stat(references.get(name, {}), task, "xentropy")[0]
            if value is not None:
                ax.axvline(value, color=color, ls=style, lw=1.2, label=f"{name} {sig(value, 3)}")
        ax.set_title(task)
        ax.set_xlabel("xentropy (nats) ↓")
        ax.legend(fontsize=7, loc="best")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, [_short(e["name"], 28) for e in entries], fontsize=8)
    return fig


def _gap_figure(tasks: list[str], entries: list[dict]) -> Figure:
    adapters = [e for e in entries if any(_num(e["gap_closed"].get(t)) is not None for t in tasks)]
    fig = Figure(figsize=(min(13.5, 4.5 * len(tasks) + 2.5), 1.2 + 0.32 * len(adapters)), layout="constrained")
    axes = fig.subplots(1, len(tasks), squeeze=False, sharey=True)[0]
    y = np.arange(len(adapters))[::-1]
    for ax, task in zip(axes, tasks):
        gaps = np.array([np.nan if (g := _num(e["gap_closed"].get(task))) is None else 100 * g for e in adapters])
        ax.barh(y, np.nan_to_num(gaps), color=["tab:green" if g >= 0 else "tab:red" for g in np.nan_to_num(gaps)])
        ax.axvline(0, color="0.3", lw=1)
        ax.axvline(100, color="tab:green", ls="-", lw=1, label="BEST")
        ax.set(title=task, xlabel="gap closed (%) ↑")
        ax.legend(fontsize=7)
    axes[0].set_yticks(y, [_short(e["name"], 28) for e in adapters], fontsize=8)
    return fig


def _panels(n: int, title: str, xlabel: str, ylabel: str) -> tuple[Figure, list]:
    """A grid of square panels sharing axes (labels on the outer ones only). No constrained layout:
    it costs seconds per figure with a dozen panels."""
    ncols = min(n, 5)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(2.5 * ncols + 0.8, 2.5 * nrows + 0.7))
    fig.subplots_adjust(left=0.8 / (2.5 * ncols + 0.8), right=0.98, bottom=0.5 / (2.5 * nrows + 0.7),
                        top=1 - 0.45 / (2.5 * nrows + 0.7), wspace=0.12, hspace=0.3)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(xlabel)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    fig.suptitle(title)
    return fig, list(axes.ravel()[:n])


def _reliability_figure(task: str, records: dict[str, list]) -> Figure:
    fig, axes = _panels(len(records), f"{task}: reliability diagram", "P(top option)", "top option = majority")
    for ax, (name, recs) in zip(axes, records.items()):
        q = np.array([r.q for r in recs], dtype=np.float64)
        # The ECE's own bins and events: the top option's probability, hit = argmax q is the majority vote.
        hit = q.argmax(1) == M.majority(np.array([r.counts for r in recs]))
        conf, accuracy, _ = M.reliability_points(q.max(1), hit, N_BINS)
        ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1)
        ax.plot(conf, accuracy, "o-", color="tab:blue")
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
        ax.set_title(_short(name, 28), fontsize=9)
    return fig


def _scatter_figure(task: str, records: dict[str, list]) -> Figure:
    fig, axes = _panels(len(records), f"{task}: probability of option A", "model q(A)", "human share of A")
    for ax, (name, recs) in zip(axes, records.items()):
        ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1)
        ax.scatter([r.q[0] for r in recs], [r.counts[0] / sum(r.counts) for r in recs], s=8, alpha=0.4,
                   color="tab:blue")
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
        ax.set_title(_short(name, 28), fontsize=9)
    return fig
