"""The one renderer of a character's conversation: the system message (meta prompt and
setting), where a time stage's token goes, how a thought is marked in a reply, and
how a PersLLM question becomes a prompt. The dataset, training, serving and evaluation
all render through here, so a trained agent is asked exactly as it was taught.

A stage token is the first line of the system message, on its own (`stage_marked`):
one position, defined here and nowhere else.
"""

from __future__ import annotations

from typing import Any, Literal

from charforge.character import Character
from charforge.llm.turns import THINK_CLOSE, THINK_OPEN
from charforge.prompts import render_prompt

EOT = "<|eot|>"  # Character-LLM's end of turn, inside its prompted format's text
MetaPreset = Literal["charforge", "character-llm"]
META_TEMPLATES: dict[str, str] = {"charforge": "meta_prompt", "character-llm": "meta_character_llm"}


def meta_prompt(character: Character, location: str, status: str,
                preset: MetaPreset = "charforge") -> str:
    """The system message of a trained agent: ours, or Character-LLM's as published."""
    if preset == "character-llm":
        return render_prompt(META_TEMPLATES[preset], character=character.name,
                             loc_time=location, status=status)
    return render_prompt(META_TEMPLATES[preset], name=character.name,
                         short_name=character.short_name, location=location, status=status)


def stage_marked(system: str, stage_token: str | None) -> str:
    """`system` with the stage's token as its first line (unchanged without a stage)."""
    return f"{stage_token}\n{system}" if stage_token else system


def reply_text(response: str, analysis: str | None = None) -> str:
    """An assistant reply: an analysis (a thought) inside <think>...</think>, then the
    words said."""
    return f"{THINK_OPEN}{analysis}{THINK_CLOSE}\n{response}" if analysis else response


def question_messages(character: Character, question: str, *, pattern: str,
                      stage_token: str | None,
                      preset: MetaPreset = "charforge") -> list[dict[str, Any]]:
    """The prompt of a PersLLM record as the agent is trained and asked: the meta prompt
    (stage token first), then the question. Retrieved passages never appear here: the
    agent must carry the knowledge itself."""
    status = render_prompt("question_status", pattern=pattern, short_name=character.short_name)
    system = meta_prompt(character, "", status, preset)
    return [{"role": "system", "content": stage_marked(system, stage_token)},
            {"role": "user", "content": question}]
