"""The leaderboard as one dict: entry rows, reference rows per task, paired tests, summary, provenance.

Reference rows are computed per task, from that task's own documents and
scoring settings (never from another task or from the first entry):

* ``uniform``: q = 1/K; ``prior``: the class frequencies of the task's TRAIN split;
* ``human``: Scruples' extra human-performance votes, only the metrics they define;
* ``BEST``: the oracle ceiling the task reported, taken from the entries that
  scored every document of the task with the same settings (they must agree).

The CSV, Markdown, LaTeX and HTML writers render this dict.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import re
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np

from moral_tasks import __version__
from moral_tasks.data import SAMPLE_DIR, DataError, cache_dir, load_split, locate, sha256_file
from moral_tasks.data.files import ENV_DATA_DIR
from moral_tasks.metrics import core as M
from moral_tasks.metrics.intervals import bootstrap_intervals, mean_interval, resample_weights
from moral_tasks.metrics.reference import class_prior, constant_logq, human_row

from moral_tasks.prompts import get_task, template_siblings
from moral_tasks.readouts.analysis import answer_consistency, consistency_pairs, template_spread

from .config import task_spec

HEADLINE = ("xentropy", "dirichlet_nll", "acc", "tvd", "ece")
# Order of the full tables; any other metric a task reports follows these.
SHOWN = ("xentropy", "calibrated_xentropy", "calibrated_xentropy_insample", "dirichlet_nll", "dirichlet_nll_fixed",
         "acc", "f1_macro", "brier", "ece", "jsd", "tvd", "order_effect", "option_mass", "variant_mass")
# Prefixes of what is not an entry's score: fitted parameters, counts, and baselines that are reference rows here.
HIDDEN = ("temperature", "dirichlet_concentration", "documents", "xentropy_uniform", "xentropy_prior")
REFERENCES = ("BEST", "human", "prior", "uniform")
PAIRED_RESAMPLES = 5000
ALPHA = 0.05
LOW_OPTION_MASS = 0.5
PACKAGES = ("moral-ambiguity", "lm_eval", "transformers", "torch", "peft", "numpy", "scipy")
_SOURCE = re.compile(r"(?P<source>\w+):(?P<dataset>\S+)/(?P<split>[^/\s]+) rows=(?P<rows>\d+) "
                     r"skipped_zero_votes=(?P<skipped>\d+) sha256:(?P<sha>[0-9a-f]+)")


class ReportError(ValueError):
    """The results cannot be put on one board (e.g. one task scored with different settings)."""


def _arrays(records) -> tuple[np.ndarray, np.ndarray]:
    q = np.array([r.q for r in records], dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.log(q), np.array([r.counts for r in records], dtype=np.float64)


def _stat(value, interval=None) -> dict:
    low, high = interval if interval is not None else (None, None)
    return {"value": float(value), "ci_low": low, "ci_high": high}


def readout_of(task: str) -> str:
    """logprob, verbalized, sampling or answer (moral_tasks.prompts: the task spec says)."""
    return get_task(task).readout


def _scored(counts: np.ndarray, logq: np.ndarray, scoring: dict) -> dict:
    values = M.compute_metrics(logq, counts, scoring.get("fixed_concentration"))
    cis = {}
    if scoring.get("bootstrap_resamples"):
        cis = bootstrap_intervals(logq, counts, scoring.get("fixed_concentration"), scoring["bootstrap_resamples"],
                                  scoring.get("bootstrap_seed", 0), full_sample=values)
    # Scores only: not the fitted parameters, nor their at-bound flags (bools).
    return {m: _stat(v, cis.get(m)) for m, v in values.items()
            if not m.startswith(HIDDEN) and not isinstance(v, bool)}


def _data_dir(source: str, results: list[dict]) -> Path:
    """Where the task's data files are: the bundled sample, the runs' data_dir, $MORAL_AMBIGUITY_DATA_DIR or the
    cache, named explicitly so that a missing file is an error rather than a silent fall back to the sample."""
    if source.startswith("sample:"):
        return SAMPLE_DIR
    given = next((r["metadata"].get("data_dir") for r in results if r["metadata"].get("data_dir")), None)
    return Path(given or os.environ.get(ENV_DATA_DIR) or cache_dir()).expanduser()


def _train_counts(task: str, results: list[dict]) -> tuple[np.ndarray, dict]:
    """Vote counts of the task's TRAIN split, from the same place as the data the task was scored on."""
    spec = task_spec(task)
    source = next((r["data_source"] for r in results if r.get("data_source")), "") or ""
    loaded = load_split(spec, "train", _data_dir(source, results))
    if loaded.source != source.partition(":")[0]:
        raise DataError(f"the task was scored on {source.partition(':')[0] or 'unknown'} data but its train split "
                        f"is {loaded.source} data ({loaded.path})")
    return np.array(loaded.counts, dtype=np.float64), loaded.provenance


