"""Do two lm-eval runs of the same model agree document by document? (e.g. ``--model vllm`` vs ``--model hf``)

    python examples/compare_backends.py results/hf/samples_moral_dilemmas_*.jsonl \\
        results/vllm/samples_moral_dilemmas_*.jsonl --tolerance 0.02

Pairs the per-document records of two samples files by document id and reports the largest
differences of the option log-likelihoods (nats) and of the option probabilities q. Exits 1 when a
document is missing from either file or differs by more than ``--tolerance`` nats; take the
tolerance from two ``--model hf`` runs at different batch sizes, which differ by rounding alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def compare(path_a: Path, path_b: Path) -> dict:
    from moral_tasks.records import read_samples

    a = {r.doc_id: r for r in read_samples(path_a)}
    b = {r.doc_id: r for r in read_samples(path_b)}
    shared = sorted(set(a) & set(b))
    loglik = np.array([np.abs(np.subtract(a[d].option_loglik, b[d].option_loglik)).max() for d in shared])
    q = np.array([np.abs(np.subtract(a[d].q, b[d].q)).max() for d in shared])
    worst = int(loglik.argmax()) if shared else None
    return {
        "documents": len(shared),
        "only_in_a": sorted(set(a) - set(b)),
        "only_in_b": sorted(set(b) - set(a)),
        "max_abs_loglik_diff": float(loglik.max()) if shared else None,
        "mean_abs_loglik_diff": float(loglik.mean()) if shared else None,
        "max_abs_q_diff": float(q.max()) if shared else None,
        "worst_document": shared[worst] if shared else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("samples_a", type=Path)
    p.add_argument("samples_b", type=Path)
    p.add_argument("--tolerance", type=float, default=0.02, help="largest accepted |log-likelihood difference|, nats")
    args = p.parse_args(argv)
    from moral_tasks.records import RecordFormatError

    try:
        report = compare(args.samples_a, args.samples_b)
    except (OSError, RecordFormatError) as exc:
        print(f"compare_backends: error: {exc}", file=sys.stderr)
        return 2
    report["tolerance"] = args.tolerance
    print(json.dumps(report, indent=2))
    if report["only_in_a"] or report["only_in_b"] or not report["documents"]:
        print("compare_backends: the two files do not hold the same documents", file=sys.stderr)
        return 1
    if report["max_abs_loglik_diff"] > args.tolerance:
        print(f"compare_backends: document {report['worst_document']} differs by "
              f"{report['max_abs_loglik_diff']:.3g} nats (> {args.tolerance})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
