"""The HTML leaderboard: structure of the file, then the page as a real headless Chromium shows it."""

from __future__ import annotations

import html
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from moral_tasks.leaderboard.html import render_html

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TASKS = {"moral_dilemmas": 2, "moral_anecdotes": 5}  # task -> number of options
METRICS = ["xentropy", "dirichlet_nll", "acc", "f1_macro", "brier", "ece", "jsd", "tvd"]
HIGHER = {"xentropy": False, "dirichlet_nll": False, "acc": True, "f1_macro": True, "brier": False, "ece": False,
          "jsd": False, "tvd": False}
ENTRIES = ["mistral-base", "mistral-dm", "gpt-4o <chat> & co"]  # the last one checks escaping


def _stat(rng, value):
    half = rng.uniform(0.005, 0.03)
    return {"value": value, "ci_low": value - half, "ci_high": value + half}


def _records(rng, k, n=60):
    records = []
    for i in range(n):
        counts = rng.multinomial(rng.integers(3, 12), rng.dirichlet(np.ones(k)))
        q = rng.dirichlet(counts + 1.0)
        records.append({"doc_id": f"doc{i}", "q": q.tolist(), "counts": counts.tolist()})
    return records


def make_board(seed=0) -> dict:
    rng = np.random.default_rng(seed)
    rows = []
    for name in ENTRIES:
        rows.append({"name": name, "kind": "entry", "model": "hf", "base": None,
                     "gap_closed": {"moral_dilemmas": float(rng.uniform(0, 0.6)), "moral_anecdotes": None},
                     "metrics": {task: {m: _stat(rng, float(rng.uniform(0.2, 0.9))) for m in METRICS}
                                 for task in TASKS}})
    rows[1]["metrics"]["moral_dilemmas"]["ece"] = None  # a missing value in an entry row
    rows[2]["metrics"]["moral_anecdotes"]["brier"] = {"value": 0.31}  # no interval
    best = {task: {m: _stat(rng, 0.15) for m in ("xentropy", "acc", "f1_macro")} for task in TASKS}
    rows += [
        {"name": "BEST", "kind": "reference", "metrics": best},
        {"name": "human", "kind": "reference",
         "metrics": {"moral_dilemmas": {"acc": _stat(rng, 0.7), "f1_macro": _stat(rng, 0.68)}}},
        {"name": "prior", "kind": "reference", "metrics": {t: {m: _stat(rng, 0.8) for m in METRICS} for t in TASKS}},
        {"name": "uniform", "kind": "reference", "metrics": {t: {m: {"value": 1.0} for m in METRICS} for t in TASKS}},
    ]
    return {
        "title": "Moral ambiguity leaderboard",
        "generated": {"date": "2025-01-01", "moral_ambiguity_version": "0.1.0", "lm_eval_version": "0.4.13",
                      "config": "leaderboard.yaml"},
        "tasks": list(TASKS),
        "metrics": METRICS,
        "higher_is_better": HIGHER,
        "rows": rows,
        "records": {name: {task: _records(rng, k) for task, k in TASKS.items()} for name in ENTRIES},
        "comparisons": [{"task": "moral_dilemmas", "a": "mistral-dm", "b": "mistral-base", "metric": "xentropy",
                         "mean_diff": -0.01, "ci_low": -0.03, "ci_high": 0.01, "p_value": 0.32, "n_docs": 60}],
    }


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


@pytest.fixture(scope="module")
def page_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("leaderboard") / "leaderboard.html"
    render_html(make_board(), path)
    return path


def test_html_structure(page_path):
    text = page_path.read_text(encoding="utf-8")
    for name in ENTRIES + ["BEST", "human", "prior", "uniform"]:
        assert html.escape(name) in text
    assert "<chat>" not in text  # autoescaped
    assert "–" in text  # missing metrics (e.g. human's xentropy)
    assert "0.3100<" in text  # a value without interval shows no brackets
    links = _Links()
    links.feed(text)
    assert links.urls and all(url.startswith("data:image/png;base64,") for url in links.urls)
    assert "http://" not in text and "https://" not in text
    # Figures: per task bars + reliability, plus the option-A scatter for the 2-option task.
    assert len(links.urls) == 5
    assert text.count('class="best"') >= len(METRICS)
    # human has no anecdotes metrics: no row of dashes in that table.
    anecdotes = text[text.index('id="table-moral_anecdotes"'):]
    assert ">human<" not in anecdotes[:anecdotes.index("</table>")]


def test_in_headless_chromium(page_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors, requests = [], []
            page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda req: requests.append(req.url))
            page.goto(page_path.as_uri())
            page.wait_for_load_state("load")
            assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            page.screenshot(path=str(page_path.with_suffix(".png")), full_page=True)

            table = page.locator("#table-moral_dilemmas")
            names = lambda: table.locator("tbody tr td:first-child").all_inner_texts()  # noqa: E731
            assert "gpt-4o <chat> & co" in names()[2]
            before = names()
            header = table.locator("thead th", has_text="xentropy")
            header.click()
            ascending = names()
            header.click()
            descending = names()
            page.screenshot(path=str(page_path.with_name("sorted.png")))
        finally:
            browser.close()

    assert ascending != before
    # human has no xentropy: it stays last in both directions, the others reverse.
    assert ascending[-1].startswith("human") and descending[-1].startswith("human")
    assert descending[:-1] == ascending[-2::-1]
    assert not errors, errors
    assert all(url.startswith(("file:", "data:")) for url in requests), requests


def test_sparse_board(tmp_path):
    """No records, comparisons or gap closed, NaN and None values: tables only, all dashes where empty."""
    board = make_board()
    del board["records"], board["comparisons"]
    for row in board["rows"]:
        row.pop("gap_closed", None)
        row["metrics"].pop("moral_anecdotes", None)
    board["rows"][0]["metrics"]["moral_dilemmas"]["acc"] = {"value": float("nan")}
    render_html(board, tmp_path / "sparse.html")
    text = (tmp_path / "sparse.html").read_text(encoding="utf-8")
    assert "gap closed" not in text and "Paired comparisons" not in text
    assert text.count("data:image/png") == 1  # the dilemmas bar chart: anecdotes has no value to plot
    anecdotes = text[text.index('id="table-moral_anecdotes"'):]
    anecdotes = anecdotes[:anecdotes.index("</table>")]
    assert anecdotes.count("<tr") == 1 + len(ENTRIES)  # header + entries; empty reference rows are dropped
    assert anecdotes.count("–") == len(ENTRIES) * len(METRICS)
