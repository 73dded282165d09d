"""The leaderboard: board file, collection, statistics, tables for papers, and one real end-to-end board.

Faults (bad board files, failing entries, wrong samples files) are in tests/faults/test_leaderboard_faults.py.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import ADAPTER_STEPS, run
from leaderboard_results import SCORING, record, write_run
from moral_tasks.leaderboard.collect import metrics_of, read_results_folder
from moral_tasks.leaderboard.config import ConfigError, load_board, task_spec
from moral_tasks.leaderboard.report import gap_closed, grouped, holm, paired_comparison, sig
from moral_tasks.leaderboard.tables import tex_escape
from moral_tasks.records import Record, read_samples


def write(path, text):
    path.write_text(text)
    return path


def test_config_errors_name_the_file_line_and_entry(tmp_path):
    cases = {
        "tasks: [nope]\nentries: [{name: a, model: hf}]\n": ":1: unknown task 'nope'",
        "tasks: [moral_dilemmas]\nentries: [{model: hf}]\n": ":2: entries[0] needs at least 'name' and 'model'",
        "tasks: [moral_dilemmas]\nentries: [{name: a, model: hf, colour: red}]\n":
            "unknown key 'entries[0].colour' (a)",
        "tasks: [moral_dilemmas]\nentries: [{name: a, model: hf}, {name: a, model: hf}]\n": "duplicate entry names",
        "tasks: [moral_dilemmas]\nentries: [{name: a, model: x, model_args: 'model=m,api_key=sk'}]\n": "API keys",
        "tasks: [moral_dilemmas]\nentries: [{name: a, model: hf}]\ncompare: [[a, b]]\n": ":3: compare item",
        "tasks: [moral_dilemmas]\nentries: [{name: a, model: hf, base: zz}]\n": "has base 'zz'",
        "tasks: [moral_dilemmas]\nentries: [{name: a, model: hf, apply_chat_template: 'yes'}]\n": "true or false",
        "tasks: moral_dilemmas\nentries: [{name: a, model: hf}]\n": ":1: tasks must be a list",
        "tasks: [moral_dilemmas]\n": "'entries' is missing or empty",
        "tasks: [moral_dilemmas\n": ":2: invalid YAML",
        "tasks: [moral_anecdotes]\nmetadata: {split: train-extra}\nentries: [{name: a, model: hf}]\n":
            ":2: metadata.split 'train-extra' is not a split",
    }
    for i, (text, message) in enumerate(cases.items()):
        path = write(tmp_path / f"b{i}.yaml", text)
        with pytest.raises(ConfigError) as err:
            load_board(path)
        assert str(err.value).startswith(str(path)) and message in str(err.value), (text, str(err.value))


def test_a_valid_board_file_round_trips(tmp_path):
    board = load_board(write(tmp_path / "b.yaml", (
        "title: T\ntasks: [moral_dilemmas, moral_dilemmas_debiased]\n"
        f"metadata: {{split: dev, data_dir: {tmp_path}, bootstrap_resamples: 10, dirichlet_concentration: 3}}\n"
        "entries:\n  - {name: base, model: hf, model_args: 'pretrained=m', limit: 4, batch_size: auto}\n"
        "  - {name: tuned, model: hf, model_args: 'pretrained=m,peft=a', apply_chat_template: true}\n")))
    assert board.title == "T" and board.tasks == ["moral_dilemmas", "moral_dilemmas_debiased"]
    assert board.metadata["bootstrap_resamples"] == 10 and board.entries[0].limit == 4
    assert [e.base for e in board.entries] == [None, "base"]


def test_task_variants_share_their_base_tasks_spec():
    assert task_spec("moral_dilemmas_debiased").name == "moral_dilemmas"
    assert task_spec("moral_anecdotes_binary").name == "moral_anecdotes_binary"
    assert task_spec("moral_anecdotes_binary_full").name == "moral_anecdotes_binary"
    with pytest.raises(ConfigError):
        task_spec("moral_anecdotesque")


def test_entries_are_grouped_under_their_base_model(tmp_path):
    board = load_board(write(tmp_path / "b.yaml", (
        "tasks: [moral_dilemmas]\nentries:\n"
        "  - {name: a-dm, model: hf, model_args: 'pretrained=a,peft=x'}\n"
        "  - {name: api, model: openai-chat-logprobs}\n"
        "  - {name: a, model: hf, model_args: 'pretrained=a'}\n"
        "  - {name: a-sce, model: hf, model_args: 'pretrained=a,peft=y'}\n")))
    assert [e.name for e in grouped(board.entries)] == ["api", "a", "a-dm", "a-sce"]


def test_gap_closed_hand_worked():
    v = lambda x: {"xentropy": {"value": x}}  # noqa: E731
    assert gap_closed(v(0.55), v(0.65), v(0.45)) == pytest.approx(0.5)
    assert gap_closed(v(0.55), v(0.65), {}) is None


def test_holm_hand_worked():
    # Sorted 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04).
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def _records(q_rows, counts):
    return [Record(task="moral_dilemmas", doc_id=str(i), labels=["FIRST", "SECOND"], option_loglik=list(np.log(q)),
                   q=list(q), option_mass=1.0, counts=list(c), scoring=SCORING)
            for i, (q, c) in enumerate(zip(q_rows, counts))]


def test_paired_comparison_detects_a_real_difference_and_not_a_fake_one():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 6, size=(300, 2))
    counts[counts.sum(1) == 0] = [1, 0]
    p = counts / counts.sum(1, keepdims=True)
    good = _records(0.8 * p + 0.1, counts.tolist())
    bad = _records([[0.5, 0.5]] * 300, counts.tolist())
    result = paired_comparison(good, bad)
    # Mean per-document xentropy difference, worked out independently of the module.
    expected = np.mean(-(p * np.log(0.8 * p + 0.1)).sum(1) + (p * np.log(0.5)).sum(1))
    assert result["mean_diff"] == pytest.approx(expected)
    assert result["mean_diff"] < 0 and result["p_value"] < 0.01 and result["ci_high"] < 0
    same = paired_comparison(good, list(reversed(good)))
    assert same["mean_diff"] == pytest.approx(0.0) and same["p_value"] == pytest.approx(1.0)


def test_metrics_of_a_results_row_survive_lm_eval_quirks():
    """stderr "N/A", NaN, a missing interval, a string field."""
    row = {"xentropy,none": 0.61, "xentropy_stderr,none": "N/A", "xentropy_ci95,none": [0.6, 0.62],
           "acc,none": float("nan"), "brier,none": 0.2, "data_source,none": "sample:x", "alias": "moral_dilemmas"}
    assert metrics_of(row) == {"xentropy": {"value": 0.61, "ci_low": 0.6, "ci_high": 0.62},
                               "brier": {"value": 0.2, "ci_low": None, "ci_high": None}}


def test_collect_reads_a_results_folder_with_a_random_name_and_bare_nan(tmp_path):
    folder = tmp_path / "res" / "a1b2c3d4"
    folder.mkdir(parents=True)
    # q = (0.25, 0.75) against votes (4, 1): xentropy = -(0.8 ln 0.25 + 0.2 ln 0.75).
    x = -(0.8 * math.log(0.25) + 0.2 * math.log(0.75))
    (folder / "results_2026-01-01T00-00-00.5.json").write_text(
        f'{{"results": {{"moral_dilemmas": {{"xentropy,none": {x!r}, "acc,none": NaN, '
        '"data_source,none": "sample:x"}}, '
        '"config": {"model": "hf", "model_args": "pretrained=x"}}')
    rec = record("moral_dilemmas", "d0", [0.25, 0.75], [4, 1])
    (folder / "samples_moral_dilemmas_2026-01-01T00-00-00.5.jsonl").write_text(json.dumps({"record": rec}) + "\n")
    got = read_results_folder(tmp_path / "res")["a1b2c3d4"]["moral_dilemmas"]
    assert got["metrics"]["xentropy"]["value"] == pytest.approx(x, abs=1e-12)
    assert got["records"][0].q == [0.25, 0.75] and got["data_source"] == "sample:x"
    assert got["disagreements"] == []


def test_samples_of_the_same_run_are_preferred(tmp_path):
    """Two runs of a model in one folder: each results file reads the samples written with it."""
    for date, q in (("2026-01-01T00-00-00.1", 0.6), ("2026-01-02T00-00-00.1", 0.9)):
        write_run(tmp_path, "m", {"moral_dilemmas": {"records": [record("moral_dilemmas", "d", [q, 1 - q], [1, 1])]}},
                  date=date)
    got = read_results_folder(tmp_path)["m"]["moral_dilemmas"]
    assert got["records"][0].q == [0.9, pytest.approx(0.1)]
    assert got["samples_file"].endswith("samples_moral_dilemmas_2026-01-02T00-00-00.1.jsonl")


@pytest.fixture(scope="module")
def small_board(tmp_path_factory):
    """A base and its adapter on one task, 40 documents, the adapter clearly better: every output written.

    Built from collected results directly (report and writers under test, not collection), with
    reported numbers chosen to exercise rounding.
    """
    from moral_tasks.leaderboard.config import Board, Entry
    from moral_tasks.leaderboard.html import render_html
    from moral_tasks.leaderboard.report import build_board
    from moral_tasks.leaderboard.tables import write_csv, write_latex, write_markdown

    out = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 6, size=(40, 2))
    counts[counts.sum(1) == 0] = [1, 0]
    p = counts / counts.sum(1, keepdims=True)
    source = "full:scruples-v1.0/dilemmas/test rows=40 skipped_zero_votes=0 sha256:0123456789abcdef"
    stat = lambda v, lo=None, hi=None: {"value": v, "ci_low": lo, "ci_high": hi}  # noqa: E731
    results = {}
    for name, q, x in (("base_model", np.full_like(p, 0.5), stat(0.69315, 0.68, 0.70)),
                       ("tuned & co", 0.9 * p + 0.05, stat(0.52345678, 0.5, 0.55))):
        recs = [Record.from_json(record("moral_dilemmas", f"d{i}", q[i].tolist(), counts[i].tolist()), "test")
                for i in range(40)]
        results[name] = {"moral_dilemmas": {
            "records": recs, "data_source": source, "metadata": {}, "results_file": f"{name}/results.json",
            "metrics": {"xentropy": x, "acc": stat(0.5), "best_xentropy": stat(0.40123, 0.4, 0.402)}}}
    board = Board(["moral_dilemmas"], [Entry("base_model", "hf", "pretrained=m"),
                                       Entry("tuned & co", "hf", "pretrained=m,peft=a", base="base_model")])
    summary = build_board(board, results)
    write_csv(summary, out / "leaderboard.csv")
    write_markdown(summary, out / "leaderboard.md")
    write_latex(summary, out / "leaderboard.tex")
    render_html(summary, out / "leaderboard.html")
    return out, summary


def test_markdown_has_four_significant_digits_and_fits_a_readme(small_board):
    out, _ = small_board
    md = (out / "leaderboard.md").read_text()
    headline = md[md.index("## Headline"):md.index("## moral_dilemmas: all metrics")]
    assert "**0.5235** [0.500, 0.550]" in headline  # 4 significant digits, interval 3, best in bold
    assert "0.6932 [0.680, 0.700]" in headline
    assert "0.52345678" not in md
    assert max(len(line) for line in headline.splitlines()) < 160
    assert "| *BEST* | 0.4012 [0.400, 0.402]" in headline
    assert "*uniform* | 0.6931" in headline


def test_latex_table_is_booktabs_with_intervals_and_bold_best(small_board):
    out, _ = small_board
    tex = (out / "leaderboard.tex").read_text()
    assert all(rule in tex for rule in (r"\toprule", r"\midrule", r"\bottomrule"))
    assert r"\textbf{0.5235} {\scriptsize[0.500, 0.550]}" in tex
    assert r"tuned \& co" in tex and r"\textit{BEST}" in tex and r"\textit{uniform}" in tex
    assert tex.index(r"tuned \& co") < tex.index(r"\textit{BEST}")
    assert tex.count(r"\begin{tabular}") == 1 and tex.count(r"\end{table}") == 1


def test_tex_escape():
    assert tex_escape("a_b & 100% #1 {x} ~ ^ $\\") == (r"a\_b \& 100\% \#1 \{x\} \textasciitilde{} "
                                                       r"\textasciicircum{} \$\textbackslash{}")


def test_csv_keeps_full_precision_and_gap_closed(small_board):
    out, _ = small_board
    rows = list(csv.DictReader((out / "leaderboard.csv").read_text().splitlines()))
    (x,) = [r for r in rows if r["entry"] == "tuned & co" and r["metric"] == "xentropy"]
    assert float(x["value"]) == 0.52345678 and x["readout"] == "logprob"
    (gap,) = [r for r in rows if r["metric"] == "gap_closed"]
    assert float(gap["value"]) == pytest.approx((0.69315 - 0.52345678) / (0.69315 - 0.40123))


def test_summary_names_the_best_entry_and_the_significant_difference(small_board):
    out, _ = small_board
    md = (out / "leaderboard.md").read_text()
    summary = md[md.index("## Summary"):md.index("## Headline")]
    assert "Best entry: tuned & co, xentropy 0.5235 nats (95% CI 0.5000–0.5500)." in summary
    gap = (0.69315 - 0.52345678) / (0.69315 - 0.40123)
    assert f"It closes {gap:.0%} of the gap between its base model base_model and the BEST ceiling." in summary
    assert "tuned & co has lower xentropy than base_model by" in summary and "Holm-adjusted p = " in summary


@pytest.mark.slow
def test_end_to_end_board_base_two_adapters_and_an_api_model(board_run):
    """The real lm_eval: base + two adapters + an API model on llama.cpp; rerun from cache."""
    if not board_run.api:
        pytest.skip("llama-cpp-python[server] is not installed: no API entry on the board")
    assert board_run.proc.returncode == 0, board_run.proc.stderr[-3000:]
    assert "0 of 4 runs cached, 4 to run" in board_run.proc.stderr
    rows = board_run.rows
    assert {"tiny-base", "tiny-sce", "tiny-dm", "tiny-api", "BEST", "prior", "uniform"} <= {r["entry"] for r in rows}
    assert all(r["ci_low"] not in ("", "None") for r in rows if r["entry"] == "tiny-base" and r["metric"] == "xentropy")
    md = (board_run.out / "leaderboard.md").read_text()
    assert "gap closed" in md and "| moral_dilemmas | tiny-sce | tiny-api |" in md
    assert "| moral_dilemmas | tiny-dm | tiny-base |" in md and "sample:scruples-v1.0/dilemmas/train" in md
    html = (board_run.out / "leaderboard.html").read_text()
    assert "tiny-api" in html and html.count("data:image/png;base64") >= 3
    assert (board_run.out / "leaderboard.tex").is_file()
    # Nothing changed: the rerun runs nothing and writes the same numbers.
    again = run(board_run.cmd, cwd=board_run.root)
    assert "4 of 4 runs cached, 0 to run" in again.stderr
    assert list(csv.DictReader((board_run.out / "leaderboard.csv").read_text().splitlines())) == rows


def test_page_opens_with_summary_then_provenance(small_board):
    """The page's order without a browser (tests/test_leaderboard_html.py checks it in Chromium)."""
    out, _ = small_board
    page = (out / "leaderboard.html").read_text()
    assert page.index('id="summary"') < page.index('id="provenance"') < page.index("<table")
    assert "Best entry: tuned &amp; co" in page and 'data-kind="sample"' not in page  # full data: no sample warning


