"""Faults of the readout tasks, each produced for real: one test per case."""

from __future__ import annotations

import json

import pytest

from moral_tasks.cli.main import main as cli
from moral_tasks.readouts.readout import read_replies

SCORING = {"fixed_concentration": 2.0, "bootstrap_resamples": 0, "bootstrap_seed": 0, "best_samples": 50,
           "merge_variants": False, "agreement_cuts": [0.7, 0.9], "prompt_version": "1", "data_source": "test",
           "prior": None, "readout": "answer", "samples": 1, "smoothing": 1.0}


def write_readout_file(folder, lines):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "samples_moral_dilemmas_answer_2026-01-01T00-00-00.000000.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def readout_line(doc_id, reply):
    r = read_replies("moral_dilemmas_answer", doc_id, "answer", [reply], ("FIRST", "SECOND"), ("A", "B"), [3, 2],
                     None, SCORING)
    return json.dumps({"doc_id": 0, "record": r.to_json(), "parse_rate": doc_id})


def test_truncated_readout_line_names_file_and_line(tmp_path, rescore_error):
    good = readout_line("d1", "A")
    path = write_readout_file(tmp_path / "run", [good, good[: len(good) // 2]])
    assert f"{path}:2: invalid JSON" in rescore_error(tmp_path / "run")


def test_readout_file_of_the_old_readout_format_is_refused(tmp_path, rescore_error):
    old = {"format": "moral-ambiguity/readout/1", "task": "moral_dilemmas_answer", "doc_id": "d1", "kind": "answer"}
    path = write_readout_file(tmp_path / "run", [json.dumps({"doc_id": 0, "readout": old})])
    err = rescore_error(tmp_path / "run")
    assert f"{path}:1: no 'record' field" in err and "rerun lm_eval" in err


def test_readout_document_twice_is_refused(tmp_path, rescore_error):
    write_readout_file(tmp_path / "run", [readout_line("d1", "A"), readout_line("d1", "B")])
    assert "moral_dilemmas_answer: document(s) read twice: d1" in rescore_error(tmp_path / "run")


def test_rescore_of_only_unreadable_replies_reports_counts(tmp_path, capsys):
    write_readout_file(tmp_path / "run", [readout_line("d1", "no idea"), readout_line("d2", "A or B")])
    out = tmp_path / "rescored.json"
    assert cli(["rescore", str(tmp_path / "run"), "--output", str(out)]) == 0
    metrics = json.loads(out.read_text())["tasks"]["moral_dilemmas_answer"]["metrics"]
    assert metrics["parse_rate"] == 0 and metrics["no_readout"]["documents"] == 2 and metrics["xentropy"] is None


@pytest.mark.slow
def test_bad_samples_metadata_stops_lm_eval_naming_task_and_key(tmp_path):
    from lm_eval.tasks import TaskManager

    from moral_tasks.lm_eval_plugin import TASKS_DIR

    tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={"samples": 0})
    with pytest.raises(ValueError, match="moral_dilemmas_sampling: metadata samples must be a whole number >= 1, got 0"):
        tm.load(["moral_dilemmas_sampling"])
