"""Chat-API model types for lm-eval: first-token logprob readout, sampling readout, generation.

lm-eval 0.4.13 cannot score multiple-choice tasks with chat APIs (no prompt
log-probabilities). Both model types send the task prompt as a chat and read the
answer letter:

* ``openai-chat-logprobs``: one call per question with ``max_tokens=1``,
  ``logprobs=true`` and ``top_logprobs`` (max 20 on OpenAI), read by
  :mod:`.readout` (missing options get an honest share of what the top-k leaves).
* ``openai-chat-sampling``: for APIs without logprobs: ``num_samples`` replies at
  temperature 1, each parsed by :func:`moral_tasks.answers.parse_answer`, add-one
  smoothing; a run whose parse rate is below ``min_parse_rate`` fails.

A document with no readout (no option among the top-k; no parseable reply) is
returned as :class:`moral_tasks.answers.NoReadout` for every option, so the
harness leaves it out of the metrics (``no_readout=uniform`` imputes a uniform
distribution instead); both model types count such documents per task in the
results (``config.api``). Both also answer ``generate_until`` (verbalized and
sampling tasks), cached like the rest. The HTTP work is the ``openai`` SDK's
(:mod:`.client`); the key comes from the environment only.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from lm_eval.api.model import LM
from tqdm.auto import tqdm

from moral_tasks.answers import NoReadout, Tally, modal_shares, tally, vote_distribution
from moral_tasks.prompts import LM_EVAL_TASKS, get_task, request_layout

from .client import OPENAI_BASE_URL, ChatClient, check_message, check_top_logprobs, default_cache_dir
from .errors import APIModelError, install_excepthook
from .readout import TopKReadout, merge_top_logprobs, read_top_logprobs

__all__ = ["APIModelError", "OpenAIChatLogprobs", "OpenAIChatSampling", "merge_top_logprobs", "read_top_logprobs"]

log = logging.getLogger(__name__)

NO_READOUT_POLICIES = ("skip", "uniform")
# The OpenAI API accepts at most 4 stop sequences; the rest are applied to the reply here.
MAX_STOP = 4
LISTED_DOCS = 20  # documents named in the results per task and kind of problem


def _variant(req) -> int:
    """0 for the string lm-eval scores, > 0 for another surface variant of an option (our tasks only)."""
    if req.task_name not in LM_EVAL_TASKS:
        return 0
    return request_layout(get_task(req.task_name), req.idx)[1]


def _flag(value: Any) -> bool:
    # lm-eval passes model_args values as strings or parsed literals.
    return str(value).lower() not in ("false", "0", "no")


@dataclass
class _Question:
    """One document's options, asked once: all lm-eval requests that share task, doc and context."""

    task: str
    doc: str
    context: str
    options: list[str]
    indices: list[int]


