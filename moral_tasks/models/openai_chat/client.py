"""Chat completions through the official ``openai`` SDK, validated and cached.

The SDK does the HTTP work: timeouts, retries with backoff on connection errors,
408/409/429/5xx (honouring Retry-After), typed errors. On top of it:

* a response is checked before anything uses or caches it; an HTTP 200 whose body is
  not JSON, is an error object or lacks what the readout needs is retried like a 5xx
  (the SDK does not retry a 200), then the run stops with a one-line message;
* the served model's identity is part of every cache key: the ``revision`` model arg
  when given, otherwise the ``model`` field that the server reports (one live request
  per run establishes it), so a different model served under the same alias never
  reuses another's answers;
* the key comes only from the environment and is removed from every message before
  the message is cut to length.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import threading
import time
from pathlib import Path
from typing import Callable

import openai

from .cache import ResponseCache, cache_key
from .errors import APIModelError, redact

log = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"
HINTS = {400: "bad request", 401: "unauthorised: check the API key", 403: "forbidden: check the API key",
         404: "not found: check the model name and base_url"}

# A check returns None for a usable response, else what is wrong with it.
Check = Callable[[dict], "str | None"]


def _first_choice(body: dict) -> dict | None:
    choices = body.get("choices")
    return choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None


def check_message(body: dict) -> str | None:
    choice = _first_choice(body)
    if choice is None:
        return "no choices"
    message = choice.get("message")
    if not isinstance(message, dict) or not isinstance(message.get("content"), (str, type(None))):
        return "choices[0] has no message"
    return None


def check_top_logprobs(body: dict) -> str | None:
    choice = _first_choice(body)
    if choice is None:
        return "no choices"
    try:
        top = choice["logprobs"]["content"][0]["top_logprobs"]
    except (KeyError, IndexError, TypeError):
        return ("no choices[0].logprobs.content[0].top_logprobs (does this API return logprobs? "
                "use --model openai-chat-sampling otherwise)")
    if not isinstance(top, list) or not top:
        return "an empty top_logprobs list"
    for entry in top:
        lp = entry.get("logprob") if isinstance(entry, dict) else None
        if not (isinstance(entry, dict) and isinstance(entry.get("token"), str) and isinstance(lp, (int, float))
                and not isinstance(lp, bool) and math.isfinite(lp) and lp <= 1e-6):
            return f"a malformed top_logprobs entry {entry!r}"
    return None


def default_cache_dir() -> Path:
    from moral_tasks.data import cache_dir

    return cache_dir().parent / "api-cache"


class ChatClient:
    """One endpoint + model: ``create(payload, check)`` returns a validated response, from cache if there."""

    def __init__(self, model: str, base_url: str, api_key_env: str, timeout: float, max_retries: int,
                 backoff: float, cache_dir: Path, revision: str | None):
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.max_retries = max_retries
        self.backoff = backoff
        self._secret = os.environ.get(api_key_env) or None
        if self._secret is None and self.base_url == OPENAI_BASE_URL:
            raise APIModelError(f"no API key: set the environment variable {api_key_env} "
                                "(or name another with api_key_env=)")
        # Local servers (llama.cpp, vLLM) need no key; the SDK insists on one.
        self._sdk = openai.OpenAI(api_key=self._secret or "no-key", base_url=self.base_url, timeout=timeout,
                                  max_retries=max_retries)
        self.cache = ResponseCache(Path(cache_dir) / "responses.sqlite")
        self.revision = revision
        self._identity = None if revision is None else f"revision:{revision}"
        self._probe = threading.Lock()  # one thread learns the served model; the others wait for it
        self._lock = threading.Lock()  # guards the counters below (updated from worker threads)
        self.served_models: set[str] = set()
        self.live_requests = 0
        self.cached_responses = 0
        self.failure: APIModelError | None = None

    @property
    def identity(self) -> str | None:
        """What the cache keys on besides the request: the revision, or the served model's name."""
        return self._identity

    def create(self, payload: dict, check: Check) -> dict:
        if self.failure is not None:  # another worker has failed: stop asking
            raise self.failure
        try:
            return self._create(payload, check)
        except APIModelError as exc:
            self.failure = self.failure or exc
            raise

    def _create(self, payload: dict, check: Check) -> dict:
        with self._probe:
            if self.failure is not None:
                raise self.failure
            if self._identity is None:
                body = self._live(payload, check)
                served = body.get("model")
                if not isinstance(served, str) or not served:
                    log.warning("%s does not say which model answered: pass revision=... in --model_args so that "
                                "cached answers are tied to the model that gave them", self.base_url)
                    served = "unreported"
                self._identity = f"served:{served}"
                self.cache.put(cache_key(self.base_url, self._identity, payload), body)
                return body
        key = cache_key(self.base_url, self._identity, payload)
        body = self.cache.get(key)
        if body is not None:
            with self._lock:
                self.cached_responses += 1
            return body
        body = self._live(payload, check)
        self.cache.put(key, body)
        return body

    def _live(self, payload: dict, check: Check) -> dict:
        problem = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(min(self.backoff * 2 ** (attempt - 1), 8.0) * (0.75 + random.random() / 4))
            try:
                raw = self._sdk.chat.completions.with_raw_response.create(**payload)
            except openai.APIStatusError as exc:
                hint = HINTS.get(exc.status_code)
                raise APIModelError(
                    f"{self.url} answered HTTP {exc.status_code}{f' ({hint})' if hint else ''} for model "
                    f"{self.model!r}: {redact(exc.response.text, self._secret)}") from None
            except openai.APIConnectionError as exc:  # includes timeouts; the SDK has retried them
                raise APIModelError(f"{self.url}: no answer after {self.max_retries + 1} attempts "
                                    f"({type(exc).__name__}: {redact(str(exc.__cause__ or exc), self._secret)})") from None
            with self._lock:
                self.live_requests += 1
            text = raw.http_response.text
            try:
                body = raw.http_response.json()
            except ValueError:
                problem = f"a body that is not JSON: {redact(text, self._secret)}"
                continue
            if not isinstance(body, dict) or "error" in body:
                problem = f"an error object: {redact(text, self._secret)}"
                continue
            problem = check(body)
            if problem is None:
                if isinstance(body.get("model"), str):
                    with self._lock:
                        self.served_models.add(body["model"])
                # A server that echoes the key in an answer must not put it into the cache.
                return json.loads(text.replace(self._secret, "***")) if self._secret and self._secret in text else body
            problem = f"{problem}: {redact(text, self._secret)}"
        raise APIModelError(f"{self.url} answered HTTP 200 with an unusable response {self.max_retries + 1} "
                            f"times in a row for model {self.model!r} (nothing was cached): {problem}")

    def close(self) -> None:
        self.cache.close()
        self._sdk.close()
