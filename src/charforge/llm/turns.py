"""A character's conversation as any chat template can take it: the one place that
decides where speaker names, thoughts and the opening turn go, used alike when an
agent is trained (`charforge.train.data`) and when it answers (`LocalChatModel`, the
server), so both render a conversation to the same text.

The rules (`template_turns`):
- every system message is joined into one, first;
- another speaker's name goes into the text (`Lily: ...`): chat templates drop a
  message's `name`;
- consecutive messages of one role are joined, one per line, and a conversation whose
  first turn is the character's gets an empty user turn before it: templates such as
  Llama-2's and Mistral's require user and assistant to alternate;
- a thought (`<think>...</think>`) is kept only in the last message when that is the
  character's (the reply being written); earlier thoughts are dropped. A server returns
  thoughts apart (`reasoning_content`) and OpenAI clients never send them back, so a
  served conversation's history has none: training drops them from history the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_THOUGHT = re.compile(re.escape(THINK_OPEN) + r".*?" + re.escape(THINK_CLOSE) + r"\s*",
                      re.DOTALL)


def has_thought(text: str) -> bool:
    return _THOUGHT.search(text) is not None


def without_thoughts(text: str) -> str:
    """`text` with every `<think>...</think>` block removed."""
    return _THOUGHT.sub("", text).strip()


def _fields(message: Any) -> tuple[str, str, str | None]:
    if isinstance(message, Mapping):
        return message["role"], message.get("content") or "", message.get("name")
    return message.role, message.content or "", getattr(message, "name", None)


def template_turns(messages: Sequence[Any], *,
                   thoughts: Literal["last", "all"] = "last") -> list[dict[str, str]]:
    """`messages` (dicts or `ChatMessage`s: role, content, optional name) as turns any
    chat template accepts, by the rules above. `thoughts="all"` keeps every thought (a
    training record before it is cut into samples: see `charforge.train.data`)."""
    system: list[str] = []
    turns: list[dict[str, str]] = []
    last = len(messages) - 1
    for position, message in enumerate(messages):
        role, content, name = _fields(message)
        if role == "system":
            system.append(content)
            continue
        if role == "assistant" and thoughts == "last" and position != last:
            content = without_thoughts(content)
        elif role == "user" and name:
            content = f"{name}: {content}"
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n" + content
        else:
            turns.append({"role": role, "content": content})
    if turns and turns[0]["role"] == "assistant":
        turns.insert(0, {"role": "user", "content": ""})
    if system:
        turns.insert(0, {"role": "system", "content": "\n\n".join(system)})
    return turns


def render_turns(tokenizer: Any, turns: list[dict[str, str]], *,
                 generation_prompt: bool) -> str:
    """The chat template's text of `turns` (already `template_turns`)."""
    if not turns:
        return ""
    return tokenizer.apply_chat_template(turns, tokenize=False,
                                         add_generation_prompt=generation_prompt)


def prompt_text(tokenizer: Any, messages: Sequence[Any]) -> str:
    """The text a model continues to answer `messages` as the next assistant turn. With
    no turn yet (the character opens the scene), the empty user turn goes first, as in
    training."""
    turns = template_turns(messages)
    if all(turn["role"] == "system" for turn in turns):
        turns.append({"role": "user", "content": ""})
    return render_turns(tokenizer, turns, generation_prompt=True)
