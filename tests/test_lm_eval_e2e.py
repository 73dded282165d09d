"""Our tasks through the real lm_eval: in-process runs (a session-scoped model) and a few real CLI runs.

Every number is checked against an independent computation: the model's next-token
probabilities computed here with transformers, plain-Python metric formulas
(tests/test_metrics.py) and the data files read directly.
"""

from __future__ import annotations

import json
import math
import sys
import zlib

import numpy as np
import pytest

from conftest import BIN, offline_env, read_results, run
from harness_runs import MAIN_TASKS, evaluate, main_run, read_run, sample_test_run, tiny_lm  # noqa: F401
from moral_tasks.prompts import get_task, option_variants, request_layout
from moral_tasks.records import RECORD_FORMAT
from test_metrics import ref_dm_nll, ref_q, ref_xent

pytestmark = pytest.mark.slow

LM_EVAL = BIN / "lm_eval"
HEADLINE = ("xentropy", "dirichlet_nll", "acc", "f1_macro", "ece", "tvd", "option_mass")
BASELINES = ("xentropy_uniform", "xentropy_prior", "variant_mass")
K = {"moral_dilemmas": 2, "moral_dilemmas_debiased": 2, "moral_anecdotes": 5, "moral_anecdotes_binary": 2}


def lm_eval_cmd(model, data_dir, out, tasks="moral_ambiguity", *extra):
    return [
        LM_EVAL, "--model", "hf", "--model_args", f"pretrained={model},dtype=float32", "--tasks", tasks,
        "--metadata", json.dumps({"data_dir": str(data_dir)}), "--device", "cpu", "--batch_size", "16",
        "--log_samples", "--output_path", out, *extra,
    ]


def primary_logliks(sample: dict, k: int) -> np.ndarray:
    """(orders, variants, options) log-likelihoods as lm-eval returned them, in request order."""
    return np.array([float(r[0]) for r in sample["filtered_resps"]]).reshape(-1, 2, k)


def test_the_group_holds_the_four_tasks():
    from lm_eval.tasks import TaskManager

    from moral_tasks.lm_eval_plugin import TASKS_DIR

    tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={"bootstrap_resamples": 0})
    loaded = tm.load(["moral_ambiguity"])
    assert sorted(loaded["tasks"]) == sorted(MAIN_TASKS)


def test_results_carry_the_headline_metrics_baselines_and_format(main_run):
    results, samples, _ = read_run(main_run)
    for task in MAIN_TASKS:
        row = results["results"][task]
        for name in HEADLINE:
            assert math.isfinite(row[f"{name},none"]), (task, name)
            lo, hi = row[f"{name}_ci95,none"]
            assert lo <= row[f"{name},none"] <= hi or name in ("f1_macro", "ece", "dirichlet_nll"), (task, name)
        for name in BASELINES:
            assert math.isfinite(row[f"{name},none"]), (task, name)
        assert row["record_format,none"] == RECORD_FORMAT
        assert row["record,none"] == 10 and len(samples[task]) == 10
        assert row["data_source,none"].startswith("full:scruples-v1.0/")
        assert not {"agreement_low,none", "agreement_mid,none", "agreement_high,none"} & set(row)  # _full only
        assert ("order_effect,none" in row) == (task == "moral_dilemmas_debiased")
        assert "calibrated_xentropy_insample,none" not in row  # the full set is moral_dilemmas_full etc.
        assert results["higher_is_better"][task]["xentropy"] is False


