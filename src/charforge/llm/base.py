"""The one contract every chat backend keeps: messages and `Sampling` in, a `Completion` out.

Stages (generation, judging, interviews) only ever see `ChatModel`, so a remote
endpoint, the embedded model and a served character are used the same way. Each
backend also states its `identity()`: what decides its answers (endpoint and model
id, or weights and adapter), so that the store can tell work done by one model
from work done by another under the same name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, Self, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from charforge.errors import first_problem

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "content_filter", "tool_calls", "error"]


class ChatMessage(BaseModel):
    """One chat turn. `name` tells speakers apart inside a multi-party scene."""

    model_config = ConfigDict(frozen=True)

    role: Role
    content: str
    name: str | None = None

    def to_openai(self) -> dict[str, str]:
        message = {"role": self.role, "content": self.content}
        if self.name:
            message["name"] = self.name
        return message


class Sampling(BaseModel):
    """How one answer is sampled. The same object travels from a stage's options
    through the runner to every backend, and is part of a task's identity."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(default=0.7, ge=0.0, le=2.0, description="0 = greedy")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    max_tokens: int = Field(default=512, ge=1, le=1_000_000, description="longest answer")
    stop: tuple[str, ...] = Field(default=(), max_length=16, description="stop strings")
    seed: int | None = Field(default=None, description="sampling seed, for repeatable answers")

    def but(self, **changes: Any) -> Sampling:
        """A validated copy with `changes` applied (None values are ignored)."""
        given = {key: value for key, value in changes.items() if value is not None}
        return self if not given else Sampling.parse({**self.model_dump(), **given})

    @classmethod
    def parse(cls, values: Sampling | Mapping[str, Any] | None) -> Sampling:
        """`values` as Sampling; a bad value raises `ValueError` with one line."""
        if isinstance(values, Sampling):
            return values
        try:
            return cls.model_validate({k: v for k, v in dict(values or {}).items()
                                       if v is not None})
        except ValidationError as exc:
            where, what = first_problem(exc)
            raise ValueError(f"sampling {where or 'settings'}: {what}") from None


class Usage(BaseModel):
    """Token counts of one completion (or, summed, of many)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


class FailedTry(BaseModel):
    """One try that brought no answer: why, how long it took, what it was billed."""

    error: str
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Completion(BaseModel):
    """What one chat call returns, with what the store needs to record it."""

    text: str
    finish_reason: FinishReason | str
    usage: Usage = Field(default_factory=Usage)
    model: str = ""
    latency_s: float = 0.0
    attempts: int = 1
    failed_tries: list[FailedTry] = Field(
        default_factory=list, description="the tries that failed before this answer"
    )

    @property
    def truncated(self) -> bool:
        """True when the answer stopped at `max_tokens`: never a clean success."""
        return self.finish_reason == "length"


class ModelStats(BaseModel):
    """Running totals a backend keeps over its lifetime (shown by the CLI)."""

    requests: int = 0
    attempts: int = 0
    failures: int = 0
    truncated: int = 0
    usage: Usage = Field(default_factory=Usage)

    def record(self, completion: Completion) -> None:
        self.requests += 1
        self.attempts += completion.attempts
        self.truncated += int(completion.truncated)
        self.usage = self.usage + completion.usage


MessagesLike = Sequence[ChatMessage | Mapping[str, Any]]


def as_messages(messages: MessagesLike) -> list[ChatMessage]:
    """Accept `ChatMessage` objects or plain OpenAI-style dicts."""
    out = [
        m if isinstance(m, ChatMessage) else ChatMessage.model_validate(dict(m)) for m in messages
    ]
    if not out:
        raise ValueError("a chat needs at least one message")
    return out


def fingerprint(identity: Mapping[str, Any]) -> str:
    """A short stable hash of an identity (canonical JSON)."""
    text = json.dumps(identity, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


@runtime_checkable
class ChatModel(Protocol):
    """Anything that can answer a chat. Implementations must be safe to call
    concurrently from one event loop and must never block it."""

    name: str
    supports_json_schema: bool
    stats: ModelStats

    def identity(self) -> dict[str, Any]:
        """What decides this model's answers (never secrets), cheaply, without loading
        weights: e.g. the endpoint and model id, or a weights and adapter identity."""
        ...

    async def chat(
        self,
        messages: MessagesLike,
        sampling: Sampling | None = None,
        *,
        response_format: Mapping[str, Any] | None = None,
    ) -> Completion: ...

    async def check(self) -> str:
        """Cheaply confirm the model can be reached; return a short description.
        Raises `CharforgeError` with a one-line reason when it cannot."""
        ...

    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...


class ChatModelBase:
    """What every backend shares: `async with model:` closes it."""

    async def aclose(self) -> None:
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def model_fingerprint(model: ChatModel) -> str:
    """The fingerprint of a model's identity; a model without `identity()` (a backend
    written before it existed) is known by its class and name only."""
    identity = getattr(model, "identity", None)
    if identity is None:
        return fingerprint({"backend": type(model).__qualname__, "name": model.name})
    return fingerprint(identity())
