"""A real OpenAI-compatible HTTP server that answers from a script, for tests
and benchmarks.

    with ScriptedOpenAIServer([Reply.rate_limited(), Reply(text="hi")]) as server:
        model = OpenAIChatModel(OpenAIConfig(model="scripted", base_url=server.base_url,
                                             api_key_env=None))

Each chat request takes the next `Reply` from the script; once the script is
empty a responder callable answers. The server runs uvicorn in a background
thread on 127.0.0.1 and a free port, and records every request it receives.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

Responder = Callable[[dict[str, Any]], str]

_STARTUP_TIMEOUT_S = 10.0
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def echo_ok(request_json: dict[str, Any]) -> str:
    """The default responder: answers every request with "ok"."""
    return "ok"


@dataclass
class Reply:
    """One scripted answer. `body`, when given, is sent verbatim (as JSON
    content type) and overrides everything but `status`, `headers` and `delay_s`."""

    text: str | None = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    delay_s: float = 0.0
    finish_reason: str = "stop"
    error_message: str | None = None

    @classmethod
    def rate_limited(cls, retry_after: float | str | None = 1) -> Reply:
        headers = {} if retry_after is None else {"retry-after": str(retry_after)}
        return cls(status=429, headers=headers, error_message="Rate limit reached (scripted)")

    @classmethod
    def server_error(cls, status: int = 500) -> Reply:
        return cls(status=status, error_message="The server had an error (scripted)")

    @classmethod
    def malformed(cls, body: str = '{"choices": [') -> Reply:
        return cls(body=body)

    @classmethod
    def slow(cls, delay_s: float, text: str = "ok") -> Reply:
        return cls(text=text, delay_s=delay_s)

    @classmethod
    def truncated(cls, text: str = "cut sh") -> Reply:
        return cls(text=text, finish_reason="length")


@dataclass(frozen=True)
class RecordedRequest:
    """What the server received: `json` is None for requests without a body."""

    method: str
    path: str
    json: dict[str, Any] | None
    headers: dict[str, str]
    received_at: float


def count_words(text: Any) -> int:
    return len(str(text).split()) if text else 0


def _error_body(status: int, message: str) -> dict[str, Any]:
    error_type = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "api_error")
    return {"error": {"message": message, "type": error_type, "param": None, "code": None}}


def _completion_body(request_json: dict[str, Any], reply: Reply, number: int) -> dict[str, Any]:
    prompt_tokens = sum(count_words(m.get("content")) for m in request_json.get("messages", []))
    completion_tokens = count_words(reply.text)
    return {
        "id": f"chatcmpl-scripted-{number}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request_json.get("model", "scripted"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.text},
                "finish_reason": reply.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _reply_response(request_json: dict[str, Any], reply: Reply, number: int) -> Response:
    if reply.body is not None:
        return Response(
            reply.body, status_code=reply.status, headers=reply.headers,
            media_type="application/json",
        )
    if reply.status != 200:
        message = reply.error_message or f"scripted error {reply.status}"
        return JSONResponse(
            _error_body(reply.status, message), status_code=reply.status, headers=reply.headers
        )
    return JSONResponse(_completion_body(request_json, reply, number), headers=reply.headers)


class ScriptedOpenAIServer:
    """An OpenAI-compatible server (`POST /v1/chat/completions`, `GET /v1/models`)
    answering from a script. Use as a context manager; `base_url` ends in `/v1`.

    `required_key`: requests whose bearer token differs get a 401 whose message
    quotes the token received (as some real servers do; useful to test redaction).
    `latency_s`: added to every request, for benchmarks.
    """

    def __init__(
        self,
        script: Iterable[Reply] = (),
        *,
        responder: Responder = echo_ok,
        latency_s: float = 0.0,
        required_key: str | None = None,
        model_names: Iterable[str] = ("scripted",),
    ) -> None:
        self.responder = responder
        self.latency_s = latency_s
        self.required_key = required_key
        self.model_names = list(model_names)
        self._lock = threading.Lock()
        self._script: deque[Reply] = deque(script)
        self._requests: list[RecordedRequest] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    # -- script and records ----------------------------------------------------
    def enqueue(self, *replies: Reply) -> None:
        """Append replies to the script."""
        with self._lock:
            self._script.extend(replies)

    @property
    def pending(self) -> int:
        """Scripted replies not consumed yet."""
        with self._lock:
            return len(self._script)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far (a copy), oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def max_in_flight(self) -> int:
        """The most requests the server was handling at the same moment."""
        with self._lock:
            return self._max_in_flight

    @property
    def base_url(self) -> str:
        if not self._port:
            raise RuntimeError("the scripted server is not running")
        return f"http://127.0.0.1:{self._port}/v1"

    # -- the HTTP app ------------------------------------------------------------
    def _record(self, request: Request, body: dict[str, Any] | None) -> int:
        recorded = RecordedRequest(
            method=request.method, path=request.url.path, json=body,
            headers=dict(request.headers), received_at=time.monotonic(),
        )
        with self._lock:
            self._requests.append(recorded)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            return len(self._requests)

    def _finish(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _next_reply(self, request_json: dict[str, Any]) -> Reply:
        with self._lock:
            if self._script:
                return self._script.popleft()
        return Reply(text=self.responder(request_json))

    def _auth_failure(self, request: Request) -> Response | None:
        if self.required_key is None:
            return None
        received = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if received == self.required_key:
            return None
        message = f"Incorrect API key provided: {received}"
        return JSONResponse(_error_body(401, message), status_code=401)

    async def _chat(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        number = self._record(request, body)
        try:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            if not isinstance(body, dict):
                return JSONResponse(_error_body(400, "request body is not JSON"), status_code=400)
            failure = self._auth_failure(request)
            if failure is not None:
                return failure
            if body.get("stream"):
                message = "streaming not supported by the scripted server"
                return JSONResponse(_error_body(400, message), status_code=400)
            reply = self._next_reply(body)
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)
            return _reply_response(body, reply, number)
        finally:
            self._finish()

    async def _models(self, request: Request) -> Response:
        self._record(request, None)
        try:
            failure = self._auth_failure(request)
            if failure is not None:
                return failure
            data = [
                {"id": name, "object": "model", "created": 0, "owned_by": "charforge"}
                for name in self.model_names
            ]
            return JSONResponse({"object": "list", "data": data})
        finally:
            self._finish()

    def _app(self) -> FastAPI:
        app = FastAPI(title="charforge scripted OpenAI server", openapi_url=None)
        app.add_api_route("/v1/chat/completions", self._chat, methods=["POST"])
        app.add_api_route("/v1/models", self._models, methods=["GET"])
        return app

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> ScriptedOpenAIServer:
        if self._thread is not None:
            raise RuntimeError("the scripted server is already running")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(
            self._app(), log_level="warning", access_log=False, lifespan="off",
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]},
            name="scripted-openai-server", daemon=True,
        )
        self._thread.start()
        self._wait_started(sock)
        return self

    def _wait_started(self, sock: socket.socket) -> None:
        assert self._server is not None and self._thread is not None
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                sock.close()
                raise RuntimeError("the scripted OpenAI server did not start")
            time.sleep(0.005)
        self._port = sock.getsockname()[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=_STARTUP_TIMEOUT_S)
        self._server = None
        self._thread = None
        self._port = 0

    def __enter__(self) -> ScriptedOpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
