"""The one configuration of both trainers, and their TRL-style parser.

Options are three dataclasses, parsed by TRL's ``TrlParser`` exactly as TRL's
own scripts are (``--config file.yaml``, command-line flags overriding it,
``accelerate launch -m trainers ...``):

- :class:`VoteTrainingConfig`: transformers' ``TrainingArguments`` plus our
  fields (task, loss, data, prompt format, limits, early stopping);
- TRL's ``ModelConfig``: the base model, its dtype, LoRA / QLoRA;
- nothing else: every default is declared once, on a field or in
  :data:`LLM_MODEL_DEFAULTS` / :data:`ENCODER_DEFAULTS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

# ModelConfig defaults that differ for `moral-ambiguity train` (TRL's: no PEFT, alpha 32,
# dropout 0.05, no target modules, float32). lora_alpha None means 2 * lora_r; dtype None
# means bfloat16 on a GPU that supports it, else float32 (see resolve_model_config).
LLM_MODEL_DEFAULTS = {
    "use_peft": True,
    "lora_alpha": None,
    "lora_dropout": 0.0,
    "lora_target_modules": "all-linear",
    "dtype": None,
}
# --help for the defaults above that are resolved later (argparse would print "None").
RESOLVED_DEFAULT_HELP = {
    "lora_alpha": "LoRA alpha; None means 2 * lora_r.",
    "dtype": "Load the model in this dtype; None means bfloat16 on a GPU that supports it, else float32.",
}
# `moral-ambiguity train-encoder` fine-tunes the whole encoder at Scruples' learning rate.
ENCODER_DEFAULTS = {"learning_rate": 2e-5}

NO_EVAL = "none"


def accelerator_available() -> bool:
    import torch

    return torch.cuda.is_available() or torch.backends.mps.is_available() or torch.xpu.is_available()


def bf16_available() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@dataclass
class VoteTrainingConfig(TrainingArguments):
    r"""
    Configuration of ``moral-ambiguity train`` and ``train-encoder``: ``TrainingArguments`` plus what training
    toward human vote distributions needs.

    Parameters:
        task (`str`): the lm-eval task whose prompts and documents are trained on (``moral_dilemmas``,
            ``moral_anecdotes``, ``moral_anecdotes_binary``; ``train-encoder`` also takes ``moral_ambiguity``:
            one classifier per task).
        loss (`str`, defaults to `"soft_cross_entropy"`): a registered loss (``moral-ambiguity losses``) or
            ``module:Class``.
        data_dir (`str`, *optional*): the Scruples folder; default: the tasks' search order.
        train_split / eval_split (`str`): splits to train on and to evaluate / early-stop on (``none``: no evaluation).
        limit_train / limit_eval (`int`, *optional*): only the first N documents of each split.
        apply_chat_template / system_instruction: the prompt format, as the same ``lm_eval`` flags.
        max_length (`int`, *optional*): tokens per input. ``train``: lm-eval's rule (this value, as
            ``--model_args max_length=``, else the model config, else the tokenizer), long prompts truncated from
            the left as lm-eval does. ``train-encoder``: 90 for dilemmas, 512 for anecdotes (Scruples).
        early_stopping_patience (`int`, defaults to `3`): evaluations without a better dev xentropy before stopping.
        resume (`bool`, defaults to `True`): resume from the last complete checkpoint in ``output_dir``.
        keep_checkpoints (`bool`, defaults to `False`): keep ``checkpoint-*`` folders after a successful run.

    > [!NOTE]
    > These ``TrainingArguments`` defaults differ from transformers':
    > - ``learning_rate`` 1e-4 (``train-encoder``: 2e-5), ``num_train_epochs`` 1;
    > - ``eval_strategy="steps"``, ``eval_steps=50``, ``save_steps`` = ``eval_steps``, ``save_total_limit=2``,
    >   ``logging_steps`` = min(10, ``eval_steps``), ``load_best_model_at_end`` on ``eval_xentropy`` (lower is
    >   better); without an eval split: no evaluation, and the last step is kept;
    > - ``bf16`` on when a GPU supports it; ``use_cpu`` when there is no GPU (so that ``torchrun`` on CPUs runs one
    >   distributed training, not N independent ones);
    > - ``remove_unused_columns=False`` and ``label_names=["counts"]``: the collators supply the vote counts, which
    >   are the labels;
    > - ``report_to="none"``.
    """

    task: str | None = field(default=None, metadata={"help": "lm-eval task to train on (required): moral_dilemmas, "
                                                      "moral_anecdotes or moral_anecdotes_binary (train-encoder also: "
                                                      "moral_ambiguity, one classifier per task)"})
    loss: str = field(default="soft_cross_entropy", metadata={"help": "a loss name (see `moral-ambiguity losses`) or "
                                                               "module:Class"})
    data_dir: str | None = field(default=None, metadata={"help": "Scruples folder (default: the tasks' search order)"})
    train_split: str = field(default="train", metadata={"help": "split to train on"})
    eval_split: str = field(default="dev", metadata={"help": "split for evaluation and early stopping "
                                                             "('none' to skip)"})
    limit_train: int | None = field(default=None, metadata={"help": "use only the first N training documents"})
    limit_eval: int | None = field(default=None, metadata={"help": "use only the first N evaluation documents"})
    apply_chat_template: bool = field(default=False, metadata={"help": "train on chat-formatted prompts (evaluate "
                                                                       "with lm_eval --apply_chat_template)"})
    system_instruction: str | None = field(default=None, metadata={"help": "as lm_eval --system_instruction"})
    max_length: int | None = field(default=None, metadata={"help": "tokens per input (train: lm-eval's max_length "
                                                                   "rule, truncating from the left; train-encoder: 90 "
                                                                   "for dilemmas, 512 for anecdotes)"})
    early_stopping_patience: int = field(default=3, metadata={"help": "evaluations without a better dev xentropy "
                                                                      "before training stops"})
    resume: bool = field(default=True, metadata={"help": "resume from the last complete checkpoint in output_dir"})
    keep_checkpoints: bool = field(default=False, metadata={"help": "keep the checkpoint-* folders after a "
                                                                    "successful run"})

    # Changed TrainingArguments defaults (see the NOTE above).
    learning_rate: float = field(default=1e-4, metadata={"help": "The initial learning rate for the optimizer."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Total number of training epochs to perform."})
    eval_strategy: str = field(default="steps", metadata={"help": "The evaluation strategy to use."})
    eval_steps: float | None = field(default=50, metadata={"help": "Run an evaluation every X steps."})
    save_steps: float | None = field(default=None, metadata={"help": "Save a checkpoint every X steps "
                                                                     "(default: eval_steps)."})
    save_total_limit: int | None = field(default=2, metadata={"help": "How many checkpoints to keep at most."})
    logging_steps: float | None = field(default=None, metadata={"help": "Log every X steps "
                                                                        "(default: min(10, eval_steps))."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "End with the best checkpoint on dev."})
    metric_for_best_model: str | None = field(default="eval_xentropy", metadata={"help": "Metric of the best model."})
    greater_is_better: bool | None = field(default=False, metadata={"help": "Whether higher is better."})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 mixed precision (default: on a GPU that "
                                                              "supports it)."})
    use_cpu: bool | None = field(default=None, metadata={"help": "Train on the CPU (default: when there is no GPU)."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Must stay False: the collators need the "
                                                                         "vote counts."})
    label_names: list[str] | None = field(default_factory=lambda: ["counts"], metadata={"help": "The label columns."})
    report_to: None | str | list[str] = field(default="none", metadata={"help": "Trackers to report to."})

    def __post_init__(self):
        for name in ("output_dir", "task"):  # before TrainingArguments fills in its "trainer_output"
            if not getattr(self, name):
                raise ValueError(f"--{name} is required")
        if self.eval_split.lower() == NO_EVAL or self.eval_strategy == "no":
            self.eval_split, self.eval_strategy = NO_EVAL, "no"
            self.load_best_model_at_end, self.metric_for_best_model = False, None
        if self.save_steps is None:
            self.save_steps = self.eval_steps
        if self.logging_steps is None:
            self.logging_steps = min(10, self.eval_steps)
        if self.bf16 is None:
            self.bf16 = not self.fp16 and bf16_available()
        if self.use_cpu is None:
            # Without it, `torchrun`/`accelerate launch` on a CPU-only machine start N independent
            # "rank 0" trainings instead of one distributed run.
            self.use_cpu = not accelerator_available()
        super().__post_init__()

    @property
    def do_eval_split(self) -> bool:
        return self.eval_split != NO_EVAL


def make_parser(prog: str, description: str, defaults: dict):
    """A ``TrlParser`` over (VoteTrainingConfig, ModelConfig) with ``defaults`` pinned, as TRL's ``make_parser``."""
    from trl import ModelConfig, TrlParser

    parser = TrlParser((VoteTrainingConfig, ModelConfig), prog=prog, description=description)
    parser.set_defaults_with_config(**defaults)
    for action in parser._actions:
        if action.dest in defaults and action.dest in RESOLVED_DEFAULT_HELP:
            action.help = RESOLVED_DEFAULT_HELP[action.dest]
    return parser


def resolve_model_config(model_args) -> None:
    """Fill the defaults that depend on other values: lora_alpha = 2 * lora_r, dtype by device."""
    if model_args.lora_alpha is None:
        model_args.lora_alpha = 2 * model_args.lora_r
    if model_args.dtype is None:
        model_args.dtype = "bfloat16" if bf16_available() else "float32"
