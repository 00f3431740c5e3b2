"""Experiences and protective scenes -> supervised fine-tuning examples.

Chat format: the system message is a meta prompt (character, location,
status); the character's turns are assistant messages, its thoughts kept
inside <think>...</think> so a server can separate them from speech; every
other speaker is a user message carrying their `name`.

Prompted format (Character-LLM's released recipes): `prompt` is the
Character-LLM meta prompt plus a blank line; `output` is every turn as
`Name (action): content`, turns ended by `<|eot|>`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel

from charforge.character import Character
from charforge.records import Dialogue, Turn
from charforge.render import EOT, THINK_CLOSE, THINK_OPEN, MetaPreset, meta_prompt
from charforge.store import Store

SOURCES = ("experience", "protective")


class Example(BaseModel):
    """One dialogue, ready to be rendered in either training format."""

    character: str
    source: Literal["experience", "protective"]
    task_id: str
    location: str
    status: str
    dialogue: Dialogue


def protective_setting(character: Character) -> tuple[str, str]:
    """Protective dialogues have no scene outline: a neutral setting (the one
    Character-LLM used for them)."""
    return "A room", f"{character.short_name} is chatting with a person."


def examples(store: Store, character: Character) -> Iterator[Example]:
    """Every stored experience, then every protective scene, in store order."""
    for stored in store.records(character.slug, "experience"):
        scene = stored.data["scene"]
        yield Example(
            character=character.slug, source="experience", task_id=stored.task_id,
            location=scene.get("location", ""), status=scene.get("background", ""),
            dialogue=Dialogue.model_validate(stored.data["dialogue"]),
        )
    location, status = protective_setting(character)
    for stored in store.records(character.slug, "protective"):
        yield Example(
            character=character.slug, source="protective", task_id=stored.task_id,
            location=location, status=status,
            dialogue=Dialogue.model_validate(stored.data["dialogue"]),
        )


def _assistant_text(turns: list[Turn]) -> str:
    """Merge consecutive turns of the character: thoughts marked, speech plain."""
    parts = []
    for turn in turns:
        if turn.action == "thinking":
            parts.append(f"{THINK_OPEN}{turn.content}{THINK_CLOSE}")
        else:
            parts.append(turn.content)
    return "\n".join(parts)


def chat_record(
    character: Character, example: Example, *, preset: MetaPreset = "charforge"
) -> dict[str, Any] | None:
    """The SFT chat record, or None when the character never speaks or thinks."""
    messages: list[dict[str, Any]] = [
        {"role": "system",
         "content": meta_prompt(character, example.location, example.status, preset)},
    ]
    run: list[Turn] = []
    for turn in example.dialogue.turns:
        if turn.speaker == character.short_name:
            run.append(turn)
            continue
        if run:
            messages.append({"role": "assistant", "content": _assistant_text(run)})
            run = []
        messages.append({"role": "user", "name": turn.speaker, "content": turn.content})
    if run:
        messages.append({"role": "assistant", "content": _assistant_text(run)})
    while messages[-1]["role"] == "user":  # nothing to learn after the last reply
        messages.pop()
    if messages[-1]["role"] != "assistant":
        return None
    return {
        "messages": messages, "character": example.character, "source": example.source,
        "task_id": example.task_id,
    }


def prompted_record(character: Character, example: Example) -> dict[str, Any]:
    """Character-LLM's prompted format, for its released training recipes."""
    prompt = meta_prompt(character, example.location, example.status, "character-llm") + "\n\n"
    blocks: list[str] = []
    previous: tuple[str, str] | None = None
    for turn in example.dialogue.turns:
        key = (turn.speaker, turn.action)
        if blocks and key == previous:
            blocks[-1] += f"\n{turn.content}"
        else:
            blocks.append(f"{turn.speaker} ({turn.action}): {turn.content}")
        previous = key
    output = f"{EOT}\n".join(blocks) + EOT
    return {"prompt": prompt, "output": output, "source": example.source,
            "task_id": example.task_id}
