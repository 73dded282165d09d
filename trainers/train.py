"""``moral-ambiguity train``: fine-tune toward human vote distributions and write a PEFT adapter.

Also runnable as ``python -m trainers`` / ``accelerate launch -m trainers ...``
(DDP, DeepSpeed ZeRO or FSDP come from the accelerate config; nothing here
places tensors on devices by hand).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

CARD_NAME = "moral_ambiguity_card.json"


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    from moral_tasks.prompts import TASKS

    p = parser or argparse.ArgumentParser(prog="moral-ambiguity train", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="base model: a local folder or a Hugging Face hub id")
    p.add_argument("--task", required=True, choices=list(TASKS))
    p.add_argument("--loss", default="soft_cross_entropy",
                   help="a loss name (see `moral-ambiguity losses`) or module:Class")
    p.add_argument("--output", required=True, help="output folder: the PEFT adapter (or full model) and its card")
    p.add_argument("--data-dir", help="Scruples folder (default: the search order of the tasks)")
    p.add_argument("--train-split", default="train")
    p.add_argument("--eval-split", default="dev", help="split for evaluation and early stopping ('none' to skip)")
    p.add_argument("--max-steps", type=int, default=-1, help="stop after N optimizer steps (overrides --epochs)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=None, help="default: 2 * lora_r")
    p.add_argument("--lora-targets", default="all-linear", help="comma-separated module names, or all-linear")
    p.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    p.add_argument("--load-in-4bit", action="store_true", help="QLoRA: 4-bit NF4 base via bitsandbytes")
    p.add_argument("--chat-template", action="store_true", help="train on chat-formatted prompts (evaluate with --apply_chat_template)")
    p.add_argument("--system-instruction", help="as lm_eval --system_instruction")
    p.add_argument("--eval-steps", type=int, default=50)
    p.add_argument("--patience", type=int, default=3, help="early stopping: evaluations without a better dev xentropy")
    p.add_argument("--limit-train", type=int, help="use only the first N training documents")
    p.add_argument("--limit-eval", type=int, help="use only the first N evaluation documents")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--no-resume", action="store_true", help="ignore checkpoints already in --output")
    return p


def _load_model(args, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {}
    if torch.cuda.is_available():
        kwargs["dtype"] = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        kwargs["dtype"] = torch.float32
    if args.load_in_4bit:
        try:
            from transformers import BitsAndBytesConfig
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise SystemExit("--load-in-4bit needs bitsandbytes: pip install bitsandbytes") from None
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=kwargs["dtype"]
        )
    model = AutoModelForCausalLM.from_pretrained(args.model, **kwargs)
    if args.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model


def _peft_config(args):
    if args.full:
        return None
    from peft import LoraConfig

    targets = args.lora_targets if args.lora_targets == "all-linear" else args.lora_targets.split(",")
    return LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha or 2 * args.lora_r, lora_dropout=0.0,
                      target_modules=targets, task_type="CAUSAL_LM")


def _as_dataset(examples):
    import datasets

    return datasets.Dataset.from_list([vars(e) for e in examples])


def train(args: argparse.Namespace) -> dict:
    import torch
    from transformers import AutoTokenizer, EarlyStoppingCallback
    from transformers.trainer_utils import get_last_checkpoint

    from loss_plugins import get_loss
    from moral_tasks.metrics import METRIC_NAMES
    from moral_tasks.prompts import PROMPT_VERSION, get_task

    from .requests import build_examples
    from .trainer import VoteCollator, VoteTrainer, VoteTrainingConfig, metrics_from_predictions

    loss_fn = get_loss(args.loss)()  # fail fast, before any model is loaded
    spec = get_task(args.task)
    output = Path(args.output)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    common = dict(data_dir=args.data_dir, chat_template=args.chat_template, system_instruction=args.system_instruction)
    train_examples, train_source = build_examples(args.task, args.train_split, tokenizer, limit=args.limit_train, **common)
    do_eval = args.eval_split.lower() != "none"
    eval_examples, eval_source = (
        build_examples(args.task, args.eval_split, tokenizer, limit=args.limit_eval, **common) if do_eval else ([], None)
    )

    on_gpu = torch.cuda.is_available()
    config = VoteTrainingConfig(
        output_dir=str(output),
        task=args.task,
        loss=args.loss,
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
    )
    model = _load_model(args, tokenizer)
    trainer = VoteTrainer(
        model=model,
        args=config,
        train_dataset=_as_dataset(train_examples),
        eval_dataset=_as_dataset(eval_examples) if do_eval else None,
        processing_class=tokenizer,
        data_collator=VoteCollator(tokenizer.pad_token_id),
        peft_config=_peft_config(args),
        compute_metrics=metrics_from_predictions if do_eval else None,
        callbacks=[EarlyStoppingCallback(early_stopping_patience=args.patience)] if do_eval else None,
        loss_fn=loss_fn,
    )
    resume = None if args.no_resume or not output.is_dir() else get_last_checkpoint(str(output))
    if resume:
        log.warning("resuming from %s", resume)
    trainer.train(resume_from_checkpoint=resume)
    final = trainer.evaluate() if do_eval else {}
    trainer.save_model(str(output))
    tokenizer.save_pretrained(str(output))

    card = {
        "base_model": args.model,
        "task": args.task,
        "loss": args.loss,
        "prompt_version": PROMPT_VERSION,
        "answer_tokens": [tokenizer.decode(i) for i in train_examples[0].answer_ids],
        "answer_token_ids": train_examples[0].answer_ids,
        "labels": spec.labels,
        "chat_template": args.chat_template,
        "system_instruction": args.system_instruction,
        "adapter": "full" if args.full else ("qlora" if args.load_in_4bit else "lora"),
        "train_data": train_source,
        "eval_data": eval_source,
        "steps": trainer.state.global_step,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "final_dev_metrics": {k: final[f"eval_{k}"] for k in ("loss", *METRIC_NAMES) if f"eval_{k}" in final},
        "seed": args.seed,
        "lm_eval_model_args": f"pretrained={args.model},peft={output}" if not args.full else f"pretrained={output}",
    }
    if trainer.is_world_process_zero():
        (output / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
    return card


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    train(args)
    return 0
