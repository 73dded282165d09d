"""Leaderboard faults, each driven through ``moral-ambiguity leaderboard``: exit code, one error line, nothing lost.

Results folders are written by hand in the samples format of moral_tasks.records (see
tests/leaderboard_results.py), so every expected number is worked out in the test.
"""

from __future__ import annotations

import csv
import json
import math
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared test helpers

from conftest import BIN, run  # noqa: E402
from leaderboard_results import SCORING, record, write_run  # noqa: E402
from scruples_factory import anecdote_row, dilemma_row, write_jsonl  # noqa: E402

from moral_tasks.data import SAMPLE_DIR  # noqa: E402


@pytest.fixture
def leaderboard(cli):
    """``leaderboard(*argv)``: ``moral-ambiguity leaderboard ARGV`` in-process, as a user runs it."""
    return lambda *argv: cli("leaderboard", *argv)


def csv_rows(out: Path) -> list[dict]:
    with open(out / "leaderboard.csv", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def value(rows, entry, task, metric) -> float:
    (row,) = [r for r in rows if (r["entry"], r["task"], r["metric"]) == (entry, task, metric)]
    return float(row["value"])


FULL = "full:scruples-v1.0/{}/test rows=2 skipped_zero_votes=0 sha256:0123456789abcdef"


def data_dir(root: Path) -> Path:
    """Train splits with hand-picked votes: dilemmas prior (0.6, 0.4); anecdotes prior (.25, .5, 0, .125, .125)."""
    rng = random.Random(0)
    write_jsonl(root / "dilemmas" / "train.scruples-dilemmas.jsonl",
                [dilemma_row(rng, 0, gold=[4, 1]), dilemma_row(rng, 1, gold=[2, 3])])
    zero = dict.fromkeys(("AUTHOR", "OTHER", "EVERYBODY", "NOBODY", "INFO"), 0)
    write_jsonl(root / "anecdotes" / "train.scruples-anecdotes.jsonl",
                [anecdote_row(rng, 0, {**zero, "AUTHOR": 1, "OTHER": 1}),
                 anecdote_row(rng, 1, {**zero, "OTHER": 2, "NOBODY": 1, "INFO": 1})])
    return root


def test_samples_file_of_a_task_is_matched_by_its_exact_name(tmp_path, leaderboard):
    """A group run holds samples_moral_anecdotes_* and samples_moral_anecdotes_binary_*: each task reads its own."""
    five = [record("moral_anecdotes", f"a{i}", [0.2] * 5, [1, 2, 0, 0, 0]) for i in range(3)]
    two = [record("moral_anecdotes_binary", f"a{i}", [0.5, 0.5], [3, 0]) for i in range(3)]
    source = FULL.format("anecdotes")
    write_run(tmp_path / "res", "m", {"moral_anecdotes": {"records": five, "data_source": source},
                                      "moral_anecdotes_binary": {"records": two, "data_source": source}})
    got = leaderboard("--results", tmp_path / "res", "--output", tmp_path / "out")
    assert got.code == 0, got.err
    rows = csv_rows(tmp_path / "out")
    # uniform on 5 options is ln 5 whatever the votes; on 2 options ln 2.
    assert value(rows, "uniform", "moral_anecdotes", "xentropy") == pytest.approx(math.log(5))
    assert value(rows, "uniform", "moral_anecdotes_binary", "xentropy") == pytest.approx(math.log(2))
    # A flat q has no top option: its hard-label metrics would only say which label comes first.
    assert not [r for r in rows if r["entry"] == "uniform" and r["metric"] in ("acc", "f1_macro", "ece")]


def test_samples_in_an_old_format_fail_that_entry_only(tmp_path, leaderboard):
    good = [record("moral_dilemmas", f"d{i}", [0.5, 0.5], [1, 4]) for i in range(3)]
    write_run(tmp_path / "good", "good", {"moral_dilemmas": {"records": good, "data_source": FULL.format("dilemmas"),
                                                             "metrics": {"xentropy": 0.7}}})
    old = write_run(tmp_path / "old", "old", {"moral_dilemmas": {"records": good}})
    samples = next(old.glob("samples_*.jsonl"))
    samples.write_text(json.dumps({"doc_id": 0, "xentropy": {"doc_id": "d0", "q": [0.5, 0.5]}}) + "\n")
    got = leaderboard("--results", tmp_path / "good", tmp_path / "old", "--output", tmp_path / "out")
    assert got.code == 1
    lines = got.error_lines()
    assert any(f"{samples}:1" in line and "old" in line for line in lines), lines
    assert {"good", "uniform"} <= {r["entry"] for r in csv_rows(tmp_path / "out")}
    assert "FAILED" in (tmp_path / "out" / "leaderboard.md").read_text()


def test_results_of_an_older_version_without_samples_fail_that_entry_only(tmp_path, leaderboard):
    good = [record("moral_dilemmas", f"d{i}", [0.5, 0.5], [1, 4]) for i in range(3)]
    write_run(tmp_path / "good", "good", {"moral_dilemmas": {"records": good, "data_source": FULL.format("dilemmas"),
                                                             "metrics": {"xentropy": 0.7}}})
    # moral-ambiguity 0.1 wrote no record_format; its numbers cannot be rescored without samples
    old = write_run(tmp_path / "old", "old", {"moral_dilemmas": {"records": good, "record_format": None,
                                                                 "metrics": {"xentropy": 0.6}}})
    for samples in old.glob("samples_*.jsonl"):
        samples.unlink()
    got = leaderboard("--results", tmp_path / "good", tmp_path / "old", "--output", tmp_path / "out")
    assert got.code == 1
    (results_file,) = old.glob("results_*.json")
    assert any(f"{results_file}: moral_dilemmas was scored by another version of moral-ambiguity (record format None"
               in line and "rerun lm_eval" in line for line in got.error_lines()), got.err
    assert {"good", "uniform"} <= {r["entry"] for r in csv_rows(tmp_path / "out")}


def test_a_later_limit_run_in_the_same_folder_is_shown_and_said(tmp_path, leaderboard):
    """A --limit smoke test written after the full run of the same model: the newest is shown, loudly."""
    full = [record("moral_dilemmas", f"d{i}", [0.5, 0.5], [1, 4]) for i in range(4)]
    write_run(tmp_path / "res", "m", {"moral_dilemmas": {"records": full}}, date="2026-01-01T00-00-00.1")
    folder = write_run(tmp_path / "res", "m", {"moral_dilemmas": {"records": full[:1]}}, date="2026-01-02T00-00-00.1",
                       limit=1)
    got = leaderboard("--results", tmp_path / "res", "--output", tmp_path / "out")
    assert got.code == 0, got.err
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    older, newer = folder / "results_2026-01-01T00-00-00.1.json", folder / "results_2026-01-02T00-00-00.1.json"
    assert f"m on moral_dilemmas: 2 runs in its results folder; the newest ({newer}) is shown, not {older}" in md
    assert "m on moral_dilemmas: lm_eval ran with --limit 1: the first documents of the split, not all of it" in md


def test_misspelt_top_level_key_is_refused_with_its_line(tmp_path, leaderboard):
    board = tmp_path / "board.yaml"
    board.write_text("tasks: [moral_dilemmas]\nmetdata: {split: dev}\nentries: [{name: a, model: hf}]\n")
    got = leaderboard("--config", board, "--output", tmp_path / "out")
    assert got.code == 2
    line = got.error_line()
    assert f"{board}:2" in line and "'metdata'" in line and "did you mean 'metadata'" in line
    assert not (tmp_path / "out" / "runs").exists()  # nothing ran on defaults


def test_value_of_the_wrong_type_is_refused_with_its_key(tmp_path, leaderboard):
    board = tmp_path / "board.yaml"
    board.write_text("tasks: [moral_dilemmas]\nentries:\n  - {name: a, model: hf}\n  - name: b\n    model: hf\n"
                     "    limit: ten\n")
    line = leaderboard("--config", board, "--output", tmp_path / "out").error_line()
    assert f"{board}:6" in line and "entries[1].limit (b) must be a whole number" in line


def test_unknown_metadata_key_is_refused(tmp_path, leaderboard):
    board = tmp_path / "board.yaml"
    board.write_text("tasks: [moral_dilemmas]\nmetadata:\n  split: dev\n  bootstrap_resample: 10\n"
                     "entries: [{name: a, model: hf}]\n")
    line = leaderboard("--config", board, "--output", tmp_path / "out").error_line()
    assert f"{board}:4" in line and "metadata.bootstrap_resample" in line and "bootstrap_resamples" in line


def test_missing_data_dir_is_refused(tmp_path, leaderboard):
    board = tmp_path / "board.yaml"
    board.write_text(f"tasks: [moral_dilemmas]\nmetadata: {{data_dir: {tmp_path / 'nowhere'}}}\n"
                     "entries: [{name: a, model: hf}]\n")
    line = leaderboard("--config", board, "--output", tmp_path / "out").error_line()
    assert f"{board}:2" in line and "metadata.data_dir" in line and "not a directory" in line


@pytest.mark.slow
def test_board_file_error_through_the_console_script(tmp_path):
    """The one real subprocess: what a user's shell gets."""
    board = tmp_path / "board.yaml"
    board.write_text("tasks: [moral_dilemmas]\nentries: [{name: a, model: hf, modle_args: x}]\n")
    proc = run([BIN / "moral-ambiguity", "leaderboard", "--config", board, "--output", tmp_path / "out"],
               cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"moral-ambiguity leaderboard: error: {board}:2: unknown key 'entries[0].modle_args' (a) "
        "(did you mean 'model_args'?)"]


def test_reference_rows_come_from_each_tasks_own_settings_and_data(tmp_path, leaderboard):
    data = data_dir(tmp_path / "data")
    meta = {"data_dir": str(data)}
    dil = {**SCORING, "fixed_concentration": 2.0}
    anec = {**SCORING, "fixed_concentration": 7.0}
    d = [record("moral_dilemmas", "d0", [0.5, 0.5], [4, 1], scoring=dil),
         record("moral_dilemmas", "d1", [0.5, 0.5], [1, 4], scoring=dil)]
    a = [record("moral_anecdotes", "a0", [0.2] * 5, [2, 0, 0, 0, 0], scoring=anec),
         record("moral_anecdotes", "a1", [0.2] * 5, [0, 2, 0, 0, 0], scoring=anec)]
    # "first" scored one dilemma only (e.g. --limit): its BEST is not the task's.
    write_run(tmp_path / "first", "first", {"moral_dilemmas": {
        "records": d[:1], "metadata": meta, "data_source": FULL.format("dilemmas"),
        "metrics": {"xentropy": 0.6, "best_xentropy": (0.1, 0.09, 0.11)}}})
    write_run(tmp_path / "second", "second", {
        "moral_dilemmas": {"records": d, "metadata": meta, "data_source": FULL.format("dilemmas"),
                           "metrics": {"xentropy": 0.7, "best_xentropy": (0.3, 0.29, 0.31)}},
        "moral_anecdotes": {"records": a, "metadata": meta, "data_source": FULL.format("anecdotes"),
                            "metrics": {"xentropy": 1.7, "best_xentropy": (0.9, 0.89, 0.91)}}})
    got = leaderboard("--results", tmp_path / "first", tmp_path / "second", "--output", tmp_path / "out")
    assert got.code == 0, got.err
    rows = csv_rows(tmp_path / "out")
    # prior = train class frequencies: dilemmas (0.6, 0.4), anecdotes (.25, .5, 0, .125, .125).
    # dilemmas: mean of -(0.8 ln .6 + 0.2 ln .4) and -(0.2 ln .6 + 0.8 ln .4).
    assert value(rows, "prior", "moral_dilemmas", "xentropy") == pytest.approx(-(math.log(0.6) + math.log(0.4)) / 2)
    assert value(rows, "prior", "moral_anecdotes", "xentropy") == pytest.approx(-(math.log(0.25) + math.log(0.5)) / 2)
    # Dirichlet-multinomial NLL at each task's own fixed s, uniform q: alpha = s/K per option.
    # dilemmas s=2 (alpha 1, 1), votes (4, 1) in some order: P = (1*2*3*4) * 1 / (2*3*4*5*6) = 1/30.
    assert value(rows, "uniform", "moral_dilemmas", "dirichlet_nll_fixed") == pytest.approx(math.log(30))
    # anecdotes s=7, 2 votes on one option: P = 1.4 * 2.4 / (7 * 8) = 0.06.
    assert value(rows, "uniform", "moral_anecdotes", "dirichlet_nll_fixed") == pytest.approx(-math.log(0.06))
    # BEST from the entry that scored all of the task's documents, per task (0.3 and 0.9 as written, or the
    # same entry's value recomputed from its samples where this version rescores them).
    best = value(rows, "BEST", "moral_dilemmas", "xentropy")
    assert best == value(rows, "second", "moral_dilemmas", "best_xentropy") != value(rows, "first", "moral_dilemmas",
                                                                                       "best_xentropy")
    assert value(rows, "BEST", "moral_anecdotes", "xentropy") == value(rows, "second", "moral_anecdotes",
                                                                       "best_xentropy")
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "first" in md
    page = (tmp_path / "out" / "leaderboard.html").read_text()
    assert "first on moral_dilemmas: scored 1 of the 2 documents" in page


def test_entries_scored_with_different_settings_are_not_mixed(tmp_path, leaderboard):
    def recs(s):
        scoring = {**SCORING, "fixed_concentration": s}
        return [record("moral_dilemmas", f"d{i}", [0.5, 0.5], [1, 4], scoring=scoring) for i in range(2)]
    write_run(tmp_path / "a", "a", {"moral_dilemmas": {"records": recs(2.0)}})
    write_run(tmp_path / "b", "b", {"moral_dilemmas": {"records": recs(9.0)}})
    got = leaderboard("--results", tmp_path / "a", tmp_path / "b", "--output", tmp_path / "out")
    assert got.code == 2
    line = got.error_line()
    assert "moral_dilemmas" in line and "different settings" in line and '"fixed_concentration": 9.0' in line


def _board_with_a_cached_good_entry(tmp_path: Path, broken_args: str) -> tuple[Path, Path, float]:
    """A board of two entries: "good", whose run is already cached (hand-made results), and "broken"."""
    from moral_tasks.leaderboard.config import load_board
    from moral_tasks.leaderboard.runner import DONE, run_key

    board = tmp_path / "board.yaml"
    board.write_text(f"tasks: [moral_dilemmas]\nmetadata: {{data_dir: {SAMPLE_DIR}, bootstrap_resamples: 0}}\n"
                     "entries:\n  - {name: good, model: hf, model_args: 'pretrained=tests/fixtures/tiny-llama'}\n"
                     f"  - {{name: broken, model: hf, model_args: '{broken_args}'}}\n")
    parsed = load_board(board)
    cached = tmp_path / "out" / "runs" / run_key(parsed.entries[0], "moral_dilemmas", parsed.metadata)
    records = [record("moral_dilemmas", f"d{i}", [0.7, 0.3], [4, 1]) for i in range(4)]
    x = -(0.8 * math.log(0.7) + 0.2 * math.log(0.3))  # every document: q = (0.7, 0.3), votes (4, 1)
    write_run(cached / "lm_eval", "good", {"moral_dilemmas": {
        "records": records, "data_source": "sample:scruples-v1.0/dilemmas/test rows=40 skipped_zero_votes=0 "
                                           "sha256:3cad4ad6ca0aea9e", "metrics": {"xentropy": x}}})
    (cached / DONE).write_text("{}")
    return board, cached, x


def _check_partial_board(out: Path, x: float, error: str) -> None:
    rows = csv_rows(out)
    assert value(rows, "good", "moral_dilemmas", "xentropy") == pytest.approx(x)
    (failed,) = [r for r in rows if r["entry"] == "broken"]
    assert failed["task"] == "moral_dilemmas" and error in failed["error"]
    assert "broken (FAILED)" in (out / "leaderboard.md").read_text()
    assert f"FAILED: {error}" in (out / "leaderboard.html").read_text()
    assert "good" in (out / "leaderboard.tex").read_text()


@pytest.mark.slow
def test_one_failing_entry_keeps_the_others_and_exits_nonzero(tmp_path, leaderboard):
    """A folder that is no model fails in the real lm_eval; the cached good entry is still on every table."""
    (tmp_path / "not-a-model").mkdir()
    board, cached, x = _board_with_a_cached_good_entry(tmp_path, f"pretrained={tmp_path / 'not-a-model'}")
    before = sorted(p.read_bytes() for p in cached.rglob("*") if p.is_file())

    got = leaderboard("--config", board, "--output", tmp_path / "out")
    assert got.code == 1
    lines = got.error_lines()
    assert len(lines) == 2, got.err  # the failure, then the count
    assert "entry broken on moral_dilemmas failed: lm_eval exited" in lines[0] and "lm_eval.log" in lines[0]
    assert "1 of 2 entries failed" in lines[1]
    _check_partial_board(tmp_path / "out", x, "lm_eval exited")
    assert sorted(p.read_bytes() for p in cached.rglob("*") if p.is_file()) == before  # nothing good lost


def test_missing_local_model_path_fails_its_entry_before_running(tmp_path, leaderboard):
    missing = tmp_path / "no-such-model"
    board, _, x = _board_with_a_cached_good_entry(tmp_path, f"pretrained={missing}")
    got = leaderboard("--config", board, "--output", tmp_path / "out")
    assert got.code == 1
    line = got.error_lines()[0]
    assert f"entry broken on moral_dilemmas failed: model_args pretrained={missing}: no such file or folder" in line
    assert not any((tmp_path / "out" / "runs").glob("*/lm_eval.log"))  # lm_eval was never started
    _check_partial_board(tmp_path / "out", x, f"model_args pretrained={missing}: no such file or folder")


def test_entries_without_common_documents_are_not_compared(tmp_path, leaderboard):
    """An adapter scored on other documents than its base (e.g. different --limit offsets): a warning, no test."""
    write_run(tmp_path / "res", "base", {"moral_dilemmas": {
        "records": [record("moral_dilemmas", f"d{i}", [0.5, 0.5], [1, 4]) for i in range(3)]}},
        model_args="pretrained=m")
    write_run(tmp_path / "res", "tuned", {"moral_dilemmas": {
        "records": [record("moral_dilemmas", f"e{i}", [0.5, 0.5], [1, 4]) for i in range(3)]}},
        model_args="pretrained=m,peft=a")
    got = leaderboard("--results", tmp_path / "res", "--output", tmp_path / "out")
    assert got.code == 0, got.err
    page = (tmp_path / "out" / "leaderboard.html").read_text()
    assert "tuned vs base on moral_dilemmas: not compared (fewer than two documents in common" in page


def test_readout_task_for_a_model_type_that_cannot_generate_is_refused(tmp_path, leaderboard):
    board = tmp_path / "board.yaml"
    board.write_text("tasks: [moral_dilemmas, moral_dilemmas_sampling]\nentries:\n  - {name: a, model: hf}\n"
                     "  - name: enc\n    model: hf-encoder-classifier\n")
    got = leaderboard("--config", board, "--output", tmp_path / "out")
    assert got.code == 2
    line = got.error_line()
    assert f"{board}:5" in line and "entries[1] (enc): model type hf-encoder-classifier cannot generate" in line
    assert "['moral_dilemmas_sampling']" in line and not (tmp_path / "out" / "runs").exists()