class _ChatAPI(LM):
    """Shared plumbing: messages from lm-eval contexts, the client, concurrency, per-task accounts."""

    def __init__(self, model: str, base_url: str = OPENAI_BASE_URL, api_key_env: str = "OPENAI_API_KEY",
                 num_concurrent: int = 4, max_retries: int = 6, timeout: float = 60.0, backoff: float = 0.5,
                 cache_dir: str | None = None, revision: str | None = None, no_readout: str = "skip",
                 max_gen_toks: int = 256, readout_path: str | None = None, batch_size=1, max_batch_size=None,
                 device=None, **kwargs):
        super().__init__()
        install_excepthook()
        if "api_key" in kwargs:
            raise APIModelError("do not pass api_key in model_args (lm-eval writes model_args into its results "
                                f"files); set the environment variable {api_key_env} instead, or name another "
                                "with api_key_env=")
        unknown = set(kwargs) - {"tokenized_requests"}
        if unknown:
            raise APIModelError(f"{type(self).__name__}: unknown model_args {', '.join(sorted(unknown))}")
        if no_readout not in NO_READOUT_POLICIES:
            raise APIModelError(f"no_readout={no_readout!r}: expected one of {', '.join(NO_READOUT_POLICIES)}")
        self.model = model
        self.no_readout = no_readout
        self.num_concurrent = int(num_concurrent)
        self.max_gen_toks = int(max_gen_toks)
        self.readout_path = readout_path
        self.client = ChatClient(model, base_url, api_key_env, timeout=float(timeout), max_retries=int(max_retries),
                                 backoff=float(backoff), cache_dir=cache_dir or default_cache_dir(),
                                 revision=None if revision is None else str(revision))
        self.accounts: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(int))

    # -- lm-eval chat-template hooks: the API applies its own template, we only pass messages.
    @property
    def tokenizer_name(self) -> str:
        return f"api:{self.model}"

    def chat_template(self, chat_template=False) -> str:
        return ""

    def apply_chat_template(self, chat_history, add_generation_prompt=True) -> str:
        return json.dumps(chat_history)

    @staticmethod
    def messages(context: str) -> list[dict]:
        """lm-eval's context: a JSON list of messages (with --apply_chat_template) or plain text."""
        try:
            parsed = json.loads(context)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(m, dict) and "role" in m for m in parsed):
            return parsed
        return [{"role": "user", "content": context}]

    def _map(self, fn, items: list, desc: str, disable: bool) -> list:
        self.client.failure = None
        with ThreadPoolExecutor(max_workers=self.num_concurrent) as pool:
            try:
                return list(tqdm(pool.map(fn, items), total=len(items), desc=desc, disable=disable))
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    # -- multiple choice
    def loglikelihood(self, requests, disable_tqdm: bool = False):
        questions: dict[tuple, _Question] = {}
        results: list = [None] * len(requests)
        for i, req in enumerate(requests):
            context, continuation = req.args
            if _variant(req) and not self.reads_variants:
                # Our tasks also ask for each option's other surface variant (" A" next to "A").
                # This readout has already merged it into the option (or cannot tell variants
                # apart): it adds no probability of its own, so variant_mass stays honest at 0.
                results[i] = (-math.inf, False)
                self.cache_hook.add_partial("loglikelihood", req.args, results[i])
                continue
            doc = req.doc if isinstance(req.doc, dict) else {}
            name = str(doc.get("id", req.doc_id))
            q = questions.setdefault((req.task_name, name, context), _Question(str(req.task_name), name, context, [], []))
            q.options.append(continuation if self.reads_variants else continuation.strip())
            q.indices.append(i)
        asked = list(questions.values())
        outcomes = self._map(lambda q: self.read(q.context, q.options), asked, type(self).__name__, disable_tqdm)
        if self.readout_path:
            # One line per question: what was read, before any choice about missing readouts.
            with open(self.readout_path, "a", encoding="utf-8") as fh:
                for q, outcome in zip(asked, outcomes):
                    fh.write(json.dumps({"task": q.task, "doc": q.doc, "options": q.options,
                                         **self.describe(outcome)}) + "\n")
        for q, outcome in zip(asked, outcomes):
            account = self.accounts[q.task]
            account["documents"] += 1
            loglik = self.account(account, q, outcome)
            if loglik is None and self.no_readout == "skip":
                marker = NoReadout(self.no_readout_reason)
                answers = {o: (marker, False) for o in q.options}
                account["no_readout"] += 1
                account.setdefault("no_readout_docs", [])
                if len(account["no_readout_docs"]) < LISTED_DOCS:
                    account["no_readout_docs"].append(q.doc)
            else:
                if loglik is None:
                    loglik = {o: -math.log(len(q.options)) for o in q.options}
                    account["imputed_uniform"] += 1
                shares = modal_shares([loglik[o] for o in q.options])
                answers = {o: (loglik[o], share > 0) for o, share in zip(q.options, shares)}
            for i, option in zip(q.indices, q.options):
                results[i] = answers[option]
                self.cache_hook.add_partial("loglikelihood", requests[i].args, results[i])
        self.finish()
        return results

    no_readout_reason = "no readout"
    # Whether each surface variant of an option is read on its own (else only the scored string).
    reads_variants = False

    def read(self, context: str, options: list[str]):
        raise NotImplementedError

    def account(self, account: dict, question: _Question, outcome) -> dict[str, float] | None:
        """Count what matters about one document's outcome; its option log-likelihoods, or None (no readout)."""
        raise NotImplementedError

    def describe(self, outcome) -> dict:
        """The outcome of one question as written to ``readout_path``."""
        raise NotImplementedError

    def finish(self) -> None:
        """Warn about (or refuse) what the accounts show, once per loglikelihood call."""
        for task, account in self.accounts.items():
            if account.get("no_readout") or account.get("imputed_uniform"):
                action = ("left out of the metrics" if self.no_readout == "skip"
                          else "given a uniform distribution (no_readout=uniform)")
                n = account.get("no_readout", 0) + account.get("imputed_uniform", 0)
                log.warning("%s: %s: %d of %d documents have no readout (%s), %s", self.model, task, n,
                            account["documents"], self.no_readout_reason, action)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise APIModelError(f"{type(self).__name__} cannot compute rolling log-likelihoods (a chat API gives no "
                            "prompt log-probabilities)")

    # -- generation
    def generate_until(self, requests, disable_tqdm: bool = False):
        seen: Counter = Counter()
        jobs = []
        for req in requests:
            context, gen_kwargs = req.args
            payload, until = self._generation_payload(context, dict(gen_kwargs or {}))
            if payload["temperature"] > 0:
                # lm-eval's `repeats` sends identical requests: the k-th copy is sample k, its own
                # cached call (the same k on a rerun, so a resumed run reuses it).
                signature = json.dumps(payload, sort_keys=True)
                payload["seed"] = seen[signature]
                seen[signature] += 1
            jobs.append((payload, until))
        texts = self._map(self._generate, jobs, f"{type(self).__name__} generate", disable_tqdm)
        for req, text in zip(requests, texts):
            self.cache_hook.add_partial("generate_until", req.args, text)
        return texts

    def _generation_payload(self, context: str, kwargs: dict) -> tuple[dict, list[str]]:
        until = kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        do_sample = kwargs.pop("do_sample", None)
        temperature = float(kwargs.pop("temperature", 1.0 if do_sample else 0.0))
        if do_sample is False:
            temperature = 0.0
        payload = {"model": self.model, "messages": self.messages(context),
                   "max_tokens": int(kwargs.pop("max_gen_toks", self.max_gen_toks)), "temperature": temperature}
        if "top_p" in kwargs:
            payload["top_p"] = float(kwargs.pop("top_p"))
        if until:
            payload["stop"] = until[:MAX_STOP]
        if kwargs:
            log.warning("%s: generation arguments not sent to the API: %s", self.model, sorted(kwargs))
        return payload, until

    def _generate(self, job: tuple[dict, list[str]]) -> str:
        payload, until = job
        text = self.client.create(payload, check_message)["choices"][0]["message"]["content"] or ""
        cut = min((text.find(s) for s in until if s and s in text), default=len(text))
        return text[:cut]

    # -- what lm-eval writes into the results file (config.api)
    def get_model_info(self) -> dict:
        return {"api": {
            "model": self.model,
            "base_url": self.client.base_url,
            "revision": self.client.revision,
            "served_models": sorted(self.client.served_models),
            "cache_identity": self.client.identity,
            "cache_file": str(self.client.cache.path),
            "live_requests": self.client.live_requests,
            "cached_responses": self.client.cached_responses,
            "no_readout": self.no_readout,
            "readout": {task: dict(account) for task, account in self.accounts.items()},
        }}


