"""Training examples built from lm-eval's own requests, so training sees exactly what is scored.

The prompt text comes from the lm-eval task (our YAML + ``moral_tasks.prompts``),
including ``--system_instruction`` and the chat template, and it is tokenised
with the rule of lm-eval's HF backend (``HFLM.tok_encode`` / ``_encode_pair``).

lm-eval moves trailing whitespace of the context into the continuation, so
under a chat template ending in a newline the continuation of option "A" is
``["\n", "A"]``. Those leading tokens are the same for every option: they go
into the model input (``n_prefix`` of them), and the answer token is the last
one. Their log-probability is a constant shared by all options, so the option
distribution, and every loss and metric, is exactly lm-eval's.

A prompt longer than the model's maximum length is cut as lm-eval's HF model
cuts it (``HFLM._loglikelihood_tokens``): the model sees the last
``max_length`` tokens of context + continuation minus its last token, with
``max_length`` resolved by lm-eval's own rule (:func:`resolve_max_length`).
"""

from __future__ import annotations

from dataclasses import dataclass

import jinja2

from .common import TrainingError


@dataclass
class Example:
    doc_id: str
    input_ids: list[int]  # context, then the continuation tokens shared by all options
    answer_ids: list[int]  # one token per option, in label order
    counts: list[int]
    n_prefix: int  # how many shared continuation tokens end input_ids
    truncated: bool = False  # longer than max_length: input_ids were cut from the left

    def features(self) -> dict:
        """The dataset row the collator reads."""
        return {"input_ids": self.input_ids, "answer_ids": self.answer_ids, "counts": self.counts}


def resolve_max_length(max_length: int | None, model_config, tokenizer) -> int:
    """``HFLM.max_length``: ``--model_args max_length=``, else the model config, else the tokenizer, else 2048."""
    from lm_eval.models.huggingface import HFLM
    from lm_eval.models.utils import resolve_max_length as lm_eval_rule

    return max_length or lm_eval_rule(model_config, tokenizer, default=HFLM._DEFAULT_MAX_LENGTH)


def chat_renderer(tokenizer):
    """lm-eval's ``HFLM.apply_chat_template``: render the messages, retrying without a system turn."""

    def render(chat_history: list[dict], add_generation_prompt: bool = True) -> str:
        kwargs = dict(tokenize=False, add_generation_prompt=add_generation_prompt,
                      continue_final_message=not add_generation_prompt)
        try:
            return tokenizer.apply_chat_template(chat_history, **kwargs)
        except jinja2.exceptions.TemplateError:
            return tokenizer.apply_chat_template([m for m in chat_history if m["role"] != "system"], **kwargs)

    return render


def tok_encode(tokenizer, text: str) -> list[int]:
    """``HFLM.tok_encode``: default special tokens, unless the text already starts with the BOS text."""
    prefix_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    kwargs = {}
    if prefix_id is not None and text.startswith(tokenizer.decode(prefix_id)):
        kwargs["add_special_tokens"] = False
    return tokenizer.encode(text, **kwargs)


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """``LM._encode_pair`` for causal models: trailing context spaces move to the continuation."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = tok_encode(tokenizer, context + continuation)
    context_enc = tok_encode(tokenizer, context)
    return context_enc, whole[len(context_enc):]


def lm_eval_task(task: str, split: str, data_dir: str | None):
    from lm_eval.tasks import TaskManager

    from moral_tasks.lm_eval_plugin import TASKS_DIR

    metadata = {"split": split, **({"data_dir": str(data_dir)} if data_dir else {})}
    # Only our task folder: indexing all of lm-eval's built-in tasks would take most of the run.
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata=metadata)
    return manager.load([task])["tasks"][task]


def build_examples(task: str, split: str, tokenizer, *, max_length: int, data_dir: str | None = None,
                   chat_template: bool = False, system_instruction: str | None = None,
                   limit: int | None = None) -> list[Example]:
    """Examples for every document of ``split`` (the first ``limit``), cut to ``max_length`` tokens as lm-eval does."""
    from moral_tasks.prompts import get_task

    k = len(get_task(task).labels)
    lm_task = lm_eval_task(task, split, data_dir)
    lm_task.build_all_requests(
        limit=limit, rank=0, world_size=1, system_instruction=system_instruction,
        apply_chat_template=chat_template, fewshot_as_multiturn=chat_template,
        chat_template=chat_renderer(tokenizer) if chat_template else None,
    )
    by_doc: dict[int, list] = {}
    for inst in lm_task.instances:
        by_doc.setdefault(inst.doc_id, []).append(inst)
    examples = []
    for doc_id in sorted(by_doc):
        # A document's first K requests are its options in label order as lm-eval scores them; any
        # further ones (other surface forms of the answer letters) read the same distribution differently.
        instances = sorted(by_doc[doc_id], key=lambda i: i.idx)[:k]
        doc = instances[0].doc
        pairs = [encode_pair(tokenizer, *inst.arguments) for inst in instances]
        inputs = {tuple(ctx + cont[:-1]) for ctx, cont in pairs}
        if len(inputs) != 1:
            raise TrainingError(
                f"{task}: the options {[i.arguments[1] for i in instances]!r} do not differ only in their last token "
                "for this tokenizer; the tasks need single-token options"
            )
        ctx, cont = pairs[0]
        input_ids = list(inputs.pop())
        # lm-eval: (context + continuation)[-(max_length + 1):][:-1], i.e. the last max_length input tokens.
        examples.append(Example(doc["id"], input_ids[-max_length:], [c[-1] for _, c in pairs], list(doc["counts"]),
                                len(cont) - 1, truncated=len(input_ids) > max_length))
    return examples