def task_references(task: str, entries: dict[str, dict]) -> tuple[dict[str, dict], dict, list[str]]:
    """(reference rows, task facts, warnings) for one task; ``entries``: {entry name: its result on the task}."""
    warnings: list[str] = []
    settings = {name: r["records"][0].scoring for name, r in entries.items() if r["records"]}
    distinct = {json.dumps(s, sort_keys=True) for s in settings.values()}
    if len(distinct) > 1:
        detail = "; ".join(f"{name}: {json.dumps(s, sort_keys=True)}" for name, s in settings.items())
        raise ReportError(f"task {task}: entries were scored with different settings, so their numbers are not "
                          f"comparable ({detail})")
    scoring = next(iter(settings.values()), {})
    docs: dict[str, object] = {}
    for result in entries.values():
        for record in result["records"]:
            docs.setdefault(record.doc_id, record)
    facts = {"task": task, "readout": readout_of(task), "scoring": scoring, "n_docs": len(docs),
             "data_sources": sorted({r["data_source"] for r in entries.values() if r.get("data_source")}),
             "coverage": {name: len(r["records"]) for name, r in entries.items()}}
    for name, result in entries.items():
        if result.get("disagreements"):
            warnings.append(f"{name} on {task}: its samples file {result['samples_file']} does not reproduce the "
                            f"reported {', '.join(result['disagreements'])}: the numbers shown are the samples' ")
        if not result["records"]:
            warnings.append(f"{name} on {task}: no samples file (run lm_eval with --log_samples): no reliability "
                            "diagram or paired test, and the reference rows do not use it")
        elif len(result["records"]) < len(docs):
            warnings.append(f"{name} on {task}: scored {len(result['records'])} of the {len(docs)} documents "
                            "the other entries scored: its numbers are not comparable with the reference rows")
    rows: dict[str, dict] = {}
    full = [r for r in entries.values() if r["records"] and len(r["records"]) == len(docs)]
    bests = [{m.removeprefix("best_"): v for m, v in r["metrics"].items() if m.startswith("best_")} for r in full]
    bests = [b for b in bests if b]
    if bests:
        if any({m: v["value"] for m, v in b.items()} != {m: v["value"] for m, v in bests[0].items()} for b in bests):
            warnings.append(f"BEST on {task}: entries report different values for the same documents and settings "
                            "(different moral-ambiguity versions?): the first entry's is shown")
        rows["BEST"] = bests[0]
    elif entries:
        warnings.append(f"BEST on {task}: no entry reports it for all {len(docs)} documents: no BEST row")
    if not docs:
        return rows, facts, warnings
    records = list(docs.values())
    counts = np.array([r.counts for r in records], dtype=np.float64)
    n, k = counts.shape
    # A flat q has no top option: its acc, F1 and ECE would be those of "always the first label", an artefact
    # of the label order, so the uniform row leaves them out.
    rows["uniform"] = {m: v for m, v in _scored(counts, constant_logq(np.ones(k), n), scoring).items()
                       if m not in ("acc", "f1_macro", "ece")}
    prior = scoring.get("prior")  # the train class frequencies the task itself scored with, carried by its records
    try:
        train, facts["train"] = _train_counts(task, list(entries.values()))
        if prior is None:
            prior = class_prior(train)
    except DataError as exc:
        if prior is None:
            warnings.append(f"prior on {task}: no TRAIN split to take class frequencies from ({exc}): no prior row")
    if prior is not None:
        rows["prior"] = _scored(counts, constant_logq(prior, n), scoring)
    human = [r.human_counts for r in records]
    if all(h is not None for h in human):
        scores = human_row(counts, human)
        correct = (M.majority(np.array(human)) == M.majority(counts)).astype(float)
        resamples = scoring["bootstrap_resamples"]  # 0: no intervals, as for every other row
        rows["human"] = {"acc": _stat(scores["acc"], mean_interval(correct, resamples, scoring["bootstrap_seed"])
                                      if resamples else None),
                         "f1_macro": _stat(scores["f1_macro"])}
    return rows, facts, warnings


