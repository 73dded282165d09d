"""`moral-ambiguity rescore`: the samples files give back lm_eval's numbers, and Scruples' dev-fitted calibration."""

from __future__ import annotations

import json
import math

import pytest
from scipy.optimize import minimize_scalar

from harness_runs import MAIN_TASKS, main_run, read_run, sample_dev_run, sample_test_run, tiny_lm  # noqa: F401
from moral_tasks.cli.main import main as cli
from moral_tasks.rescore import RESCORE_FORMAT, rescore, score_samples
from test_metrics import ref_temper, ref_xent

pytestmark = pytest.mark.slow


def assert_same(reported, rescored, where):
    if isinstance(reported, dict):
        assert set(reported) == set(rescored), where
        for key in reported:
            assert_same(reported[key], rescored[key], f"{where}.{key}")
    elif isinstance(reported, list):
        assert len(reported) == len(rescored), where
        for i, (a, b) in enumerate(zip(reported, rescored)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(reported, float):
        assert rescored == pytest.approx(reported, rel=1e-9, abs=1e-12), where
    else:
        assert reported == rescored, where


def assert_rescore_reproduces(results: dict, metrics: dict, task: str, documents: tuple[str, str]) -> None:
    """Every number lm_eval reported for ``task`` equals rescore's; ``documents`` maps lm_eval's per-document
    metric name to rescore's."""
    reported = {k.split(",")[0]: v for k, v in results["results"][task].items()
                if k.endswith(",none") and "_stderr" not in k}
    assert len(reported) > 20
    for name, value in reported.items():
        assert_same(value, metrics[documents[1] if name == documents[0] else name], f"{task}.{name}")


def test_rescore_gives_every_number_lm_eval_reported(main_run):
    results, _, files = read_run(main_run)
    rescored = rescore(main_run)
    assert rescored["format"] == RESCORE_FORMAT and sorted(rescored["tasks"]) == sorted(MAIN_TASKS)
    for task in MAIN_TASKS:
        metrics = rescored["tasks"][task]["metrics"]
        assert_rescore_reproduces(results, metrics, task, ("record", "documents"))
        assert score_samples(files[task]) == metrics


def test_rescore_command_writes_json(main_run, tmp_path, capsys):
    out = tmp_path / "rescored.json"
    assert cli(["rescore", str(main_run), "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"rescored 4 task(s) into {out}" in captured.out
    # The random tiny model puts almost no mass on the options: the warning is repeated here.
    assert "moral-ambiguity: warning: moral_dilemmas: option_mass" in captured.err
    assert json.loads(out.read_text())["tasks"]["moral_dilemmas"]["metrics"]["documents"] == 10


def _independent_temperature(q, counts):
    res = minimize_scalar(lambda lt: ref_xent(ref_temper(q, math.exp(lt)), counts), bounds=(-5, 5), method="bounded",
                          options={"xatol": 1e-10})
    return math.exp(res.x)


def write_samples(folder, task, records):
    """A samples file as lm-eval writes it (only the fields we read)."""
    folder.mkdir(parents=True)
    lines = [json.dumps({"doc_id": i, "record": r.to_json(), "xentropy": r.doc_id}) for i, r in enumerate(records)]
    (folder / f"samples_{task}_2026-01-01T00-00-00.000000.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_dev_fitted_temperature_by_an_independent_fit(tmp_path):
    """Scruples' protocol on an over-confident model (finite T): T fitted on dev, applied to test."""
    from test_scoring import rec
    from test_metrics import random_case
    import numpy as np

    def records(seed, prefix):
        loglik, counts = random_case(seed, n=30, k=2)
        q = np.exp(loglik) / np.exp(loglik).sum(1, keepdims=True)
        return [rec(f"{prefix}{i}", q[i].tolist(), counts[i].tolist()) for i in range(30)]

    dev, test = records(1, "dev"), records(2, "test")
    t = _independent_temperature([r.q for r in dev], [r.counts for r in dev])
    assert 1.2 < t < 10  # an over-confident model: a finite T above 1
    rescored = rescore(write_samples(tmp_path / "test", "moral_dilemmas", test),
                       write_samples(tmp_path / "dev", "moral_dilemmas", dev))
    metrics = rescored["tasks"]["moral_dilemmas"]["metrics"]
    assert metrics["temperature"] == pytest.approx(t, rel=1e-5)
    expected = ref_xent(ref_temper([r.q for r in test], t), [r.counts for r in test])
    assert metrics["calibrated_xentropy"] == pytest.approx(expected, rel=1e-6)
    lo, hi = metrics["calibrated_xentropy_ci95"]
    assert lo < metrics["calibrated_xentropy"] < hi
    # The in-sample value stays what it is: fitted on the test records themselves.
    assert metrics["temperature_insample"] == pytest.approx(
        _independent_temperature([r.q for r in test], [r.counts for r in test]), rel=1e-5)


def test_dev_run_of_the_same_model_gives_the_calibration_and_its_provenance(sample_test_run, sample_dev_run):
    _, _, dev_files = read_run(sample_dev_run)
    rescored = rescore(sample_test_run, sample_dev_run)
    assert rescored["dev_results_dir"] == str(sample_dev_run)
    for task in ("moral_dilemmas", "moral_anecdotes"):
        metrics = rescored["tasks"][task]["metrics"]
        fitted_on = metrics["temperature_fitted_on"]
        assert fitted_on["samples"] == str(dev_files[task]) and "/dev rows=40" in fitted_on["data_source"]
        assert fitted_on["documents"] == 16
        assert math.isfinite(metrics["calibrated_xentropy"]) and metrics["temperature"] > 0
