"""Chat with any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp, Ollama)
through the official `openai` SDK.

There is one retry layer, here: the SDK clients never retry on their own.
API keys are read from environment variables when the model is created, live
only in memory, and are redacted ("***") from every error message and from the
log records of the `openai`/`httpx` loggers.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import random
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import openai
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from charforge.errors import ChatModelError, ConfigError
from charforge.llm.base import (
    ChatModelBase,
    Completion,
    FailedTry,
    MessagesLike,
    ModelStats,
    Sampling,
    Usage,
    as_messages,
)
from charforge.llm.grammar import HINTS_KEY
from charforge.llm.secrets import read_keys, redact_from_logs

logger = logging.getLogger("charforge.llm")

_RETRYABLE_STATUSES = frozenset({408, 409, 429})
_MAX_DETAIL_CHARS = 300
_CONNECTIONS_PER_POOL = 16


OPENAI_BASE_URL = "https://api.openai.com/v1"
OPENAI_KEY_ENV = "OPENAI_API_KEY"


class OpenAIConfig(BaseModel):
    """Options of an `openai` backend model in charforge.yaml."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="the model id the endpoint knows")
    base_url: str | None = Field(
        default=None,
        description="the endpoint's base URL, usually ending in /v1; required unless "
        "provider: openai says the endpoint is OpenAI's own",
    )
    provider: Literal["openai"] | None = Field(
        default=None, description="openai: OpenAI's own API (base_url may then be left out)"
    )
    revision: str | None = Field(
        default=None,
        description="pins what the endpoint serves (e.g. a dated snapshot or a deployment "
        "id); part of the model's identity, so changing it redoes the work",
    )
    api_key_env: str | list[str] | None = Field(
        default=None,
        description="environment variable(s) holding the API key; several are used "
        "round-robin; leave out (or null) for endpoints that need no key (vLLM, llama.cpp, "
        "Ollama); OpenAI's own API defaults to OPENAI_API_KEY",
    )
    timeout_s: float = Field(default=120.0, gt=0, description="seconds allowed per request")
    max_retries: int = Field(default=6, ge=0, le=100, description="retries after a failed try")
    backoff_base_s: float = Field(
        default=0.5, ge=0, description="first retry waits up to this long (full jitter)"
    )
    backoff_max_s: float = Field(default=30.0, ge=0, description="the longest wait between tries")
    max_concurrency: int = Field(default=16, ge=1, le=4096, description="requests in flight")
    supports_json_schema: bool = Field(
        default=True, description="whether the endpoint honours response_format json_schema"
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict, description="extra fields sent in every request body"
    )
    http_client: Literal["aiohttp", "httpx"] = Field(
        default="aiohttp",
        description="the SDK's HTTP transport: aiohttp (its DefaultAioHttpClient; about a "
        "quarter less CPU per request, measured here) or its default httpx",
    )

    @field_validator("api_key_env")
    @classmethod
    def _names_not_empty(cls, value: str | list[str] | None) -> str | list[str] | None:
        names = [value] if isinstance(value, str) else value
        if names is not None and (not names or not all(n.strip() for n in names)):
            raise ValueError("give one or more environment variable names, or null")
        return value

    @field_validator("base_url")
    @classmethod
    def _a_real_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return normalise_base_url(value)

    @model_validator(mode="after")
    def _endpoint_is_explicit(self) -> OpenAIConfig:
        # Never fall back to OpenAI silently: the key would go to a server nobody named.
        if self.base_url is None:
            if self.provider != "openai":
                raise ValueError(
                    "base_url is required (or provider: openai for OpenAI's own API)"
                )
            self.base_url = OPENAI_BASE_URL
        # OpenAI's own API always wants a key, and the SDK's own variable is the one a user
        # has already exported. Anywhere else, no api_key_env means no key. Only an omitted
        # option defaults: an explicit null stays keyless.
        if "api_key_env" not in self.model_fields_set and self.is_openai:
            self.api_key_env = OPENAI_KEY_ENV
        return self

    @property
    def is_openai(self) -> bool:
        """True when the endpoint is OpenAI's own API."""
        return urlsplit(self.url).hostname == urlsplit(OPENAI_BASE_URL).hostname

    @property
    def url(self) -> str:
        """The endpoint's base URL (always set once validated)."""
        return self.base_url or OPENAI_BASE_URL


