"""Option log-probabilities from a chat API's top-k first-token log-probabilities.

The API shows only the k most likely first tokens. An option letter among them is
read directly ("A", " A" and "A\\n" merged unless ``merge_whitespace`` is off). An
option missing from them has a probability that is at most the smallest top-k
probability and, with the other missing options, at most what the top-k leaves of
1. It is given an equal share of what is left, capped by the smallest top-k
probability, so the imputed total never exceeds what is left. When the top-k
already sums to 1 or more (APIs round), nothing is left: the missing option gets
probability 0 (log-likelihood -inf), and the run reports it. When NO option is
among the top-k the document has no readout at all (the model type decides:
leave it out, or impute uniform).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class TopKReadout:
    loglik: dict[str, float]  # every option: read, or log of the imputed share (-inf when nothing is left)
    missing: tuple[str, ...]  # options not among the top-k
    topk_mass: float  # total probability of the top-k tokens (can exceed 1 by rounding)
    imputed_mass: float  # total probability given to the missing options (<= max(0, 1 - topk_mass))

    @property
    def has_readout(self) -> bool:
        return len(self.missing) < len(self.loglik)


def _logaddexp(a: float, b: float) -> float:
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


def merge_top_logprobs(top: list[dict], merge_whitespace: bool = True) -> dict[str, float]:
    """Log-probability per token text; with ``merge_whitespace``, " A", "A" and "A\\n" are one answer."""
    merged: dict[str, float] = {}
    for entry in top:
        text = entry["token"].strip() if merge_whitespace else entry["token"]
        lp = float(entry["logprob"])
        merged[text] = lp if text not in merged else _logaddexp(merged[text], lp)
    return merged


def read_top_logprobs(top: list[dict], options: list[str], merge_whitespace: bool = True) -> TopKReadout:
    merged = merge_top_logprobs(top, merge_whitespace)
    missing = tuple(o for o in options if o not in merged)
    probs = [math.exp(float(e["logprob"])) for e in top]
    topk_mass = sum(probs)
    share = 0.0
    if missing and probs:
        share = min(min(probs), max(0.0, 1.0 - topk_mass) / len(missing))
    loglik = {o: merged[o] if o in merged else (math.log(share) if share > 0 else -math.inf) for o in options}
    return TopKReadout(loglik, missing, topk_mass, share * len(missing))
