"""The leaderboard: config errors, robust collection, paired tests, and one real end-to-end board."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from conftest import run
from moral_tasks.leaderboard.collect import read_results_folder
from moral_tasks.leaderboard.config import ConfigError, load_board
from moral_tasks.leaderboard.report import gap_closed, paired_comparison


def write(path, text):
    path.write_text(text)
    return path


def test_config_errors_name_the_file_and_entry(tmp_path):
    cases = {
        "tasks: [nope]\nentries: [{name: a, model: hf}]\n": "'tasks' must be",
        "tasks: [moral_dilemmas]\nentries: [{model: hf}]\n": "entries[0]: needs at least",
        "tasks: [moral_dilemmas]\nentries: [{name: a, model: hf, colour: red}]\n": "(a): unknown keys ['colour']",
        "tasks: [moral_dilemmas]\nentries: [{name: a, model: hf}, {name: a, model: hf}]\n": "duplicate entry names",
        "tasks: [moral_dilemmas]\nentries: [{name: a, model: x, model_args: 'model=m,api_key=sk'}]\n": "API keys",
        "tasks: [moral_dilemmas]\nentries: [{name: a, model: hf}]\ncompare: [[a, b]]\n": "must be two entry names",
        "tasks: [moral_dilemmas\n": "invalid YAML",
    }
    for i, (text, message) in enumerate(cases.items()):
        path = write(tmp_path / f"b{i}.yaml", text)
        with pytest.raises(ConfigError) as err:
            load_board(path)
        assert str(path) in str(err.value) and message in str(err.value)


def test_adapters_find_their_base():
    board_text = (
        "tasks: [moral_dilemmas]\nentries:\n"
        "  - {name: base, model: hf, model_args: 'pretrained=m'}\n"
        "  - {name: tuned, model: hf, model_args: 'pretrained=m,peft=a'}\n"
    )
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        board = load_board(write(Path(tmp) / "b.yaml", board_text))
    assert [e.base for e in board.entries] == [None, "base"]


def test_gap_closed_hand_worked():
    v = lambda x: {"xentropy": {"value": x}}  # noqa: E731
    assert gap_closed(v(0.55), v(0.65), v(0.45)) == pytest.approx(0.5)
    assert gap_closed(v(0.55), v(0.65), {}) is None


def test_paired_comparison_detects_a_real_difference_and_not_a_fake_one():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 6, size=(300, 2))
    counts[counts.sum(1) == 0] = [1, 0]
    p = counts / counts.sum(1, keepdims=True)
    good = [{"doc_id": i, "q": (0.8 * p[i] + 0.1).tolist(), "counts": counts[i].tolist()} for i in range(300)]
    bad = [{"doc_id": i, "q": [0.5, 0.5], "counts": counts[i].tolist()} for i in range(300)]
    result = paired_comparison(good, bad)
    assert result["mean_diff"] < 0 and result["p_value"] < 0.01 and result["ci_high"] < 0
    same = paired_comparison(good, list(reversed(good)))
    assert same["mean_diff"] == pytest.approx(0.0) and same["p_value"] == pytest.approx(1.0)


def test_collect_survives_lm_eval_quirks(tmp_path):
    """stderr "N/A", bare NaN, stringified resps, no metric record, a random folder name."""
    folder = tmp_path / "res" / "a1b2c3d4"
    folder.mkdir(parents=True)
    (folder / "results_2026-01-01T00-00-00.json").write_text(
        '{"results": {"moral_dilemmas": {"xentropy,none": 0.61, "xentropy_stderr,none": "N/A", '
        '"xentropy_ci95,none": [0.6, 0.62], "acc,none": NaN, "data_source,none": "sample:x"}}, '
        '"config": {"model": "hf", "model_args": "pretrained=x"}}'
    )
    sample = {"doc_id": 0, "doc": {"id": "d0", "counts": [4, 1]}, "resps": [[["-0.5", "False"]], [["-1.5", "False"]]],
              "filtered_resps": ["['-0.5', 'False']", json.dumps(["-1.5", "False"])]}
    (folder / "samples_moral_dilemmas_2026-01-01T00-00-00.jsonl").write_text(json.dumps(sample) + "\n")
    got = read_results_folder(tmp_path / "res")["a1b2c3d4"]["moral_dilemmas"]
    assert got["metrics"]["xentropy"] == {"value": 0.61, "ci_low": 0.6, "ci_high": 0.62}
    assert "acc" not in got["metrics"]
    assert got["records"][0]["q"] == pytest.approx([1 / (1 + math.exp(-1)), 1 - 1 / (1 + math.exp(-1))])


@pytest.mark.slow
def test_end_to_end_board_base_two_adapters_and_an_api_model(board_run):
    """The issue's "done when": one command, base + two adapters + an API model on llama.cpp; rerun from cache."""
    if not board_run.api:
        pytest.skip("llama-cpp-python[server] is not installed: no API entry on the board")
    assert "0 of 4 runs cached, 4 to run" in board_run.proc.stderr
    rows = board_run.rows
    assert {"tiny-base", "tiny-sce", "tiny-dm", "tiny-api", "BEST", "prior", "uniform"} <= {r["entry"] for r in rows}
    assert all(r["ci_low"] not in ("", "None") for r in rows if r["entry"] == "tiny-base")
    md = (board_run.out / "leaderboard.md").read_text()
    assert "gap closed" in md and "| moral_dilemmas | tiny-sce | tiny-api |" in md
    assert "| moral_dilemmas | tiny-dm | tiny-base |" in md and "sample:scruples-v1.0/dilemmas/train" in md
    html = (board_run.out / "leaderboard.html").read_text()
    assert "tiny-api" in html and html.count("data:image/png;base64") >= 3
    # Nothing changed: the rerun runs nothing and writes the same numbers.
    again = run(board_run.cmd, cwd=board_run.root)
    assert "4 of 4 runs cached, 0 to run" in again.stderr
    assert list(csv.DictReader(open(board_run.out / "leaderboard.csv"))) == rows
