"""The board as tables: CSV (every number), Markdown (fits a README) and LaTeX (booktabs, for papers).

Markdown and LaTeX show 4 significant digits for values and 3 for interval
bounds; the CSV keeps full precision.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from .report import sig

PAPER = ("xentropy", "acc")  # headline metrics of the Markdown and LaTeX tables, each with its interval
NARROW_FROM = 3  # tasks from which the headline keeps only xentropy, so that it still fits a page


def paper_metrics(board: dict) -> tuple[str, ...]:
    return PAPER if len(board["tasks"]) < NARROW_FROM else PAPER[:1]


def _has_any(row: dict, metrics) -> bool:
    """Whether a reference row defines one of ``metrics`` somewhere (else it is left out, never a blank row)."""
    return row["kind"] != "reference" or any(m in t for t in row["metrics"].values() for m in metrics)
_ARROW = {True: "↑", False: "↓"}
_TEX_ARROW = {True: r"$\uparrow$", False: r"$\downarrow$"}


def write_csv(board: dict, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["entry", "kind", "task", "readout", "metric", "value", "ci_low", "ci_high", "error"])
        for row in board["rows"]:
            for task, metrics in row["metrics"].items():
                for metric, v in metrics.items():
                    writer.writerow([row["name"], row["kind"], task, (row.get("readout") or {}).get(task, ""), metric,
                                     v["value"], v.get("ci_low"), v.get("ci_high"), ""])
                if (gap := (row.get("gap_closed") or {}).get(task)) is not None:
                    writer.writerow([row["name"], row["kind"], task, row["readout"][task], "gap_closed", gap, None,
                                     None, ""])
            for task, spread in (row.get("template_spread") or {}).items():
                for stat in ("min", "max", "std"):
                    writer.writerow([row["name"], row["kind"], task, "logprob", f"xentropy_template_{stat}",
                                     spread["xentropy"][stat], None, None, ""])
            for task, c in (row.get("answer_consistency") or {}).items():
                writer.writerow([row["name"], row["kind"], task, "answer", "answer_consistency", c["rate"], None, None,
                                 ""])
            for task, error in (row.get("error") or {}).items():
                writer.writerow([row["name"], row["kind"], "" if task == "*" else task, "", "", None, None, None,
                                 error])


def _best_values(board: dict, task: str, metric: str) -> float | None:
    """The best entry value of a column (reference rows excluded)."""
    higher = board["higher_is_better"].get(metric)
    values = [r["metrics"][task][metric]["value"] for r in board["rows"]
              if r["kind"] == "entry" and metric in r["metrics"].get(task, {})]
    if higher is None or not values:
        return None
    return max(values) if higher else min(values)


def _md_cell(v: dict | None, with_ci: bool = True, bold: bool = False) -> str:
    if not v or v.get("value") is None:
        return ""
    text = sig(v["value"])
    text = f"**{text}**" if bold else text
    if with_ci and v.get("ci_low") is not None:
        text += f" [{sig(v['ci_low'], 3)}, {sig(v['ci_high'], 3)}]"
    return text


def _md_name(row: dict) -> str:
    name = row["name"].replace("|", "\\|")
    if row["kind"] == "reference":
        return f"*{name}*"
    if row.get("error"):
        return f"{name} (FAILED)"
    return f"↳ {name}" if row.get("base") else name


def write_markdown(board: dict, path: Path) -> None:
    g = board["generated"]
    lines = [f"# {board['title']}", "",
             f"Generated {g['date']} by moral-ambiguity {g['versions'].get('moral-ambiguity')} "
             f"(lm-eval {g['versions'].get('lm_eval', '?')}) from `{g['config']}`. "
             "Values: 4 significant digits [95% bootstrap interval]; BEST's interval is its Monte-Carlo error. "
             "Bold: best entry per column.", ""]
    # The warnings that change what a number is (the data, a failed entry, which run, how many documents).
    lines += [f"> **Warning:** {w['text']}" for w in board["warnings"]
              if w["kind"] in ("sample", "failed", "runs", "limit")]
    lines += [""] + [f"- data of `{task}`: " + "; ".join(f"`{s}`" for s in facts["data_sources"])
                     for task, facts in board["task_facts"].items() if facts["data_sources"]]
    lines += ["", "## Summary", ""]
    for item in board["summary"]:
        lines.append(f"- **{item['task']}**: " + " ".join(item["sentences"]))
        lines += [f"  - {d}" for d in item["differences"]]
    tasks = board["tasks"]
    paper = paper_metrics(board)
    headers = ["entry"]
    for task in tasks:
        headers += [f"{task} {m} {_ARROW.get(board['higher_is_better'].get(m), '')}".strip() for m in paper]
        if any((r.get("gap_closed") or {}).get(task) is not None for r in board["rows"]):
            headers.append(f"{task} gap closed")
    lines += ["", "## Headline", "", "| " + " | ".join(headers) + " |", "|---" * len(headers) + "|"]
    for row in [r for r in board["rows"] if _has_any(r, paper)]:
        cells = [_md_name(row)]
        for task in tasks:
            metrics = row["metrics"].get(task, {})
            cells += [_md_cell(metrics.get(m), bold=row["kind"] == "entry" and metrics.get(m) is not None
                               and metrics[m]["value"] == _best_values(board, task, m)) for m in paper]
            if any((r.get("gap_closed") or {}).get(task) is not None for r in board["rows"]):
                gap = (row.get("gap_closed") or {}).get(task)
                cells.append("" if gap is None else f"{gap:.1%}")
        lines.append("| " + " | ".join(cells) + " |")
    for task in tasks:
        shown = [m for m in board["metrics"] if any(m in r["metrics"].get(task, {}) for r in board["rows"])]
        lines += ["", f"## {task}: all metrics", "", "| entry | " + " | ".join(shown) + " |",
                  "|---" * (len(shown) + 1) + "|"]
        for row in board["rows"]:
            if task in row["metrics"]:
                lines.append(f"| {_md_name(row)} | " + " | ".join(
                    _md_cell(row["metrics"][task].get(m), with_ci=False) for m in shown) + " |")
    if board["comparisons"]:
        lines += ["", "## Paired comparisons (per-document xentropy, a − b; paired bootstrap; Holm over all tests)",
                  "", "| task | a | b | mean diff [95% CI] | p | p (Holm) | docs |", "|---|---|---|---|---|---|---|"]
        for c in board["comparisons"]:
            lines.append(f"| {c['task']} | {c['a']} | {c['b']} | {c['mean_diff']:+.3g} [{c['ci_low']:+.3g}, "
                         f"{c['ci_high']:+.3g}] | {c['p_value']:.3g} | {c['p_holm']:.3g} | {c['n_docs']} |")
    consistency = [(r["name"], task, c) for r in board["rows"] for task, c in (r.get("answer_consistency") or {}).items()]
    if consistency:
        lines += ["", "## Answer consistency (first-token argmax vs the written answer, same prompt)", "",
                  "| entry | task | differ | compared | unparsed | rate |", "|---|---|---|---|---|---|"]
        for name, task, c in consistency:
            rate = "" if c["rate"] is None else f"{c['rate']:.1%}"
            lines.append(f"| {name} | {task} | {c['differ']} | {c['compared']} | {c['unparsed']} | {rate} |")
    spreads = [(r["name"], task, s) for r in board["rows"] for task, s in (r.get("template_spread") or {}).items()]
    if spreads:
        lines += ["", "## Prompt sensitivity (xentropy over the prompt templates run)", "",
                  "| entry | task | templates | min | max | std |", "|---|---|---|---|---|---|"]
        for name, task, s in spreads:
            x = s["xentropy"]
            if x["n"]:
                lines.append(f"| {name} | {task} | {', '.join(t for t, v in x['templates'].items() if v is not None)} | "
                             f"{x['min']:.4g} | {x['max']:.4g} | {x['std']:.3g} |")
    failed = [r for r in board["rows"] if r.get("error")]
    if failed:
        lines += ["", "## Failed entries", ""]
        lines += [f"- {r['name']}: " + "; ".join(f"{t}: {e}" if t != "*" else e for t, e in r["error"].items())
                  for r in failed]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


_TEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    return re.sub(r"[\\&%$#_{}~^]", lambda m: _TEX_SPECIALS[m.group()], str(text))


def _tex_cell(v: dict | None, bold: bool) -> str:
    if not v or v.get("value") is None:
        return ""
    value = sig(v["value"])
    text = rf"\textbf{{{value}}}" if bold else value
    if v.get("ci_low") is not None:
        text += rf" {{\scriptsize[{sig(v['ci_low'], 3)}, {sig(v['ci_high'], 3)}]}}"
    return text


def write_latex(board: dict, path: Path) -> None:
    """A booktabs table of the headline metrics with intervals; reference rows below the entries."""
    tasks = board["tasks"]
    hib = board["higher_is_better"]
    paper = paper_metrics(board)
    n = len(paper)
    # Once the board holds several readouts, each task's header says which it is (as the HTML's readout column).
    readout = {t: (board.get("task_facts") or {}).get(t, {}).get("readout", "") for t in tasks}
    heads = {t: f"{t} ({readout[t]})" if len(set(readout.values())) > 1 else t for t in tasks}
    lines = [f"% {board['title']}: generated {board['generated']['date']} by moral-ambiguity "
             f"{board['generated']['versions'].get('moral-ambiguity')}. Needs \\usepackage{{booktabs}}.",
             r"\begin{table}[t]", r"\centering", r"\small",
             r"\begin{tabular}{l" + ("r" * n) * len(tasks) + "}", r"\toprule",
             " & ".join(["", *(rf"\multicolumn{{{n}}}{{c}}{{{tex_escape(heads[t])}}}" for t in tasks)]) + r" \\",
             " ".join(rf"\cmidrule(lr){{{2 + i * n}-{1 + (i + 1) * n}}}" for i in range(len(tasks))),
             " & ".join(["Model", *(f"{tex_escape(m)} {_TEX_ARROW.get(hib.get(m), '')}".strip()
                                    for _ in tasks for m in paper)]) + r" \\",
             r"\midrule"]
    kinds = ("entry", "reference")
    for kind in kinds:
        rows = [r for r in board["rows"] if r["kind"] == kind and _has_any(r, paper)]
        for row in rows:
            name = tex_escape(row["name"])
            cells = [rf"\textit{{{name}}}" if kind == "reference" else name]
            for task in tasks:
                metrics = row["metrics"].get(task, {})
                cells += [_tex_cell(metrics.get(m), kind == "entry" and metrics.get(m) is not None
                                    and metrics[m]["value"] == _best_values(board, task, m)) for m in paper]
            lines.append(" & ".join(cells) + r" \\")
        if kind == "entry" and rows:
            lines.append(r"\midrule")
    accuracy = r" and accuracy against the majority vote" if "acc" in paper else ""
    lines += [r"\bottomrule", r"\end{tabular}",
              r"\caption{Cross-entropy against the human vote distribution (nats, lower is better)" + accuracy +
              r", with 95\% bootstrap intervals; bold: best model per column. Reference rows in italics: "
              r"BEST is the oracle ceiling, prior the train-split class frequencies.}",
              r"\label{tab:moral-ambiguity}", r"\end{table}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
