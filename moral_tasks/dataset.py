"""The lm-eval documents of a task, built from the Scruples files, and the train-split prior.

A document holds what lm-eval needs to ask (the Scruples row, the answer letters, the
majority label) and what a record needs to be scored (vote counts). Everything shared by
all documents (scoring settings, provenance, the prior) is held by the task, not repeated
in every document, because lm-eval writes each document into the samples file.
"""

from __future__ import annotations

import logging

import numpy as np

from .data import DataError, load_split, locate
from .metrics.reference import class_prior
from .prompts import TaskSpec, prompt_fields

log = logging.getLogger("lm_eval.moral_ambiguity")  # shown in lm_eval's log, with its format

DEFAULT_SPLIT = "test"
VALIDATION_SPLIT = "dev"
PRIOR_SPLIT = "train"


def human_counts(row: dict) -> list | None:
    # Dilemmas' dev/test splits have 5 more "human performance" votes per item (zeros elsewhere).
    human = row.get("human_perf_annotations")
    return list(human) if human and sum(human) > 0 else None


def build_documents(spec: TaskSpec, split: str = DEFAULT_SPLIT, data_dir: str | None = None):
    """``(DatasetDict, data_source)``: ``test`` = the requested split, ``validation`` = dev (few-shot only).

    Columns: ``id``, the texts the prompts read (:func:`moral_tasks.prompts.prompt_fields`:
    ``actions`` of a dilemma, ``title`` and ``text`` of an anecdote), ``choices`` (answer
    letters), ``target`` (majority label index), ``counts`` (votes, label order), ``human_counts``.
    """
    import datasets

    def to_dataset(split_name: str):
        loaded = load_split(spec, split_name, data_dir)
        rows = [{"id": row["id"], **prompt_fields(spec.dataset, row), "choices": list(spec.letters),
                 "target": int(np.argmax(c)), "counts": c, "human_counts": human_counts(row)}
                for row, c in zip(loaded.rows, loaded.counts)]
        return datasets.Dataset.from_list(rows), loaded.provenance_str

    test, source = to_dataset(split)
    splits = {"test": test}
    if split == VALIDATION_SPLIT:
        splits["validation"] = test
    elif available(spec.dataset, VALIDATION_SPLIT, data_dir):
        # Only few-shot sampling reads it; a data_dir holding just the test file is fine.
        splits["validation"] = to_dataset(VALIDATION_SPLIT)[0]
    return datasets.DatasetDict(splits), source


def available(dataset: str, split: str, data_dir: str | None) -> bool:
    try:
        locate(dataset, split, data_dir)
    except DataError:
        return False
    return True


def train_prior(spec: TaskSpec, data_dir: str | None = None) -> list[float] | None:
    """Mean vote share of the TRAIN split (Scruples' class-prior baseline), or None without a train file."""
    if not available(spec.dataset, PRIOR_SPLIT, data_dir):
        log.warning("%s: no %s split found, so xentropy_prior cannot be reported", spec.name, PRIOR_SPLIT)
        return None
    return class_prior(load_split(spec, PRIOR_SPLIT, data_dir).counts).tolist()