def normalise_base_url(value: str) -> str:
    """`value` as a canonical http(s) URL: lower-case scheme and host, default port
    dropped, no trailing slash. A malformed URL raises ValueError."""
    text = value.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL such as http://127.0.0.1:8000/v1")
    if any(c.isspace() for c in text) or parts.query or parts.fragment:
        raise ValueError(f"{value!r} is not a plain base URL (no spaces, query or fragment)")
    scheme = parts.scheme.lower()
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}[scheme]
    netloc = host if port in (None, default) else f"{host}:{port}"
    if parts.username or parts.password:
        raise ValueError(f"{value!r}: put credentials in api_key_env, not in the URL")
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


# -- reading responses and errors ----------------------------------------------
class _AttemptFailed(Exception):
    """One failed HTTP attempt; `detail` is one line and already redacted."""

    def __init__(self, detail: str, *, retryable: bool, retry_after_s: float | None = None):
        super().__init__(detail)
        self.detail = detail
        self.retryable = retryable
        self.retry_after_s = retry_after_s


def _one_line(text: str, limit: int = _MAX_DETAIL_CHARS) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The wait a server asks for in `retry-after-ms` or `retry-after` (seconds
    or an HTTP date), or None."""
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            seconds = _seconds_until_http_date(value) if header == "retry-after" else None
        if seconds is not None and math.isfinite(seconds):
            return seconds
    return None


def _seconds_until_http_date(value: str) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - datetime.now(UTC)).total_seconds()


def _server_message(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, Mapping):
        nested = body.get("error")
        message = body.get("message") or (
            nested.get("message") if isinstance(nested, Mapping) else nested
        )
        if message:
            return str(message)
    if isinstance(body, str) and body.strip():
        return body
    return error.message or "no message"


def _connection_reason(error: BaseException) -> str:
    """A short cause for a connection failure, from the exception chain."""
    return _refusal(error) or _one_line(str(_chain(error)[-1]), 120) or "connection error"


def _chain(error: BaseException) -> list[BaseException]:
    found = [error]
    while len(found) < 12 and (cause := found[-1].__cause__ or found[-1].__context__):
        found.append(cause)
    return found


def _refusal(error: BaseException) -> str | None:
    """"connection refused" or "unknown host" when the chain says so, else None. (The
    SDK's aiohttp transport reports a refused connection as a connect *timeout*.)"""
    for seen in _chain(error):
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, socket.gaierror):
            return "unknown host"
    return None


