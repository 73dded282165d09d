"""A real HTTP server on 127.0.0.1 that plays an OpenAI-compatible chat API, well or badly.

The remote API cannot be reached from the tests, so this server replays OpenAI's
exact response shape (fixtures/openai_chat_logprobs_response.json) or whatever a
test scripts: error statuses, a 200 with an error object or a non-JSON body,
replies computed from the request. It records every request it receives.
"""

from __future__ import annotations

import copy
import http.server
import json
import math
import threading
from pathlib import Path

RECORDED = json.loads((Path(__file__).parent / "fixtures" / "openai_chat_logprobs_response.json").read_text())
SECRET = "sk-test-DO-NOT-LEAK-4242abcdefghijklmnop"


def logprobs_body(probs: dict[str, float], model: str = "gpt-4o-2024-08-06") -> dict:
    """A chat completion whose first-token top_logprobs are ``probs`` (token -> probability)."""
    body = copy.deepcopy(RECORDED)
    body["model"] = model
    top = [{"token": t, "logprob": math.log(p), "bytes": list(t.encode())} for t, p in probs.items()]
    body["choices"][0]["logprobs"]["content"][0].update(token=top[0]["token"], logprob=top[0]["logprob"],
                                                        top_logprobs=top)
    return body


def message_body(content: str | None, model: str = "gpt-4o-2024-08-06") -> dict:
    body = copy.deepcopy(RECORDED)
    body["model"] = model
    body["choices"] = [{"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": None,
                        "finish_reason": "stop"}]
    return body


class Stub:
    """Answers each POST with the next entry of ``script`` (the last one repeats).

    An entry is ``(status, payload)``: a dict is sent as JSON, bytes as they are (text/html),
    a callable is called with the request's JSON body and returns a dict. Failures carry
    ``retry-after-ms: 1`` so that the SDK's retries take no time.
    """

    def __init__(self, script):
        self.script, self.requests = list(script), []
        self._lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer._lock:
                    outer.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                    status, payload = outer.script.pop(0) if len(outer.script) > 1 else outer.script[0]
                if callable(payload):
                    payload = payload(body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html" if isinstance(payload, bytes) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status >= 408:
                    self.send_header("retry-after-ms", "1")
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def set(self, script) -> None:
        with self._lock:
            self.script = list(script)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
