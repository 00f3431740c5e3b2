"""Putting a question to a character played by any chat model."""

from __future__ import annotations

from charforge.character import Character
from charforge.llm.base import ChatMessage
from charforge.prompts import render_prompt


def profile_excerpt(character: Character, max_words: int) -> list[str]:
    """The leading profile paragraphs that fit in `max_words` (at least one,
    cut at a word boundary when even the first is too long)."""
    kept: list[str] = []
    used = 0
    for paragraph in character.profile:
        words = paragraph.split()
        if used + len(words) > max_words:
            if not kept:
                kept.append(" ".join(words[:max_words]))
            break
        kept.append(paragraph)
        used += len(words)
    return kept


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
        profile=profile_excerpt(character, max_profile_words),
        location=location,
        status=status,
    )


def question_messages(
    character: Character, question: str, *, max_profile_words: int = 400
) -> list[ChatMessage]:
    system = roleplay_system_prompt(character, max_profile_words=max_profile_words)
    return [ChatMessage(role="system", content=system), ChatMessage(role="user", content=question)]
