"""Putting a question to a character played by any chat model."""

from __future__ import annotations

from charforge.character import Character, paragraphs_within
from charforge.llm.base import ChatMessage
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
