"""Character-LLM's evaluation prompts, verbatim (the compatibility preset): its five
judge prompts (`prompt_score_llm_<dimension>.txt`), its interviewer
(`agent_meta_prompt_interviewer_chatgpt.txt`) and its ChatGPT baseline
(`agent_meta_prompt_chatgpt.txt`), from compat/ (see compat/NOTICE.md).

Their placeholders are Python-format names (`{character}`, `{loc_time}`, ...); they are
filled by plain replacement, so any other brace in a prompt stays as written.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from charforge.character import Character

FOLDER = Path(__file__).parent / "compat"
# The seed's file for each of our dimension names.
JUDGE_FILES = {"memorization": "memory", "values": "values", "personality": "personality",
               "hallucination": "hallucination", "stability": "stability"}
SEED_LOCATION = "unknown"  # what the seed's prompts get when no scene is set


@cache
def seed_prompt(name: str) -> str:
    return (FOLDER / f"{name}.txt").read_text(encoding="utf-8")


def fill(template: str, **values: str) -> str:
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


def interviewer_system(character: Character, topic: str, profile: str, location: str,
                       status: str) -> str:
    return fill(seed_prompt("agent_meta_prompt_interviewer_chatgpt"),
                character=character.name, topic=topic, profile=profile,
                loc_time=location or SEED_LOCATION, status=status or "")


def baseline_system(character: Character, location: str, status: str) -> str:
    """The paper's ChatGPT baseline: the character's name in a fixed instruction."""
    return fill(seed_prompt("agent_meta_prompt_chatgpt"), character=character.name,
                loc_time=location or SEED_LOCATION, status=status or "")


def judge_prompt(dimension: str, character: Character, profile: str, location: str,
                 status: str, interactions: str) -> str:
    if dimension not in JUDGE_FILES:
        raise ValueError(f"the Character-LLM preset has no judge for {dimension!r}; "
                         f"its dimensions: {', '.join(JUDGE_FILES)}")
    return fill(seed_prompt(f"prompt_score_llm_{JUDGE_FILES[dimension]}"),
                agent_name=character.name, agent_context=profile,
                loc_time=location or SEED_LOCATION, status=status or "",
                interactions=interactions)