def test_one_record_per_document_and_metric_keys_hold_only_a_tag(main_run):
    _, samples, _ = read_run(main_run)
    for task in MAIN_TASKS:
        for sample in samples[task]:
            record = sample["record"]
            assert record["format"] == RECORD_FORMAT and record["task"] == task
            assert record["doc_id"] == sample["doc"]["id"] and record["counts"] == sample["doc"]["counts"]
            others = [m for m in sample["metrics"] if m != "record"]
            # the tag: crc32 of "task NUL doc id", low 16 bits (zlib computes it here, independently of the task)
            tag = zlib.crc32(f"{task}\0{sample['doc']['id']}".encode()) % 65536
            assert sample["metrics"][0] == "record" and all(sample[m] == tag for m in others)
            spec = get_task(task)
            # the layout model types read; lm-eval's files hold {"gen_args_<i>": {"arg_0": ctx, "arg_1": cont}}
            for i in range(len(sample["arguments"])):
                cont = sample["arguments"][f"gen_args_{i}"]["arg_1"]
                order, variant, label = request_layout(spec, i)
                perm = dict(spec.presentation_orders)[order]
                assert cont == option_variants(spec, " ")[perm.index(label)][variant]
            ll = primary_logliks(sample, K[task])
            assert record["option_mass"] == pytest.approx(np.exp(ll[:, 0]).sum(1).mean(), rel=1e-12)
            assert record["variant_mass"] == pytest.approx(np.exp(ll[:, 1]).sum(1).mean(), rel=1e-12)
            if task == "moral_dilemmas_debiased":
                ab, ba = ref_q([ll[0, 0]])[0], ref_q([ll[1, 0]])[0]
                assert record["orders"]["AB"] == pytest.approx(ab) and record["orders"]["BA"] == pytest.approx(ba[::-1])
                assert record["q"] == pytest.approx([(ab[0] + ba[1]) / 2, (ab[1] + ba[0]) / 2])
            else:
                assert record["q"] == pytest.approx(ref_q([ll[0, 0]])[0]) and "orders" not in record
        # One process wrote this file: its first record carries the run's scoring settings, no other does.
        carriers = [i for i, sample in enumerate(samples[task]) if "scoring" in sample["record"]]
        assert carriers == [0] and samples[task][0]["record"]["scoring"]["bootstrap_resamples"] == 200


@pytest.mark.parametrize("task", MAIN_TASKS)
def test_results_equal_an_independent_recomputation(main_run, scruples_dir, task):
    results, samples, _ = read_run(main_run)
    row = results["results"][task]
    records = [s["record"] for s in samples[task]]
    q, counts = [r["q"] for r in records], [r["counts"] for r in records]
    assert row["xentropy,none"] == pytest.approx(ref_xent(q, counts), rel=1e-9)
    pred = [max(range(K[task]), key=lambda i: r[i]) for r in q]
    gold = [max(range(K[task]), key=lambda i: c[i]) for c in counts]  # first maximum, as Scruples
    assert row["acc,none"] == pytest.approx(sum(a == b for a, b in zip(pred, gold)) / len(q))
    p = [[c / sum(row_c) for c in row_c] for row_c in counts]
    tvd = sum(0.5 * sum(abs(a - b) for a, b in zip(qi, pi)) for qi, pi in zip(q, p)) / len(q)
    assert row["tvd,none"] == pytest.approx(tvd, rel=1e-9)
    assert row["option_mass,none"] == pytest.approx(sum(r["option_mass"] for r in records) / len(q), rel=1e-12)
    assert row["xentropy_uniform,none"] == pytest.approx(math.log(K[task]))
    # The prior: the mean vote share of the train file, read here directly.
    from moral_tasks.data import load_split

    train = load_split(get_task(task), "train", scruples_dir).counts
    prior = [sum(c[i] / sum(c) for c in train) / len(train) for i in range(K[task])]
    assert row["xentropy_prior,none"] == pytest.approx(ref_xent([prior] * len(q), counts), rel=1e-9)
    if task == "moral_dilemmas_debiased":
        effects = [0.5 * sum(abs(a - b) for a, b in zip(r["orders"]["AB"], r["orders"]["BA"])) for r in records]
        assert row["order_effect,none"] == pytest.approx(sum(effects) / len(effects), rel=1e-9)


