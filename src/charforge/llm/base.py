"""The one contract every chat backend keeps: messages in, a `Completion` out.

Stages (generation, judging, interviews) only ever see `ChatModel`, so a remote
endpoint, the embedded model and a served character are used the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

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


class Completion(BaseModel):
    """What one chat call returns, with what the store needs to record it."""

    text: str
    finish_reason: FinishReason | str
    usage: Usage = Field(default_factory=Usage)
    model: str = ""
    latency_s: float = 0.0
    attempts: int = 1
    retry_errors: list[str] = Field(
        default_factory=list, description="one line per failed try before this answer"
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


@runtime_checkable
class ChatModel(Protocol):
    """Anything that can answer a chat. Implementations must be safe to call
    concurrently from one event loop and must never block it."""

    name: str
    supports_json_schema: bool
    stats: ModelStats

    async def chat(
        self,
        messages: MessagesLike,
        *,
        temperature: float = 0.7,
        top_p: float = 1.0,
        max_tokens: int = 512,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
        response_format: Mapping[str, Any] | None = None,
    ) -> Completion: ...

    async def check(self) -> str:
        """Cheaply confirm the model can be reached; return a short description.
        Raises `CharforgeError` with a one-line reason when it cannot."""
        ...

    async def aclose(self) -> None: ...
