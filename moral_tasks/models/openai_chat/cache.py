"""The on-disk response cache: an interrupted or repeated run never pays twice for an answer.

Only responses that passed validation are stored (a 200 carrying an error object is
never cached), one row per response, committed at once. The key covers the
endpoint, the served model's identity and the request, never the API key.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path

from .errors import APIModelError


class CacheError(APIModelError):
    """The cache file cannot be used; the message names it and says how to clear it."""


def cache_key(base_url: str, identity: str, payload: dict) -> str:
    return hashlib.sha256(json.dumps([base_url, identity, payload], sort_keys=True).encode()).hexdigest()


class ResponseCache:
    """SQLite key -> JSON response, shared by the worker threads (one connection, one lock)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False)
            self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT)")
        except (sqlite3.Error, OSError) as exc:
            raise self._error(exc) from None

    def _error(self, exc: Exception) -> CacheError:
        return CacheError(
            f"{self.path}: the API response cache cannot be used ({exc}); delete that file to start an "
            "empty cache (cached answers will be requested again), or pass cache_dir=DIR in --model_args "
            "to use another folder"
        )

    def get(self, key: str) -> dict | None:
        try:
            with self._lock:
                row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
            return None if row is None else json.loads(row[0])
        except (sqlite3.Error, ValueError) as exc:
            raise self._error(exc) from None

    def put(self, key: str, value: dict) -> None:
        try:
            with self._lock, self._db:
                self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?)", (key, json.dumps(value)))
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def close(self) -> None:
        with self._lock:
            self._db.close()