def test_option_probabilities_equal_the_models_next_token_distribution(main_run, tiny_model):
    """The readout, recomputed with transformers: softmax of the last position's logits, BOS added as lm-eval does."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from moral_tasks.prompts import dilemma_prompt, reorder_actions

    _, samples, _ = read_run(main_run)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(tiny_model)

    def probs(prompt: str, strings: list[str]) -> list[float]:
        ids = tok(prompt)["input_ids"]
        with torch.no_grad():
            p = torch.softmax(model(torch.tensor([ids])).logits[0, -1].double(), -1)
        out = []
        for s in strings:
            full = tok(prompt + s)["input_ids"]
            assert full[: len(ids)] == ids and len(full) == len(ids) + 1
            out.append(float(p[full[-1]]))
        return out

    for plain, debiased in list(zip(samples["moral_dilemmas"], samples["moral_dilemmas_debiased"]))[:3]:
        row = plain["doc"]
        scored, variants = probs(dilemma_prompt(row), [" A", " B"]), probs(dilemma_prompt(row), ["A", "B"])
        assert plain["record"]["option_mass"] == pytest.approx(sum(scored), rel=1e-4)
        assert plain["record"]["variant_mass"] == pytest.approx(sum(variants), rel=1e-4)
        assert plain["record"]["q"] == pytest.approx([x / sum(scored) for x in scored], rel=1e-4)
        swapped = probs(dilemma_prompt(reorder_actions(row, (1, 0))), [" A", " B"])
        assert debiased["record"]["orders"]["BA"] == pytest.approx([swapped[1] / sum(swapped),
                                                                    swapped[0] / sum(swapped)], rel=1e-4)


def test_dilemma_sample_lines_are_small(sample_test_run):
    """One line per dilemma, doc included: lm-eval's own fields (prompt per request, hashes) are most of it."""
    _, _, files = read_run(sample_test_run)
    sizes = [len(line.encode()) for line in files["moral_dilemmas"].read_text().splitlines()]
    assert len(sizes) == 16 and max(sizes) < 4500, sizes


def test_split_and_fixed_concentration_from_metadata(tiny_lm, scruples_dir):
    meta = {"data_dir": str(scruples_dir), "split": "train-extra", "dirichlet_concentration": 3.5}
    out = evaluate(tiny_lm, ["moral_dilemmas_full"], meta, limit=4)
    row = out["results"]["moral_dilemmas_full"]
    assert "dilemmas/train-extra" in row["data_source,none"]
    records = [s["record"] for s in out["samples"]["moral_dilemmas_full"]]
    q, counts = [r["q"] for r in records], [r["counts"] for r in records]
    assert row["dirichlet_nll_fixed,none"] == pytest.approx(ref_dm_nll(q, counts, 3.5), rel=1e-9)


def test_full_variant_reports_every_metric(tiny_lm, scruples_dir):
    from moral_tasks.metrics import core as M
    from moral_tasks.scoring import CORE_NAMES

    out = evaluate(tiny_lm, ["moral_dilemmas_debiased_full"], {"data_dir": str(scruples_dir)}, limit=4)
    row = out["results"]["moral_dilemmas_debiased_full"]
    for name in (*CORE_NAMES, "best_xentropy", "best_acc", "best_f1_macro", "order_effect"):
        assert math.isfinite(row[f"{name},none"]) and len(row[f"{name}_ci95,none"]) == 2, name
    assert "calibrated_xentropy,none" not in row and len(M.METRIC_NAMES) == len(CORE_NAMES)
    assert sum(row[f"agreement_{level},none"]["n"] for level in ("low", "mid", "high")) == 4


def test_merge_variants_reads_the_logsumexp_of_each_options_variants(tiny_lm, scruples_dir):
    out = evaluate(tiny_lm, ["moral_anecdotes_binary"], {"data_dir": str(scruples_dir), "merge_variants": True},
                   limit=3)
    for sample in out["samples"]["moral_anecdotes_binary"]:
        ll = primary_logliks(sample, 2)[0]
        merged = [math.log(math.exp(ll[0, i]) + math.exp(ll[1, i])) for i in range(2)]
        assert sample["record"]["q"] == pytest.approx(ref_q([merged])[0], rel=1e-9)
    assert out["samples"]["moral_anecdotes_binary"][0]["record"]["scoring"]["merge_variants"] is True


