"""``moral-ambiguity train-encoder``: BERT/RoBERTa-style baselines on the same tasks and losses.

As Scruples' baselines: a sequence classifier over (title, text) for anecdotes,
truncated from the front so the end of a long story survives, and a two-choice
ranker (``AutoModelForMultipleChoice``: each action scored on its own) for
dilemmas. The losses are the same plugins as for the LLM trainer; training is
plain ``transformers.Trainer`` (so accelerate multi-GPU works); dev early
stopping on ``xentropy``; the temperature that calibrates dev ``xentropy`` is
fitted afterwards and stored in the card, and the lm-eval model type
``hf-encoder-classifier`` applies it.

``--task moral_ambiguity`` trains one classifier per task into
``OUTPUT/<task>/``, which ``lm_eval --model hf-encoder-classifier
--model_args pretrained=OUTPUT --tasks moral_ambiguity`` evaluates in one run.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer, TrainingArguments

from moral_tasks.models.encoder_io import EncoderCollator, architecture, classifier_logits, encode, load_classifier

from .common import add_common_arguments, as_dataset, early_stopping, run_training, training_kwargs, write_card
from .trainer import VoteLossMixin, metrics_from_predictions

ALL_TASKS = "moral_ambiguity"
DEFAULT_MAX_LENGTH = {"dilemmas": 90, "anecdotes": 512}  # Scruples' settings


class EncoderVoteTrainer(VoteLossMixin, Trainer):
    def option_logits(self, model, inputs: dict) -> torch.Tensor:
        return classifier_logits(model, inputs)


def build_parser() -> argparse.ArgumentParser:
    from moral_tasks.prompts import TASKS

    p = argparse.ArgumentParser(prog="moral-ambiguity train-encoder", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a pretrained encoder: local folder or hub id (e.g. roberta-large)")
    p.add_argument("--task", required=True, choices=[*TASKS, ALL_TASKS],
                   help=f"one task, or {ALL_TASKS} for one classifier per task in OUTPUT/<task>/")
    p.add_argument("--output", required=True)
    p.add_argument("--max-length", type=int, help="tokens per input (default: 90 for dilemmas, 512 for anecdotes)")
    add_common_arguments(p, lr=2e-5)
    return p


def _documents(spec, split: str, data_dir, limit):
    from moral_tasks.data import load_split

    loaded = load_split(spec, split, data_dir)
    n = len(loaded.rows) if limit is None else min(limit, len(loaded.rows))
    return loaded.rows[:n], loaded.counts[:n], loaded.provenance_str


def train_one(args: argparse.Namespace, task: str, output: Path) -> dict:
    from transformers import AutoTokenizer

    from loss_plugins import get_loss
    from moral_tasks.metrics import core as metrics
    from moral_tasks.prompts import get_task

    loss_fn = get_loss(args.loss)()
    spec = get_task(task)
    max_length = args.max_length or DEFAULT_MAX_LENGTH[spec.dataset]
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.truncation_side = "left"  # keep the end of long stories, as Scruples did

    def dataset(split, limit):
        rows, counts, source = _documents(spec, split, args.data_dir, limit)
        return as_dataset([{**encode(tokenizer, spec.dataset, row, max_length), "counts": c}
                           for row, c in zip(rows, counts)]), source

    train_ds, train_source = dataset(args.train_split, args.limit_train)
    do_eval = args.eval_split.lower() != "none"
    eval_ds, eval_source = dataset(args.eval_split, args.limit_eval) if do_eval else (None, None)
    trainer = EncoderVoteTrainer(
        model=load_classifier(args.model, spec.dataset, len(spec.labels)),
        args=TrainingArguments(**training_kwargs(args, output, do_eval)),
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=EncoderCollator(tokenizer, architecture(spec.dataset) == "multiple_choice"),
        compute_metrics=metrics_from_predictions if do_eval else None,
        callbacks=early_stopping(args, do_eval),
        loss_fn=loss_fn,
    )
    final = run_training(trainer, args, output, do_eval)
    tokenizer.save_pretrained(str(output))
    temperature = 1.0
    if do_eval:
        # Calibrate on dev (Scruples' practice); the stored T is applied at prediction time.
        logits = trainer.predict(eval_ds).predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        temperature = metrics.fit_temperature(metrics.log_normalize(logits), np.array(eval_ds["counts"]))
    write_card(trainer, output, {
        "kind": "encoder-classifier",
        "base_model": args.model,
        "task": task,
        "loss": args.loss,
        "architecture": architecture(spec.dataset),
        "labels": spec.labels,
        "max_length": max_length,
        "truncation_side": "left",
        "temperature": temperature,
        "train_data": train_source,
        "eval_data": eval_source,
        "final_dev_metrics": final,
        "lm_eval_model_args": f"pretrained={output}",
    })
    return final


def main(argv: list[str] | None = None) -> int:
    from moral_tasks.prompts import TASKS

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    output = Path(args.output)
    if args.task == ALL_TASKS:
        for task in TASKS:
            train_one(args, task, output / task)
    else:
        train_one(args, args.task, output)
    return 0
