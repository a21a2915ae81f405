"""A local OpenAI-compatible images API for the fan-out benchmark: every ``POST /v1/images/generations`` sleeps
a fixed time (the provider's latency), then answers one PNG of the requested size as ``b64_json``.

The comic pipeline's real image provider (``workflows.providers.image.OpenAIImages``) calls it, so the benchmark
runs the pipeline's own code end to end; only the remote model is replaced.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image


@lru_cache(maxsize=8)
def _png_b64(width: int, height: int) -> str:
    output = io.BytesIO()
    Image.new("RGB", (width, height), "#3366CC").save(output, format="PNG")
    return base64.b64encode(output.getvalue()).decode()


def _size(body: dict[str, Any]) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in str(body.get("size", "512x512")).split("x"))
    except ValueError:
        return 512, 512
    return width, height


class SleepingImageServer:
    """``with SleepingImageServer(seconds=0.2) as server: ... server.base_url ... server.requests``"""

    def __init__(self, *, seconds: float) -> None:
        self.seconds = seconds
        self.requests = 0
        self._lock = threading.Lock()
        server = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # The headers and the body go out as two writes: with Nagle's algorithm the body would wait for the
            # client's delayed ACK of the headers (40 ms on Linux) on every request of a kept-alive connection.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}") if length else {}
                if self.path.rstrip("/") != "/v1/images/generations":
                    self._answer(404, {"error": {"message": f"no route {self.path}"}})
                    return
                with server._lock:
                    server.requests += 1
                time.sleep(server.seconds)
                self._answer(200, {"created": int(time.time()), "data": [{"b64_json": _png_b64(*_size(body))}]})

            def _answer(self, status: int, answer: dict[str, Any]) -> None:
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> SleepingImageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
