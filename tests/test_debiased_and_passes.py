"""Forward passes per document through lm-eval's HF backend, with every order and surface variant read."""

from __future__ import annotations

import math

import pytest

from harness_runs import evaluate, tiny_lm  # noqa: F401


@pytest.mark.slow
def test_forward_passes_per_document(tiny_lm, scruples_dir):
    """One sequence forwarded per document and order: the variants (" A" and "A") share their context, so
    lm-eval's logits cache serves them; a debiased dilemma is one document with two passes."""
    calls = []  # sequences per forward call (the session model batches 16)
    handle = tiny_lm.model.register_forward_hook(lambda module, args, out: calls.append(out.logits.shape[0]))
    passes, requests = {}, {}
    try:
        for task in ("moral_dilemmas", "moral_anecdotes", "moral_dilemmas_debiased"):
            calls.clear()
            out = evaluate(tiny_lm, [task], {"data_dir": str(scruples_dir), "bootstrap_resamples": 0})
            passes[task] = sum(calls)
            requests[task] = sum(len(s["arguments"]) for s in out["samples"][task])
            assert len(out["samples"][task]) == 10
            assert math.isfinite(out["results"][task]["xentropy,none"])
    finally:
        handle.remove()
    assert passes == {"moral_dilemmas": 10, "moral_anecdotes": 10, "moral_dilemmas_debiased": 20}
    # options x variants x orders requests per document
    assert requests == {"moral_dilemmas": 40, "moral_anecdotes": 100, "moral_dilemmas_debiased": 80}
