"""How an encoder baseline reads a document and gives K option logits.

Shared by the trainer (``trainers.encoder``) and the lm-eval model type
(:mod:`.encoder_classifier`), so both see exactly the same inputs.
"""

from __future__ import annotations

import torch

from moral_tasks.prompts import encoder_inputs


def architecture(dataset: str) -> str:
    return "multiple_choice" if dataset == "dilemmas" else "sequence_classification"


def load_classifier(path, dataset: str, n_labels: int, **kwargs):
    """The encoder with its K-option head; ``kwargs`` go to ``from_pretrained`` (revision, dtype, ...)."""
    from transformers import AutoModelForMultipleChoice, AutoModelForSequenceClassification

    if architecture(dataset) == "multiple_choice":
        return AutoModelForMultipleChoice.from_pretrained(path, **kwargs)
    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=n_labels, **kwargs)


def encode(tokenizer, dataset: str, doc: dict, max_length: int) -> dict:
    """Token ids for one document (a list of K encodings for the ranker, one pair for the classifier)."""
    texts = encoder_inputs(dataset, doc)
    if architecture(dataset) == "multiple_choice":
        enc = [tokenizer(t, truncation=True, max_length=max_length) for t in texts]
        return {key: [e[key] for e in enc] for key in enc[0]}
    return dict(tokenizer(*texts, truncation="only_second", max_length=max_length))


class EncoderCollator:
    def __init__(self, tokenizer, multiple_choice: bool):
        self.tokenizer = tokenizer
        self.multiple_choice = multiple_choice

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        counts = torch.tensor([f["counts"] for f in features], dtype=torch.float32)
        keys = [k for k in features[0] if k not in ("counts", "doc_id")]
        if not self.multiple_choice:
            batch = self.tokenizer.pad([{k: f[k] for k in keys} for f in features], return_tensors="pt")
            return {**batch, "counts": counts}
        n_choices = len(features[0]["input_ids"])
        flat = [{k: f[k][i] for k in keys} for f in features for i in range(n_choices)]
        batch = self.tokenizer.pad(flat, return_tensors="pt")
        return {**{k: v.view(len(features), n_choices, -1) for k, v in batch.items()}, "counts": counts}


def classifier_logits(model, inputs: dict) -> torch.Tensor:
    return model(**{k: v for k, v in inputs.items() if k != "counts"}).logits
