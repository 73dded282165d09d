"""Small Scruples-schema files written by the tests (the real data cannot be downloaded here)."""

from __future__ import annotations

import json
import random
from pathlib import Path

ANECDOTE_LABELS = ("AUTHOR", "OTHER", "EVERYBODY", "NOBODY", "INFO")


def anecdote_row(rng: random.Random, i: int, scores: dict | None = None) -> dict:
    if scores is None:
        scores = {label: rng.choice([0, 0, 1, 2, 5, 9]) for label in ANECDOTE_LABELS}
        scores["OTHER"] += 1
    right, wrong = scores["OTHER"] + scores["NOBODY"], scores["AUTHOR"] + scores["EVERYBODY"]
    label = max(ANECDOTE_LABELS, key=lambda k: (scores[k], -ANECDOTE_LABELS.index(k)))
    return {
        "id": f"anec{i:04d}",
        "post_id": f"p{i:05d}",
        "action": {"description": f"doing thing {i}", "pronormative_score": right, "contranormative_score": wrong},
        "title": f"AITA for doing thing number {i}?",
        "text": f"Story {i}. I did a thing and my friend got upset about it.",
        "post_type": "HISTORICAL",
        "label_scores": scores,
        "label": label,
        "binarized_label_scores": {"RIGHT": right, "WRONG": wrong},
        "binarized_label": "RIGHT" if right >= wrong else "WRONG",
    }


def dilemma_row(rng: random.Random, i: int, gold: list | None = None) -> dict:
    if gold is None:
        first = rng.randint(0, 5)
        gold = [first, 5 - first]
    return {
        "id": f"dil{i:04d}",
        "actions": [{"id": f"a{i}x", "description": f"taking action x{i}"}, {"id": f"a{i}y", "description": f"taking action y{i}"}],
        "gold_label": int(gold[1] > gold[0]),
        "gold_annotations": gold,
        "human_perf_label": 0,
        "human_perf_annotations": [0, 0],
        "controversial": 0 not in gold,
    }


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def write_scruples(root: Path, n: int = 12, seed: int = 0) -> Path:
    """A full tarball-style layout: <root>/anecdotes/<split>.scruples-anecdotes.jsonl etc."""
    rng = random.Random(seed)
    for split in ("train", "dev", "test"):
        write_jsonl(root / "anecdotes" / f"{split}.scruples-anecdotes.jsonl", [anecdote_row(rng, i) for i in range(n)])
    for split in ("train", "train-extra", "dev", "test"):
        write_jsonl(root / "dilemmas" / f"{split}.scruples-dilemmas.jsonl", [dilemma_row(rng, i) for i in range(n)])
    return root