def gap_closed(tuned: dict, base: dict, best: dict) -> float | None:
    """(base - tuned) / (base - BEST) on xentropy: the share of the reachable improvement achieved."""
    try:
        b, t, ceiling = base["xentropy"]["value"], tuned["xentropy"]["value"], best["xentropy"]["value"]
    except (KeyError, TypeError):
        return None
    return None if b == ceiling else (b - t) / (b - ceiling)


def paired_comparison(records_a, records_b, resamples: int = PAIRED_RESAMPLES, seed: int = 0) -> dict:
    """Paired bootstrap on per-document xentropy (a - b) over the documents both entries scored."""
    by_id_b = {r.doc_id: r for r in records_b}
    pairs = [(r, by_id_b[r.doc_id]) for r in records_a if r.doc_id in by_id_b]
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


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order."""
    m = len(p_values)
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(np.argsort(p_values, kind="stable")):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def grouped(entries: list) -> list:
    """Entries ordered by base model: each base followed by its adapters, in board order otherwise."""
    names = {e.name for e in entries}
    roots = [e for e in entries if e.base not in names]
    out = []
    for root in roots:
        out.append(root)
        out += [e for e in entries if e.base == root.name]
    return out + [e for e in entries if e not in out]


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            out[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            continue
    out["moral-ambiguity"] = __version__
    return out


def _data_facts(task: str, facts: dict, results: list[dict]) -> list[dict]:
    """Each data file the task was scored on: source, split, rows, SHA-256 (in full when the file is here)."""
    out = []
    for text in facts["data_sources"]:
        for part in text.split(" + "):
            m = _SOURCE.match(part)
            if not m:
                out.append({"text": part, "sample": part.startswith("sample:")})
                continue
            sha = m["sha"]
            try:
                path, _ = locate(task_spec(task).dataset, m["split"], _data_dir(part, results))
                full = sha256_file(path)
                sha = full if full.startswith(sha) else sha
            except DataError:
                pass
            out.append({"source": m["source"], "dataset": m["dataset"], "split": m["split"], "rows": int(m["rows"]),
                        "skipped": int(m["skipped"]), "sha256": sha, "sample": m["source"] == "sample"})
    return out


def build_board(board, results: dict[str, dict[str, dict]], failures: dict[str, dict[str, str]] | None = None,
                title: str | None = None) -> dict:
    """The leaderboard as one dict. ``failures``: {entry: {task or "*": one-line error}} of what has no result."""
    failures = failures or {}
    entries = grouped(board.entries)
    tasks = {}
    warnings: list[dict] = []
    for task in board.tasks:
        on_task = {e.name: results[e.name][task] for e in entries if task in results.get(e.name, {})}
        refs, facts, task_warnings = task_references(task, on_task)
        # Name the references' in-sample fits as the entries do (e.g. calibrated_xentropy_insample).
        reported = {m for r in on_task.values() for m in r["metrics"]}
        for row in refs.values():
            for m in [m for m in row if m not in reported and f"{m}_insample" in reported]:
                row[f"{m}_insample"] = row.pop(m)
        facts["data"] = _data_facts(task, facts, list(on_task.values()))
        tasks[task] = {"references": refs, **facts}
        warnings += [{"kind": "coverage", "text": w} for w in task_warnings]

    sampled = [task for task in board.tasks if any(d.get("sample") for d in tasks[task]["data"])]
    if sampled:
        warnings.insert(0, {"kind": "sample", "text": f"{', '.join(sampled)}: scored on the BUNDLED SAMPLE "
                            "(40 hand-written items), not Scruples data: no number here may be compared with a "
                            "published one"})
    rows = []
    for entry in entries:
        mine = results.get(entry.name, {})
        metrics = {task: mine[task]["metrics"] for task in board.tasks if task in mine}
        gaps, mass = {}, {}
        for task in metrics:
            base = results.get(entry.base or "", {}).get(task)
            if base:
                gaps[task] = gap_closed(metrics[task], base["metrics"], tasks[task]["references"].get("BEST", {}))
            records = mine[task]["records"]
            if "option_mass" in metrics[task]:
                mass[task] = metrics[task]["option_mass"]["value"]
            elif records:
                mass[task] = float(np.mean([r.option_mass for r in records]))
            if task in mass and mass[task] < LOW_OPTION_MASS:
                warnings.append({"kind": "option_mass", "text": f"{entry.name} on {task}: mean option mass "
                                 f"{mass[task]:.3g} < {LOW_OPTION_MASS}: the option letters get little of the "
                                 "model's probability, so q is read from a small part of it"})
            if mine[task].get("earlier_runs"):
                warnings.append({"kind": "runs", "text": f"{entry.name} on {task}: {len(mine[task]['earlier_runs']) + 1} "
                                 f"runs in its results folder; the newest ({mine[task]['results_file']}) is shown, "
                                 f"not {', '.join(mine[task]['earlier_runs'])}"})
            if mine[task].get("limit") is not None:
                warnings.append({"kind": "limit", "text": f"{entry.name} on {task}: lm_eval ran with --limit "
                                 f"{mine[task]['limit']}: the first documents of the split, not all of it"})
            uniform = tasks[task]["references"].get("uniform", {}).get("xentropy")
            x = metrics[task].get("xentropy")
            if uniform and x and x["value"] > uniform["value"]:
                warnings.append({"kind": "uniform", "text": f"{entry.name} on {task}: xentropy {x['value']:.4g} is "
                                 f"worse than the uniform distribution's {uniform['value']:.4g}"})
        consistency = {}
        for logprob_task, answer_task in consistency_pairs([t for t in board.tasks if t in mine]):
            answers = mine[answer_task]["records"] + mine[answer_task].get("unread", [])
            if mine[logprob_task]["records"] and answers:
                consistency[logprob_task] = answer_consistency(mine[logprob_task]["records"], answers)
        spread = {}
        for task in metrics:
            siblings = [t for t in template_siblings(task) if t in metrics]
            if len(siblings) > 1 and task == siblings[0]:
                values = {t: {m: v["value"] for m, v in metrics[t].items()} for t in siblings}
                spread[get_task(task).name] = template_spread(values, task)
        row = {"name": entry.name, "kind": "entry", "model": entry.model, "base": entry.base, "gap_closed": gaps,
               "answer_consistency": consistency, "template_spread": spread,
               "option_mass": mass, "metrics": metrics, "readout": {t: readout_of(t) for t in metrics},
               "higher_is_better": {t: mine[t].get("higher_is_better") or {} for t in metrics}}
        if entry.name in failures:
            row["error"] = failures[entry.name]
            warnings.append({"kind": "failed", "text": f"{entry.name} FAILED: " + "; ".join(
                f"{t}: {e}" if t != "*" else e for t, e in failures[entry.name].items())})
        rows.append(row)
    for ref in REFERENCES:
        metrics = {task: tasks[task]["references"][ref] for task in board.tasks if ref in tasks[task]["references"]}
        if metrics:
            rows.append({"name": ref, "kind": "reference", "metrics": metrics})

    comparisons = _comparisons(board, results, entries, warnings)
    hib = {m.name: m.higher_is_better for m in M.METRICS} | {"order_effect": False, "option_mass": True,
                                                              "variant_mass": None}
    for row in rows:
        for task_hib in (row.get("higher_is_better") or {}).values():
            hib.update({k: v for k, v in task_hib.items() if k not in hib})
    reported = {m for r in rows for t in r["metrics"].values() for m in t if not m.startswith(HIDDEN + ("best_",))}
    metric_order = [m for m in SHOWN if m in reported] + sorted(reported - set(SHOWN))
    out = {
        "title": title or board.title or "moral-ambiguity leaderboard",
        "generated": {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                      "versions": _versions(), "config": board.source, "config_sha256": _sha_of(board.source),
                      "runs": sorted({r["results_file"] for m in results.values() for r in m.values()})},
        "tasks": board.tasks,
        "task_facts": tasks,
        "metrics": metric_order,
        "headline": [m for m in HEADLINE if m in reported],
        "higher_is_better": hib,
        "rows": rows,
        "records": {e.name: {t: results[e.name][t]["records"] for t in board.tasks if t in results.get(e.name, {})}
                    for e in entries},
        "comparisons": comparisons,
        "warnings": warnings,
    }
    out["summary"] = summary(out)
    return out


def _sha_of(source: str) -> str | None:
    path = Path(source.split(", ")[0]) if source else None
    return hashlib.sha256(path.read_bytes()).hexdigest() if path and path.is_file() else None


def _comparisons(board, results: dict, entries: list, warnings: list[dict]) -> list[dict]:
    comparisons = []
    pairs = list(board.compare) + [(e.name, e.base) for e in entries if e.base]
    for a, b in dict.fromkeys(pairs):
        for task in board.tasks:
            ra, rb = results.get(a, {}).get(task), results.get(b, {}).get(task)
            if ra and rb and ra["records"] and rb["records"]:
                try:
                    comparisons.append({"task": task, "a": a, "b": b,
                                        **paired_comparison(ra["records"], rb["records"])})
                except ValueError as exc:
                    warnings.append({"kind": "coverage", "text": f"{a} vs {b} on {task}: not compared ({exc})"})
    # One model's readouts side by side: each generation readout against its log-probability task,
    # on the documents both read (the same prompt and data; Holm over these and the entry pairs together).
    for entry in entries:
        mine = results.get(entry.name, {})
        for task in board.tasks:
            spec = get_task(task)
            if spec.readout == "logprob" or spec.base_name not in mine or task not in mine:
                continue
            ra, rb = mine[task], mine[spec.base_name]
            if not (ra["records"] and rb["records"]):
                continue
            a, b = f"{entry.name} ({spec.readout})", f"{entry.name} (logprob)"
            try:
                comparisons.append({"task": task, "a": a, "b": b, "kind": "readout", "entry": entry.name,
                                    "logprob_task": spec.base_name, **paired_comparison(ra["records"], rb["records"])})
            except ValueError as exc:
                warnings.append({"kind": "coverage", "text": f"{a} vs {b} on {task}: not compared ({exc})"})
    for c, adjusted in zip(comparisons, holm([c["p_value"] for c in comparisons])):
        c["p_holm"] = adjusted
        c["significant"] = adjusted < ALPHA
    return comparisons


def summary(board: dict) -> list[dict]:
    """Per task: the best entry by xentropy, its interval, gap closed, and the significant paired differences."""
    out = []
    n_tests = len(board["comparisons"])
    for task in board["tasks"]:
        scored = [r for r in board["rows"] if r["kind"] == "entry" and "xentropy" in r["metrics"].get(task, {})]
        item = {"task": task, "best": None, "sentences": [], "differences": []}
        if scored:
            best = min(scored, key=lambda r: r["metrics"][task]["xentropy"]["value"])
            x = best["metrics"][task]["xentropy"]
            item["best"] = {"name": best["name"], "xentropy": x, "gap_closed": best["gap_closed"].get(task),
                            "base": best["base"]}
            ci = f" (95% CI {sig(x['ci_low'])}–{sig(x['ci_high'])})" if x.get("ci_low") is not None else ""
            item["sentences"].append(f"Best entry: {best['name']}, xentropy {sig(x['value'])} nats{ci}.")
            gap = best["gap_closed"].get(task)
            if gap is not None:
                item["sentences"].append(f"It closes {gap:.0%} of the gap between its base model {best['base']} "
                                         "and the BEST ceiling.")
            elif best["base"] is None:
                item["sentences"].append("It is not an adapter of another entry on the board: no gap closed.")
        significant = [c for c in board["comparisons"] if c["task"] == task and c["significant"]]
        for c in significant:
            a_better = c["mean_diff"] < 0
            better, worse = (c["a"], c["b"]) if a_better else (c["b"], c["a"])
            low, high = (-c["ci_high"], -c["ci_low"]) if a_better else (c["ci_low"], c["ci_high"])
            item["differences"].append(
                f"{better} has lower xentropy than {worse} by {sig(abs(c['mean_diff']))} nats "
                f"(95% CI {sig(low)}–{sig(high)}, Holm-adjusted p = {c['p_holm']:.3g}, {c['n_docs']} documents).")
        tested = sum(c["task"] == task for c in board["comparisons"])
        if tested and not significant:
            item["sentences"].append(f"None of its {tested} paired comparisons is significant after a Holm "
                                     f"correction over all {n_tests} at {ALPHA}.")
        elif significant:
            item["sentences"].append(f"{len(significant)} of its {tested} paired comparisons stay significant after "
                                     f"a Holm correction over all {n_tests} at {ALPHA}:")
        out.append(item)
    return out


def sig(x, digits: int = 4) -> str:
    """``digits`` significant digits, never scientific notation for the magnitudes we print."""
    if x is None:
        return ""
    x = float(x)
    if x == 0 or not np.isfinite(x):
        return f"{x:g}"
    decimals = max(0, digits - 1 - int(np.floor(np.log10(abs(x)))))
    text = f"{x:.{decimals}f}"
    if decimals and abs(float(text)) >= 10.0 ** (digits - decimals):  # rounding carried a digit: 0.99999 -> 1.000
        text = f"{x:.{decimals - 1}f}"
    return text
