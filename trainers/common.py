"""What the LLM trainer and the encoder baselines share: the command wrapper, the run, the output folder."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from moral_tasks.cards import CARD_NAME

from .checkpoints import last_complete_checkpoint, remove_checkpoints

log = logging.getLogger(__name__)


class TrainingError(Exception):
    """A user error or a fault: reported as one line, exit status 1."""


def run_command(prog: str, parser, train, argv: list[str] | None) -> int:
    """Parse ``argv`` the TRL way and call ``train(training_args, model_args)``; our errors become one line."""
    from loss_plugins import LossPluginError
    from moral_tasks.data import DataError

    from .trainer import TrainingDiverged

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    try:
        # TrlParser reports unknown flags itself (usage + one line); a missing or bad --config file
        # and inconsistent TrainingArguments end up here as OSError / ValueError.
        training_args, model_args = parser.parse_args_and_config(sys.argv[1:] if argv is None else argv)
        if not model_args.model_name_or_path:
            raise ValueError("--model_name_or_path is required")
    except (ValueError, OSError) as exc:
        print(f"{prog}: error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    try:
        train(training_args, model_args)
    except (TrainingError, TrainingDiverged, LossPluginError, DataError) as exc:
        print(f"{prog}: error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


def load_tokenizer(model_args):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    except OSError as exc:
        where = "no such folder" if not Path(model_args.model_name_or_path).exists() else "not a model folder"
        raise TrainingError(f"--model_name_or_path {model_args.model_name_or_path!r}: {where}, and not loadable "
                            f"from the Hugging Face hub ({str(exc).splitlines()[0][:200]})") from None


def loading_kwargs(model_args) -> dict:
    """``from_pretrained`` arguments of the base model that ModelConfig carries (both trainers honour them)."""
    import torch

    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    return {"revision": model_args.model_revision, "dtype": dtype,
            "attn_implementation": model_args.attn_implementation}


def resume_checkpoint(args) -> str | None:
    """The checkpoint to resume from; refuses to overwrite a finished model that has none."""
    output = Path(args.output_dir)
    if args.resume_from_checkpoint:
        return args.resume_from_checkpoint
    last = last_complete_checkpoint(output) if args.resume else None
    if last is None and (output / CARD_NAME).exists():
        raise TrainingError(f"--output_dir {output} already holds a trained model ({CARD_NAME}) and no checkpoint to "
                            "resume from; choose another folder or delete it")
    if last:
        log.warning("resuming from %s", last)
    return str(last) if last else None


def callbacks(args):
    from transformers import EarlyStoppingCallback

    return [EarlyStoppingCallback(early_stopping_patience=args.early_stopping_patience)] if args.do_eval_split else None


def as_dataset(rows: list[dict]):
    import datasets

    return datasets.Dataset.from_list(rows)


def split_provenance(spec, split: str, data_dir, limit: int | None) -> dict:
    """Which file (with its SHA-256) and how many of its documents a run used."""
    from moral_tasks.data import load_split

    provenance = load_split(spec, split, data_dir).provenance
    return {**provenance, "rows_used": provenance["rows"] if limit is None else min(limit, provenance["rows"])}


def run_training(trainer, args, resume: str | None) -> dict:
    """Train (from ``resume``, see :func:`resume_checkpoint`), save, and return the final dev metrics."""
    from moral_tasks.metrics import METRIC_NAMES
    from moral_tasks.scoring import IN_SAMPLE

    trainer.train(resume_from_checkpoint=resume)
    final = trainer.evaluate() if args.do_eval_split else {}
    trainer.save_model(args.output_dir)
    names = ("loss", *(IN_SAMPLE.get(name, name) for name in METRIC_NAMES))  # as metrics_from_predictions names them
    return {name: final[f"eval_{name}"] for name in names if f"eval_{name}" in final}


def finish(trainer, args, card: dict) -> dict:
    """Write the JSON card and the README (process 0 only), then drop the checkpoints.

    ``save_model`` has already written the weights and the tokenizer (the trainer's ``processing_class``),
    on process 0 too.
    """
    from .model_card import render

    state = trainer.state
    card = {**card, "steps": state.global_step, "stopped_early": 0 < state.global_step < state.max_steps,
            "early_stopping_patience": args.early_stopping_patience if args.do_eval_split else None,
            # Only when those weights were loaded back: Trainer tracks the best step whenever it has a metric.
            "best_checkpoint_step": state.best_global_step if args.load_best_model_at_end else None,
            "seed": args.seed}
    if trainer.is_world_process_zero():
        output = Path(args.output_dir)
        (output / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
        (output / "README.md").write_text(render(card))
        if not args.keep_checkpoints:
            remove_checkpoints(output)
    return card
