"""A reply as it streams, parted into what the character thinks and what it says.

A charforge agent writes a thought as `<think>...</think>` (`charforge.render`); a
released Character-LLM checkpoint writes blocks `Name (thinking): ...<|eot|>` and
`Name (speaking): ...<|eot|>`. Both parsers take text pieces as they come (a tag may
be cut anywhere) and return `Part`s: reasoning (the thinking, returned apart as
`reasoning_content`) and content (the words said), never mixed.
"""

from __future__ import annotations

from dataclasses import dataclass

from charforge.llm.turns import THINK_CLOSE, THINK_OPEN
from charforge.render import EOT


@dataclass(frozen=True)
class Part:
    kind: str  # "reasoning" or "content"
    text: str


class ThoughtSplitter:
    """Parts `<think>...</think>` out of streamed text."""

    def __init__(self) -> None:
        self._buffer = ""
        self._thinking = False
        self._started = False  # content began: leading whitespace after a thought dropped

    def feed(self, text: str) -> list[Part]:
        self._buffer += text
        parts: list[Part] = []
        while self._buffer:
            tag = THINK_CLOSE if self._thinking else THINK_OPEN
            at = self._buffer.find(tag)
            if at == -1:
                keep = _partial_tag(self._buffer, tag)
                ready, self._buffer = self._buffer[: len(self._buffer) - keep], \
                    self._buffer[len(self._buffer) - keep:]
                self._emit(parts, ready)
                break
            self._emit(parts, self._buffer[:at])
            self._buffer = self._buffer[at + len(tag):]
            self._thinking = not self._thinking
        return parts

    def close(self) -> list[Part]:
        """What is left at the end of the reply (an unclosed thought stays reasoning)."""
        parts: list[Part] = []
        self._emit(parts, self._buffer)
        self._buffer = ""
        return parts

    def _emit(self, parts: list[Part], text: str) -> None:
        if not text:
            return
        if self._thinking:
            parts.append(Part("reasoning", text))
            return
        if not self._started:
            text = text.lstrip()
            if not text:
                return
            self._started = True
        parts.append(Part("content", text))


def _partial_tag(text: str, tag: str) -> int:
    """How many trailing characters of `text` could be the start of `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


class BlockReader:
    """Character-LLM's prompted format: `Name (thinking|speaking): text<|eot|>` blocks.
    The generation starts inside the character's first block (`opening`, e.g.
    "Beethoven ("); a block of anyone else ends the reply (`ended`)."""

    def __init__(self, speaker: str, opening: str) -> None:
        self.speaker = speaker
        self._buffer = opening
        self.ended = False

    def feed(self, text: str) -> list[Part]:
        self._buffer += text
        parts: list[Part] = []
        while not self.ended and EOT in self._buffer:
            block, self._buffer = self._buffer.split(EOT, 1)
            self._read(block, parts)
        return parts

    def close(self) -> list[Part]:
        parts: list[Part] = []
        if not self.ended and self._buffer.strip():
            self._read(self._buffer, parts)
        self._buffer = ""
        return parts

    def _read(self, block: str, parts: list[Part]) -> None:
        block = block.strip()
        head, colon, body = block.partition(":")
        name, _, action = head.rpartition("(")
        if not colon or name.strip() != self.speaker:
            self.ended = True  # another speaker's turn: the character's reply is over
            return
        kind = "reasoning" if action.strip(" )") == "thinking" else "content"
        parts.append(Part(kind, body.strip() + "\n"))
