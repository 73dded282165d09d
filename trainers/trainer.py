"""``VoteTrainer``: a ``transformers.Trainer`` trained on human vote distributions with a pluggable loss.

Plain ``Trainer``, not TRL's ``SFTTrainer``: everything SFTTrainer adds is
token-level SFT (dataset preparation and packing, the NLL/DFT loss, its
fused LM head and token metrics), and all of it would be switched off here
(our collator, our ``compute_loss``); it would also refuse a LoRA adapter on
``lm_head``. TRL gives us its argument parsing and model/PEFT/quantization
configuration instead (:mod:`trainers.config`, :mod:`trainers.train`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from transformers import Trainer, TrainerCallback

from .checkpoints import last_complete_checkpoint


class TrainingDiverged(RuntimeError):
    """A non-finite loss, gradient norm or weight: training stops before it reaches the model or the disk."""

    def __init__(self, step: int, what: str, output_dir: str):
        last = last_complete_checkpoint(output_dir, warn=False)
        super().__init__(
            f"training diverged at step {step}: {what}; nothing non-finite was saved; last good checkpoint: "
            f"{last or 'none'} (lower --learning_rate or fix the loss)"
        )
        self.step, self.last_checkpoint = step, last


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

    def __init__(self, *args, loss_fn, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn
        self._bad_loss: float | None = None
        self.add_callback(_StopOnNonFinite(self))

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self._bad_loss is None and not torch.isfinite(loss):
            self._bad_loss = loss.item()  # acted on before the optimizer step, on every process at once
        return loss

    def check_finite_step(self, model) -> None:
        """Raise :class:`TrainingDiverged` if this step's loss or (clipped) gradient norm is not finite."""
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm(grads).item() if grads else 0.0
        bad = torch.tensor([self._bad_loss is not None, not math.isfinite(grad_norm)], device=self.args.device)
        if self.accelerator.num_processes > 1:
            bad = self.accelerator.reduce(bad.float(), reduction="sum") > 0
        if bad.any():
            step = self.state.global_step + 1
            what = (f"the loss is {self._bad_loss}" if self._bad_loss is not None
                    else f"the gradient norm is {grad_norm}" if not math.isfinite(grad_norm)
                    else "the loss or gradient norm is not finite on another process")
            raise TrainingDiverged(step, f"{what} (stopped before the optimizer step)", self.args.output_dir)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        # Checkpoints and the final adapter alike: weights that are not finite never reach the disk.
        bad = [n for n, p in self.model.named_parameters() if p.requires_grad and not torch.isfinite(p).all()]
        if bad:
            raise TrainingDiverged(self.state.global_step, f"{len(bad)} trained weight tensors are not finite "
                                   f"(first: {bad[0]}; not saved)", self.args.output_dir)
        super().save_model(output_dir, _internal_call)

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


class _StopOnNonFinite(TrainerCallback):
    """Checks each step between the gradient clipping and the optimizer step."""

    def __init__(self, trainer: VoteLossMixin):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.trainer.check_finite_step(model if model is not None else self.trainer.model)


class VoteTrainer(VoteLossMixin, Trainer):
    """Trainer on the K answer-token logits of a causal LM."""

    def option_logits(self, model, inputs: dict) -> torch.Tensor:
        return answer_logits(model, inputs)


def metrics_from_predictions(eval_pred) -> dict[str, float]:
    """Dev metrics with the harness's definitions (the ``evaluate`` module of moral_tasks)."""
    import evaluate

    from moral_tasks.metrics.hf_evaluate import MODULE_PATH
    from moral_tasks.scoring import IN_SAMPLE

    logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
    logits = np.asarray(logits, dtype=np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    values = evaluate.load(MODULE_PATH).compute(predictions=probs.tolist(),
                                                references=np.asarray(eval_pred.label_ids).tolist())
    # Named as lm_eval names them: the dev temperature is fitted on the dev split itself (in-sample).
    return {IN_SAMPLE.get(name, name): value for name, value in values.items()}
