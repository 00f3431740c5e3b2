"""A scripted teacher: realistic answers in the seed's formats, chosen by what
the prompt asks for, varied deterministically by the prompt's hash. Used with
`charforge.testing.ScriptedOpenAIServer` so tests talk real HTTP."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

PLACES = ["Bonn, the Breuning house, an autumn evening", "Vienna, Haydn's study, morning",
          "Heiligenstadt, a walk by the stream, summer", "A Viennese salon, winter night",
          "Theater an der Wien, rehearsal, noon"]
VISITORS = ["Anna", "Ferdinand", "Karl", "Therese", "Nikolaus"]
TYPES = ["Chat", "Debate", "Discussion", "Speech"]


def _pick(seq: list[str], key: str, salt: int = 0) -> str:
    digest = int(hashlib.sha256(f"{key}{salt}".encode()).hexdigest()[:8], 16)
    return seq[digest % len(seq)]


def _user_text(request: dict[str, Any]) -> str:
    return next(m["content"] for m in request["messages"] if m["role"] == "user")


def scene_character(prompt: str) -> str:
    found = re.search(r"from the life of (.+?) that", prompt)
    return found.group(1) if found else "Beethoven"


def scenes_text(prompt: str) -> str:
    n = int(re.search(r"Imagine (\d+)", prompt).group(1))
    who = scene_character(prompt)
    blocks = []
    for i in range(1, n + 1):
        place = _pick(PLACES, prompt, i)
        blocks.append(
            f"Scene {i}:\nType: {_pick(TYPES, prompt, i)}\nLocation: {place}\n"
            f"Background: {who} meets {_pick(VISITORS, prompt, i)} at {place.split(',')[0]}. "
            "They talk about music, patrons and the hard winter."
        )
    return "\n\n".join(blocks)


def dialogue_text(prompt: str, main: str = "Beethoven") -> str:
    visitor = _pick(VISITORS, prompt)
    return (
        f"Background:\n{main} sits at the piano while {visitor} waits by the window. "
        "Candles burn low in the small room.\n\n"
        f"{visitor} (speaking)\nMaestro, will the publisher get the new sonata this month?\n\n"
        f"{main} (thinking)\nAlways the publishers. They hear coins where I hear music.\n\n"
        f"{main} (speaking)\nTell him it will be finished when it is right, not before.\n\n"
        f"{visitor} (speaking)\nHe offers a higher fee if it comes by spring.\n\n"
        f"{main} (speaking)\nA fee does not write the finale. Patience, my friend."
    )


def dialogue_json(prompt: str, main: str = "Beethoven") -> str:
    visitor = _pick(VISITORS, prompt)
    return json.dumps({
        "background": f"{main} and {visitor} meet in a quiet room in Vienna at dusk.",
        "turns": [
            {"speaker": visitor, "action": "speaking",
             "content": "Have you heard the news from the palace this morning?"},
            {"speaker": main, "action": "thinking",
             "content": "More gossip from the court, as if I had time for it."},
            {"speaker": main, "action": "speaking",
             "content": "Speak louder, my ears fail me more every winter."},
            {"speaker": visitor, "action": "speaking",
             "content": "The Archduke will come to hear the new trio himself."},
        ],
    })


def scenes_json(prompt: str) -> str:
    n = int(re.search(r"Imagine (\d+)", prompt).group(1))
    who = scene_character(prompt)
    return json.dumps({"scenes": [
        {"type": _pick(TYPES, prompt, i), "location": _pick(PLACES, prompt, i),
         "background": f"{who} talks with {_pick(VISITORS, prompt, i)} about a new work."}
        for i in range(n)
    ]})


def main_character(prompt: str) -> str:
    """The character a dialogue prompt is about."""
    found = re.search(r"scene from (.+?)'s life|talks with (.+?) and tries", prompt)
    return next((g for g in found.groups() if g), "Beethoven") if found else "Beethoven"


def answer(request: dict[str, Any]) -> str:
    """The responder: reads the prompt, answers in the format it asks for."""
    prompt = _user_text(request)
    as_json = request.get("response_format") is not None
    if prompt.lstrip().startswith("Your answer could not be used"):
        prompt = request["messages"][1]["content"]
    if "Imagine" in prompt:
        return scenes_json(prompt) if as_json else scenes_text(prompt)
    main = main_character(prompt)
    return dialogue_json(prompt, main) if as_json else dialogue_text(prompt, main)
