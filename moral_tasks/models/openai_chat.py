"""Chat-API model types that answer our multiple-choice tasks: logprob readout and sampling.

lm-eval 0.4.13 cannot score multiple-choice tasks with chat APIs (no prompt
log-probabilities). Both classes here send the task prompt as a chat and read
the answer letter:

* ``openai-chat-logprobs``: one call per question with ``max_tokens=1``,
  ``logprobs=true`` and ``top_logprobs`` (max 20 on OpenAI). Tokens are merged
  by their stripped text (" A" and "A" are one option; ``merge_whitespace=false``
  keeps only the exact letter, which is what lm-eval's HF backend scores). An option missing from
  the top-k gets a share of the leftover probability mass, as OpinionQA does:
  ``min(smallest top-k probability, leftover / n_missing)``; the missing mass of
  every question is recorded (``readout_path``) and summarised in the log.
* ``openai-chat-sampling``: for APIs without logprobs: ``num_samples`` answers at
  temperature 1, the first option letter parsed from each, add-one smoothing;
  unparseable answers are counted and reported.

Both: concurrent requests, retries with exponential backoff on 429 / 5xx /
timeouts, an on-disk cache keyed by (endpoint, model, messages, parameters) so
an interrupted run resumes without paying twice, and an immediate, clear error
for 401 / 403 / 404. The API key comes from the environment (``OPENAI_API_KEY``,
or the variable named by ``api_key_env``) and is never stored, cached, logged
or put in results: lm-eval copies ``model_args`` into its results files, so a
key passed there is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
import sqlite3
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from lm_eval.api.model import LM
from tqdm.auto import tqdm

from moral_tasks.prompts import TASKS

log = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
FATAL_STATUS = {400: "bad request", 401: "unauthorised: check the API key", 403: "forbidden: check the API key",
                404: "not found: check the model name and base_url"}


class APIModelError(RuntimeError):
    """A failure that must stop the run rather than produce scores."""


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


class ResponseCache:
    """SQLite key -> JSON response; written after every response, so a rerun resumes."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT)")
        self._lock = threading.Lock()

    @staticmethod
    def key(payload: dict, base_url: str) -> str:
        return hashlib.sha256(json.dumps([base_url, payload], sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value: dict) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?)", (key, json.dumps(value)))


def _default_cache_dir() -> Path:
    from moral_tasks.data import cache_dir

    return cache_dir().parent / "api-cache"


