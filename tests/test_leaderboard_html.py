"""The HTML leaderboard: the file itself, then the page as a real headless Chromium shows it at 1280 px.

The board is the real pipeline's (hand-made results folders -> ``moral-ambiguity leaderboard
--results``): 10 entries, names up to 40 characters, two base models with adapters, one
task on the bundled sample (the page must warn) and one on "full" data.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from conftest import BIN, run
from leaderboard_results import record, write_run
from moral_tasks.leaderboard.cli import main
from moral_tasks.leaderboard.screenshot import chromium_path, launch

pytestmark = pytest.mark.slow  # ~6 s to build the 10-entry board, ~2 s to start Chromium
WIDTH = 1280
LONG = "a-rather-long-model-name-of-forty-chars"  # + 1 below = 40 characters
ENTRIES = {  # name -> (model_args, how close to the votes: 0 = uniform, 1 = the vote shares)
    "smol-base": ("pretrained=smol", -0.1),  # worse than uniform
    "smol-sce": ("pretrained=smol,peft=sce", 0.6),
    "smol-dm": ("pretrained=smol,peft=dm", 0.5),
    "smol-dm-long-run": ("pretrained=smol,peft=dm2", 0.55),
    LONG + "X": ("pretrained=smol,peft=long", 0.3),
    "qwen-base": ("pretrained=qwen", 0.1),
    "qwen-sce": ("pretrained=qwen,peft=sce", 0.4),
    "qwen-dm": ("pretrained=qwen,peft=dm", 0.2),
    "gpt-4o <chat> & co": ("model=gpt-4o", 0.35),
    "llama.cpp-served-model-with-a-long-alias": ("model=tiny", 0.25),
}
SAMPLE = "sample:scruples-v1.0/dilemmas/test rows=40 skipped_zero_votes=0 sha256:3cad4ad6ca0aea9e"
FULL = "full:scruples-v1.0/anecdotes/test rows=60 skipped_zero_votes=0 sha256:0123456789abcdef"


def _write_results(root: Path, data_dir: Path) -> None:
    rng = np.random.default_rng(0)
    votes = {"moral_dilemmas": rng.multinomial(5, [0.5, 0.5], size=60),
             "moral_anecdotes": rng.multinomial(8, [0.4, 0.3, 0.1, 0.1, 0.1], size=60)}
    for i, (name, (args, skill)) in enumerate(ENTRIES.items()):
        runs = {}
        for task, counts in votes.items():
            k = counts.shape[1]
            p = (counts + 0.5) / (counts + 0.5).sum(1, keepdims=True)
            q = skill * p + (1 - skill) / k
            x = float(np.mean(-(counts / counts.sum(1, keepdims=True) * np.log(q)).sum(1)))
            human = [[int(rng.integers(0, 6)), 0] for _ in counts] if task == "moral_dilemmas" else None
            for h in human or []:
                h[1] = 5 - h[0]
            recs = [record(task, f"{task[:5]}{j}", q[j].tolist(), counts[j].tolist(), mass=0.3 if i == 9 else 0.9,
                           human_counts=None if human is None else human[j]) for j in range(len(counts))]
            runs[task] = {"records": recs, "data_source": SAMPLE if task == "moral_dilemmas" else FULL,
                          "metadata": {} if task == "moral_dilemmas" else {"data_dir": str(data_dir)},
                          "metrics": {"xentropy": (x, x - 0.02, x + 0.02), "acc": (0.5 + skill / 4, 0.4, 0.7),
                                      "tvd": 0.3 - skill / 5, "ece": 0.1, "dirichlet_nll": 3 - skill,
                                      "brier": 0.2, "jsd": 0.25, "f1_macro": 0.4, "calibrated_xentropy": x - 0.01,
                                      "best_xentropy": (0.45, 0.449, 0.451), "best_acc": (0.8, 0.79, 0.81)}}
        write_run(root / "res", name, runs, model_args=args)


@pytest.fixture(scope="module")
def page_path(tmp_path_factory, scruples_dir) -> Path:
    root = tmp_path_factory.mktemp("leaderboard")
    _write_results(root, scruples_dir)
    assert main(["--results", str(root / "res"), "--output", str(root / "out"), "--title", "Moral <ambiguity>"]) == 0
    return root / "out" / "leaderboard.html"


class _Page(HTMLParser):
    """Image sources and links, and the ids of sections and tables in document order."""

    def __init__(self):
        super().__init__()
        self.urls, self.ids = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.urls += [v for k, v in attrs.items() if k in ("src", "href") and v]
        if tag in ("section", "table") and attrs.get("id"):
            self.ids.append(attrs["id"])


def test_html_is_one_self_contained_escaped_file(page_path):
    text = page_path.read_text(encoding="utf-8")
    parsed = _Page()
    parsed.feed(text)
    assert parsed.urls and all(url.startswith("data:image/png;base64,") for url in parsed.urls)
    assert "http://" not in text and "https://" not in text
    assert html.escape("gpt-4o <chat> & co") in text and "<chat>" not in text and "Moral &lt;ambiguity&gt;" in text
    # Summary first, then provenance, then the tables.
    assert parsed.ids[:3] == ["summary", "provenance", "task-moral_dilemmas"]
    # xentropy with intervals, gap closed, and per task a reliability diagram (+ the option-A scatter on dilemmas).
    assert len(parsed.urls) == 2 + 2 + 1


def _row_cells(text: str, table_id: str, name: str) -> list[str]:
    table = text[text.index(f'id="{table_id}"'):]
    table = table[:table.index("</table>")]
    row = next(r for r in table.split("<tr")[1:] if f'data-v="{html.escape(name)}"' in r)
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)]


def test_reference_rows_in_every_table_and_human_without_dashes(page_path):
    text = page_path.read_text(encoding="utf-8")
    for table in ("table-moral_dilemmas", "full-moral_dilemmas", "table-moral_anecdotes", "full-moral_anecdotes"):
        body = text[text.index(f'id="{table}"'):]
        body = body[:body.index("</table>")]
        for ref in ("BEST", "prior", "uniform"):
            assert f'data-v="{ref}"' in body, (table, ref)
    human = _row_cells(text, "table-moral_dilemmas", "human")
    assert "–" not in "".join(human) and any(c for c in human[1:])  # its accuracy, blanks elsewhere
    anecdotes = text[text.index('id="table-moral_anecdotes"'):]
    assert 'data-v="human"' not in anecdotes[:anecdotes.index("</table>")]  # no human votes there: no row


def test_entries_are_grouped_under_their_base(page_path):
    text = page_path.read_text(encoding="utf-8")
    table = text[text.index('id="table-moral_dilemmas"'):]
    names = re.findall(r'<td class="text name" data-v="([^"]+)"', table[:table.index("</table>")])
    smol, qwen = names.index("smol-base"), names.index("qwen-base")
    assert set(names[smol + 1:smol + 5]) == {"smol-sce", "smol-dm", "smol-dm-long-run", LONG + "X"}
    assert set(names[qwen + 1:qwen + 3]) == {"qwen-sce", "qwen-dm"}
    assert 'data-base="smol-base"' in table and "↳" in table


CHECKS = """() => {
  const boxes = Array.from(document.querySelectorAll('.table-box'));
  const tables = Array.from(document.querySelectorAll('table'));
  const first = (sel) => document.querySelector(sel);
  return {
    pageWidth: document.documentElement.scrollWidth,
    viewport: window.innerWidth,
    overflowingBoxes: boxes.filter(b => b.scrollWidth > b.clientWidth).map(b => b.querySelector('table').id),
    tablesPastEdge: tables.filter(t => t.getBoundingClientRect().right > window.innerWidth).map(t => t.id),
    summaryBeforeTables: !!(first('#summary').compareDocumentPosition(first('table'))
                            & Node.DOCUMENT_POSITION_FOLLOWING),
    provenanceBeforeTables: !!(first('#provenance').compareDocumentPosition(first('table'))
                               & Node.DOCUMENT_POSITION_FOLLOWING),
    firstSection: document.querySelector('section').id,
    imagesLoaded: Array.from(document.images).every(i => i.complete && i.naturalWidth > 0),
  };
}"""


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    if chromium_path() is None:
        pytest.skip("no Chromium (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        yield browser
        browser.close()


def test_in_headless_chromium_at_1280_px(page_path, browser):
    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
    errors, requests = [], []
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda req: requests.append(req.url))
    page.goto(page_path.as_uri())
    page.wait_for_load_state("load")
    closed = page.evaluate(CHECKS)
    page.locator("details summary").evaluate_all("els => els.forEach(e => e.click())")  # "all metrics" opened
    opened = page.evaluate(CHECKS)
    page.screenshot(path=str(page_path.with_suffix(".png")), full_page=True)

    for state in (closed, opened):
        assert state["viewport"] == WIDTH and state["pageWidth"] <= WIDTH, state
        assert state["overflowingBoxes"] == [] and state["tablesPastEdge"] == [], state
    assert closed["firstSection"] == "summary" and closed["summaryBeforeTables"] and closed["provenanceBeforeTables"]
    assert closed["imagesLoaded"]

    summary = page.locator("#summary").inner_text()
    # smol-sce is the closest to the votes on both tasks.
    assert summary.count("Best entry: smol-sce, xentropy") == 2 and "95% CI" in summary
    assert "of the gap between its base model smol-base and the BEST ceiling" in summary
    assert "has lower xentropy than smol-base" in summary and "Holm-adjusted p" in summary

    provenance = page.locator("#provenance").inner_text()
    for fact in ("generated", "board file", "split test", "40 rows", "SHA-256", "moral-ambiguity", "lm_eval",
                 "numpy", "60 documents scored", "prior from sample split train", "results_"):
        assert fact in provenance, fact
    warnings = page.locator("#provenance .warning").all_inner_texts()
    assert any("BUNDLED SAMPLE" in w and "moral_dilemmas" in w for w in warnings), warnings
    assert not any("BUNDLED SAMPLE" in w and "moral_anecdotes" in w for w in warnings)
    assert any("llama.cpp-served-model-with-a-long-alias" in w and "option mass 0.3" in w for w in warnings)
    assert any("smol-base" in w and "worse than the uniform" in w for w in warnings)
    assert page.locator("#provenance .warning").first.is_visible()

    # A 40-character name is shown whole; the table sorts on a click, and back.
    table = page.locator("#table-moral_dilemmas")
    names = lambda: table.locator("tbody tr td:first-child").all_inner_texts()  # noqa: E731
    assert any(n.strip().endswith(LONG + "X") for n in names())
    header = table.locator("thead th", has_text="xentropy")
    column = list(table.locator("thead th").all_inner_texts()).index(header.inner_text())
    keys = lambda: table.locator(f"tbody tr td:nth-child({column + 1})").evaluate_all(  # noqa: E731
        "cells => cells.map(c => c.dataset.v)")
    header.click()
    ascending, names_up = keys(), names()
    header.click()
    descending, names_down = keys(), names()
    values = [float(k) for k in ascending if k]
    assert values == sorted(values) and [float(k) for k in descending if k] == sorted(values, reverse=True)
    # The human row has no xentropy: last in both directions.
    assert ascending[-1] == descending[-1] == ""
    assert names_up[-1].startswith("human") and names_down[-1].startswith("human")
    assert not errors, errors
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    page.close()


def test_screenshot_command_writes_a_1280_px_png(page_path, browser, tmp_path):
    """The documented command, run as a user runs it: ``moral-ambiguity leaderboard ... --screenshot PNG``."""
    png = tmp_path / "shot" / "leaderboard.png"
    res = page_path.parent.parent / "res"
    run([BIN / "moral-ambiguity", "leaderboard", "--results", res, "--output", tmp_path / "out", "--screenshot", png],
        cwd=tmp_path)
    header = png.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(header[16:20], "big") == WIDTH


def test_failed_entry_is_marked_and_sorts_last(tmp_path, browser):
    write_run(tmp_path / "good", "good", {"moral_dilemmas": {
        "records": [record("moral_dilemmas", f"d{i}", [0.6, 0.4], [3, 2]) for i in range(4)],
        "data_source": SAMPLE, "metrics": {"xentropy": 0.7}}})
    (tmp_path / "broken").mkdir()
    assert main(["--results", str(tmp_path / "good"), str(tmp_path / "broken"), "--output", str(tmp_path / "out")]) == 1
    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
    page.goto((tmp_path / "out" / "leaderboard.html").as_uri())
    failed = page.locator("#table-moral_dilemmas tr.failed")
    assert "FAILED" in failed.inner_text() and "no lm-eval results_*.json" in failed.inner_text()
    header = page.locator("#table-moral_dilemmas thead th", has_text="xentropy")
    header.click()
    assert page.locator("#table-moral_dilemmas tbody tr").last.get_attribute("class").endswith("failed")
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
    page.close()
