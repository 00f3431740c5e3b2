"""The seed's plain-text layouts: ``Scene 1:`` blocks, and ``Background:`` then
``Name (speaking)`` turns, read tolerantly (markdown, numbering, script style)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import NamedTuple

from charforge.parse.quality import (
    DialogueRules,
    MainNames,
    RawTurn,
    SceneScan,
    accept_scenes,
    action_of,
    build_dialogue,
    paragraphs,
    scan_scenes,
    scene_from_fields,
    split_lines,
    unbold,
    word_set,
)
from charforge.records import Action, Dialogue, Rejected, Scene

# ---------------------------------------------------------------- scenes


_SCENE_HEADER = re.compile(
    r"[\s#>*_-]*scene\s?#?\s?\d{1,3}[*_]{0,2}\s?(?:[:.)\-–—]|\s|$)[*_\s]*(?P<rest>.*)", re.I
)
_SCENE_KEY = re.compile(
    r"(?:^|(?<=[\s|;,]))[-•*_ ]{0,4}(?P<key>type|location|background)[*_]{0,2} ?:[*_]{0,2}", re.I
)
_LIST_NUMBER = re.compile(r"^\d{1,3}[.)] ")
_TYPE_LINE = re.compile(r"[-•*_\s\d.]{0,8}type\s?:", re.I)

def _split_scene_blocks(lines: list[str]) -> list[list[str]]:
    """A block per ``Scene N`` header (its rest of line first); without headers, a block
    per line starting with ``Type:``."""
    blocks: list[list[str]] = []
    for line in lines:
        header = _SCENE_HEADER.match(line)
        if header:
            blocks.append([header["rest"]])
        elif blocks:
            blocks[-1].append(line)
    if blocks:
        return blocks
    starts = [i for i, line in enumerate(lines) if _TYPE_LINE.match(line)]
    return [lines[a:b] for a, b in itertools.pairwise([*starts, len(lines)])] or [lines]


def _scene_fields(block: list[str]) -> dict[str, str]:
    """{"type"|"location"|"background": value}; a value runs over lines until the next key,
    or a blank line once it has words."""
    fields: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in (_LIST_NUMBER.sub("", " ".join(raw.split()), count=1) for raw in block):
        if not line:
            current = None if current and "".join(current) else current
            continue
        pieces = _SCENE_KEY.split(line)
        if current is not None and pieces[0]:
            current.append(pieces[0])
        for key, value in zip(pieces[1::2], pieces[2::2], strict=True):
            current = fields.setdefault(key.lower(), [])
            current.append(value.strip())
    return {name: " ".join(parts) for name, parts in fields.items()}


def scan_scenes_text(text: str) -> SceneScan:
    """The usable scenes of a plain-text answer, with the skipped blocks counted."""
    blocks = _split_scene_blocks(split_lines(text))
    return scan_scenes([scene_from_fields(_scene_fields(block)) for block in blocks])


def parse_scenes_text(text: str, *, min_scenes: int = 1) -> list[Scene]:
    """The scenes of a seed-format answer (``Scene 1:`` / ``Type:`` / ``Location:`` /
    ``Background:``); raises `Rejected`."""
    return accept_scenes(scan_scenes_text(text), not text.strip(), min_scenes)


# ---------------------------------------------------------------- dialogues


_NAME = r"(?P<name>[^\W\d_][\w.'’ -]{0,40}?)"
_TAGGED_SPEAKER = re.compile(
    _NAME + r" ?:? ?[(\[]{1,2} ?(?P<action>speaking|thinking)\b[^)\]]{0,40}[)\]]{1,2}[*_]{0,2}"
    r" ?[:\-–—]? ?(?P<rest>.*)", re.I)
_PLAIN_SPEAKER = re.compile(_NAME + r" ?: ?(?P<rest>.*)")
_LINE_DECORATION = re.compile(r"(?:#{1,6} ?|> ?)?(?:[-*•] |\d{1,3}[.)] |[*_](?=\w))?")
_BACKGROUND_LABEL = re.compile(r"[\s#>*_-]*background\b[*_\s]*(?::|$)[*_\s]*(?P<rest>.*)", re.I)
_NAME_PARTICLES = word_set("van von de der den da di du la le of the al bin ibn y")
_NOT_NAMES = word_set(
    "background type location scene setting status note context example title time "
    "place characters date summary"
)


class _Header(NamedTuple):
    name: str
    action: Action | None  # None: the plain "Name: words" script style
    rest: str


def _looks_like_name(name: str) -> bool:
    words = name.split()
    if not 1 <= len(words) <= 5 or name.lower() in _NOT_NAMES or not words[0][0].isupper():
        return False
    return all(word[0].isupper() or word.lower() in _NAME_PARTICLES for word in words)


def _speaker_header(line: str, names: MainNames) -> _Header | None:
    bare = _LINE_DECORATION.sub("", " ".join(unbold(line).split()), count=1)
    match = _TAGGED_SPEAKER.match(bare) or _PLAIN_SPEAKER.match(bare)
    if match is None:
        return None
    name = " ".join(match["name"].split()).strip(" .-'’_")
    if not name or not (_looks_like_name(name) or names.is_main(name)):
        return None
    tag = match.groupdict().get("action")
    return _Header(name, None if tag is None else action_of(tag), match["rest"])


def _read_turns(lines: list[str], names: MainNames) -> tuple[int | None, list[RawTurn]]:
    """(index of the first speaker line, the turns). Once any line carries an action tag,
    a plain ``Name: words`` line is a turn only for a known speaker."""
    headers = [_speaker_header(line, names) for line in lines]
    tagged = {h.name.lower() for h in headers if h and h.action}

    def opens_turn(h: _Header | None) -> bool:
        if h is None or h.action is not None or not tagged:
            return h is not None
        return h.name.lower() in tagged or names.is_main(h.name)

    first: int | None = None
    turns: list[tuple[str, Action, list[str]]] = []
    for i, (line, header) in enumerate(zip(lines, headers, strict=True)):
        if header is not None and opens_turn(header):
            first = i if first is None else first
            turns.append((header.name, header.action or "speaking", [header.rest]))
        elif turns:
            turns[-1][2].append(line)
    return first, [(name, action, "\n".join(body)) for name, action, body in turns]


def _background(lines: list[str]) -> str:
    """The text after a ``Background:`` label, else all the prose before the turns."""
    for i, line in enumerate(lines):
        label = _BACKGROUND_LABEL.match(line)
        if label:
            lines = [label["rest"], *lines[i + 1 :]]
            break
    return "\n".join(paragraphs(unbold("\n".join(lines))))


def parse_dialogue_text(text: str, *, main_character: str, aliases: Sequence[str] = (),
                        min_turns: int = 2, require_background: bool = True,
                        min_speakers: int = 1, min_median_words: int = 0,
                        main_speaks: bool = False) -> Dialogue:
    """A seed-format experience: ``Background:`` then ``Name (speaking|thinking)`` turns."""
    if not text.strip():
        raise Rejected("empty", "the answer is blank")
    lines, names = split_lines(text), MainNames(main_character, aliases)
    first, raw_turns = _read_turns(lines, names)
    if first is None:
        raise Rejected("invalid", "no speaker line like 'Name (speaking)' found")
    return build_dialogue(_background(lines[:first]), raw_turns, names,
                          DialogueRules(min_turns, min_speakers, min_median_words,
                                        require_background, main_speaks))


def render_dialogue_text(dialogue: Dialogue) -> str:
    """The seed's text format, which `parse_dialogue_text` reads back."""
    blocks = [f"Background:\n{dialogue.background}"] if dialogue.background else []
    blocks += [f"{turn.speaker} ({turn.action})\n{turn.content}" for turn in dialogue.turns]
    return "\n\n".join(blocks) + "\n"
