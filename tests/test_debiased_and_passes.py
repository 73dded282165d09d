"""Order-debiased dilemmas, and forward passes per document through lm-eval's HF backend."""

from __future__ import annotations

import math

import numpy as np
import pytest

from moral_tasks import harness
from moral_tasks.metrics import core as M

SCORING = {"fixed_concentration": 2.0, "bootstrap_resamples": 50, "bootstrap_seed": 0, "best_samples": 200}


def record(doc_id, order, q, counts):
    return {"doc_id": doc_id, "order": order, "option_loglik": np.log(q).tolist(), "counts": counts,
            "scoring": SCORING, "q": list(q)}


def test_debias_maps_the_swapped_order_back_and_averages():
    # AB: P(first action less ethical) = 0.8. BA presents the second action as A: P(A) = 0.6
    # means P(original second) = 0.6, i.e. P(original first) = 0.4. Mean: 0.6; order effect 0.4.
    records = [record("d1", "AB", [0.8, 0.2], [4, 1]), record("d1", "BA", [0.6, 0.4], [4, 1]),
               record("d2", "BA", [0.3, 0.7], [0, 5]), record("d2", "AB", [0.5, 0.5], [0, 5])]
    combined, effects = harness.debias(records)
    q = {r["doc_id"]: np.exp(r["option_loglik"]) for r in combined}
    assert q["d1"] == pytest.approx([0.6, 0.4]) and q["d2"] == pytest.approx([0.6, 0.4])
    assert sorted(effects) == pytest.approx([0.2, 0.4])
    values = harness.corpus_metrics(records)
    assert values["order_effect"] == pytest.approx(0.3)
    assert values["xentropy"] == pytest.approx(M.xentropy(np.log([[0.6, 0.4], [0.6, 0.4]]), [[4, 1], [0, 5]]))
    lo, hi = values["order_effect_ci95"]
    assert 0.2 - 1e-12 <= lo <= hi <= 0.4 + 1e-12


def test_a_dilemma_scored_in_one_order_only_is_a_clear_error():
    with pytest.raises(ValueError, match="scored in only one order .* use an even --limit"):
        harness.corpus_metrics([record("d1", "AB", [0.8, 0.2], [4, 1])])


def test_debiased_dataset_has_both_orders(scruples_dir):
    ds = harness.build_dataset("moral_dilemmas", data_dir=str(scruples_dir), both_orders=True)["test"]
    assert len(ds) == 20 and ds["order"][:2] == ["AB", "BA"]
    import json

    ab, ba = json.loads(ds[0]["doc"]), json.loads(ds[1]["doc"])
    assert ab["actions"] == ba["actions"][::-1]
    assert ds[0]["counts"] == ds[1]["counts"] == ab["gold_annotations"]
    assert ds[1]["target"] == int(np.argmax(ab["gold_annotations"][::-1]))


@pytest.mark.slow
def test_forward_passes_per_document(tiny_model, scruples_dir):
    """One forward pass per document (logits cache + single-token options); two per debiased dilemma."""
    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=str(tiny_model), batch_size=1, device="cpu", dtype="float32")
    calls = []
    lm.model.register_forward_hook(lambda *a: calls.append(1))
    tm = TaskManager(metadata={"data_dir": str(scruples_dir), "bootstrap_resamples": 20})
    passes = {}
    for task in ("moral_dilemmas", "moral_anecdotes", "moral_dilemmas_debiased"):
        calls.clear()
        with torch.no_grad():
            out = lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=tm, bootstrap_iters=0)
        passes[task] = len(calls)
        assert math.isfinite(out["results"][task]["xentropy,none"])
    assert passes == {"moral_dilemmas": 10, "moral_anecdotes": 10, "moral_dilemmas_debiased": 20}
