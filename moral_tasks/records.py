"""The per-document record: what one scored document leaves in lm-eval's samples file.

This is the interface between scoring a model and everything that reads its
results afterwards (``moral-ambiguity rescore``, the leaderboard, paired tests
across models). Each lm-eval sample line holds exactly one record, under the
key :data:`RECORD_KEY`; the metric keys next to it hold only a 16-bit tag of the
document (:func:`corpus_tag`; so that the samples file stays small: the aggregation
functions find the corpus through the record key).

A record (JSON object, format :data:`RECORD_FORMAT`; a field whose value would be null is left out)::

    format          "moral-ambiguity/record/4"
    task            the task name as lm-eval ran it (e.g. "moral_dilemmas_debiased")
    doc_id          the Scruples id
    labels          label order = option order of every list below (e.g. ["FIRST", "SECOND"])
    option_loglik   the readout of each option, label order: the log-likelihood of the string
                    lm-eval scores (" A", or "A" under a chat template), or with the task option
                    merge_variants the logsumexp over the option's surface variants; for a
                    debiased task the log of the mean probability over the orders
    q               the model's distribution over the options (renormalised), label order: what
                    every metric scores; for a debiased task the mean of the per-order distributions
    option_mass     total probability of the strings lm-eval scores, before renormalisation
                    (for a debiased task the mean over orders)
    variant_mass    extra probability on the options' other surface variants (e.g. "A" when
                    " A" is scored), the same way; null when the task does not read variants
    counts          human vote counts, label order
    human_counts    Scruples' extra "human performance" votes (dilemmas dev/test), or null
    orders          debiased tasks only: {"AB": q, "BA": q}, each already mapped back to label order
    no_readout      null, or why the document has no readout (an API model's top-k without an option,
                    a generation none of whose replies could be read); option_loglik and q are then
                    empty and the document is counted, never scored
    generation      generation readouts only (moral_tasks.readouts): {"kind": verbalized | sampling |
                    answer, "replies": generated, "parsed": of them read, "distinct": different reply
                    texts, "votes": parsed answers per option (sampling/answer) or null, "stated": the
                    stated shares before smoothing (verbalized) or null}; null for log-probability tasks
    scoring         the run's scoring settings (they travel with the records: an aggregation
                    sees nothing else): fixed_concentration, bootstrap_resamples, bootstrap_seed,
                    best_samples, merge_variants, agreement_cuts, prompt_version, data_source,
                    prior (mean vote share of prior_split, i.e. train; null without it). Written
                    ONCE per lm-eval process (on the first record it writes for the task), left out
                    of the others: the records of a file or of an aggregation share one set, which
                    :func:`attach_scoring` gives back to every record when they are read.

Format 3 (every record carried ``scoring``) is read as well. Older samples files are refused
with a message saying to rerun ``lm_eval``: format 1 (moral-ambiguity 0.1: the record was
repeated under every metric key and a debiased dilemma had two lines) and format 2 (the
generation readouts wrote their own "moral-ambiguity/readout/1" line around the record).
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RECORD_KEY = "record"
RECORD_FORMAT = "moral-ambiguity/record/4"
READABLE_FORMATS = (RECORD_FORMAT, "moral-ambiguity/record/3")


class RecordFormatError(ValueError):
    """A samples file or record we cannot read; the message names the file and line."""


@dataclass
class Record:
    task: str
    doc_id: str
    labels: list[str]
    option_loglik: list[float]
    q: list[float]
    option_mass: float
    counts: list[int]
    scoring: dict[str, Any] | None
    human_counts: list[int] | None = None
    variant_mass: float | None = None
    orders: dict[str, list[float]] | None = None
    no_readout: str | None = None
    generation: dict[str, Any] | None = None
    format: str = field(default=RECORD_FORMAT)

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "Record":
        if not isinstance(obj, dict):
            raise RecordFormatError(f"{where}: expected a record object, got {type(obj).__name__}")
        fmt = obj.get("format")
        if fmt not in READABLE_FORMATS:
            raise RecordFormatError(
                f"{where}: record format {fmt!r} is not {RECORD_FORMAT!r}; it was written by another "
                "version of moral-ambiguity: rerun lm_eval with this version (see CHANGELOG.md)"
            )
        names = {f for f in cls.__dataclass_fields__}
        missing = sorted(n for n in ("task", "doc_id", "labels", "option_loglik", "q", "option_mass", "counts")
                         if n not in obj)
        if missing:
            raise RecordFormatError(f"{where}: record lacks {', '.join(missing)}")
        record = cls(**{"scoring": None, **{k: v for k, v in obj.items() if k in names}})
        if record.no_readout is not None:
            return record
        k = len(record.labels)
        for name in ("option_loglik", "q", "counts"):
            value = getattr(record, name)
            if not isinstance(value, list) or len(value) != k:
                raise RecordFormatError(f"{where}: {name} must be a list of {k} numbers, got {value!r:.80}")
        if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in record.q):
            raise RecordFormatError(f"{where}: q has a non-finite value: {record.q}")
        return record


def corpus_tag(task: str, doc_id: str) -> int:
    """What a document's metric keys hold: a 16-bit checksum of task and document id. The
    aggregations compare the corpus's tags with those of the scored records, so a value is never
    reported for another task's or another selection's documents (a collision needs the same
    multiset of tags)."""
    return zlib.crc32(f"{task}\0{doc_id}".encode()) & 0xFFFF


def attach_scoring(records: list[Record], where: str) -> list[Record]:
    """``records`` each holding the scoring settings that some of them carry (see the module
    docstring); raises when none carries them or two carry different ones."""
    given = [r.scoring for r in records if r.scoring is not None]
    if records and not given:
        raise RecordFormatError(f"{where}: no record carries the run's scoring settings (the samples file is "
                                "incomplete: keep every line lm_eval wrote)")
    for other in given[1:]:
        if other != given[0]:
            raise RecordFormatError(f"{where}: the records disagree on their scoring settings ({other} vs "
                                    f"{given[0]}): they come from different runs")
    for r in records:
        r.scoring = given[0]
    return records


def read_samples(path: str | Path) -> list[Record]:
    """The records of one lm-eval ``samples_<task>_<date>.jsonl`` file, in file order."""
    path = Path(path)
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise RecordFormatError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            sample = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RecordFormatError(f"{where}: invalid JSON ({exc.msg})") from None
        if not isinstance(sample, dict) or RECORD_KEY not in sample:
            raise RecordFormatError(
                f"{where}: no {RECORD_KEY!r} field: not a moral-ambiguity samples file of format "
                f"{RECORD_FORMAT!r} (files from moral-ambiguity 0.1 must be regenerated: rerun lm_eval "
                "with --log_samples)"
            )
        records.append(Record.from_json(sample[RECORD_KEY], where))
    return attach_scoring(records, str(path))