def _parse_completion(text: str, fallback_model: str) -> Completion:
    """A chat completion body -> Completion, or a retryable `_AttemptFailed`."""
    try:
        data = json.loads(text)
    except ValueError:
        raise _AttemptFailed("malformed response (not JSON)", retryable=True) from None
    try:
        choice = data["choices"][0]
        content = choice["message"].get("content")
        usage = data.get("usage") or {}
        return Completion(
            text=content if isinstance(content, str) else "",
            finish_reason=choice.get("finish_reason") or "stop",
            usage=Usage(
                prompt_tokens=usage.get("prompt_tokens") or 0,
                completion_tokens=usage.get("completion_tokens") or 0,
            ),
            model=data.get("model") or fallback_model,
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise _AttemptFailed("malformed response (no choices/message)", retryable=True) from None


def _config_problem(model_name: str, error: ValidationError) -> str:
    problems = error.errors()
    first = problems[0]
    option = str(first["loc"][0]) if first["loc"] else None
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        text = f"model {model_name!r}: unknown option {option!r}"
    elif first["type"] == "missing":
        text = f"model {model_name!r}: option {option!r} is required"
    elif option is None:
        text = f"model {model_name!r}: {message}"
    else:
        text = f"model {model_name!r}: option {option!r}: {message}"
    more = len(problems) - 1
    return _one_line(text + (f" (and {more} more problem(s))" if more else ""))


def _validated(name: str, options: Mapping[str, Any]) -> OpenAIConfig:
    settings = {k: v for k, v in dict(options or {}).items() if k != "backend"}
    try:
        return OpenAIConfig.model_validate(settings)
    except ValidationError as exc:
        raise ConfigError(_config_problem(name, exc)) from None


# -- the model -------------------------------------------------------------------
class OpenAIChatModel(ChatModelBase):
    """A `ChatModel` backed by an OpenAI-compatible HTTP endpoint."""

    def __init__(self, config: OpenAIConfig, *, name: str | None = None) -> None:
        self.config = config
        self.name = name or config.model
        self.supports_json_schema = config.supports_json_schema
        self.stats = ModelStats()
        self._keys = read_keys(self.name, config.api_key_env,
                               keyless_allowed=not config.is_openai)
        redact_from_logs(self._keys)
        self._clients: dict[tuple[int, int], openai.AsyncOpenAI] = {}
        self._pools = max(1, math.ceil(config.max_concurrency / _CONNECTIONS_PER_POOL))
        self._pool = 0
        self._semaphore: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Test hooks: the jitter source and the sleep between retries.
        self._random = random.Random()
        self._sleep: Callable[[float], Any] = asyncio.sleep

    @classmethod
    def from_config(cls, name: str, options: Mapping[str, Any]) -> OpenAIChatModel:
        """Build from a charforge.yaml model entry (a `backend` key is ignored)."""
        return cls(_validated(name, options), name=name)

    @classmethod
    def identity_from_config(cls, name: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """The identity a model built from these options has (no key needed)."""
        return _identity(_validated(name, options))

    def identity(self) -> dict[str, Any]:
        """The endpoint (normalised), the model id, the pinned revision and any extra
        request fields: what decides the answers. Never the key."""
        return _identity(self.config)

    def __repr__(self) -> str:
        return (
            f"OpenAIChatModel(name={self.name!r}, model={self.config.model!r}, "
            f"base_url={self.config.url!r})"
        )

    # -- clients, bound to the running event loop --------------------------------
    def _bind_loop(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if loop is not self._loop or self._semaphore is None:
            # A new event loop (e.g. a second asyncio.run): clients and the
            # semaphore of the old loop cannot be used from this one.
            self._loop = loop
            self._clients = {}
            self._semaphore = asyncio.Semaphore(self.config.max_concurrency)
        return self._semaphore

    def _next_client(self) -> openai.AsyncOpenAI:
        key_index = self._keys.next_index()
        # httpx scans its whole pool on every request; past a few dozen connections that
        # scan costs more than the request. So its connections are split over several
        # clients (pools) of at most _CONNECTIONS_PER_POOL requests in flight each.
        # aiohttp's connector does not scan: one client per key.
        if self.config.http_client == "httpx":
            self._pool = (self._pool + 1) % self._pools
        index = (key_index, self._pool)
        client = self._clients.get(index)
        if client is None:
            client = openai.AsyncOpenAI(
                api_key=self._keys.key(key_index),
                base_url=self.config.url,
                timeout=self.config.timeout_s,
                max_retries=0,
                **self._transport(),
            )
            self._clients[index] = client
        return client

    def _transport(self) -> dict[str, Any]:
        if self.config.http_client != "aiohttp":
            return {}
        try:
            return {"http_client": openai.DefaultAioHttpClient(timeout=self.config.timeout_s)}
        except RuntimeError:  # openai installed without its aiohttp extra
            logger.debug("model %r: aiohttp is not installed; using httpx", self.name)
            self.config.http_client = "httpx"
            return {}

    def _error(self, text: str, tries: list[FailedTry] | None = None) -> ChatModelError:
        message = _one_line(self._keys.redact(f"model {self.name!r}: {text}"), 600)
        return ChatModelError(message, tries=tries)

    # -- chat ----------------------------------------------------------------------
    async def chat(
        self,
        messages: MessagesLike,
        sampling: Sampling | None = None,
        *,
        response_format: Mapping[str, Any] | None = None,
    ) -> Completion:
        sampling = sampling or Sampling()
        request: dict[str, Any] = {
            "model": self.config.model,
            "messages": [m.to_openai() for m in as_messages(messages)],
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
        }
        optional = {
            "stop": list(sampling.stop) or None,
            "seed": sampling.seed,
            # charforge's own decoding hints are for local grammars, never sent.
            "response_format": None if response_format is None else {
                k: v for k, v in response_format.items() if k != HINTS_KEY},
        }
        request.update({key: value for key, value in optional.items() if value is not None})
        request.update(self.config.extra_body)
        started = time.monotonic()
        completion, attempts = await self._send_with_retries(request)
        completion.latency_s = time.monotonic() - started
        completion.attempts = attempts
        if completion.truncated:  # counted and reported by the caller, never printed here
            logger.debug("model %r: answer truncated at max_tokens=%d", self.name,
                         sampling.max_tokens)
        self.stats.record(completion)
        return completion

    async def _send_with_retries(self, request: dict[str, Any]) -> tuple[Completion, int]:
        semaphore = self._bind_loop()
        # Serialised once: the SDK sends bytes as they are (a dict it would copy deeply
        # and serialise again on every try).
        body = json.dumps(request, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        tries = self.config.max_retries + 1
        failed: list[FailedTry] = []
        for attempt in range(tries):
            started = time.monotonic()
            try:
                async with semaphore:
                    started = time.monotonic()  # the wait for a free slot is not latency
                    completion = await self._send_once(body)
                completion.failed_tries = failed
                return completion, attempt + 1
            except _AttemptFailed as failure:
                failed.append(FailedTry(error=failure.detail,
                                        latency_s=time.monotonic() - started))
                if not failure.retryable:
                    self._record_failure(attempt + 1)
                    raise self._error(failure.detail, failed) from None
                if attempt + 1 == tries:
                    self._record_failure(tries)
                    raise self._error(
                        f"gave up after {tries} attempt(s); last error: {failure.detail}", failed
                    ) from None
                delay = self._backoff_s(attempt, failure.retry_after_s)
                logger.info(
                    "model %r: attempt %d failed (%s); retrying in %.2fs",
                    self.name, attempt + 1, failure.detail, delay,
                )
                await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send_once(self, body: bytes) -> Completion:
        client = self._next_client()
        try:
            # The SDK's plain POST: its error handling and timeouts, without re-validating a
            # body we built ourselves (that transform was ~20% of the client's CPU per call).
            text = await client.post("/chat/completions", body=body, cast_to=str)
        except openai.APIStatusError as exc:
            raise self._status_failure(exc) from None
        except openai.APITimeoutError as exc:
            refused = _refusal(exc)
            detail = (f"connection error ({refused})" if refused
                      else f"timed out after {self.config.timeout_s:g}s")
            raise _AttemptFailed(detail, retryable=True) from None
        except openai.APIConnectionError as exc:
            reason = _connection_reason(exc)
            raise _AttemptFailed(f"connection error ({reason})", retryable=True) from None
        except openai.APIError as exc:
            raise _AttemptFailed(_one_line(self._keys.redact(str(exc))), retryable=False) from None
        return _parse_completion(text, self.config.model)

    def _status_failure(self, error: openai.APIStatusError) -> _AttemptFailed:
        status = error.status_code
        retryable = status in _RETRYABLE_STATUSES or status >= 500
        detail = _one_line(self._keys.redact(f"HTTP {status}: {_server_message(error)}"))
        detail += self._auth_hint(status)
        retry_after = retry_after_seconds(error.response.headers) if retryable else None
        return _AttemptFailed(detail, retryable=retryable, retry_after_s=retry_after)

    def _auth_hint(self, status: int) -> str:
        """For a keyless model refused with 401: where its key goes."""
        if status != 401 or self.config.api_key_env is not None:
            return ""
        return (f" (model {self.name!r} sends no key: set api_key_env to the environment "
                "variable that holds one)")

    def _backoff_s(self, attempt: int, retry_after_s: float | None) -> float:
        """Seconds to wait before retry number `attempt + 1`: the server's
        Retry-After when given, else full jitter, both capped at backoff_max_s."""
        cap = self.config.backoff_max_s
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), cap)
        return self._random.uniform(0.0, min(cap, self.config.backoff_base_s * 2.0**attempt))

    def _record_failure(self, attempts: int) -> None:
        self.stats.requests += 1
        self.stats.attempts += attempts
        self.stats.failures += 1

    # -- check and close -----------------------------------------------------------
    async def check(self) -> str:
        """List the endpoint's models (`GET /models`), once, without retries."""
        self._bind_loop()
        url = self.config.url
        try:
            page = await self._next_client().models.list()
        except openai.APIStatusError as exc:
            raise self._error(
                f"{url} answered HTTP {exc.status_code}: {_server_message(exc)}"
                f"{self._auth_hint(exc.status_code)}"
            ) from None
        except openai.APITimeoutError as exc:
            why = _refusal(exc) or f"timed out after {self.config.timeout_s:g}s"
            raise self._error(f"cannot reach {url} ({why})") from None
        except openai.APIConnectionError as exc:
            raise self._error(f"cannot reach {url} ({_connection_reason(exc)})") from None
        except (openai.APIError, ValueError, TypeError) as exc:
            raise self._error(f"unexpected answer from {url}/models: {exc}") from None
        ids = [getattr(item, "id", None) for item in getattr(page, "data", None) or []]
        summary = f"reachable: {len(ids)} model{'' if len(ids) == 1 else 's'}"
        if ids and self.config.model not in ids:
            summary += f" (none named {self.config.model!r})"
        return summary

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        if self._loop is not asyncio.get_running_loop():
            return  # clients of a finished event loop cannot be closed from this one
        for client in clients:
            await client.close()


def _identity(config: OpenAIConfig) -> dict[str, Any]:
    identity: dict[str, Any] = {"backend": "openai", "base_url": config.url,
                                "model": config.model}
    if config.revision:
        identity["revision"] = config.revision
    if config.extra_body:
        identity["extra_body"] = config.extra_body
    return identity
