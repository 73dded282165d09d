"""The demo's compact table and data line, on a results dict written by hand."""

from __future__ import annotations

from moral_tasks.cli.demo import _data_line, compact_table

RESULTS = {"results": {
    "moral_dilemmas": {
        "alias": "moral_dilemmas",
        "xentropy,none": 0.71298765, "xentropy_ci95,none": [0.69336, 0.733261],
        "temperature,none": 10000.0, "acc,none": 0.075, "acc_stderr,none": "N/A",
        "data_source,none": "sample:scruples-v1.0/dilemmas/test rows=40 skipped_zero_votes=0 sha256:3cad4ad6ca0aea9e",
    },
    "moral_anecdotes": {
        "dirichlet_nll,none": 15.08019, "dirichlet_nll_ci95,none": [12.3845, 17.6492],
        "data_source,none": "sample:scruples-v1.0/anecdotes/test rows=38 skipped_zero_votes=2 sha256:69d95ad854206c33",
    },
}}


def test_compact_table_has_four_significant_digits_and_intervals():
    # Intervals and the values they belong to share a row; non-numeric entries (alias, N/A stderr) are left out.
    assert compact_table(RESULTS).splitlines() == [
        "| task            | metric        |     value |     95% interval |",
        "|-----------------|---------------|-----------|------------------|",
        "| moral_anecdotes | dirichlet_nll |     15.08 |   [12.38, 17.65] |",
        "| moral_dilemmas  | xentropy      |    0.7130 | [0.6934, 0.7333] |",
        "|                 | temperature   | 1.000e+04 |                  |",
        "|                 | acc           |   0.07500 |                  |",
    ]


def test_data_line_is_short_and_says_sample():
    assert _data_line(RESULTS) == ("Data: the bundled SAMPLE, hand-written, NOT Scruples "
                                   "(anecdotes/test 38 rows sha256:69d95ad8; dilemmas/test 40 rows sha256:3cad4ad6)")
