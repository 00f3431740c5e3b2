"""A scripted teacher: realistic answers in the seed's formats, chosen by what
the prompt asks for, varied deterministically by the prompt's hash. Used with
`charforge.testing.ScriptedOpenAIServer` so tests talk real HTTP."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import persllm_teacher

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


# Each line of a dialogue is drawn from its own pool by the prompt's hash, so that two
# scripted dialogues differ the way a real teacher's do (dataset build drops dialogues that
# share most of their word 5-grams).
ASKS = ["Maestro, will the publisher get the new sonata this month?",
        "Sir, did you know the copyist made the parts for the quartet full of errors again?",
        "Your nephew has not come home since yesterday evening; do you know where he is?",
        "Will you play for the Prince and his guests on Sunday after dinner?",
        "The landlord wants the rent for the winter; when will you pay him?",
        "Is it true that you tore up the dedication to the First Consul in a rage?"]
THOUGHTS = ["Always the publishers. They hear coins where I hear music.",
            "Always the publishers, and now the copyists too, all of them deaf to the notes.",
            "Always the publishers. As if the music could be hurried like a carriage.",
            "Always the publishers. I would rather write for the birds in the Prater."]
REPLIES = ["Tell him it will be finished when it is right, not before.",
           "Bring me the parts and a lamp; I will correct every bar myself tonight.",
           "Then we will search the whole city for him, street by street, until he is found.",
           "I play for those who listen, not for princes who chatter through the adagio.",
           "He will have his money when the next fee comes, and not a day sooner.",
           "A man who makes himself emperor is no hero of mine, and I said so loudly."]
PRESSES = ["He offers a higher fee if it comes by spring.",
           "The copyist swears he followed your manuscript exactly as it was written.",
           "Your brother thinks the boy has gone to his mother again, against the court order.",
           "His Highness has already told the guests that you will come and play for them.",
           "He says he has a buyer for the rooms who would pay twice as much as you.",
           "People in the coffee houses say you are ungrateful to the French."]
ENDS = ["A fee does not write the finale. Patience, my friend.",
        "Your manuscript, he says! My hand was clear; his eyes were lazy. Enough of this.",
        "Then I will go to the court myself tomorrow and speak to the judges about him.",
        "Then His Highness may play for them himself, if he remembers how it goes.",
        "Let him sell them, then; I have moved house thirty times and I can move again.",
        "Let them say what they like over their coffee; the symphony will outlive them all."]


SETTINGS = ["Candles burn low in the small room.",
            "Rain drums on the window of the cold upper floor.",
            "Manuscript paper covers every chair and half the floor.",
            "A coach rattles past below, and the bells of the church ring six.",
            "The stove has gone out, and both keep their coats on.",
            "A half-eaten dinner stands cold beside the unopened letters."]


def _turns(prompt: str, main: str) -> list[tuple[str, str, str]]:
    visitor = _pick(VISITORS, prompt)
    return [(visitor, "speaking", _pick(ASKS, prompt, 1)),
            (main, "thinking", _pick(THOUGHTS, prompt, 2)),
            (main, "speaking", _pick(REPLIES, prompt, 3)),
            (visitor, "speaking", _pick(PRESSES, prompt, 4)),
            (main, "speaking", _pick(ENDS, prompt, 5))]


def dialogue_text(prompt: str, main: str = "Beethoven") -> str:
    visitor = _pick(VISITORS, prompt)
    turns = "\n\n".join(f"{who} ({action})\n{content}"
                         for who, action, content in _turns(prompt, main))
    return (f"Background:\n{main} sits at the piano while {visitor} waits by the window. "
            f"{_pick(SETTINGS, prompt, 6)}\n\n{turns}")


def dialogue_json(prompt: str, main: str = "Beethoven") -> str:
    visitor = _pick(VISITORS, prompt)
    return json.dumps({
        "background": f"{main} and {visitor} meet in Vienna. {_pick(SETTINGS, prompt, 6)}",
        "turns": [{"speaker": who, "action": action, "content": content}
                  for who, action, content in _turns(prompt, main)],
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
    personified = persllm_teacher.reply(request)  # PersLLM's prompts
    if personified is not None:
        return personified
    prompt = _user_text(request)
    as_json = request.get("response_format") is not None
    if prompt.lstrip().startswith("Your answer could not be used"):
        prompt = request["messages"][1]["content"]
    if "Imagine" in prompt:
        return scenes_json(prompt) if as_json else scenes_text(prompt)
    main = main_character(prompt)
    return dialogue_json(prompt, main) if as_json else dialogue_text(prompt, main)