def _swapped_context_check(sample):
    """The BA order's context is the AB context with only the document's own text reordered."""
    from moral_tasks.prompts import dilemma_prompt, reorder_actions

    row = sample["doc"]
    ab_ctx, ba_ctx = sample["arguments"][0][0], sample["arguments"][4][0]
    ab_text, ba_text = dilemma_prompt(row), dilemma_prompt(reorder_actions(row, (1, 0)))
    head, _, tail = ab_ctx.rpartition(ab_text)
    assert ba_ctx == head + ba_text + tail
    return head, tail


def test_chat_template_scores_the_bare_letter_first(tiny_lm, scruples_dir):
    out = evaluate(tiny_lm, ["moral_dilemmas", "moral_dilemmas_debiased"], {"data_dir": str(scruples_dir)}, limit=2,
                   apply_chat_template=True)
    sample = out["samples"]["moral_dilemmas"][0]
    assert [a[1] for a in sample["arguments"]] == ["A", "B", " A", " B"]
    head, tail = _swapped_context_check(out["samples"]["moral_dilemmas_debiased"][0])
    assert tail and head  # the chat template's markup around the user turn is kept


def test_debiased_few_shot_keeps_the_examples_and_swaps_only_the_document(tiny_lm, scruples_dir):
    out = evaluate(tiny_lm, ["moral_dilemmas_debiased"], {"data_dir": str(scruples_dir)}, limit=2, num_fewshot=1)
    for sample in out["samples"]["moral_dilemmas_debiased"]:
        head, _ = _swapped_context_check(sample)
        assert "Answer: " in head  # the few-shot example with its answer precedes the document


def test_bad_data_file_gives_a_clear_error(tiny_lm, tmp_path):
    from moral_tasks.data import DataError

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "test.scruples-dilemmas.jsonl").write_text('{"id": "a", "actions": [}\n')
    with pytest.raises(DataError, match=f"{bad / 'test.scruples-dilemmas.jsonl'}:1: invalid JSON"):
        evaluate(tiny_lm, ["moral_dilemmas"], {"data_dir": str(bad)})


def test_validate(tmp_path):
    proc = run([BIN / "lm-eval", "validate", "--tasks", "moral_ambiguity,moral_dilemmas_debiased"], cwd=tmp_path)
    assert "All tasks found and valid" in proc.stdout + proc.stderr


def test_hook_can_be_switched_off(tmp_path):
    """With the switch, nothing of ours runs at start-up and lm-eval's TaskManager is its own (the same check
    without the switch prints "True True"). Cheaper than an lm_eval run: that would index lm-eval's ~14,700
    task YAMLs uncached."""
    code = ("import sys; from lm_eval.tasks import TaskManager; "
            "print('moral_tasks._startup' in sys.modules, getattr(TaskManager, '_moral_ambiguity_installed', False))")
    assert run([sys.executable, "-c", code], cwd=tmp_path).stdout.strip() == "True True"
    env = offline_env(MORAL_AMBIGUITY_DISABLE_HOOK="1")
    assert run([sys.executable, "-c", code], cwd=tmp_path, env=env).stdout.strip() == "False False"


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
    table = [line for line in run(cmd, cwd=tmp_path).stdout.splitlines() if line.startswith("|")]
    results, _ = read_results(tmp_path / "o")
    row = results["results"]["moral_dilemmas"]
    assert math.isfinite(row["xentropy,none"])
    _check_short_table(table, row)


