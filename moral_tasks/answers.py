"""Answers read from a model's written reply, and distributions made of them.

One implementation for every readout that parses text (the API sampling model
type now; the sampling and answer-consistency tasks later):

* :func:`parse_answer`: the ONE strict answer-letter parser;
* :func:`tally` / :func:`vote_distribution`: votes to an add-one-smoothed distribution;
* :func:`modal_shares`: credit for the most-voted option, split evenly between tied options;
* :class:`NoReadout`: what a model type returns in place of a log-likelihood for a
  document it could not read (see its docstring).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable, Sequence

# What may stand before the letter ("Answer: A", "The answer is (B)", "**Option C**").
_PREFIX = r"(?:(?:the\s+|my\s+|final\s+)*(?:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*)?"


@lru_cache(maxsize=32)
def _patterns(letters: tuple[str, ...]) -> tuple[re.Pattern, re.Pattern]:
    alternatives = "|".join(map(re.escape, letters))
    # The reply opens with the answer: optional prefix, the letter (bare, "(A)" or "[A]"), then
    # the end, or punctuation/space before whatever follows ("A. The author", "B) because ...").
    head = re.compile(
        rf"^{_PREFIX}(?:\((?P<p>{alternatives})\)|\[(?P<b>{alternatives})\]|(?P<l>{alternatives}))"
        r"(?:$|[.):,;!]?(?:\s|$))",
        re.IGNORECASE,
    )
    # An option letter standing alone anywhere (capital only: "a" in a sentence is an article).
    alone = re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9'])")
    return head, alone


def parse_answer(text: str | None, letters: Sequence[str]) -> str | None:
    """The option letter a reply answers with, or None when the reply does not state exactly one.

    Accepted: the reply opens with the letter, optionally after "Answer:" / "The answer is" /
    "Option", optionally in parentheses or brackets or markdown bold, followed by the end of the
    reply or by punctuation/space and any text that names no OTHER option letter. So "A",
    "B.", "(A)", "Answer: B", "**A**", "A. The author" parse; "A: B." (two letters), "A or B",
    "I think A", "a" and "Both are bad" do not. A capital letter standing alone in the rest
    counts as naming that option, so "B. A person should..." is refused too: strict on purpose,
    an unparseable reply is counted, never guessed.
    """
    if not text:
        return None
    letters = tuple(letters)
    head, alone = _patterns(letters)
    reply = text.strip().replace("**", "").replace("__", "").replace("`", "").strip()
    match = head.match(reply)
    if match is None:
        return None
    raw = match.group("p") or match.group("b") or match.group("l")
    if raw not in letters:  # "answer: a": the prefix is case-blind, the letter is not
        return None
    others = {m.group(0) for m in alone.finditer(reply, match.end())}
    return raw if others <= {raw} else None


@dataclass
class Tally:
    """Votes per option (label order) and how many replies could not be parsed."""

    letters: tuple[str, ...]
    counts: list[int] = field(default_factory=list)
    unparsed: int = 0

    @property
    def replies(self) -> int:
        return sum(self.counts) + self.unparsed

    @property
    def parse_rate(self) -> float:
        return sum(self.counts) / self.replies if self.replies else float("nan")


def tally(replies: Iterable[str | None], letters: Sequence[str]) -> Tally:
    """Parse every reply with :func:`parse_answer` and count the votes."""
    letters = tuple(letters)
    result = Tally(letters, [0] * len(letters))
    for reply in replies:
        answer = parse_answer(reply, letters)
        if answer is None:
            result.unparsed += 1
        else:
            result.counts[letters.index(answer)] += 1
    return result


def vote_distribution(counts: Sequence[float], smoothing: float = 1.0) -> list[float]:
    """Add-``smoothing`` estimate of the option distribution from vote counts (uniform with no votes)."""
    if smoothing < 0 or any(c < 0 for c in counts):
        raise ValueError(f"counts and smoothing must be non-negative, got {list(counts)} and {smoothing}")
    total = sum(counts) + smoothing * len(counts)
    if total == 0:
        return [1.0 / len(counts)] * len(counts)
    return [(c + smoothing) / total for c in counts]


def modal_shares(values: Sequence[float]) -> list[float]:
    """One vote for the most-voted (most probable) option, split evenly between tied options.

    ``[3, 3, 1] -> [0.5, 0.5, 0]``: no position is favoured, unlike ``argmax`` (first wins).
    """
    top = max(values)
    winners = [v == top for v in values]
    return [w / sum(winners) for w in winners]


class NoReadout:
    """Stands in for a log-likelihood the model type could not read for a document.

    The model type's ``loglikelihood`` returns ``(NoReadout(reason), False)`` for EVERY option
    of such a document (e.g. no option letter among the API's top-k tokens), and counts the
    document in its results (``config.api.readout``). The harness's ``process_results`` must
    recognise it (:func:`is_no_readout`) and leave the document out of the metrics while
    counting it per task. It deliberately has no ``__float__``: code unaware of it fails
    loudly (``TypeError``) instead of scoring a made-up number.
    """

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason

    def __repr__(self) -> str:
        return f"NoReadout({self.reason!r})"

    __str__ = __repr__

    def __eq__(self, other) -> bool:
        return isinstance(other, NoReadout) and other.reason == self.reason

    def __hash__(self) -> int:
        return hash(("NoReadout", self.reason))

    def __reduce__(self):  # lm-eval pickles responses (request cache, gathering across ranks)
        return NoReadout, (self.reason,)


def is_no_readout(value) -> bool:
    """True for a NoReadout, or for an lm-eval response tuple whose log-likelihood is one."""
    if isinstance(value, (tuple, list)) and value:
        value = value[0]
    return isinstance(value, NoReadout)