class OpenAIChatLogprobs(_ChatAPI):
    no_readout_reason = "no option letter among the top-k tokens"

    def __init__(self, *args, top_logprobs: int = 20, merge_whitespace=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.top_logprobs = int(top_logprobs)
        self.merge_whitespace = _flag(merge_whitespace)
        self.reads_variants = not self.merge_whitespace
        self.no_readout_reason = f"no option letter among the top-{self.top_logprobs} tokens"

    def read(self, context: str, options: list[str]) -> TopKReadout:
        payload = {"model": self.model, "messages": self.messages(context), "max_tokens": 1, "temperature": 0,
                   "logprobs": True, "top_logprobs": self.top_logprobs}
        body = self.client.create(payload, check_top_logprobs)
        top = body["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        return read_top_logprobs(top, options, self.merge_whitespace)

    def describe(self, outcome: TopKReadout) -> dict:
        # -inf (nothing left for a missing option) is written as null: JSON has no infinity.
        return {"loglik": {o: lp if math.isfinite(lp) else None for o, lp in outcome.loglik.items()},
                "missing": list(outcome.missing), "topk_mass": outcome.topk_mass,
                "imputed_mass": outcome.imputed_mass}

    def account(self, account: dict, question: _Question, outcome: TopKReadout) -> dict[str, float] | None:
        if not outcome.has_readout:
            return None
        if outcome.missing:
            account["documents_with_missing_options"] += 1
            account["imputed_mass_total"] += outcome.imputed_mass
            account["imputed_mass_max"] = max(account.get("imputed_mass_max", 0.0), outcome.imputed_mass)
            zero = sum(1 for o in outcome.missing if outcome.loglik[o] == -math.inf)
            if zero:
                account["options_with_nothing_left"] += zero
        return outcome.loglik

    def finish(self) -> None:
        super().finish()
        for task, account in self.accounts.items():
            if account.get("documents_with_missing_options"):
                log.warning("%s: %s: options missing from the top-%d on %d of %d documents; they share what the "
                            "top-k leaves (total imputed mass %.4g, at most %.4g per document; %d option(s) got "
                            "probability 0 because the top-k already sums to 1, which makes log-q metrics such as "
                            "xentropy infinite where humans voted for them)", self.model, task,
                            self.top_logprobs, account["documents_with_missing_options"], account["documents"],
                            account["imputed_mass_total"], account["imputed_mass_max"],
                            account.get("options_with_nothing_left", 0))


class OpenAIChatSampling(_ChatAPI):
    no_readout_reason = "no sampled reply states an option letter"

    def __init__(self, *args, num_samples: int = 20, max_tokens: int = 5, min_parse_rate: float = 0.5, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_samples = int(num_samples)
        self.max_tokens = int(max_tokens)
        self.min_parse_rate = float(min_parse_rate)
        if not 0 <= self.min_parse_rate <= 1:
            raise APIModelError(f"min_parse_rate={min_parse_rate!r}: expected a number from 0 to 1")

    def read(self, context: str, options: list[str]) -> Tally:
        replies = []
        for sample in range(self.num_samples):
            # The sample index is the seed and part of the cache key: each sample is its own cached call.
            payload = {"model": self.model, "messages": self.messages(context), "max_tokens": self.max_tokens,
                       "temperature": 1.0, "seed": sample}
            replies.append(self.client.create(payload, check_message)["choices"][0]["message"]["content"])
        return tally(replies, options)

    def describe(self, outcome: Tally) -> dict:
        return {"counts": outcome.counts, "unparsed": outcome.unparsed}

    def account(self, account: dict, question: _Question, outcome: Tally) -> dict[str, float] | None:
        account["replies"] += outcome.replies
        account["parsed"] += sum(outcome.counts)
        account["parse_rate"] = account["parsed"] / account["replies"]
        if not sum(outcome.counts):
            return None
        q = vote_distribution(outcome.counts)
        return {o: math.log(p) for o, p in zip(question.options, q)}

    def finish(self) -> None:
        super().finish()
        for task, account in self.accounts.items():
            log.warning("%s: %s: %d of %d sampled replies (%.1f%%) state an option letter", self.model, task,
                        account["parsed"], account["replies"], 100 * account["parse_rate"])
            if account["parse_rate"] < self.min_parse_rate:
                raise APIModelError(
                    f"{task}: only {account['parsed']} of {account['replies']} sampled replies "
                    f"({account['parse_rate']:.1%}) state an option letter in the accepted format, below "
                    f"min_parse_rate={self.min_parse_rate:g}; the replies are cached in {self.client.cache.path}, "
                    "so a rerun with a lower min_parse_rate (or more max_tokens) costs nothing for them")
