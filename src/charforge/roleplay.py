"""Putting a question to a character played by any chat model."""

from __future__ import annotations

from typing import Any

from charforge.aio import run_sync
from charforge.character import Character, paragraphs_within
from charforge.llm.base import ChatMessage, ChatModel, Completion, Sampling
from charforge.prompts import render_prompt


def roleplay_system_prompt(
    character: Character,
    *,
    location: str | None = None,
    status: str | None = None,
    max_profile_words: int = 400,
) -> str:
    return render_prompt(
        "roleplay_system",
        character=character,
        profile=paragraphs_within(character.profile, 0, max_profile_words),
        location=location,
        status=status,
    )


def question_messages(
    character: Character, question: str, *, max_profile_words: int = 400
) -> list[ChatMessage]:
    system = roleplay_system_prompt(character, max_profile_words=max_profile_words)
    return [ChatMessage(role="system", content=system), ChatMessage(role="user", content=question)]


def ask_messages(question: str, *, character: Character | None = None,
                 system: str | None = None) -> list[ChatMessage]:
    """The messages of one question: in character, or with an optional system message."""
    if character is not None:
        return question_messages(character, question)
    messages = [ChatMessage(role="user", content=question)]
    if system:
        messages.insert(0, ChatMessage(role="system", content=system))
    return messages


async def ask_async(question: str, model: ChatModel, *, character: Character | None = None,
                    system: str | None = None, sampling: Sampling | None = None) -> Completion:
    """One answer from `model` (closed afterwards), in character when one is given."""
    async with model:
        return await model.chat(ask_messages(question, character=character, system=system),
                                sampling)


def ask(question: str, model: ChatModel, **kwargs: Any) -> Completion:
    """The sync form of `ask_async`."""
    return run_sync(ask_async(question, model, **kwargs), sync_name="ask",
                    async_name="ask_async")