def _check_short_table(table: list[str], row: dict) -> None:
    """The printed table shows our lists and dicts in short form; the results JSON keeps them whole."""
    cells = {line.split("|")[5].strip(): line.split("|")[7].strip() for line in table[2:]}
    low, high = row["xentropy_ci95,none"]
    assert cells["xentropy_ci95"] == f"[{low:.4g}, {high:.4g}]"
    assert cells["warnings"] == (f"{len(row['warnings,none'])} (see the log or results JSON)" if row["warnings,none"]
                                 else "none")
    assert cells["no_readout"] == str(row["no_readout,none"]["documents"])
    # The widest value left is the data source line; before, one warnings list made every row ~750 characters.
    assert max(len(line) for line in table) <= 100 + len(row["data_source,none"])


def test_moral_ambiguity_eval_passes_through_to_lm_eval(tiny_model, tmp_path):
    """`moral-ambiguity eval` adds --include_path itself, so it works even with the hook off."""
    cmd = [BIN / "moral-ambiguity", "eval", "--model", "hf", "--model_args", f"pretrained={tiny_model}",
           "--tasks", "moral_anecdotes_binary", "--limit", "3", "--device", "cpu", "--output_path", tmp_path / "o",
           "--metadata", json.dumps({"split": "dev"})]
    proc = run(cmd, cwd=tmp_path, env=offline_env(MORAL_AMBIGUITY_DISABLE_HOOK="1"))
    results, _ = read_results(tmp_path / "o")
    row = results["results"]["moral_anecdotes_binary"]
    assert row["data_source,none"].startswith("sample:")
    _check_short_table([line for line in proc.stdout.splitlines() if line.startswith("|")], row)


def test_demo_prints_the_table(capfd):
    from moral_tasks.cli.main import main

    assert main(["demo", "--limit", "5"]) == 0
    out, err = capfd.readouterr()
    for task in MAIN_TASKS:
        assert task in out
    assert "xentropy" in out and "dirichlet_nll" in out and "NOT Scruples" in out
    assert "fatal:" not in err, "lm-eval's `git describe` outside a checkout must stay quiet"


def test_evaluate_module_matches_the_harness(main_run):
    """`evaluate.load(<path in the package>)` works offline and gives the harness's numbers."""
    import evaluate as hf_evaluate

    from moral_tasks.metrics.hf_evaluate import MODULE_PATH

    results, samples, _ = read_run(main_run)
    metric = hf_evaluate.load(MODULE_PATH)
    for task in MAIN_TASKS:
        records = [s["record"] for s in samples[task]]
        got = metric.compute(predictions=[r["q"] for r in records], references=[r["counts"] for r in records])
        for name in HEADLINE[:-1]:
            assert got[name] == pytest.approx(results["results"][task][f"{name},none"], rel=1e-6, abs=1e-9), name


def test_a_task_object_evaluated_twice_writes_its_settings_again(tiny_lm, scruples_dir):
    """The Python API can evaluate one task object twice, on other documents: each run's samples carry the
    scoring settings (on its first record), and each aggregates."""
    import lm_eval
    from lm_eval.tasks import TaskManager, get_task_dict

    from moral_tasks.lm_eval_plugin import TASKS_DIR

    tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=False,
                     metadata={"data_dir": str(scruples_dir), "bootstrap_resamples": 0, "best_samples": 20})
    task = get_task_dict(["moral_dilemmas"], tm)["moral_dilemmas"]
    first = lm_eval.simple_evaluate(model=tiny_lm, tasks=[task], limit=4, log_samples=True, bootstrap_iters=0)
    second = lm_eval.simple_evaluate(model=tiny_lm, tasks=[task], samples={"moral_dilemmas": [5, 6, 7]},
                                     log_samples=True, bootstrap_iters=0)
    for out, n in ((first, 4), (second, 3)):
        assert out["results"]["moral_dilemmas"]["record,none"] == n
        carriers = [s["doc"]["id"] for s in out["samples"]["moral_dilemmas"] if "scoring" in s["record"]]
        assert carriers == [out["samples"]["moral_dilemmas"][0]["doc"]["id"]]
