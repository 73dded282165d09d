"""``VoteTrainer``: TRL's SFTTrainer trained on human vote distributions with a pluggable loss."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from trl import SFTConfig, SFTTrainer

from loss_plugins import get_loss


@dataclass
class VoteTrainingConfig(SFTConfig):
    """SFTConfig plus what the vote-distribution objective needs; set to keep TRL's text pipeline out of the way."""

    task: str = field(default="moral_dilemmas", metadata={"help": "moral_dilemmas | moral_anecdotes | moral_anecdotes_binary"})
    loss: str = field(default="soft_cross_entropy", metadata={"help": "a registered loss name or module:Class"})
    # Our collator supplies counts and answer ids; TRL must neither drop nor re-tokenise them.
    remove_unused_columns: bool = False
    label_names: list[str] = field(default_factory=lambda: ["counts"])
    dataset_kwargs: dict = field(default_factory=lambda: {"skip_prepare_dataset": True})
    gradient_checkpointing: bool = False
    report_to: str = "none"


class VoteCollator:
    """Left-pads prompts (the answer position is then the last one for every row)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            ids[row, width - n:] = torch.tensor(f["input_ids"])
            mask[row, width - n:] = 1
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "answer_ids": torch.tensor([f["answer_ids"] for f in features], dtype=torch.long),
            "counts": torch.tensor([f["counts"] for f in features], dtype=torch.float32),
        }


def answer_position_logits(model, inputs: dict) -> torch.Tensor:
    """Vocabulary logits at the answer position (B x V).

    Only the last position's logits are computed (``logits_to_keep=1``), never
    the B x T x V tensor. Positions are counted from the first real token so
    that left padding gives the same numbers as lm-eval's unpadded requests.
    """
    mask = inputs["attention_mask"]
    position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
    out = model(input_ids=inputs["input_ids"], attention_mask=mask, position_ids=position_ids, logits_to_keep=1)
    return out.logits[:, -1, :]


def answer_logits(model, inputs: dict) -> torch.Tensor:
    """Raw logits of the K answer tokens at the answer position (B x K): what every loss receives."""
    last = answer_position_logits(model, inputs)
    return last.gather(-1, inputs["answer_ids"].to(last.device))


class VoteLossMixin:
    """Loss and evaluation for any Trainer whose model yields K option logits per example.

    Subclasses define ``option_logits(model, inputs) -> B x K``; the loss plugin
    turns them and ``inputs["counts"]`` into the training objective, and
    evaluation hands the logits and counts to ``compute_metrics``.
    """

    # The loss is a per-example mean of the micro-batch, so Trainer must divide by the
    # gradient-accumulation steps itself (it would not for a model that accepts loss kwargs).
    loss_is_scaled_for_ga = False

    def __init__(self, *args, loss_fn=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn if loss_fn is not None else get_loss(self.args.loss)()

    def option_logits(self, model, inputs: dict) -> torch.Tensor:
        raise NotImplementedError

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logits = self.option_logits(model, inputs)
        loss = self.loss_fn(logits, inputs["counts"].to(logits.device))
        return (loss, {"option_logits": logits}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # Trainer's (and SFTTrainer's) version expects token logits and `labels`; ours are
        # K option logits and vote counts.
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        if prediction_loss_only:
            return loss.detach(), None, None
        return loss.detach(), outputs["option_logits"].float(), inputs["counts"]


class VoteTrainer(VoteLossMixin, SFTTrainer):
    """SFTTrainer on the K answer-token logits of a causal LM."""

    def option_logits(self, model, inputs: dict) -> torch.Tensor:
        return answer_logits(model, inputs)


def metrics_from_predictions(eval_pred) -> dict[str, float]:
    """Dev metrics with the harness's definitions (the ``evaluate`` module of moral_tasks)."""
    import evaluate

    from moral_tasks.metrics.hf_evaluate import MODULE_PATH

    logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
    logits = np.asarray(logits, dtype=np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    return evaluate.load(MODULE_PATH).compute(predictions=probs.tolist(), references=np.asarray(eval_pred.label_ids).tolist())
