"""The real `lm_eval` executable, in subprocesses, with a tiny local Llama: no --include_path anywhere."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

from conftest import BIN, offline_env, read_results, run
from moral_tasks.metrics import core as M
from moral_tasks.metrics.best import best_scores
from moral_tasks.metrics.intervals import bootstrap_intervals
from moral_tasks.prompts import TASKS, get_task
from test_metrics import ref_dm_nll, ref_q, ref_xent

pytestmark = pytest.mark.slow

LM_EVAL = BIN / "lm_eval"


def lm_eval_cmd(model, data_dir, out, tasks="moral_ambiguity", *extra):
    return [
        LM_EVAL, "--model", "hf", "--model_args", f"pretrained={model},dtype=float32", "--tasks", tasks,
        "--metadata", json.dumps({"data_dir": str(data_dir)}), "--device", "cpu", "--batch_size", "16",
        "--log_samples", "--output_path", out, *extra,
    ]


@pytest.fixture(scope="module")
def group_run(tiny_model, scruples_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("group_run")
    run(lm_eval_cmd(tiny_model, scruples_dir, out / "res"), cwd=out)
    return read_results(out / "res")


def test_group_runs_without_include_path(group_run, scruples_dir):
    results, samples = group_run
    assert set(TASKS) <= set(results["results"])
    for task in TASKS:
        row = results["results"][task]
        for name in M.METRIC_NAMES:
            assert math.isfinite(row[f"{name},none"]), (task, name)
            lo, hi = row[f"{name}_ci95,none"]
            assert math.isfinite(lo) and lo <= hi, (task, name)
        assert row["data_source,none"].startswith(f"full:scruples-v1.0/{get_task(task).dataset}/test rows=10 ")
        assert results["higher_is_better"][task]["xentropy"] is False
        assert len(samples[task]) == 10


@pytest.mark.parametrize("task", list(TASKS))
def test_results_equal_metrics_recomputed_from_logged_samples(group_run, task):
    """--log_samples holds q, counts and the doc id: enough to recompute every number independently."""
    results, samples = group_run
    records = [s["xentropy"] for s in samples[task]]
    assert len({r["doc_id"] for r in records}) == len(records)
    for sample, record in zip(samples[task], records):
        lls = [float(r[0]) for r in sample["filtered_resps"]]
        assert record["option_loglik"] == pytest.approx(lls)
        assert record["q"] == pytest.approx(np.exp(M.log_normalize(lls)))
        assert record["counts"] == sample["doc"]["counts"]
    q = ref_q([r["option_loglik"] for r in records])
    counts = [r["counts"] for r in records]
    row = results["results"][task]
    assert row["xentropy,none"] == pytest.approx(ref_xent(q, counts), rel=1e-9)
    k = len(get_task(task).labels)
    assert row["dirichlet_nll_fixed,none"] == pytest.approx(ref_dm_nll(q, counts, float(k)), rel=1e-9)
    logq = np.log(np.array([r["q"] for r in records]))
    recomputed = M.compute_metrics(logq, counts)
    cis = bootstrap_intervals(logq, counts, resamples=1000, seed=0)
    for name in M.METRIC_NAMES:
        assert row[f"{name},none"] == pytest.approx(recomputed[name], rel=1e-6, abs=1e-9), name
        assert row[f"{name}_ci95,none"] == pytest.approx(list(cis[name]), rel=1e-5, abs=1e-8), name
    best = best_scores(np.array(counts), n_samples=1000, seed=0)
    for name, key in (("best_xentropy", "xentropy"), ("best_acc", "accuracy"), ("best_f1_macro", "f1_macro")):
        assert row[f"{name},none"] == pytest.approx(best[key], rel=1e-12)
        lo, hi = row[f"{name}_ci95,none"]
        assert (hi - lo) / 2 == pytest.approx(1.96 * best[f"{key}_stderr"], rel=1e-9)


def test_split_and_fixed_concentration_from_metadata(tiny_model, scruples_dir, tmp_path):
    meta = json.dumps({"data_dir": str(scruples_dir), "split": "train-extra", "dirichlet_concentration": 3.5})
    cmd = [LM_EVAL, "--model", "hf", "--model_args", f"pretrained={tiny_model}", "--tasks", "moral_dilemmas",
           "--metadata", meta, "--device", "cpu", "--log_samples", "--output_path", tmp_path / "o"]
    run(cmd, cwd=tmp_path)
    results, samples = read_results(tmp_path / "o")
    row = results["results"]["moral_dilemmas"]
    assert "dilemmas/train-extra" in row["data_source,none"]
    records = [s["xentropy"] for s in samples["moral_dilemmas"]]
    q, counts = ref_q([r["option_loglik"] for r in records]), [r["counts"] for r in records]
    assert row["dirichlet_nll_fixed,none"] == pytest.approx(ref_dm_nll(q, counts, 3.5), rel=1e-9)


def test_bad_data_file_gives_a_clear_error(tiny_model, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "test.scruples-dilemmas.jsonl").write_text('{"id": "a", "actions": [}\n')
    cmd = [LM_EVAL, "--model", "hf", "--model_args", f"pretrained={tiny_model}", "--tasks", "moral_dilemmas",
           "--metadata", json.dumps({"data_dir": str(bad)}), "--device", "cpu"]
    proc = run(cmd, cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert f"{bad / 'test.scruples-dilemmas.jsonl'}:1: invalid JSON" in proc.stderr


def test_validate(tmp_path):
    proc = run([BIN / "lm-eval", "validate", "--tasks", "moral_ambiguity,moral_dilemmas_debiased"], cwd=tmp_path)
    assert "All tasks found and valid" in proc.stdout + proc.stderr


def test_hook_can_be_switched_off(tmp_path):
    env = offline_env(MORAL_AMBIGUITY_DISABLE_HOOK="1")
    proc = run([BIN / "lm-eval", "validate", "--tasks", "moral_dilemmas"], cwd=tmp_path, env=env, check=False)
    assert "All tasks found and valid" not in proc.stdout + proc.stderr


def test_startup_hook_is_lazy_and_cheap(tmp_path):
    code = (
        "import sys; mods = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('moral_tasks', 'lm_eval', 'numpy', 'torch', 'datasets', 'transformers')); print(mods)"
    )
    out = run([sys.executable, "-c", code], cwd=tmp_path).stdout.strip()
    assert out == "['moral_tasks', 'moral_tasks._startup']"
    # After lm_eval's task manager is imported, TaskManager knows our tasks.
    code = (
        "from lm_eval.tasks import TaskManager; from moral_tasks.lm_eval_plugin import TASKS_DIR; "
        "tm = TaskManager(); print(str(TASKS_DIR) in [str(p) for p in tm.include_path], 'moral_dilemmas' in tm.all_tasks)"
    )
    assert run([sys.executable, "-c", code], cwd=tmp_path).stdout.strip() == "True True"


def test_broken_package_never_breaks_python_startup(tmp_path):
    shadow = tmp_path / "shadow" / "moral_tasks"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise RuntimeError('boom')\n")
    proc = run([sys.executable, "-c", "print('alive')"], cwd=tmp_path, env=offline_env(PYTHONPATH=str(shadow.parent)))
    assert proc.stdout.strip() == "alive" and "boom" not in proc.stderr


def test_failed_registration_warns_instead_of_raising(monkeypatch):
    import types
    import warnings

    import moral_tasks.lm_eval_plugin as plugin
    from moral_tasks._startup import _PatchingLoader

    class Inner:
        def create_module(self, spec):
            return None

        def exec_module(self, module):
            module.executed = True

    def broken_install(module):
        raise RuntimeError("registry changed")

    monkeypatch.setattr(plugin, "install", broken_install)
    module = types.ModuleType("fake")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _PatchingLoader(Inner(), "install").exec_module(module)
    assert module.executed and "could not register with lm-eval" in str(caught[0].message)


def test_regular_wheel_install_finds_tasks(tiny_model, scruples_dir, tmp_path):
    """Build the wheel, install it (not editable) into a fresh venv, and run lm_eval there."""
    repo = __import__("pathlib").Path(__file__).resolve().parents[1]
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", repo],
        cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("moral_ambiguity-*.whl")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    site = next((venv / "lib").glob("python*/site-packages"))
    # The heavy dependencies come from the test environment's site-packages as a plain path
    # entry: .pth files there (our editable install) are NOT processed, so only the wheel counts.
    deps = [p for p in sys.path if p.endswith("site-packages")]
    (site / "_deps.pth").write_text("\n".join(deps) + "\n")
    run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "--no-index", wheel],
        cwd=tmp_path)
    py = venv / "bin" / "python"
    where = run([py, "-c", "import moral_tasks; print(moral_tasks.__file__)"], cwd=tmp_path).stdout
    assert str(site) in where
    assert (site / "moral_ambiguity_lm_eval.pth").exists()
    cmd = [py, "-m", "lm_eval", *lm_eval_cmd(tiny_model, scruples_dir, tmp_path / "o", "moral_dilemmas", "--limit", "4")[1:]]
    run(cmd, cwd=tmp_path)
    results, _ = read_results(tmp_path / "o")
    assert math.isfinite(results["results"]["moral_dilemmas"]["xentropy,none"])


def test_moral_ambiguity_eval_passes_through_to_lm_eval(tiny_model, tmp_path):
    """`moral-ambiguity eval` adds --include_path itself, so it works even with the hook off."""
    cmd = [BIN / "moral-ambiguity", "eval", "--model", "hf", "--model_args", f"pretrained={tiny_model}",
           "--tasks", "moral_anecdotes_binary", "--limit", "3", "--device", "cpu", "--output_path", tmp_path / "o",
           "--metadata", json.dumps({"split": "dev"})]
    run(cmd, cwd=tmp_path, env=offline_env(MORAL_AMBIGUITY_DISABLE_HOOK="1"))
    results, _ = read_results(tmp_path / "o")
    assert results["results"]["moral_anecdotes_binary"]["data_source,none"].startswith("sample:")


def test_demo_prints_the_table(tmp_path):
    proc = run([BIN / "moral-ambiguity", "demo", "--limit", "5"], cwd=tmp_path)
    for task in TASKS:
        assert task in proc.stdout
    assert "xentropy" in proc.stdout and "dirichlet_nll" in proc.stdout and "NOT Scruples" in proc.stdout
    assert "fatal:" not in proc.stderr, "lm-eval's `git describe` outside a checkout must stay quiet"


def test_evaluate_module_matches_the_harness(group_run):
    """`evaluate.load(<path in the package>)` works offline and gives the harness's numbers."""
    import evaluate

    from moral_tasks.metrics.hf_evaluate import MODULE_PATH

    results, samples = group_run
    metric = evaluate.load(MODULE_PATH)
    for task in TASKS:
        records = [s["xentropy"] for s in samples[task]]
        got = metric.compute(predictions=[r["q"] for r in records], references=[r["counts"] for r in records])
        for name in M.METRIC_NAMES:
            assert got[name] == pytest.approx(results["results"][task][f"{name},none"], rel=1e-6, abs=1e-9), name
