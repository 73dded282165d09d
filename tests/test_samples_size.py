"""How large a samples line is: one line per dilemma, and what it may cost.

Measured on the tiny model, a moral_dilemmas line of the bundled sample is about 3.0 KB, of
which lm-eval's own fields are most: ``arguments`` (the prompt once per request: 2 options x 2
surface variants, ~1.0 KB), the ``metrics`` name list (~0.4 KB), ``resps`` + ``filtered_resps``
(~0.3 KB), ``doc`` (~0.3 KB: the texts the prompt reads, the votes) and the three sha256 hashes
(~0.25 KB).  Ours is the record (~0.4 KB; the run's scoring settings are written once, on the
first line) and the metric keys, each holding a 16-bit tag (~0.4 KB for 21 keys).  The
debiased task's one line per dilemma carries both presentation orders, so its prompt copies
double.
"""

from __future__ import annotations

import pytest
from harness_runs import main_run, read_run, tiny_lm  # noqa: F401

pytestmark = pytest.mark.slow  # main_run is one lm_eval run (~15 s), shared with test_lm_eval_e2e

# Bytes per line, mean over main_run's 10 synthetic dilemmas: 2625 and 3789 measured
# (2998 and 4441 on the bundled sample's 40 test dilemmas), plus ~5%.  A change that grows
# every line (another per-request field, a record field repeated) fails here.
LIMITS = {"moral_dilemmas": 2760, "moral_dilemmas_debiased": 3980}


def test_a_dilemma_samples_line_stays_under_its_measured_size(main_run):
    _, _, files = read_run(main_run)
    for task, limit in LIMITS.items():
        lines = files[task].read_bytes().splitlines()
        per_line = sum(len(line) + 1 for line in lines) / len(lines)
        assert per_line <= limit, f"{task}: {per_line:.0f} bytes per dilemma (limit {limit})"
