"""``moral-ambiguity train``: fine-tune a causal LM toward human vote distributions and write a PEFT adapter.

Flags are TRL's (``TrlParser`` over :class:`trainers.config.VoteTrainingConfig`
and TRL's ``ModelConfig``): ``--model_name_or_path``, ``--output_dir``,
``--learning_rate``, ``--max_steps``, ``--lora_r``, ``--use_peft``,
``--load_in_4bit``, ``--config file.yaml`` ... Also runnable as
``python -m trainers`` / ``accelerate launch -m trainers ...`` (DDP, DeepSpeed
ZeRO or FSDP come from the accelerate config; nothing here places tensors on
devices by hand).

> [!NOTE]
> These ``ModelConfig`` defaults differ from TRL's: ``use_peft=True`` (LoRA), ``lora_alpha`` = 2 * ``lora_r``,
> ``lora_dropout=0``, ``lora_target_modules="all-linear"``, ``dtype`` bfloat16 on a GPU that supports it, else
> float32. ``--use_peft false`` trains all weights; ``--load_in_4bit`` is QLoRA.
"""

from __future__ import annotations

import logging

from .common import (TrainingError, as_dataset, callbacks, finish, load_tokenizer, loading_kwargs, resume_checkpoint,
                     run_command, run_training, split_provenance)
from .config import LLM_MODEL_DEFAULTS, make_parser, resolve_model_config

PROG = "moral-ambiguity train"
log = logging.getLogger(__name__)


def build_parser():
    return make_parser(PROG, __doc__.splitlines()[0], LLM_MODEL_DEFAULTS)


def _kbit_device_map():
    """A quantized base is placed at load time: on this process's GPU (as TRL's scripts do), else the CPU."""
    import torch
    from accelerate import PartialState

    return {"": PartialState().local_process_index} if torch.cuda.is_available() else None


def load_model(model_args, training_args):
    """The base model, quantized and wrapped in LoRA as ModelConfig says (TRL's helpers)."""
    from transformers import AutoModelForCausalLM, set_seed
    from trl import get_peft_config, get_quantization_config

    # Trainer seeds only when it starts: without this the LoRA matrices would be drawn from whatever the
    # process's generator had become, and the same command could train a different adapter.
    set_seed(training_args.seed)
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise TrainingError("--load_in_4bit / --load_in_8bit need bitsandbytes: pip install "
                                "'moral-ambiguity[qlora]'") from None
    model = AutoModelForCausalLM.from_pretrained(
        model_args.model_name_or_path, **loading_kwargs(model_args), quantization_config=quantization_config,
        device_map=_kbit_device_map() if quantization_config is not None else None,
    )
    peft_config = get_peft_config(model_args)
    if quantization_config is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=training_args.gradient_checkpointing)
    if peft_config is not None:
        from peft import get_peft_model

        if training_args.gradient_checkpointing:
            model.enable_input_require_grads()  # LoRA leaves the embeddings frozen
        model = get_peft_model(model, peft_config)
    elif quantization_config is not None:
        raise TrainingError("a quantized base can only be trained through an adapter: drop --use_peft false")
    return model


def train(args, model_args) -> dict:
    from transformers import AutoConfig

    from loss_plugins import make_loss
    from moral_tasks.prompts import PROMPT_VERSION, TASKS, get_task

    from .lm_eval_requests import build_examples, resolve_max_length
    from .model_card import lm_eval_command
    from .trainer import VoteCollator, VoteTrainer, metrics_from_predictions

    if args.task not in TASKS:
        raise TrainingError(f"--task {args.task!r}: not one of {', '.join(TASKS)}")
    loss_fn = make_loss(args.loss)  # fail fast, before any model is loaded
    resume = resume_checkpoint(args)
    resolve_model_config(model_args)
    spec = get_task(args.task)
    tokenizer = load_tokenizer(model_args)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    max_length = resolve_max_length(args.max_length, AutoConfig.from_pretrained(
        model_args.model_name_or_path, revision=model_args.model_revision), tokenizer)
    common = dict(data_dir=args.data_dir, chat_template=args.apply_chat_template,
                  system_instruction=args.system_instruction, max_length=max_length)
    train_examples = build_examples(args.task, args.train_split, tokenizer, limit=args.limit_train, **common)
    eval_examples = (build_examples(args.task, args.eval_split, tokenizer, limit=args.limit_eval, **common)
                     if args.do_eval_split else [])
    truncated = sum(e.truncated for e in train_examples)
    if truncated:
        log.warning("%d of %d training documents are longer than max_length=%d tokens and were truncated from the "
                    "left, as lm-eval does", truncated, len(train_examples), max_length)

    trainer = VoteTrainer(
        model=load_model(model_args, args),
        args=args,
        train_dataset=as_dataset([e.features() for e in train_examples]),
        eval_dataset=as_dataset([e.features() for e in eval_examples]) if args.do_eval_split else None,
        processing_class=tokenizer,
        data_collator=VoteCollator(tokenizer.pad_token_id),
        compute_metrics=metrics_from_predictions if args.do_eval_split else None,
        callbacks=callbacks(args),
        loss_fn=loss_fn,
    )
    final = run_training(trainer, args, resume)

    base = model_args.model_name_or_path
    weights = f"pretrained={base},peft={args.output_dir}" if model_args.use_peft else f"pretrained={args.output_dir}"
    model_args_str = f"{weights},dtype={model_args.dtype}"
    if args.max_length:
        model_args_str += f",max_length={args.max_length}"
    extra = (("--apply_chat_template",) if args.apply_chat_template else ()) + (
        ("--system_instruction", args.system_instruction) if args.system_instruction else ())
    card = {
        "kind": "causal-lm",
        "base_model": base,
        "task": args.task,
        "loss": args.loss,
        "prompt_version": PROMPT_VERSION,
        "answer_tokens": [tokenizer.decode(i) for i in train_examples[0].answer_ids],
        "answer_token_ids": train_examples[0].answer_ids,
        "labels": spec.labels,
        "chat_template": args.apply_chat_template,
        "system_instruction": args.system_instruction,
        "adapter": ("qlora" if model_args.load_in_4bit else "lora") if model_args.use_peft else "full",
        "lora": {"r": model_args.lora_r, "alpha": model_args.lora_alpha, "dropout": model_args.lora_dropout,
                 "target_modules": model_args.lora_target_modules} if model_args.use_peft else None,
        "dtype": model_args.dtype,
        "max_length": max_length,
        "truncated_train_docs": truncated,
        "train_data": split_provenance(spec, args.train_split, args.data_dir, args.limit_train),
        "eval_data": (split_provenance(spec, args.eval_split, args.data_dir, args.limit_eval)
                      if args.do_eval_split else None),
        "final_dev_metrics": final,
        "lm_eval_model_args": model_args_str,
        "lm_eval_command": lm_eval_command("hf", model_args_str, args.task, data_dir=args.data_dir,
                                           split=args.eval_split if args.do_eval_split else args.train_split,
                                           limit=args.limit_eval if args.do_eval_split else args.limit_train,
                                           extra=extra),
    }
    return finish(trainer, args, card)


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, build_parser(), train, argv)
