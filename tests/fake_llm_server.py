"""A scripted OpenAI-compatible HTTP server for tests (a real fake, STYLE.md principle 3).

Serves ``GET /v1/models`` and ``POST /v1/chat/completions`` on a free loopback port, in a thread.
Each chat request takes the next scripted reply; when the script runs out, ``default`` answers
(a callable of the request body, or a fixed reply). A reply is one of:

- ``str``: the assistant message content;
- :class:`Reply`: content plus ``delay_s``, an HTTP ``status`` (e.g. 500) or a ``raw`` body
  (malformed, not JSON);
- a callable ``f(body: dict) -> str | Reply`` (for replies that depend on the prompt).

Every request body and its headers are recorded in ``server.requests``. ``server.stop()`` takes
the endpoint down (connections are then refused); ``dead_url()`` is a URL nothing listens on.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional, Union


@dataclass
class Reply:
    text: str = ""
    delay_s: float = 0.0  # sleep before answering (a slow LLM)
    status: int = 200  # HTTP status; != 200 sends an OpenAI-style error body
    raw: Optional[str] = None  # send this body verbatim (malformed responses)


ReplySpec = Union[str, Reply, Callable[[dict], Union[str, Reply]]]


@dataclass
class RecordedRequest:
    path: str
    headers: dict  # lower-case names
    body: dict


def dead_url() -> str:
    """A loopback URL with nothing listening (an unreachable endpoint)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


class FakeLLMServer:
    def __init__(self, replies: Optional[list[ReplySpec]] = None, *, default: ReplySpec = "person\nhand",
                 model: str = "fake-model"):
        self.script: list[ReplySpec] = list(replies or [])
        self.default = default
        self.model = model
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, body: str) -> None:
                data = body.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    body = {"object": "list", "data": [{"id": server.model, "object": "model",
                                                         "created": 0, "owned_by": "test"}]}
                    self._send(200, json.dumps(body))
                else:
                    self._send(404, json.dumps({"error": {"message": "not found"}}))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, json.dumps({"error": {"message": "not found"}}))
                    return
                reply = server._next(RecordedRequest(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.raw is not None:
                    self._send(reply.status, reply.raw)
                    return
                if reply.status != 200:
                    self._send(reply.status, json.dumps({"error": {"message": "scripted failure",
                                                                   "type": "server_error"}}))
                    return
                completion = {
                    "id": f"chatcmpl-{len(server.requests)}",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", server.model),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": reply.text}}],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
                }
                self._send(200, json.dumps(completion))

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def _next(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            spec = self.script.pop(0) if self.script else self.default
        if callable(spec) and not isinstance(spec, Reply):
            spec = spec(request.body)
        return Reply(text=spec) if isinstance(spec, str) else spec

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self.requests)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeLLMServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
