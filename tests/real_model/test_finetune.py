"""A short fine-tune of the real SmolLM2 moves its dev readout toward the votes, and lm_eval sees what the card says.

Each built-in loss trains a LoRA adapter on the bundled sample's train dilemmas (chat template, as the
tasks are run), then lm_eval reads base and adapters on the first dev dilemmas. On SmolLM2 the base
readout is a position effect (option A is the argmax everywhere, worse than uniform): a few steps
must lower both the dev cross-entropy and the order effect between the two action orders, and the
adapter, evaluated by lm_eval with ``peft=``, must give the dev metrics its model card reports.
"""

from __future__ import annotations

import json
import shlex

import pytest

from moral_tasks.data import SAMPLE_DIR
from smollm2_fixtures import smollm2  # noqa: F401  (fixture)

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

LOSSES = ("soft_cross_entropy", "dirichlet_multinomial")
# A few steps on a 135M model, seeded (the trainer seeds before drawing the LoRA matrices, so this is
# deterministic): measured margins over the base at seed 0 (dev xentropy, order effect): soft cross-entropy
# 0.111 and 0.108, Dirichlet 0.186 and 0.194. A learning rate of 5e-3 overshoots into a B preference
# (soft cross-entropy then RAISES dev xentropy by 0.98): few-step fine-tunes of this model are touchy.
STEPS, BATCH, DEV_DOCS, LEARNING_RATE = 6, 4, 8, 3e-3
TASKS = ["moral_dilemmas", "moral_dilemmas_debiased"]
METADATA = {"split": "dev", "data_dir": str(SAMPLE_DIR), "bootstrap_resamples": 50, "best_samples": 50}


def dev_results(model_args: str) -> dict:
    import lm_eval

    out = lm_eval.simple_evaluate(model="hf", model_args=f"{model_args},dtype=float32", tasks=TASKS, limit=DEV_DOCS,
                                  apply_chat_template=True, metadata=METADATA, device="cpu")
    return out["results"]


@pytest.fixture(scope="module")
def runs(smollm2, tmp_path_factory):  # noqa: F811
    from trainers.train import main

    root = tmp_path_factory.mktemp("finetune")
    adapters = {}
    for loss in LOSSES:
        adapters[loss] = root / loss
        code = main([str(a) for a in (
            "--model_name_or_path", smollm2.folder, "--task", "moral_dilemmas", "--loss", loss,
            "--output_dir", adapters[loss], "--data_dir", SAMPLE_DIR, "--apply_chat_template",
            "--per_device_train_batch_size", BATCH, "--max_steps", STEPS, "--learning_rate", LEARNING_RATE,
            "--eval_steps", STEPS, "--limit_eval", DEV_DOCS, "--seed", 0)])
        assert code == 0
    results = {"base": dev_results(f"pretrained={smollm2.folder}")}
    for loss, folder in adapters.items():
        results[loss] = dev_results(f"pretrained={smollm2.folder},peft={folder}")
    return adapters, results


@pytest.mark.parametrize("loss", LOSSES)
def test_fine_tune_lowers_dev_xentropy_and_order_effect(runs, loss):
    _, results = runs
    base, tuned = results["base"], results[loss]
    margins = {
        "xentropy": base["moral_dilemmas"]["xentropy,none"] - tuned["moral_dilemmas"]["xentropy,none"],
        "order_effect": (base["moral_dilemmas_debiased"]["order_effect,none"]
                         - tuned["moral_dilemmas_debiased"]["order_effect,none"]),
    }
    assert margins["xentropy"] > 0.05 and margins["order_effect"] > 0.05, margins


@pytest.mark.parametrize("loss", LOSSES)
def test_lm_eval_gives_the_dev_metrics_the_card_reports(runs, loss):
    """Same documents, same weights: lm_eval's numbers equal the trainer's to float rounding (1e-4)."""
    adapters, results = runs
    card = json.loads((adapters[loss] / "moral_ambiguity_card.json").read_text())
    assert card["loss"] == loss and card["steps"] == STEPS and card["eval_data"]["rows_used"] == DEV_DOCS
    cmd = shlex.split(card["lm_eval_command"])
    assert f"peft={adapters[loss]}" in cmd[cmd.index("--model_args") + 1] and "--apply_chat_template" in cmd
    assert cmd[cmd.index("--limit") + 1] == str(DEV_DOCS)
    for metric in ("xentropy", "acc", "dirichlet_nll"):
        assert results[loss]["moral_dilemmas"][f"{metric},none"] == pytest.approx(
            card["final_dev_metrics"][metric], abs=1e-4), metric
