"""`charforge serve`: an OpenAI-compatible server of a workspace's characters.

    GET  /v1/models             every served model id (`charforge.serve.catalogue`)
    POST /v1/chat/completions   OpenAI's chat completions, streamed over SSE or whole;
                                the character's thinking in `reasoning_content`
    GET  /v1/characters         each character: summary, stages, models (adapter or prompted)
    GET  /health                liveness
    GET  /                      the web chat page (static/)

Local models answer through the batched engine, so concurrent requests for any
characters on one base are decoded together. Errors use OpenAI's JSON shape; a
malformed body is 400, as OpenAI answers, not FastAPI's 422.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from charforge.errors import first_problem
from charforge.llm.base import ChatMessage, Completion, Sampling
from charforge.llm.local import LocalChatModel
from charforge.serve.catalogue import Catalogue, Scene, ServedModel, UnknownModel
from charforge.serve.protocol import (
    ApiError,
    ChatRequest,
    Limits,
    chunk,
    completion_id,
    error_body,
    usage_body,
)
from charforge.serve.thoughts import Part

STATIC = Path(__file__).parent / "static"


class ServeSettings(BaseModel):
    """How the server runs (the CLI's options)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, description="the model prompted characters use")
    api_key: str | None = Field(default=None, repr=False,
                                description="bearer key required on /v1 (never logged)")
    cors_origins: list[str] = Field(default_factory=list, description="off when empty")
    checkpoints: dict[str, str] = Field(default_factory=dict,
                                        description="character -> Character-LLM checkpoint")
    max_batch: int | None = Field(default=None, ge=1, description="rows decoded together")
    limits: Limits = Field(default_factory=Limits)


def create_app(workspace: Any, settings: ServeSettings | None = None, *,
               catalogue: Catalogue | None = None) -> FastAPI:
    """The server of `workspace`'s characters (models load when it starts)."""
    settings = settings or ServeSettings()
    catalogue = catalogue or Catalogue.from_workspace(
        workspace, model=settings.model, checkpoints=settings.checkpoints,
        max_batch=settings.max_batch)
    limits = settings.limits
    in_flight = 0

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await catalogue.load()
        try:
            yield
        finally:
            await catalogue.aclose()

    app = FastAPI(title="charforge", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.catalogue = catalogue
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(400, str(exc)), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(exc.status_code, str(exc.detail)),
                            status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _crash(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body(500, f"internal error: {type(exc).__name__}"),
                            status_code=500)

    @app.middleware("http")
    async def _auth(request: Request, call_next: Any) -> Response:
        if settings.api_key and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            scheme, _, key = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                    key.strip().encode(), settings.api_key.encode()):
                return JSONResponse(error_body(401, "a valid API key is required: send "
                                               "Authorization: Bearer KEY",
                                               code="invalid_api_key"), status_code=401)
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": len(catalogue.models)}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [
            {"id": model_id, "object": "model", "created": 0, "owned_by": "charforge"}
            for model_id in catalogue.models]}

    @app.get("/v1/characters")
    async def characters() -> dict[str, Any]:
        return {"object": "list", "data": catalogue.characters()}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        nonlocal in_flight
        body = await _read_body(request, limits.max_body_bytes)
        asked = _parse(body, limits)
        served = _served(catalogue, asked.model)
        scene = _scene(asked)
        messages = _messages(asked)
        sampling = await _sampling(asked, served, messages, scene, limits)
        if in_flight >= limits.max_in_flight:
            raise ApiError(429, f"the server is answering {in_flight} requests; try again "
                                "shortly", code="rate_limit_exceeded")
        in_flight += 1
        request_id = completion_id()
        if asked.stream:
            include_usage = bool(asked.stream_options and asked.stream_options.include_usage)
            events = _sse(served, messages, scene, sampling, request_id, asked.model,
                          include_usage)
            return StreamingResponse(_released(events, _leave), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        try:
            return JSONResponse(await _whole(request, served, messages, scene, sampling,
                                             request_id, asked.model))
        finally:
            _leave()

    def _leave() -> None:
        nonlocal in_flight
        in_flight -= 1

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


# -- reading a request -----------------------------------------------------------------
async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body is over {limit:,} bytes")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise ApiError(413, f"the request body is over {limit:,} bytes")
    return bytes(body)


def _parse(body: bytes, limits: Limits) -> ChatRequest:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    try:
        asked = ChatRequest.model_validate(data)
    except ValidationError as exc:
        where, what = first_problem(exc)
        raise ApiError(400, f"{where or 'body'}: {what}", param=where or None) from None
    if asked.n not in (None, 1):
        raise ApiError(400, "n must be 1: one reply per request", param="n")
    if len(asked.messages) > limits.max_messages:
        raise ApiError(400, f"at most {limits.max_messages} messages per request",
                       param="messages")
    wanted = asked.max_completion_tokens or asked.max_tokens
    if wanted is not None and wanted > limits.max_tokens:
        raise ApiError(400, f"max_tokens is {wanted:,}; this server allows at most "
                            f"{limits.max_tokens:,}", param="max_tokens")
    return asked


def _served(catalogue: Catalogue, model_id: str) -> ServedModel:
    try:
        return catalogue.get(model_id)
    except UnknownModel as exc:
        raise ApiError(404, f"{exc}; GET /v1/models lists them", param="model",
                       code="model_not_found") from None


def _scene(asked: ChatRequest) -> Scene:
    try:
        return Scene.model_validate(asked.metadata or {})
    except ValidationError as exc:
        where, what = first_problem(exc)
        raise ApiError(400, f"metadata.{where}: {what}", param="metadata") from None


def _messages(asked: ChatRequest) -> list[ChatMessage]:
    try:
        return [ChatMessage(role="system" if m.role == "developer" else m.role,
                            content=m.text(), name=m.name) for m in asked.messages]
    except ValueError as exc:
        raise ApiError(400, str(exc), param="messages") from None


async def _sampling(asked: ChatRequest, served: ServedModel, messages: list[ChatMessage],
                    scene: Scene, limits: Limits) -> Sampling:
    try:
        served.stage_token(scene)
    except ValueError as exc:
        raise ApiError(400, str(exc), param="metadata") from None
    wanted = asked.max_completion_tokens or asked.max_tokens
    prompt = await _prompt_tokens(served, messages, scene)
    context = served.backend.context_length() if isinstance(
        served.backend, LocalChatModel) else None
    if prompt is not None and context is not None:
        room = context - prompt
        if room < (wanted or 1):
            raise ApiError(400, f"the prompt is {prompt:,} tokens and max_tokens "
                                f"{wanted or 1:,}; the model's context is {context:,} tokens",
                           param="messages", code="context_length_exceeded")
        wanted = wanted or min(limits.default_max_tokens, room)
    try:
        return Sampling.parse({"temperature": asked.temperature, "top_p": asked.top_p,
                               "max_tokens": wanted or limits.default_max_tokens,
                               "seed": asked.seed, "stop": asked.stops()})
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


async def _prompt_tokens(served: ServedModel, messages: list[ChatMessage],
                         scene: Scene) -> int | None:
    """The prompt's length in the served model's tokens (local models only)."""
    backend = served.backend
    if not isinstance(backend, LocalChatModel):
        return None
    if served.serving == "character-llm":
        from charforge.serve.catalogue import character_llm_prompt

        tokenizer = backend.tokenizer_for(served.adapter)
        return len(tokenizer(character_llm_prompt(served.character, messages, scene))
                   ["input_ids"])
    return len(backend.prompt_ids(served.messages(messages, scene), adapter=served.adapter))


# -- answering ---------------------------------------------------------------------------
async def _whole(request: Request, served: ServedModel, messages: list[ChatMessage],
                 scene: Scene, sampling: Sampling, request_id: str,
                 model_id: str) -> dict[str, Any]:
    """The whole reply; a client that hangs up stops its generation."""
    async def collect() -> tuple[str, str, Completion]:
        reasoning, content, done = [], [], None
        async for piece in served.stream(messages, scene, sampling):
            if isinstance(piece, Part):
                (reasoning if piece.kind == "reasoning" else content).append(piece.text)
            else:
                done = piece
        assert done is not None
        return "".join(reasoning).strip(), "".join(content).strip(), done

    task = asyncio.ensure_future(collect())
    while not task.done():
        await asyncio.wait([task], timeout=0.5)
        if not task.done() and await request.is_disconnected():
            task.cancel()
    try:
        reasoning, content, done = await task
    except Exception as exc:
        raise ApiError(500, f"generation failed: {_one_line(exc)}") from None
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning:
        message["reasoning_content"] = reasoning
    return {"id": request_id, "object": "chat.completion", "created": _now(),
            "model": model_id,
            "choices": [{"index": 0, "message": message,
                         "finish_reason": _finish(done.finish_reason)}],
            "usage": usage_body(done.usage.prompt_tokens, done.usage.completion_tokens)}


async def _sse(served: ServedModel, messages: list[ChatMessage], scene: Scene,
               sampling: Sampling, request_id: str, model_id: str,
               include_usage: bool) -> AsyncIterator[str]:
    yield _event(chunk(request_id, model_id, {"role": "assistant", "content": ""}))
    try:
        async for piece in served.stream(messages, scene, sampling):
            if isinstance(piece, Part):
                key = "reasoning_content" if piece.kind == "reasoning" else "content"
                yield _event(chunk(request_id, model_id, {key: piece.text}))
                continue
            yield _event(chunk(request_id, model_id, {}, _finish(piece.finish_reason)))
            if include_usage:
                body = chunk(request_id, model_id, {})
                body["choices"] = []
                body["usage"] = usage_body(piece.usage.prompt_tokens,
                                           piece.usage.completion_tokens)
                yield _event(body)
    except Exception as exc:  # the status is sent already: the error goes in the stream
        yield _event(error_body(500, f"generation failed: {_one_line(exc)}"))
    yield "data: [DONE]\n\n"


async def _released(events: AsyncIterator[str], release: Any) -> AsyncIterator[str]:
    try:
        async for event in events:
            yield event
    finally:
        release()
        with contextlib.suppress(Exception):
            await events.aclose()  # type: ignore[attr-defined]


def _event(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def _finish(reason: str) -> str:
    return reason if reason in ("stop", "length") else "stop"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _now() -> int:
    import time

    return int(time.time())