def test_readout_column_appears_once_a_board_compares_readouts(tmp_path, small_board):
    from moral_tasks.leaderboard.config import Board, Entry
    from moral_tasks.leaderboard.html import render_html
    from moral_tasks.leaderboard.report import build_board
    from moral_tasks.leaderboard.tables import write_csv

    assert "<th class=\"text\">readout</th>" not in (small_board[0] / "leaderboard.html").read_text()
    recs = [Record.from_json(record("moral_dilemmas", f"d{i}", [0.6, 0.4], [3, 2]), "test") for i in range(4)]
    result = {"records": recs, "data_source": None, "metadata": {}, "results_file": "r.json",
              "metrics": {"xentropy": {"value": 0.7, "ci_low": None, "ci_high": None}}}
    tasks = ["moral_dilemmas", "moral_dilemmas_verbalized"]  # a readout task as issue 13 will add them
    board = build_board(Board(tasks, [Entry("m", "hf")]), {"m": dict.fromkeys(tasks, result)})
    render_html(board, tmp_path / "page.html")
    write_csv(board, tmp_path / "board.csv")
    page = (tmp_path / "page.html").read_text()
    assert page.count("<th class=\"text\">readout</th>") >= 2 and '<td class="text" data-v="verbalized">' in page
    rows = csv.DictReader((tmp_path / "board.csv").read_text().splitlines())
    readouts = {(r["entry"], r["task"]): r["readout"] for r in rows}
    assert readouts[("m", "moral_dilemmas")] == "logprob"
    assert readouts[("m", "moral_dilemmas_verbalized")] == "verbalized"


