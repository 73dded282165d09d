"""``moral-ambiguity train``: fine-tune toward human vote distributions and write a PEFT adapter.

Also runnable as ``python -m trainers`` / ``accelerate launch -m trainers ...``
(DDP, DeepSpeed ZeRO or FSDP come from the accelerate config; nothing here
places tensors on devices by hand).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .common import add_common_arguments, as_dataset, early_stopping, run_training, training_kwargs, write_card


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    from moral_tasks.prompts import TASKS

    p = parser or argparse.ArgumentParser(prog="moral-ambiguity train", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="base model: a local folder or a Hugging Face hub id")
    p.add_argument("--task", required=True, choices=list(TASKS))
    p.add_argument("--output", required=True, help="output folder: the PEFT adapter (or full model) and its card")
    add_common_arguments(p, lr=1e-4)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=None, help="default: 2 * lora_r")
    p.add_argument("--lora-targets", default="all-linear", help="comma-separated module names, or all-linear")
    p.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    p.add_argument("--load-in-4bit", action="store_true", help="QLoRA: 4-bit NF4 base via bitsandbytes")
    p.add_argument("--chat-template", action="store_true", help="train on chat-formatted prompts (evaluate with --apply_chat_template)")
    p.add_argument("--system-instruction", help="as lm_eval --system_instruction")
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


def train(args: argparse.Namespace) -> dict:
    from transformers import AutoTokenizer

    from loss_plugins import get_loss
    from moral_tasks.prompts import PROMPT_VERSION, get_task

    from .lm_eval_requests import build_examples
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

    config = VoteTrainingConfig(task=args.task, loss=args.loss, **training_kwargs(args, output, do_eval))
    model = _load_model(args, tokenizer)
    trainer = VoteTrainer(
        model=model,
        args=config,
        train_dataset=as_dataset([vars(e) for e in train_examples]),
        eval_dataset=as_dataset([vars(e) for e in eval_examples]) if do_eval else None,
        processing_class=tokenizer,
        data_collator=VoteCollator(tokenizer.pad_token_id),
        peft_config=_peft_config(args),
        compute_metrics=metrics_from_predictions if do_eval else None,
        callbacks=early_stopping(args, do_eval),
        loss_fn=loss_fn,
    )
    final = run_training(trainer, args, output, do_eval)  # save_model also writes the tokenizer, on rank 0 only

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
        "final_dev_metrics": final,
        "lm_eval_model_args": f"pretrained={args.model},peft={output}" if not args.full else f"pretrained={output}",
    }
    write_card(trainer, output, card)
    return card


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    train(args)
    return 0
