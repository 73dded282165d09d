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

Options and their defaults are those of ``moral-ambiguity train``
(:mod:`trainers.config`, TRL's flag names), except that the whole encoder is
fine-tuned (``use_peft`` off) at Scruples' ``learning_rate`` 2e-5.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import Trainer

from moral_tasks.models.encoder_io import EncoderCollator, architecture, classifier_logits, encode, load_classifier

from .common import (TrainingError, as_dataset, callbacks, finish, load_tokenizer, loading_kwargs, resume_checkpoint,
                     run_command, run_training, split_provenance)
from .config import ENCODER_DEFAULTS, make_parser
from .trainer import VoteLossMixin, metrics_from_predictions

PROG = "moral-ambiguity train-encoder"
DEFAULT_MAX_LENGTH = {"dilemmas": 90, "anecdotes": 512}  # Scruples' settings


class EncoderVoteTrainer(VoteLossMixin, Trainer):
    def option_logits(self, model, inputs: dict) -> torch.Tensor:
        return classifier_logits(model, inputs)


def build_parser():
    return make_parser(PROG, __doc__.splitlines()[0], ENCODER_DEFAULTS)


def _documents(spec, split: str, data_dir, limit):
    from moral_tasks.data import load_split

    loaded = load_split(spec, split, data_dir)
    n = len(loaded.rows) if limit is None else min(limit, len(loaded.rows))
    return loaded.rows[:n], loaded.counts[:n]


def train_one(args, model_args, task: str) -> dict:
    from transformers import set_seed

    from loss_plugins import make_loss
    from moral_tasks.metrics import core as metrics
    from moral_tasks.prompts import get_task

    from .model_card import lm_eval_command

    loss_fn = make_loss(args.loss)
    resume = resume_checkpoint(args)
    spec = get_task(task)
    max_length = args.max_length or DEFAULT_MAX_LENGTH[spec.dataset]
    tokenizer = load_tokenizer(model_args)
    tokenizer.truncation_side = "left"  # keep the end of long stories, as Scruples did

    def dataset(split, limit):
        rows, counts = _documents(spec, split, args.data_dir, limit)
        return as_dataset([{**encode(tokenizer, spec.dataset, row, max_length), "counts": c}
                           for row, c in zip(rows, counts)])

    train_ds = dataset(args.train_split, args.limit_train)
    eval_ds = dataset(args.eval_split, args.limit_eval) if args.do_eval_split else None
    set_seed(args.seed)  # the new head's weights: the same command trains the same classifier
    trainer = EncoderVoteTrainer(
        model=load_classifier(model_args.model_name_or_path, spec.dataset, len(spec.labels),
                              **loading_kwargs(model_args)),
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        data_collator=EncoderCollator(tokenizer, architecture(spec.dataset) == "multiple_choice"),
        compute_metrics=metrics_from_predictions if args.do_eval_split else None,
        callbacks=callbacks(args),
        loss_fn=loss_fn,
    )
    final = run_training(trainer, args, resume)
    temperature = 1.0
    if args.do_eval_split:
        # Calibrate on dev (Scruples' practice); the stored T is applied at prediction time.
        logits = trainer.predict(eval_ds).predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        temperature = metrics.fit_temperature(metrics.log_normalize(logits), np.array(eval_ds["counts"]))
    model_args_str = f"pretrained={args.output_dir}"
    return finish(trainer, args, {
        "kind": "encoder-classifier",
        "base_model": model_args.model_name_or_path,
        "task": task,
        "loss": args.loss,
        "adapter": "full",
        "architecture": architecture(spec.dataset),
        "labels": spec.labels,
        "max_length": max_length,
        "truncation_side": "left",
        "temperature": temperature,
        "train_data": split_provenance(spec, args.train_split, args.data_dir, args.limit_train),
        "eval_data": (split_provenance(spec, args.eval_split, args.data_dir, args.limit_eval)
                      if args.do_eval_split else None),
        "final_dev_metrics": final,
        "lm_eval_model_args": model_args_str,
        "lm_eval_command": lm_eval_command("hf-encoder-classifier", model_args_str, task, data_dir=args.data_dir,
                                           split=args.eval_split if args.do_eval_split else args.train_split,
                                           limit=args.limit_eval if args.do_eval_split else args.limit_train),
    })


def train(args, model_args) -> None:
    from dataclasses import replace

    from moral_tasks.prompts import GROUP, TASKS

    if model_args.use_peft or model_args.load_in_4bit or model_args.load_in_8bit:
        raise TrainingError("train-encoder fine-tunes the whole encoder: LoRA and quantization flags are for train")
    if args.task not in (*TASKS, GROUP):
        raise TrainingError(f"--task {args.task!r}: not one of {', '.join((*TASKS, GROUP))}")
    if args.task != GROUP:
        train_one(args, model_args, args.task)
        return
    for task in TASKS:
        train_one(replace(args, output_dir=f"{args.output_dir}/{task}", task=task), model_args, task)


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, build_parser(), train, argv)
