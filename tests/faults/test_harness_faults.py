"""Faults in scoring and rescoring, each produced for real: one test per case."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from harness_runs import evaluate, main_run, tiny_lm  # noqa: F401
from scruples_factory import dilemma_row, write_jsonl

pytestmark = pytest.mark.slow


def copy_run(run_dir, dest):
    shutil.copytree(run_dir, dest)
    return dest, None


def test_samples_file_of_format_1_is_refused_with_what_to_do(tmp_path, rescore_error):
    # moral-ambiguity 0.1 wrote the record under every metric key and no "record" key.
    old = {"doc_id": 0, "xentropy": {"doc_id": "d0", "q": [0.5, 0.5], "counts": [3, 2]}}
    path = tmp_path / "run" / "samples_moral_dilemmas_2025-01-01T00-00-00.000000.jsonl"
    path.parent.mkdir()
    path.write_text(json.dumps(old) + "\n")
    err = rescore_error(tmp_path / "run")
    assert f"{path}:1: no 'record' field" in err and "rerun lm_eval" in err


def test_truncated_samples_line_names_file_and_line(main_run, tmp_path, rescore_error):
    run_dir, _ = copy_run(main_run, tmp_path / "run")
    path = next(run_dir.rglob("samples_moral_anecdotes_*.jsonl"))
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1] + [lines[-1][: len(lines[-1]) // 2]]) + "\n")  # a write cut short
    err = rescore_error(run_dir)
    assert f"{path}:{len(lines)}: invalid JSON" in err


def test_samples_file_with_a_document_twice(main_run, tmp_path, rescore_error):
    run_dir, _ = copy_run(main_run, tmp_path / "run")
    path = next(run_dir.rglob("samples_moral_dilemmas_2*.jsonl"))
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + lines[:1]) + "\n")  # e.g. two runs' files concatenated
    doc_id = json.loads(lines[0])["record"]["doc_id"]
    assert f"moral_dilemmas: document(s) scored twice: {doc_id}" in rescore_error(run_dir)


def test_samples_file_without_the_line_that_carries_the_scoring_settings(main_run, tmp_path, rescore_error):
    run_dir, _ = copy_run(main_run, tmp_path / "run")
    path = next(run_dir.rglob("samples_moral_dilemmas_2*.jsonl"))
    lines = path.read_text().splitlines()
    assert "scoring" in json.loads(lines[0])["record"]  # the settings are written once, on the first line
    path.write_text("\n".join(lines[1:]) + "\n")  # e.g. a file filtered with grep
    err = rescore_error(run_dir)
    assert f"{path}: no record carries the run's scoring settings" in err and "keep every line" in err


def test_samples_files_of_two_runs_concatenated(main_run, tiny_lm, scruples_dir, tmp_path, rescore_error):
    """Two real runs with other settings (dev split, 20 resamples): their lines in one file are refused."""
    other = tmp_path / "other"
    evaluate(tiny_lm, ["moral_dilemmas"], {"data_dir": str(scruples_dir), "split": "dev", "bootstrap_resamples": 20},
             output=other, limit=2)
    run_dir, _ = copy_run(main_run, tmp_path / "run")
    path = next(run_dir.rglob("samples_moral_dilemmas_2*.jsonl"))
    extra = next(other.rglob("samples_moral_dilemmas_2*.jsonl")).read_text()
    path.write_text(path.read_text() + extra)
    err = rescore_error(run_dir)
    assert f"{path}: the records disagree on their scoring settings" in err and "different runs" in err


def test_dev_run_that_is_the_test_run_is_refused(main_run, rescore_error):
    assert "the dev run shares 10 document(s) with the evaluated run" in rescore_error(main_run, "--dev", main_run)


def test_dev_run_without_the_task(main_run, tmp_path, rescore_error):
    dev_dir, _ = copy_run(main_run, tmp_path / "dev")
    for path in dev_dir.rglob("samples_moral_anecdotes_*.jsonl"):
        path.unlink()
    assert "no samples file for task moral_anecdotes" in rescore_error(main_run, "--dev", dev_dir)


def _only_dilemmas(run_dir):
    for path in run_dir.rglob("samples_*.jsonl"):
        if not path.name.startswith("samples_moral_dilemmas_2"):
            path.unlink()
    return run_dir


def test_dev_run_read_with_other_settings_is_refused(main_run, tiny_lm, scruples_dir, tmp_path, rescore_error):
    """A real dev run with merge_variants on, for a test run without: its temperature would not apply."""
    run_dir = _only_dilemmas(copy_run(main_run, tmp_path / "run")[0])
    dev = tmp_path / "dev"
    evaluate(tiny_lm, ["moral_dilemmas"], {"data_dir": str(scruples_dir), "split": "dev", "merge_variants": True},
             output=dev, limit=3)
    err = rescore_error(run_dir, "--dev", dev)
    assert "the dev run was read with other settings (merge_variants True (evaluated run: False))" in err


def test_dev_run_of_another_model_is_refused(main_run, tiny_model, scruples_dir, tmp_path, rescore_error):
    """A real dev run of other weights (the tiny model with one weight changed)."""
    import torch
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    other = tmp_path / "other-model"
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        model.lm_head.weight[0, 0] += 1.0
    model.save_pretrained(other)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(other)
    dev = tmp_path / "dev"
    evaluate(HFLM(pretrained=str(other), batch_size=16, device="cpu", dtype="float32"), ["moral_dilemmas"],
             {"data_dir": str(scruples_dir), "split": "dev"}, output=dev, limit=3)
    err = rescore_error(_only_dilemmas(copy_run(main_run, tmp_path / "run")[0]), "--dev", dev)
    assert "the dev run scored another model" in err and "fit the temperature on the same model's dev run" in err


def test_a_folder_with_two_runs_of_a_task_says_which_is_rescored(main_run, tiny_lm, scruples_dir, tmp_path, cli):
    """A --limit smoke test written after the full run into the same folder: rescored, but said loudly."""
    run_dir = _only_dilemmas(copy_run(main_run, tmp_path / "run")[0])
    (model_dir,) = {p.parent for p in run_dir.rglob("results_*.json")}
    evaluate(tiny_lm, ["moral_dilemmas"], {"data_dir": str(scruples_dir)}, output=run_dir, limit=1)
    (full,) = [p for p in model_dir.glob("samples_moral_dilemmas_2*.jsonl") if len(p.read_text().splitlines()) == 10]
    got = cli("rescore", run_dir, "--output", tmp_path / "r.json")
    assert got.code == 0, got.err
    entry = json.loads((tmp_path / "r.json").read_text())["tasks"]["moral_dilemmas"]
    assert entry["ignored_runs"] == [str(full)] and entry["metrics"]["documents"] == 1
    assert f"moral_dilemmas: 2 runs in {model_dir}; the newest" in got.err and "1 documents) is rescored, not " \
        f"{full.name}" in got.err


def test_folder_without_samples(tmp_path, rescore_error):
    assert "no lm-eval samples files" in rescore_error(tmp_path)


def test_data_without_a_train_split_reports_no_prior_and_warns(tiny_lm, tmp_path, caplog):
    import random

    rng = random.Random(0)
    write_jsonl(tmp_path / "dilemmas" / "test.scruples-dilemmas.jsonl", [dilemma_row(rng, i) for i in range(4)])
    with caplog.at_level(logging.WARNING):
        out = evaluate(tiny_lm, ["moral_dilemmas"], {"data_dir": str(tmp_path)})
    assert out["results"]["moral_dilemmas"]["xentropy_prior,none"] is None
    assert "moral_dilemmas: no train split found, so xentropy_prior cannot be reported" in caplog.text


def test_model_returning_nan_is_a_clear_error_naming_the_document(tiny_model, scruples_dir, tmp_path):
    """A real NaN: a copy of the tiny model whose output layer is NaN."""
    import torch
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from moral_tasks.scoring import CorpusError

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    model.save_pretrained(tmp_path / "nan-model")
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(tmp_path / "nan-model")
    lm = HFLM(pretrained=str(tmp_path / "nan-model"), batch_size=4, device="cpu", dtype="float32")
    with pytest.raises(CorpusError, match="moral_dilemmas document dil0000: the model returned a non-finite"):
        evaluate(lm, ["moral_dilemmas"], {"data_dir": str(scruples_dir)}, limit=2)


def test_task_yaml_whose_metric_list_does_not_start_with_record(tmp_path, scruples_dir):
    from lm_eval.tasks import TaskManager

    from moral_tasks.lm_eval_plugin import TASKS_DIR

    (tmp_path / "bad.yaml").write_text(
        f"task: moral_dilemmas\ninclude: {TASKS_DIR / '_default_template_yaml'}\nmetric_list:\n"
        "  - {metric: xentropy, aggregation: !function moral_tasks.harness.agg_xentropy, higher_is_better: false}\n"
        "  - {metric: record, aggregation: !function moral_tasks.harness.agg_record, higher_is_better: null}\n")
    tm = TaskManager(include_path=str(tmp_path), include_defaults=False, metadata={"data_dir": str(scruples_dir)})
    with pytest.raises(ValueError, match="moral_dilemmas: metric_list must declare 'record' first"):
        tm.load(["moral_dilemmas"])
