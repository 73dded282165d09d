"""Evaluation speed of the moral tasks through lm-eval's HF backend, and of their metric aggregation.

Measures, on ``moral_anecdotes`` (5 single-token options per document):

* ``ours``: ``HFLM`` as lm-eval builds it by default (``logits_cache=True``): the five
  options of a document share its context, so one forward pass scores them all;
* ``per_option``: the same task with ``HFLM(logits_cache=False)``: one forward pass per option;

and the forward passes per dilemma of ``moral_dilemmas_debiased`` (two presentation orders),
plus the wall time of ``moral_tasks.scoring.score_records`` (metrics, bootstrap intervals
and BEST) on 2,500 per-document records built by ``moral_tasks.scoring.read_out``.

Forward passes are counted with a forward hook on the HF model. The default model is a
random ~100M-parameter Llama built offline by ``moral_tasks.cli.tiny_model.make_tiny_model``;
``--model`` takes a local folder or a hub id instead.

    python benchmarks/eval_speed.py --quick                    # CPU, < 1 min
    python benchmarks/eval_speed.py --output eval_speed.json   # ~100M random model, bundled sample
    python benchmarks/eval_speed.py --model mistralai/Mistral-7B-Instruct-v0.3 --device cuda \\
        --data-dir /data/scruples --output eval_speed.json

See benchmarks/README.md for the JSON fields.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

TASK, DEBIASED = "moral_anecdotes", "moral_dilemmas_debiased"
# Real Scruples dev vote counts, where the shared folder beside the repository has them.
COUNTS_FILE = Path(__file__).resolve().parents[2] / "shared/data/scruples-dev-vote-counts/anecdotes_dev_counts.json"
N_AGGREGATED = 2500
# make_tiny_model sizes: hidden 768 with 18 layers is 98.7M parameters (vocabulary ~2k, untied).
FULL_MODEL = dict(hidden_size=768, layers=18, heads=12)
QUICK_MODEL = dict(hidden_size=256, layers=4, heads=4)
QUICK_LIMIT = 10  # documents per task under --quick
TIMING = ("docs_per_s = documents / request_s, request_s = wall time inside HFLM.loglikelihood "
          "(simple_evaluate's request phase: tokenisation, batching, forward passes); total_s = the "
          "whole simple_evaluate call (dataset building and metric aggregation included)")


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"cuda: {torch.cuda.get_device_name(torch.device(device))}"
    return f"cpu: {platform.machine()}, {torch.get_num_threads()} torch threads"


def run_task(pretrained: str, task: str, args, task_manager, logits_cache: bool = True) -> tuple[dict, dict, int]:
    """Evaluate ``task`` with a fresh HFLM: (summary, option log-likelihoods per lm-eval doc, model parameters).

    A document is a distinct Scruples id (a debiased dilemma is one lm-eval doc holding both orders).
    """
    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=pretrained, device=args.device, batch_size=args.batch_size, dtype=args.dtype,
              logits_cache=logits_cache)

    def evaluate(limit):
        return lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=task_manager, limit=limit,
                                       bootstrap_iters=0)

    evaluate(2)  # warm-up, neither counted nor timed: a first call pays one-off costs (~1-2 s on CPU)
    passes, request_s = [], []
    lm.model.register_forward_hook(lambda *_: passes.append(1))
    loglikelihood = lm.loglikelihood

    def timed(requests, **kwargs):
        start = time.perf_counter()
        out = loglikelihood(requests, **kwargs)
        request_s.append(time.perf_counter() - start)
        return out

    lm.loglikelihood = timed
    start = time.perf_counter()
    out = evaluate(args.limit)
    total_s = time.perf_counter() - start
    samples = out["samples"][task]
    n_docs = len({s["doc"]["id"] for s in samples})
    summary = {
        "forward_passes_per_doc": len(passes) / n_docs,
        "docs_per_s": n_docs / sum(request_s),
        "forward_passes": len(passes),
        "n_docs": n_docs,
        "lm_eval_docs": len(samples),
        "request_s": sum(request_s),
        "total_s": total_s,
        "xentropy": out["results"][task]["xentropy,none"],
    }
    loglik = {s["doc_id"]: [float(r[0]) for r in s["filtered_resps"]] for s in samples}
    n_params = sum(p.numel() for p in lm.model.parameters())
    del lm, out
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return summary, loglik, n_params


def aggregation_timing(data_dir: str, seed: int, n_docs: int = N_AGGREGATED) -> dict:
    """Time score_records (and lm-eval's path: agg_record, then every metric key) on ``n_docs`` records."""
    import yaml

    from moral_tasks import harness
    from moral_tasks.dataset import train_prior
    from moral_tasks.lm_eval_plugin import TASKS_DIR
    from moral_tasks.prompts import get_task
    from moral_tasks.records import corpus_tag
    from moral_tasks.scoring import read_out, score_records
    from moral_tasks.task import scoring_settings

    rng = np.random.default_rng(seed)
    spec = get_task(TASK)
    # The task's default scoring settings, as a run without --metadata has them.
    scoring = {**scoring_settings(TASK, {}), "data_source": "benchmark", "prior": train_prior(spec, data_dir),
               "prior_split": "train"}
    if COUNTS_FILE.is_file():
        counts, source = json.loads(COUNTS_FILE.read_text())[:n_docs], f"real: {COUNTS_FILE.name}"
    else:
        probs = rng.dirichlet(np.full(5, 0.5), size=n_docs)
        counts = [rng.multinomial(1 + rng.poisson(10), p).tolist() for p in probs]
        source = "synthetic: Dirichlet(0.5)-multinomial, 1 + Poisson(10) votes"
    # (orders, surface variants, options) log-likelihoods, as a document's requests return them.
    logliks = rng.normal(-3.0, 2.0, size=(len(counts), 1, 2, 5))
    records = [read_out(TASK, f"doc-{i}", spec.labels, spec.presentation_orders, ll, c, None, scoring)
               for i, (c, ll) in enumerate(zip(counts, logliks))]
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        score_records(records)
        runs.append(time.perf_counter() - start)
    # What lm-eval pays: the record key's aggregation scores the corpus, each metric key looks its value up.
    text = (TASKS_DIR / "_default_template_yaml").read_text().replace("!function ", "")
    names = [m["metric"] for m in yaml.safe_load(text)["metric_list"]][1:]
    tags = [corpus_tag(r.task, r.doc_id) for r in records]
    as_json = [r.to_json() for r in records]
    start = time.perf_counter()
    harness.agg_record(as_json)
    for name in names:
        if name in harness._SCORED["values"]:
            getattr(harness, f"agg_{name}")(tags)
    all_metrics_s = time.perf_counter() - start
    return {"aggregation_s": statistics.median(runs), "aggregation_runs_s": runs,
            "aggregation_all_metrics_s": all_metrics_s, "n_docs_aggregated": len(records),
            "aggregation_counts": source, "aggregation_scoring": scoring}


def main() -> None:
    import lm_eval
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="local folder or hub id (default: a random ~100M Llama built offline)")
    parser.add_argument("--data-dir", help="Scruples folder (default: the bundled 40-document sample)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu, cuda or cuda:N (default cuda when available)")
    parser.add_argument("--dtype", default="auto", help="HFLM dtype (default auto: the checkpoint's)")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="HFLM batch size, the same for every path (default 1; above 1 a forward pass is a batch)")
    parser.add_argument("--limit", type=int,
                        help=f"lm-eval --limit per task (default all; {QUICK_LIMIT} with --quick)")
    parser.add_argument("--quick", action="store_true", help="smaller random model and fewer documents")
    parser.add_argument("--aggregated", type=int, default=N_AGGREGATED,
                        help=f"records in the aggregation timing (default {N_AGGREGATED})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args()
    if args.quick and args.limit is None:
        args.limit = QUICK_LIMIT

    from lm_eval.tasks import TaskManager

    from moral_tasks.data import SAMPLE_DIR
    from moral_tasks.cli.tiny_model import make_tiny_model

    start, load_avg = time.perf_counter(), os.getloadavg()[0]  # CPU timings suffer from other load
    data_dir = args.data_dir or str(SAMPLE_DIR)
    task_manager = TaskManager(metadata={"data_dir": data_dir})
    with tempfile.TemporaryDirectory() as tmp:
        size = QUICK_MODEL if args.quick else FULL_MODEL
        pretrained = args.model or str(make_tiny_model(Path(tmp) / "model", seed=args.seed, **size))
        ours, ours_loglik, n_params = run_task(pretrained, TASK, args, task_manager)
        per_option, per_option_loglik, _ = run_task(pretrained, TASK, args, task_manager, logits_cache=False)
        debiased, _, _ = run_task(pretrained, DEBIASED, args, task_manager)
    result = {
        "ours": ours,
        "per_option": per_option,
        "debiased": debiased,
        "passes_ratio_per_option_over_ours": per_option["forward_passes"] / ours["forward_passes"],
        "speedup_docs_per_s": ours["docs_per_s"] / per_option["docs_per_s"],
        # The cache must not change the scores: 0 up to float rounding.
        "max_abs_loglik_diff": max(abs(a - b) for doc, ll in ours_loglik.items()
                                   for a, b in zip(ll, per_option_loglik[doc])),
        **aggregation_timing(data_dir, args.seed, args.aggregated),
        "model": args.model or f"random Llama (make_tiny_model {size})",
        "model_params": n_params,
        "data_dir": data_dir,
        "device": device_name(args.device),
        "load_avg_1min_at_start": load_avg,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "n_docs": ours["n_docs"],
        "limit": args.limit,
        "timing": TIMING,
        "torch": torch.__version__,
        "lm_eval": lm_eval.__version__,
    }
    if args.quick:
        result["quick"] = True
        result["reduced"] = {"limit": {"used": args.limit, "full": None}}
        if not args.model:
            result["reduced"]["model"] = {"used": QUICK_MODEL, "full": FULL_MODEL}
    result["total_wall_s"] = time.perf_counter() - start
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
