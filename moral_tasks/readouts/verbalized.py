"""The verbalized readout's parser: a stated distribution, as a JSON object keyed by option label.

Strict on purpose, like :func:`moral_tasks.answers.parse_answer`: a reply that does not state
exactly one number per option is counted as unparseable, never guessed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Sequence

_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class Stated:
    """A parsed reply: the stated shares (label order, renormalised to sum to 1), or why there are none."""

    shares: list[float] | None
    reason: str | None = None


def parse_distribution(text: str | None, letters: Sequence[str]) -> Stated:
    """The distribution a reply states, e.g. ``{"A": 30, "B": 70}`` -> shares [0.3, 0.7].

    Accepted: the reply opens with a JSON object (optionally inside a markdown code fence) whose
    keys are exactly the option labels and whose values are finite numbers >= 0, not all 0; any
    text after the object is ignored. The numbers are renormalised, so percentages that sum to 90
    or to 1 read the same. Refused (``shares`` None, with the ``reason``): no object at the start,
    invalid JSON, missing or extra keys, a value that is not a number (``"40%"``, ``true``, NaN),
    a negative value, or a sum of 0.
    """
    if not text or not text.strip():
        return Stated(None, "empty reply")
    reply = text.strip()
    if reply.startswith("```"):  # ```json\n{...}\n```
        reply = reply.partition("\n")[2].strip()
    if not reply.startswith("{"):
        return Stated(None, "no JSON object at the start of the reply")
    try:
        obj, _ = _DECODER.raw_decode(reply)
    except json.JSONDecodeError:
        return Stated(None, "invalid JSON object")
    letters = list(letters)
    if set(obj) != set(letters):
        return Stated(None, f"keys {sorted(obj)} are not the options {letters}")
    values = []
    for letter in letters:
        value = obj[letter]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return Stated(None, f"the value of {letter} is not a finite number")
        if value < 0:
            return Stated(None, f"the value of {letter} is negative")
        values.append(float(value))
    total = sum(values)
    if total == 0:
        return Stated(None, "the values sum to 0")
    return Stated([v / total for v in values])


def format_distribution(shares: Sequence[float], letters: Sequence[str]) -> str:
    """Shares as the JSON object the verbalized prompts ask for, in whole percentages (few-shot answers)."""
    return json.dumps({letter: round(100 * s) for letter, s in zip(letters, shares)})
