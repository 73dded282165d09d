"""Glue between lm-eval's task YAMLs and this package.

The YAMLs in ``moral_tasks/tasks`` point here with ``!function``: dataset
loading (``custom_dataset``), per-document ``process_results`` and one
corpus-level aggregation per metric of :data:`moral_tasks.metrics.METRICS`.

Each document's metric value is the same small record (document id, option
probabilities q, raw option log-likelihoods, vote counts), so lm-eval's
``--log_samples`` output is enough to recompute every metric and to pair
documents across models.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable

import numpy as np

from .metrics import core as metrics
from .metrics import intervals
from .metrics.best import best_scores
from .data import DataError, load_split, locate
from .prompts import PROMPT_VERSION, get_task

DEFAULT_SPLIT = "test"
DEFAULT_BEST_SAMPLES = 1000  # Monte-Carlo SE ~1e-4 on Scruples dev: far below the bootstrap interval widths
VALIDATION_SPLIT = "dev"


DEBIASED = "moral_dilemmas_debiased"
# Presentation orders of a two-option document: as in the data, and swapped.
ORDERS = {"AB": (0, 1), "BA": (1, 0)}


def _in_order(row: dict, order: tuple[int, ...]) -> dict:
    """The dilemma with its actions (and vote counts) presented in ``order``."""
    return {**row, "actions": [row["actions"][i] for i in order],
            "gold_annotations": [row["gold_annotations"][i] for i in order]}


def _human_counts(row: dict) -> list | None:
    # Dilemmas' dev/test splits have 5 more "human performance" votes per item (zeros elsewhere).
    human = row.get("human_perf_annotations")
    return list(human) if human and sum(human) > 0 else None


def build_dataset(task: str, split: str = DEFAULT_SPLIT, data_dir: str | None = None,
                  dirichlet_concentration: float | None = None,
                  bootstrap_resamples: int = intervals.DEFAULT_RESAMPLES, bootstrap_seed: int = intervals.DEFAULT_SEED,
                  best_samples: int = DEFAULT_BEST_SAMPLES, both_orders: bool = False):
    """A ``DatasetDict`` with ``test`` = the requested split and ``validation`` = dev.

    Columns added to the Scruples rows: ``choices`` (answer letters), ``target``
    (majority label index as presented), ``counts`` (votes in the data's label
    order), ``scoring`` (fixed Dirichlet scale and bootstrap settings:
    aggregations only see the per-document records, so settings travel with
    them) and ``data_source`` (provenance one-liner). With ``both_orders``
    (dilemmas only) every dilemma appears twice, actions as given (``order``
    "AB") and swapped ("BA"); the aggregation maps them back and averages.
    """
    import datasets

    spec = get_task(task)
    s_fixed = float(dirichlet_concentration) if dirichlet_concentration is not None else metrics.default_concentration(
        len(spec.labels)
    )
    if not s_fixed > 0:
        raise ValueError(f"{task}: metadata dirichlet_concentration must be > 0, got {dirichlet_concentration!r}")
    for name, value, least in (("bootstrap_resamples", bootstrap_resamples, 0), ("best_samples", best_samples, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{task}: metadata {name} must be a whole number >= {least}, got {value!r}")
    scoring = {"fixed_concentration": s_fixed, "bootstrap_resamples": bootstrap_resamples,
               "bootstrap_seed": int(bootstrap_seed), "best_samples": best_samples}

    orders = ORDERS if both_orders else {None: tuple(range(len(spec.labels)))}

    def to_dataset(split_name: str):
        loaded = load_split(spec, split_name, data_dir)
        rows = [
            {
                "id": row["id"],
                "doc": json.dumps(row if name is None else _in_order(row, order), ensure_ascii=False),
                "choices": list(spec.letters),
                "target": int(np.argmax([c[i] for i in order])),
                "counts": c,
                "human_counts": _human_counts(row),
                "scoring": scoring,
                "data_source": loaded.provenance_str,
                **({} if name is None else {"order": name}),
            }
            for row, c in zip(loaded.rows, loaded.counts)
            for name, order in orders.items()
        ]
        return datasets.Dataset.from_list(rows)

    splits = {"test": to_dataset(split)}
    if split == VALIDATION_SPLIT:
        splits["validation"] = splits["test"]
    elif _available(spec.dataset, VALIDATION_SPLIT, data_dir):
        # Only few-shot sampling reads it; a data_dir holding just the test file is fine.
        splits["validation"] = to_dataset(VALIDATION_SPLIT)
    return datasets.DatasetDict(splits)


def _available(dataset: str, split: str, data_dir: str | None) -> bool:
    try:
        locate(dataset, split, data_dir)
    except DataError:
        return False
    return True


def _loader(task: str, both_orders: bool = False) -> Callable[..., Any]:
    def load(split: str = DEFAULT_SPLIT, data_dir: str | None = None, dirichlet_concentration: float | None = None,
             bootstrap_resamples: int = intervals.DEFAULT_RESAMPLES, bootstrap_seed: int = intervals.DEFAULT_SEED,
             best_samples: int = DEFAULT_BEST_SAMPLES, **_: Any):
        # lm-eval passes all task metadata (model_args, version, ...) as keywords; ignore the rest.
        return build_dataset(task, split=split, data_dir=data_dir, dirichlet_concentration=dirichlet_concentration,
                             bootstrap_resamples=bootstrap_resamples, bootstrap_seed=bootstrap_seed,
                             best_samples=best_samples, both_orders=both_orders)

    load.__name__ = load.__qualname__ = f"load_{DEBIASED if both_orders else task}"
    return load


load_moral_dilemmas = _loader("moral_dilemmas")
load_moral_dilemmas_debiased = _loader("moral_dilemmas", both_orders=True)
load_moral_anecdotes = _loader("moral_anecdotes")
load_moral_anecdotes_binary = _loader("moral_anecdotes_binary")


def _row(doc: dict) -> dict:
    # The original Scruples row is kept as a JSON string: its nested fields vary
    # between rows (``action`` may be null), which Arrow columns do not allow.
    return json.loads(doc["doc"])


def _prompt(task: str) -> Callable[[dict], str]:
    spec = get_task(task)

    def doc_to_text(doc: dict) -> str:
        return spec.prompt(_row(doc))

    doc_to_text.__name__ = doc_to_text.__qualname__ = f"doc_to_text_{task}"
    return doc_to_text


doc_to_text_moral_dilemmas = _prompt("moral_dilemmas")
doc_to_text_moral_anecdotes = _prompt("moral_anecdotes")
doc_to_text_moral_anecdotes_binary = _prompt("moral_anecdotes_binary")


def process_results(doc: dict, results: list) -> dict:
    """Per-document record, identical under every metric key (lm-eval needs one key per metric)."""
    option_loglik = np.array([float(r[0]) for r in results])
    logq = metrics.log_normalize(option_loglik)
    record = {
        "doc_id": doc["id"],
        "q": np.exp(logq).tolist(),
        "option_loglik": option_loglik.tolist(),
        "counts": list(doc["counts"]),
        "human_counts": doc["human_counts"],
        "scoring": dict(doc["scoring"]),
        "prompt_version": PROMPT_VERSION,
    }
    names = RESULT_NAMES
    if "order" in doc:
        record["order"] = doc["order"]
        names += DEBIASED_NAMES
    out: dict[str, Any] = {name: record for name in names}
    out["data_source"] = doc["data_source"]
    return out


# Every name an aggregation reports: the metrics, then their 95% bootstrap intervals
# under keys that cannot collide with lm-eval's "<metric>_stderr".
# BEST: the Scruples oracle ceiling for the documents evaluated (its _ci95 is +-1.96
# Monte-Carlo standard errors of the estimate, not a sampling interval).
BEST_NAMES = {"best_xentropy": "xentropy", "best_acc": "accuracy", "best_f1_macro": "f1_macro"}
RESULT_NAMES = (
    metrics.METRIC_NAMES
    + tuple(f"{name}_ci95" for name in metrics.METRIC_NAMES)
    + tuple(BEST_NAMES)
    + tuple(f"{name}_ci95" for name in BEST_NAMES)
)
# Only moral_dilemmas_debiased reports these: mean |q_AB - q_BA| (mapped back) over dilemmas.
DEBIASED_NAMES = ("order_effect", "order_effect_ci95")
# The last corpus scored ({"records", "key", "values"}). lm-eval hands every aggregation its
# own list of the same record objects, so an identity check avoids re-hashing 2,500 records
# for each of ~40 aggregations; the content key catches copies (e.g. gathered across ranks).
_CACHE: dict = {}


def debias(records: list[dict]) -> tuple[list[dict], np.ndarray]:
    """Average each dilemma's two presentation orders, mapped back to the data's order."""
    by_id: dict[str, dict] = {}
    for r in records:
        by_id.setdefault(r["doc_id"], {})[r["order"]] = r
    unpaired = [doc_id for doc_id, pair in by_id.items() if set(pair) != set(ORDERS)]
    if unpaired:
        raise ValueError(
            f"{DEBIASED}: {len(unpaired)} dilemma(s) were scored in only one order (e.g. {unpaired[0]}); "
            "every dilemma needs both, so use an even --limit"
        )
    combined, effects = [], []
    for pair in by_id.values():
        # Presented option i is original option order[i], so argsort(order) maps back.
        q = {name: np.exp(metrics.log_normalize(pair[name]["option_loglik"]))[np.argsort(order)]
             for name, order in ORDERS.items()}
        effects.append(abs(q["AB"][0] - q["BA"][0]))
        mean_q = (q["AB"] + q["BA"]) / 2
        combined.append({**pair["AB"], "option_loglik": np.log(mean_q).tolist()})
    return combined, np.array(effects)


def _best(counts: np.ndarray, records: list[dict], scoring: dict) -> dict:
    human = [r.get("human_counts") for r in records]
    # As Scruples: for dilemmas the prior is fitted on gold + human-performance votes.
    prior = counts + np.array(human) if all(h is not None for h in human) else None
    est = best_scores(counts.astype(np.int64), prior_counts=None if prior is None else prior.astype(np.int64),
                      n_samples=scoring["best_samples"], seed=scoring["bootstrap_seed"])
    out = {}
    for name, key in BEST_NAMES.items():
        half = 1.96 * est[f"{key}_stderr"]
        out[name], out[f"{name}_ci95"] = est[key], [est[key] - half, est[key] + half]
    return out


def corpus_metrics(records: list[dict]) -> dict:
    """Metrics and intervals for one list of per-document records (memoised: lm-eval calls every aggregation)."""
    last = _CACHE.get("records", [])
    if last and len(last) == len(records) and all(a is b for a, b in zip(last, records)):
        return _CACHE["values"]
    settings = {json.dumps(r["scoring"], sort_keys=True) for r in records}
    if len(settings) != 1:
        raise ValueError(f"documents disagree on their scoring settings: {sorted(settings)}")
    key = hashlib.sha256(json.dumps([[r["doc_id"], r.get("order"), r["option_loglik"], r["counts"]] for r in records])
                         .encode() + next(iter(settings)).encode()).hexdigest()
    if _CACHE.get("key") == key:
        _CACHE["records"] = list(records)  # also keeps their ids from being reused
        return _CACHE["values"]
    original = records
    scoring = records[0]["scoring"]
    resamples, seed = scoring["bootstrap_resamples"], scoring["bootstrap_seed"]
    effects = None
    if "order" in records[0]:
        records, effects = debias(records)
    logq = metrics.log_normalize(np.array([r["option_loglik"] for r in records], dtype=np.float64))
    counts = np.array([r["counts"] for r in records], dtype=np.float64)
    values: dict = metrics.compute_metrics(logq, counts, scoring["fixed_concentration"])
    if resamples:
        cis = intervals.bootstrap_intervals(logq, counts, scoring["fixed_concentration"], resamples, seed,
                                            full_sample=values)
        values.update({f"{name}_ci95": list(ci) for name, ci in cis.items()})
    values.update(_best(counts, records, scoring))
    if effects is not None:
        values["order_effect"] = float(effects.mean())
        if resamples:
            values["order_effect_ci95"] = list(intervals.mean_interval(effects, resamples, seed))
    _CACHE.update(records=list(original), key=key, values=values)
    return values


def _aggregation(name: str) -> Callable[[list], Any]:
    def aggregate(records: list):
        return corpus_metrics(records).get(name)

    aggregate.__name__ = aggregate.__qualname__ = f"agg_{name}"
    return aggregate


for _name in RESULT_NAMES + DEBIASED_NAMES:
    globals()[f"agg_{_name}"] = _aggregation(_name)


def agg_data_source(values: list[str]) -> str:
    sources = sorted(set(values))
    return sources[0] if len(sources) == 1 else " + ".join(sources)
