"""A real OpenAI-compatible server for API-model tests: llama.cpp (llama-cpp-python) serving the tiny model.

``fixtures/tiny-llama.gguf`` is the same network as ``fixtures/tiny-llama/`` (HF
safetensors, float32), converted by ``fixtures/make_gguf.py``, so API-model
scores can be compared with ``lm_eval --model hf`` on the same weights.

Use from a test module (this is not a conftest, so import the fixture)::

    from llama_server import llama_server, MODEL_ALIAS  # noqa: F401

    def test_x(llama_server):            # "http://127.0.0.1:PORT/v1"
        url = llama_server + "/chat/completions"

Notes on the server (llama-cpp-python 0.3.36), see shared/notes/llama-cpp-server.md:
- chat completions apply the chat template embedded in the GGUF (the same
  Jinja template as the HF tokenizer's);
- prompt token ids are rejected (HTTP 500): lm-eval's local-completions needs
  ``tokenized_requests=False``;
- top_logprobs entries are keyed by decoded text, so duplicates merge.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
HF_MODEL_DIR = FIXTURES / "tiny-llama"
GGUF_PATH = FIXTURES / "tiny-llama.gguf"
MODEL_ALIAS = "tiny"
# llama-cpp-python[server] extras: without them `python -m llama_cpp.server` cannot start.
_SERVER_MODULES = ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(log_path: Path, n: int = 4000) -> str:
    try:
        return log_path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def start_server(gguf_path, tmp_dir, *, timeout: float = 60.0, n_ctx: int = 2048):
    """Start ``python -m llama_cpp.server`` on 127.0.0.1 and a free port; wait until /v1/models answers.

    Returns ``(base_url, stop)`` where base_url is ``http://127.0.0.1:PORT/v1`` (what an OpenAI
    client takes as base_url) and ``stop()`` terminates the server (then kills it if needed).
    The server log is ``tmp_dir/llama_server.log``.
    """
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    log_path = tmp_dir / "llama_server.log"
    port = _free_port()
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf_path),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", str(n_ctx),
        "--model_alias", MODEL_ALIAS,
    ]
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    log.close()  # the child holds its own descriptor

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}:\n{_log_tail(log_path)}")
        try:
            with urllib.request.urlopen(base_url + "/models", timeout=2) as resp:
                models = json.load(resp)
            if any(m.get("id") == MODEL_ALIAS for m in models.get("data", [])):
                return base_url, stop
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            pass
        if time.monotonic() > deadline:
            stop()
            raise RuntimeError(f"llama_cpp.server did not answer within {timeout:.0f} s:\n{_log_tail(log_path)}")
        time.sleep(0.2)


# Test modules import this fixture, and pytest makes one fixture definition per importing
# module; this cache makes them share one server for the session (its first user owns it).
_RUNNING: dict[str, str] = {}


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory) -> str:
    """Base URL (``http://127.0.0.1:PORT/v1``) of a llama.cpp server on fixtures/tiny-llama.gguf, model "tiny"."""
    missing = [name for name in _SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"llama-cpp-python[server] is not installed (missing: {', '.join(missing)})")
    key = str(GGUF_PATH)
    if key in _RUNNING:
        yield _RUNNING[key]
        return
    base_url, stop = start_server(GGUF_PATH, tmp_path_factory.mktemp("llama_server"))
    _RUNNING[key] = base_url
    try:
        yield base_url
    finally:
        _RUNNING.pop(key, None)
        stop()