@given(st.lists(st.floats(0, 1), min_size=1, max_size=12), st.floats(0.001, 0.2))
def test_holm_rejects_exactly_what_the_step_down_procedure_rejects(p_values, alpha):
    """Holm (1979): order the p-values; reject while p_(j) <= alpha / (m - j + 1) (j from 1), stop at the first
    that is not. An adjusted p-value <= alpha must mean exactly that hypothesis was rejected."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    rejected = set()
    for j, i in enumerate(order, 1):
        if p_values[i] > alpha / (m - j + 1):
            break
        rejected.add(i)
    adjusted = holm(p_values)
    assert all(p <= a <= 1 for p, a in zip(p_values, adjusted))
    # Ties in p at a rejection boundary are decided by the stable order in both; compare away from boundaries.
    for i in range(m):
        if all(abs(p_values[i] * (m - j) - alpha) > 1e-12 for j in range(m)):
            assert (adjusted[i] <= alpha) == (i in rejected), (p_values, alpha, adjusted)


@given(st.floats(1e-5, 9999))
def test_sig_keeps_four_significant_digits(x):
    """Up to 4 integer digits (larger values keep all theirs: no scientific notation in tables)."""
    text = sig(x)
    digits = text.replace(".", "").lstrip("0")
    assert len(digits) == 4 or (len(digits) == 5 and float(text) >= 9999.5)  # 9999.7 rounds up to 10000
    assert float(text) == pytest.approx(x, rel=5.01e-4)


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["soft_cross_entropy", "dirichlet_multinomial"])
def test_training_lowers_train_xentropy_through_lm_eval_peft(board_run, adapters, loss):
    """The trainer's round trip, read off the board: each loss's adapter, evaluated by the real lm_eval CLI with
    peft= (the board's runs), beats the base. Here, beside the board test, so that both share one board per worker."""
    card = json.loads((adapters.get(loss) / "moral_ambiguity_card.json").read_text())
    assert card["loss"] == loss and card["steps"] == ADAPTER_STEPS and card["adapter"] == "lora"
    assert card["train_data"]["source"] == "sample" and card["train_data"]["rows_used"] == 40
    assert card["train_data"]["dataset"] == "scruples-v1.0/dilemmas" and card["train_data"]["split"] == "train"
    assert (adapters.get(loss) / "adapter_config.json").exists()
    xent = {r["entry"]: float(r["value"]) for r in board_run.rows if r["metric"] == "xentropy"}
    name = {"soft_cross_entropy": "tiny-sce", "dirichlet_multinomial": "tiny-dm"}[loss]
    assert xent[name] < xent["tiny-base"] - 0.05, xent


@pytest.mark.slow
def test_one_models_readouts_side_by_side_with_paired_tests_and_answer_consistency(tmp_path):
    """A results folder of one model with the log-probability, sampling and answer runs of moral_dilemmas,
    through ``moral-ambiguity leaderboard --results``: readout column, paired readout tests, consistency."""
    from moral_tasks.cli.main import main
    from moral_tasks.readouts.readout import read_replies

    def readout(task, kind, doc_id, replies, counts):
        settings = {**SCORING, "readout": kind, "samples": len(replies), "smoothing": 1.0}
        return read_replies(task, doc_id, kind, replies, ("FIRST", "SECOND"), ("A", "B"), counts, None,
                            settings).to_json()

    counts = [[4, 1], [3, 2], [1, 4], [0, 5], [5, 0], [2, 3]]
    logprob = [record("moral_dilemmas", f"d{i}", [0.8, 0.2], c) for i, c in enumerate(counts)]  # argmax A always
    written = ["A", "B", "B", "A", "no idea", "A"]  # differs on d1, d2; d4 unparsed
    answer = [readout("moral_dilemmas_answer", "answer", f"d{i}", [w], c) for i, (w, c) in enumerate(zip(written, counts))]
    sampling = [readout("moral_dilemmas_sampling", "sampling", f"d{i}", ["A", "B", "B"], c) for i, c in enumerate(counts)]
    numbered = [record("moral_dilemmas", f"d{i}", [0.5, 0.5], c) for i, c in enumerate(counts)]
    for r in numbered:
        r["task"] = "moral_dilemmas_numbered"
    write_run(tmp_path / "res", "m", {"moral_dilemmas": {"records": logprob},
                                      "moral_dilemmas_numbered": {"records": numbered},
                                      "moral_dilemmas_answer": {"records": answer},
                                      "moral_dilemmas_sampling": {"records": sampling}})
    assert main(["leaderboard", "--results", str(tmp_path / "res"), "--output", str(tmp_path / "out")]) == 0
    rows = list(csv.DictReader((tmp_path / "out" / "leaderboard.csv").read_text().splitlines()))
    readouts = {r["task"]: r["readout"] for r in rows if r["entry"] == "m" and r["metric"] != "answer_consistency"}
    assert readouts == {"moral_dilemmas": "logprob", "moral_dilemmas_numbered": "logprob", "moral_dilemmas_answer": "answer",
                        "moral_dilemmas_sampling": "sampling"}
    (rate,) = [float(r["value"]) for r in rows if r["metric"] == "answer_consistency"]
    assert rate == pytest.approx(2 / 5)  # 5 compared, 2 differ
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "| m | moral_dilemmas | 2 | 5 | 1 | 40.0% |" in md
    # Sampling q = (1+1, 2+1)/5 = (0.4, 0.6) on every document vs (0.8, 0.2): the per-document xentropy
    # difference, worked by hand, is the paired comparison's mean difference.
    shares = np.array(counts) / 5
    diff = -(shares @ np.log([0.4, 0.6])) + shares @ np.log([0.8, 0.2])
    line = next(x for x in md.splitlines() if x.startswith("| moral_dilemmas_sampling | m (sampling) | m (logprob) |"))
    assert f"{diff.mean():+.3g}" in line and line.endswith("| 6 |")
    assert "| moral_dilemmas_answer | m (answer) | m (logprob) |" in md  # on the 5 documents with a written answer
    page = (tmp_path / "out" / "leaderboard.html").read_text()
    assert 'id="answer-consistency"' in page and "<td data-v=\"0.4\">40.0%</td>" in page
    assert "m (sampling)" in page
    # Two templates: xentropy (mean over documents, by hand) of q = (.8, .2) and of (.5, .5) = ln 2.
    x_default, x_numbered = float(-(shares @ np.log([0.8, 0.2])).mean()), math.log(2)
    spread = {r["metric"]: float(r["value"]) for r in rows if r["metric"].startswith("xentropy_template_")}
    assert spread["xentropy_template_min"] == pytest.approx(min(x_default, x_numbered))
    assert spread["xentropy_template_max"] == pytest.approx(max(x_default, x_numbered))
    assert spread["xentropy_template_std"] == pytest.approx(abs(x_default - x_numbered) / 2)
    assert "## Prompt sensitivity" in md and "| m | moral_dilemmas | default, numbered |" in md
    assert 'id="prompt-sensitivity"' in page and ">default, numbered</td>" in page
    assert r"\multicolumn{1}{c}{moral\_dilemmas\_sampling (sampling)}" in (tmp_path / "out" / "leaderboard.tex").read_text()


@pytest.mark.slow
def test_tiny_model_board_with_readouts_runs_each_and_compares_them(tiny_model, tmp_path):
    """The real path: lm_eval runs the tiny model on a log-probability task and two generation readouts."""
    from moral_tasks.cli.main import main
    from moral_tasks.data import SAMPLE_DIR

    board = tmp_path / "board.yaml"
    board.write_text("tasks: [moral_dilemmas, moral_dilemmas_sampling, moral_dilemmas_answer]\n"
                     f"metadata: {{data_dir: '{SAMPLE_DIR}', split: train, bootstrap_resamples: 0, samples: 2}}\n"
                     f"entries:\n  - {{name: tiny, model: hf, model_args: 'pretrained={tiny_model}', limit: 4}}\n")
    code = main(["leaderboard", "--config", str(board), "--output", str(tmp_path / "out")])
    rows = list(csv.DictReader((tmp_path / "out" / "leaderboard.csv").read_text().splitlines()))
    assert code == 0, (tmp_path / "out" / "leaderboard.md").read_text()
    readouts = {r["task"]: r["readout"] for r in rows if r["entry"] == "tiny" and r["metric"] == "parse_rate"}
    assert readouts == {"moral_dilemmas_sampling": "sampling", "moral_dilemmas_answer": "answer"}
    samples = {p.name.split("_2")[0]: p for p in (tmp_path / "out").rglob("samples_*.jsonl")}
    answers = read_samples(samples["samples_moral_dilemmas_answer"])
    assert len(answers) == 4 and all(r.generation["replies"] == 1 for r in answers)
    # The consistency rate is what the two samples files say, counted here by hand.
    logprob = {r.doc_id: int(np.argmax(r.q)) for r in read_samples(samples["samples_moral_dilemmas"])}
    compared = [r for r in answers if r.generation["parsed"]]
    consistency = [r for r in rows if r["metric"] == "answer_consistency"]
    if compared:
        differ = sum(logprob[r.doc_id] != int(np.argmax(r.generation["votes"])) for r in compared)
        assert float(consistency[0]["value"]) == pytest.approx(differ / len(compared))
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "| tiny | moral_dilemmas |" in md and "## Answer consistency" in md
