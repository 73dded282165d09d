"""What the LLM trainer and the encoder baselines share: arguments, Trainer settings, run, card."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from moral_tasks.cards import CARD_NAME

log = logging.getLogger(__name__)



def add_common_arguments(p: argparse.ArgumentParser, lr: float) -> None:
    p.add_argument("--loss", default="soft_cross_entropy",
                   help="a loss name (see `moral-ambiguity losses`) or module:Class")
    p.add_argument("--data-dir", help="Scruples folder (default: the search order of the tasks)")
    p.add_argument("--train-split", default="train")
    p.add_argument("--eval-split", default="dev", help="split for evaluation and early stopping ('none' to skip)")
    p.add_argument("--max-steps", type=int, default=-1, help="stop after N optimizer steps (overrides --epochs)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--eval-steps", type=int, default=50)
    p.add_argument("--patience", type=int, default=3, help="early stopping: evaluations without a better dev xentropy")
    p.add_argument("--limit-train", type=int, help="use only the first N training documents")
    p.add_argument("--limit-eval", type=int, help="use only the first N evaluation documents")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--no-resume", action="store_true", help="ignore checkpoints already in --output")


def training_kwargs(args: argparse.Namespace, output: Path, do_eval: bool) -> dict:
    """Trainer settings: dev evaluation, early stopping on dev xentropy, checkpoints to resume from."""
    import torch

    on_gpu = torch.cuda.is_available()
    return dict(
        output_dir=str(output),
        learning_rate=args.lr,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        seed=args.seed,
        bf16=on_gpu and torch.cuda.is_bf16_supported(),
        use_cpu=not on_gpu,
        logging_steps=max(1, min(args.eval_steps, 10)),
        eval_strategy="steps" if do_eval else "no",
        eval_steps=args.eval_steps,
        save_strategy="steps",
        save_steps=args.eval_steps,
        save_total_limit=2,
        load_best_model_at_end=do_eval,
        metric_for_best_model="eval_xentropy" if do_eval else None,
        greater_is_better=False,
        # The collators supply counts; Trainer must keep them and treat them as the labels.
        remove_unused_columns=False,
        label_names=["counts"],
        report_to="none",
    )


def early_stopping(args: argparse.Namespace, do_eval: bool):
    from transformers import EarlyStoppingCallback

    return [EarlyStoppingCallback(early_stopping_patience=args.patience)] if do_eval else None


def as_dataset(rows: list[dict]):
    import datasets

    return datasets.Dataset.from_list(rows)


def run_training(trainer, args: argparse.Namespace, output: Path, do_eval: bool) -> dict:
    """Train (resuming from the last checkpoint unless --no-resume), save, return the final dev metrics."""
    from transformers.trainer_utils import get_last_checkpoint

    from moral_tasks.metrics import METRIC_NAMES

    resume = None if args.no_resume or not output.is_dir() else get_last_checkpoint(str(output))
    if resume:
        log.warning("resuming from %s", resume)
    trainer.train(resume_from_checkpoint=resume)
    final = trainer.evaluate() if do_eval else {}
    trainer.save_model(str(output))
    return {k: final[f"eval_{k}"] for k in ("loss", *METRIC_NAMES) if f"eval_{k}" in final}


def write_card(trainer, output: Path, card: dict) -> None:
    """The small JSON that says how the model was made; the leaderboard and the encoder LM read it."""
    card = {**card, "steps": trainer.state.global_step, "best_checkpoint": trainer.state.best_model_checkpoint,
            "seed": trainer.args.seed}
    if trainer.is_world_process_zero():
        (output / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
