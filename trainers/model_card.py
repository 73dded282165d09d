"""The README.md model card of a trained folder, rendered from its JSON card (``moral_tasks.cards.CARD_NAME``).

The JSON card is for machines (the leaderboard, the encoder model type); this
is the same facts for people, replacing the template with "[More Information
Needed]" that ``PeftModel.save_pretrained`` writes.
"""

from __future__ import annotations

import json
import shlex

import jinja2

TEMPLATE = jinja2.Template("""\
---
base_model: {{ card.base_model }}
{% if card.kind == "encoder-classifier" %}library_name: transformers
{% else %}library_name: peft
{% endif %}tags:
- moral-ambiguity
- scruples
- {{ card.loss }}
---

# {{ card.task }}: {{ card.base_model }} trained toward human vote distributions

Trained with `moral-ambiguity train{{ "-encoder" if card.kind == "encoder-classifier" else "" }}` to match the
distribution of human judgments on Scruples, not only the majority answer.

| | |
|---|---|
| Base model | `{{ card.base_model }}` |
| Weights | {{ weights(card) }} |
| Task | `{{ card.task }}` (labels: {{ card.labels | join(", ") }}) |
| Loss | `{{ card.loss }}` |
| Training data | {{ data(card.train_data) }} |
| Evaluation data | {{ data(card.eval_data) if card.eval_data else "none" }} |
| Steps | {{ steps(card) }} |
| Seed | {{ card.seed }} |
{% if card.max_length %}| Max length | {{ max_length(card) }} |
{% endif %}

## Dev metrics

{% if card.final_dev_metrics %}| metric | value |
|---|---|
{% for name, value in card.final_dev_metrics.items() %}| {{ name }} | {{ "%.4f" | format(value) }} |
{% endfor %}{% else %}No evaluation split was used.
{% endif %}
## Reproduce with lm-eval

```bash
{{ card.lm_eval_command }}
```

The numbers above are computed by the trainer with the harness's metric definitions on the same documents;
`{{ card_name }}` next to this file holds the same facts as JSON.
""")


def _data(provenance: dict) -> str:
    return (f"{provenance['source']} `{provenance['dataset']}/{provenance['split']}`, {provenance['rows_used']} of "
            f"{provenance['rows']} documents, SHA-256 `{provenance['sha256']}`")


def _steps(card: dict) -> str:
    notes = []
    if card.get("stopped_early"):
        notes.append(f"stopped early: no better dev xentropy in {card['early_stopping_patience']} evaluations")
    best = card.get("best_checkpoint_step")
    if best is not None and best != card["steps"]:
        notes.append(f"the weights and dev metrics are those of the best dev checkpoint, step {best}")
    return str(card["steps"]) + (f" ({'; '.join(notes)})" if notes else "")


def _max_length(card: dict) -> str:
    cut = card.get("truncated_train_docs")
    return f"{card['max_length']} tokens" + (
        f" ({cut} training documents truncated from the left, as lm-eval does)" if cut else "")


def _weights(card: dict) -> str:
    lora = card.get("lora")
    if not lora:
        return "all weights fine-tuned"
    kind = "QLoRA (4-bit base)" if card["adapter"] == "qlora" else "LoRA"
    return (f"{kind} adapter: r={lora['r']}, alpha={lora['alpha']}, dropout={lora['dropout']}, "
            f"target modules {lora['target_modules']}")


def lm_eval_command(model: str, model_args: str, task: str, *, data_dir: str | None, split: str,
                    limit: int | None = None, extra: tuple[str, ...] = ()) -> str:
    """The exact ``lm_eval`` command line that scores a trained folder on the evaluation split."""
    metadata = {"split": split, **({"data_dir": data_dir} if data_dir else {})}
    cmd = ["lm_eval", "--model", model, "--model_args", model_args, "--tasks", task,
           "--metadata", json.dumps(metadata), *(("--limit", str(limit)) if limit else ()), *extra]
    return shlex.join(cmd)


def render(card: dict) -> str:
    from moral_tasks.cards import CARD_NAME

    return TEMPLATE.render(card=card, data=_data, weights=_weights, steps=_steps, max_length=_max_length,
                           card_name=CARD_NAME)
