"""benchmarks/eval_speed.py's aggregation timing runs on the current scoring API (its timings are reported,
never asserted; the forward-pass counts it reports are tested in test_debiased_and_passes.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "eval_speed.py"


def test_aggregation_timing_scores_the_records_it_builds():
    from moral_tasks.data import SAMPLE_DIR

    spec = importlib.util.spec_from_file_location("eval_speed", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    got = bench.aggregation_timing(str(SAMPLE_DIR), seed=0, n_docs=40)
    assert got["n_docs_aggregated"] == 40 and len(got["aggregation_runs_s"]) == 3
    assert got["aggregation_all_metrics_s"] > 0 and got["aggregation_scoring"]["bootstrap_resamples"] == 1000
