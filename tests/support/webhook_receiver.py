"""A webhook receiver on loopback: a real HTTP server thread that verifies every message it gets with the
Standard Webhooks reference library and answers from a script (a status, or "hang" for a while)."""

from __future__ import annotations

import http.server
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    verified: bool
    payload: dict[str, Any] | None

    @property
    def message_id(self) -> str:
        return self.headers["webhook-id"]


class WebhookReceiver:
    """``answers``: what each request in turn gets, an HTTP status or ``("hang", seconds)``; once they run out,
    200. ``secret`` must be set (the one the API answered) before messages arrive, to verify them."""

    def __init__(self, answers: list[int | tuple[str, float]] | None = None) -> None:
        self.secret = ""
        self.answers = list(answers or [])
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {name.lower(): value for name, value in self.headers.items()}
                try:
                    payload = Webhook(receiver.secret).verify(body, headers) if receiver.secret else None
                    verified = payload is not None
                except WebhookVerificationError:
                    payload, verified = None, False
                with receiver._lock:
                    receiver.received.append(Received(headers, body, verified, payload))
                    answer = receiver.answers.pop(0) if receiver.answers else 200
                if isinstance(answer, tuple):
                    time.sleep(answer[1])
                    answer = 200
                text = json.dumps({"ok": answer < 300, "status": answer}).encode()
                try:
                    self.send_response(answer)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                except OSError:  # the sender gave up (a timeout) and closed the connection
                    return

            def log_message(self, *args: object) -> None:
                return

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/comicmem"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
