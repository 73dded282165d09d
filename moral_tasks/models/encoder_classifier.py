"""``--model hf-encoder-classifier``: encoder baselines answering the moral_ambiguity tasks in lm-eval.

A classifier trained by ``moral-ambiguity train-encoder`` gives a distribution
over the options of each document; this model type returns its log-probability
(temperature-calibrated, as stored in the card) for each multiple-choice
request, so lm-eval computes exactly the same metrics as for LLMs.
``pretrained`` is either one classifier folder or a folder holding one per
task (``train-encoder --task moral_ambiguity``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import torch
from lm_eval.api.model import LM
from tqdm.auto import tqdm

from moral_tasks.prompts import LM_EVAL_TASKS, base_task, get_task, request_layout
from moral_tasks.cards import CARD_NAME
from moral_tasks.models.encoder_io import EncoderCollator, architecture, classifier_logits, encode, load_classifier


def _only_ours(task_name: str) -> str:
    return (f"hf-encoder-classifier answers only the moral_ambiguity tasks ({', '.join(LM_EVAL_TASKS)}); "
            f"got a request from {task_name!r}")


class EncoderClassifierLM(LM):
    def __init__(self, pretrained: str, batch_size: int | str = 16, max_batch_size: int | None = None,
                 device: str | None = None, **kwargs):
        super().__init__()
        self.root = Path(pretrained)
        if not self.root.is_dir():
            raise ValueError(f"hf-encoder-classifier: pretrained={pretrained} is not a folder")
        self.batch_size = 16 if str(batch_size).startswith("auto") else int(batch_size)
        # lm-eval's default --device is cuda; fall back like its HF backend does.
        if device is None or (str(device).startswith("cuda") and not torch.cuda.is_available()):
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._device = torch.device(device)
        self._loaded: dict[str, tuple] = {}

    def _classifier(self, task: str):
        base = base_task(task)
        if base not in self._loaded:
            from transformers import AutoTokenizer

            for folder in (self.root / base, self.root):
                card_path = folder / CARD_NAME
                if card_path.is_file() and json.loads(card_path.read_text()).get("task") == base:
                    card = json.loads(card_path.read_text())
                    break
            else:
                raise ValueError(f"hf-encoder-classifier: no classifier for {base} in {self.root} "
                                 f"(looked for {CARD_NAME} with task {base!r} in {self.root / base} and {self.root})")
            spec = get_task(base)
            model = load_classifier(folder, spec.dataset, len(spec.labels)).to(self._device).eval()
            tokenizer = AutoTokenizer.from_pretrained(folder)
            tokenizer.truncation_side = card.get("truncation_side", "left")
            self._loaded[base] = (model, tokenizer, card, spec)
        return self._loaded[base]

    def option_logprobs(self, task: str, docs: list[dict]) -> torch.Tensor:
        """Calibrated log q (N x K) for lm-eval documents of ``task`` (presented option order)."""
        model, tokenizer, card, spec = self._classifier(task)
        collate = EncoderCollator(tokenizer, architecture(spec.dataset) == "multiple_choice")
        out = []
        for start in range(0, len(docs), self.batch_size):
            chunk = docs[start:start + self.batch_size]
            feats = [{**encode(tokenizer, spec.dataset, d, card["max_length"]), "counts": d["counts"]}
                     for d in chunk]
            batch = {k: v.to(self._device) for k, v in collate(feats).items()}
            with torch.no_grad():
                logits = classifier_logits(model, batch).float()
            out.append(torch.log_softmax(logits / card["temperature"], -1).cpu())
        return torch.cat(out)

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        by_task: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
        for i, req in enumerate(requests):
            if req.task_name not in LM_EVAL_TASKS:
                raise ValueError(_only_ours(req.task_name))
            by_task[req.task_name][req.doc_id].append((i, req))
        results: list = [None] * len(requests)
        for task, docs in tqdm(by_task.items(), disable=disable_tqdm, desc="hf-encoder-classifier"):
            doc_ids = sorted(docs)
            logq = self.option_logprobs(task, [docs[d][0][1].doc for d in doc_ids])
            for row, doc_id in zip(logq, doc_ids):
                for i, req in docs[doc_id]:
                    # A classifier reads labels, not text: every presentation order gets the same
                    # answer (order effect 0), and surface variants other than the scored string
                    # carry no probability.
                    _, variant, label = request_layout(get_task(task), req.idx)
                    value = float(row[label]) if variant == 0 else float("-inf")
                    results[i] = (value, bool(variant == 0 and label == int(row.argmax())))
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise ValueError(_only_ours(requests[0].task_name if requests else "?"))

    def generate_until(self, requests, disable_tqdm: bool = False):
        raise ValueError(_only_ours(requests[0].task_name if requests else "?"))