class _ChatAPI(LM):
    """Shared plumbing: messages from lm-eval contexts, HTTP with retries, cache, concurrency."""

    def __init__(self, model: str, base_url: str = OPENAI_BASE_URL, api_key_env: str = "OPENAI_API_KEY",
                 num_concurrent: int = 4, max_retries: int = 6, timeout: float = 60.0, backoff: float = 1.0,
                 cache_dir: str | None = None, batch_size=1, max_batch_size=None, device=None, **kwargs):
        super().__init__()
        if "api_key" in kwargs:
            raise ValueError("do not pass api_key in model_args (lm-eval writes model_args into its results files); "
                             f"set the environment variable {api_key_env} instead, or name another with api_key_env=")
        unknown = set(kwargs) - {"tokenized_requests"}
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown model_args {sorted(unknown)}")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self._api_key_env = api_key_env
        self.num_concurrent = int(num_concurrent)
        self.max_retries = int(max_retries)
        self.timeout = float(timeout)
        self.backoff = float(backoff)
        self.cache = ResponseCache(Path(cache_dir or _default_cache_dir()) / "responses.sqlite")
        self._session = requests.Session()

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

    def _post(self, payload: dict) -> dict:
        key = ResponseCache.key(payload, self.base_url)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        secret = os.environ.get(self._api_key_env)
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {secret}"} if secret else {})}
        url = f"{self.base_url}/chat/completions"
        problem = ""
        for attempt in range(self.max_retries + 1):
            try:
                response = self._session.post(url, json=payload, headers=headers, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                problem = f"{type(exc).__name__}: {_redact(str(exc), secret)}"
            else:
                if response.status_code == 200:
                    body = response.json()
                    self.cache.put(key, body)
                    return body
                detail = _redact(response.text[:300], secret)
                if response.status_code in FATAL_STATUS:
                    raise APIModelError(f"{url} answered HTTP {response.status_code} "
                                        f"({FATAL_STATUS[response.status_code]}) for model {self.model!r}: {detail}")
                if response.status_code not in RETRY_STATUS:
                    raise APIModelError(f"{url} answered HTTP {response.status_code}: {detail}")
                problem = f"HTTP {response.status_code}"
                retry_after = response.headers.get("Retry-After")
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    time.sleep(min(float(retry_after), 60.0))
                    continue
            if attempt < self.max_retries:
                time.sleep(self.backoff * 2 ** attempt * (0.5 + random.random() / 2))
        raise APIModelError(f"{url}: giving up after {self.max_retries + 1} attempts ({problem})")

    def _map(self, fn, items: list, desc: str, disable: bool) -> list:
        with ThreadPoolExecutor(max_workers=self.num_concurrent) as pool:
            return list(tqdm(pool.map(fn, items), total=len(items), desc=desc, disable=disable))

    def loglikelihood(self, requests_, disable_tqdm: bool = False):
        by_context: dict[str, list] = defaultdict(list)
        for i, req in enumerate(requests_):
            context, continuation = req.args
            by_context[context].append((i, continuation.strip()))
        contexts = list(by_context)
        options = [[c for _, c in by_context[ctx]] for ctx in contexts]
        scored = self._map(lambda pair: self.score_options(*pair), list(zip(contexts, options)),
                           type(self).__name__, disable_tqdm)
        results: list = [None] * len(requests_)
        for ctx, logprobs in zip(contexts, scored):
            best = max(logprobs.values())
            for i, option in by_context[ctx]:
                results[i] = (logprobs[option], logprobs[option] == best)
        self.report()
        return results

    def score_options(self, context: str, options: list[str]) -> dict[str, float]:
        raise NotImplementedError

    def report(self) -> None:
        pass

    def loglikelihood_rolling(self, requests_, disable_tqdm: bool = False):
        raise NotImplementedError(f"{type(self).__name__} only answers multiple-choice tasks ({', '.join(TASKS)})")

    def generate_until(self, requests_, disable_tqdm: bool = False):
        raise NotImplementedError(f"{type(self).__name__} only answers multiple-choice tasks ({', '.join(TASKS)})")


def merge_top_logprobs(top: list[dict], merge_whitespace: bool = True) -> dict[str, float]:
    """Log-probability per token text; with ``merge_whitespace``, " A", "A" and "A\\n" are one answer."""
    merged: dict[str, float] = {}
    for entry in top:
        text = entry["token"].strip() if merge_whitespace else entry["token"]
        lp = float(entry["logprob"])
        merged[text] = lp if text not in merged else max(merged[text], lp) + math.log1p(math.exp(-abs(merged[text] - lp)))
    return merged


def readout(top: list[dict], options: list[str], merge_whitespace: bool = True) -> tuple[dict[str, float], float]:
    """Option log-probabilities from a top-k list, and the probability mass of missing options."""
    merged = merge_top_logprobs(top, merge_whitespace)
    present = {o: merged[o] for o in options if o in merged}
    missing = [o for o in options if o not in present]
    if not missing:
        return present, 0.0
    top_probs = [math.exp(lp) for lp in merged.values()]
    leftover = max(0.0, 1.0 - sum(top_probs))
    share = min(min(top_probs) if top_probs else 1.0, leftover / len(missing))
    floor = math.log(share) if share > 0 else -100.0
    return {**present, **{o: floor for o in missing}}, share * len(missing)


class OpenAIChatLogprobs(_ChatAPI):
    def __init__(self, *args, top_logprobs: int = 20, readout_path: str | None = None, merge_whitespace=True,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.top_logprobs = int(top_logprobs)
        # lm-eval passes model_args values as strings or parsed literals.
        self.merge_whitespace = str(merge_whitespace).lower() not in ("false", "0", "no")
        self.readout_path = readout_path
        self.missing: list[float] = []

    def score_options(self, context: str, options: list[str]) -> dict[str, float]:
        payload = {"model": self.model, "messages": self.messages(context), "max_tokens": 1, "temperature": 0,
                   "logprobs": True, "top_logprobs": self.top_logprobs}
        body = self._post(payload)
        try:
            top = body["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        except (KeyError, IndexError, TypeError):
            raise APIModelError(f"{self.base_url}: the response has no top_logprobs (does the API support "
                                "logprobs? use openai-chat-sampling otherwise): " + json.dumps(body)[:300]) from None
        logprobs, missing = readout(top, options, self.merge_whitespace)
        self.missing.append(missing)
        if self.readout_path:
            with open(self.readout_path, "a") as fh:
                fh.write(json.dumps({"context_sha256": hashlib.sha256(context.encode()).hexdigest(),
                                     "options": logprobs, "missing_mass": missing}) + "\n")
        return logprobs

    def report(self) -> None:
        if self.missing:
            n = sum(m > 0 for m in self.missing)
            log.warning("%s: options missing from the top-%d on %d of %d questions (mean imputed mass %.4f, max %.4f)",
                        self.model, self.top_logprobs, n, len(self.missing), sum(self.missing) / len(self.missing),
                        max(self.missing))


class OpenAIChatSampling(_ChatAPI):
    def __init__(self, *args, num_samples: int = 20, max_tokens: int = 5, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_samples = int(num_samples)
        self.max_tokens = int(max_tokens)
        self.unparseable = 0
        self.answers = 0

    @staticmethod
    def parse(text: str, options: list[str]) -> str | None:
        """The first option letter standing alone: "A", "A.", "(B)", "Answer: C"."""
        pattern = r"(?<![A-Za-z])(" + "|".join(map(re.escape, options)) + r")(?![A-Za-z])"
        match = re.search(pattern, text)
        return match.group(1) if match else None

    def score_options(self, context: str, options: list[str]) -> dict[str, float]:
        counts = dict.fromkeys(options, 0)
        for sample in range(self.num_samples):
            # The sample index is part of the cache key: each sample is its own cached call.
            payload = {"model": self.model, "messages": self.messages(context), "max_tokens": self.max_tokens,
                       "temperature": 1.0, "seed": sample}
            text = self._post(payload)["choices"][0]["message"]["content"] or ""
            answer = self.parse(text, options)
            self.answers += 1
            if answer is None:
                self.unparseable += 1
            else:
                counts[answer] += 1
        total = sum(counts.values()) + len(options)
        return {o: math.log((c + 1) / total) for o, c in counts.items()}

    def report(self) -> None:
        if self.answers:
            log.warning("%s: %d of %d sampled answers had no option letter (counted as no vote)",
                        self.model, self.unparseable, self.answers)
