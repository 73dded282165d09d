"""benchmarks/eval_speed.py runs, and what it counts holds (its timings are reported, never asserted)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import run

pytestmark = pytest.mark.slow  # ~15 s: a random 3.4M Llama through lm-eval three times

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "eval_speed.py"


def test_quick_run_counts_one_forward_pass_per_document(tmp_path):
    run([sys.executable, SCRIPT, "--quick", "--limit", "2", "--aggregated", "40", "--output", tmp_path / "e.json"],
        cwd=tmp_path)
    got = json.loads((tmp_path / "e.json").read_text())
    # An anecdote's 10 requests (5 options x 2 surface variants) share one context: one pass with lm-eval's
    # logits cache, one per request without it; a debiased dilemma reads its two orders in two passes.
    assert got["ours"]["forward_passes_per_doc"] == 1.0 and got["per_option"]["forward_passes_per_doc"] == 10.0
    assert got["debiased"]["forward_passes_per_doc"] == 2.0 and got["debiased"]["lm_eval_docs"] == 2
    assert got["max_abs_loglik_diff"] == 0.0 and got["ours"]["xentropy"] == got["per_option"]["xentropy"]
    assert got["n_docs_aggregated"] == 40 and got["aggregation_all_metrics_s"] > 0
