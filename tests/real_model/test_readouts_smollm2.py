"""The generation readouts run on the real SmolLM2 through lm_eval's hf backend, and their parse rate counts its real replies.

A tiny random model writes noise; a real instruction-tuned model writes prose, JSON-like text and
preambles, which is what the strict parsers are for. Two documents and two samples each keep this to
a few seconds of generation on CPU.
"""

from __future__ import annotations

import math

import pytest

from moral_tasks.answers import parse_answer
from moral_tasks.readouts.verbalized import parse_distribution
from smollm2_fixtures import METADATA, smollm2  # noqa: F401  (fixture)

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

TASKS = ["moral_dilemmas_verbalized", "moral_dilemmas_sampling", "moral_dilemmas_answer",
         "moral_anecdotes_verbalized", "moral_anecdotes_sampling"]
DOCS, SAMPLES = 2, 2


def test_every_generation_readout_runs_and_counts_its_replies(smollm2):  # noqa: F811
    import lm_eval

    out = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={smollm2.folder},dtype=float32", tasks=TASKS,
                                  limit=DOCS, apply_chat_template=True, log_samples=True, device="cpu",
                                  metadata={**METADATA, "samples": SAMPLES})
    for task in TASKS:
        samples, result = out["samples"][task], out["results"][task]
        replies = [r for s in samples for r in s["filtered_resps"][0]]
        assert len(samples) == DOCS and len(replies) == DOCS * (SAMPLES if "sampling" in task else 1)
        letters = "AB" if "dilemmas" in task else "ABCDE"
        if "verbalized" in task:
            parsed = sum(parse_distribution(r, letters).shares is not None for r in replies)
        else:
            parsed = sum(parse_answer(r, letters) is not None for r in replies)
        assert result["parse_rate,none"] == pytest.approx(parsed / len(replies)), (task, replies)
        scored = [s["record"] for s in samples if "no_readout" not in s["record"]]  # null fields are left out
        assert result["no_readout,none"]["documents"] == DOCS - len(scored)
        if scored:  # the readout's xentropy is the plain mean over the documents it could read
            expected = sum(-sum(c / sum(r["counts"]) * math.log(q) for c, q in zip(r["counts"], r["q"]) if c)
                           for r in scored) / len(scored)
            assert result["xentropy,none"] == pytest.approx(expected, abs=1e-9)
        else:
            assert result["xentropy,none"] is None
