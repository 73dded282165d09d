"""A real HTTP server on 127.0.0.1 serving Scruples-layout tarballs, with the faults a download meets."""

from __future__ import annotations

import http.server
import io
import socket
import tarfile
import threading


def make_tarball(src_root, dataset) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src_root / dataset, arcname=dataset)  # the official archives hold a <dataset>/ folder
    return buf.getvalue()


def flip_bit(data: bytes, offset: int, bit: int = 0) -> bytes:
    """``data`` with one bit changed; a negative ``offset`` counts from the end."""
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


class Server:
    """Serves ``files`` (name -> bytes) under ``/scruples``.

    Honours ``Range`` like a real server (206 with Content-Range; 416 with ``Content-Range: bytes */size``
    when the range starts at or past the end), and can cut the first response short after ``cut_first_at`` bytes.
    ``requests`` records ``(name, Range header)`` of every request.
    """

    def __init__(self, files):
        self.files = files
        self.cut_first_at = None
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                folder, _, name = self.path.rpartition("/")
                outer.requests.append((name, self.headers.get("Range")))
                if folder != "/scruples" or name not in outer.files:
                    self.send_error(404)
                    return
                body = outer.files[name]
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                payload = body[start:]
                if outer.cut_first_at is not None:
                    payload, outer.cut_first_at = payload[: outer.cut_first_at], None
                    self.wfile.write(payload)
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(payload)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/scruples"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
