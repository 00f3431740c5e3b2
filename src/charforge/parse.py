"""Teacher answers -> typed records, or `Rejected` with a reason.

Two formats are read: the seed's plain text (``Scene 1:`` blocks; ``Background:``
then ``Name (speaking)`` turns) and JSON that follows `SCENES_SCHEMA` or
`DIALOGUE_SCHEMA`. Both go through the same normalisation and the same content
checks, because a small teacher happily emits well-formed junk. The parsers never
raise anything but `Rejected`, whatever the input string.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, NamedTuple

from charforge.records import Action, Dialogue, Rejected, Scene, Turn

_STRING: dict[str, Any] = {"type": "string"}


def _strict_object(**properties: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema object as OpenAI's strict mode wants it: all required, nothing extra."""
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}


SCENES_SCHEMA: dict[str, Any] = _strict_object(scenes={
    "type": "array",
    "items": _strict_object(type=_STRING, location=_STRING, background=_STRING),
})
DIALOGUE_SCHEMA: dict[str, Any] = _strict_object(background=_STRING, turns={
    "type": "array",
    "items": _strict_object(speaker=_STRING, content=_STRING,
                            action={"type": "string", "enum": ["thinking", "speaking"]}),
})
_SCHEMAS = {"scenes": SCENES_SCHEMA, "dialogue": DIALOGUE_SCHEMA}
_DEFAULT_SCENE_TYPE = "Chat"


def response_format_for(schema_name: str) -> dict[str, Any]:
    """The OpenAI `response_format` asking for `schema_name` ("scenes" or "dialogue")."""
    if schema_name not in _SCHEMAS:
        raise ValueError(f"unknown schema {schema_name!r}; expected one of {sorted(_SCHEMAS)}")
    schema = copy.deepcopy(_SCHEMAS[schema_name])
    return {"type": "json_schema", "json_schema": {"name": schema_name, "schema": schema,
                                                   "strict": True}}


def truncation_check(finish_reason: str | None) -> None:
    """Reject an answer the teacher stopped at max_tokens: its end is missing."""
    if finish_reason == "length":
        raise Rejected("truncated", "the teacher stopped at max_tokens (finish_reason=length)")


def _one_line(text: str, limit: int = 40) -> str:
    """A short, single-line quote of `text` for a rejection detail."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 3] + "...")


# ---------------------------------------------------------------- content checks

def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
_VOWELS = set("aeiouyAEIOUY")


def _is_non_word(token: str) -> bool:
    """A token no language would write: letters glued to digits, or no vowels at all."""
    core = token.strip(".,;:!?\"'“”‘’()[]-—…")
    has_digit = any(c.isdigit() for c in core)
    letters = [c for c in core if c.isalpha()]
    if not letters:
        return False
    if has_digit:
        return re.fullmatch(r"\d+(st|nd|rd|th|s)", core.lower()) is None
    if not all(c.isascii() for c in letters):
        return False
    return len(core) > 30 or (len(letters) >= 3 and not _VOWELS.intersection(letters))


def _has_word_run(words: list[str], run: int = 4) -> str | None:
    count = 1
    for previous, word in itertools.pairwise(words):
        count = count + 1 if word == previous else 1
        if count >= run:
            return word
    return None


def _has_phrase_loop(words: list[str], size: int = 5, max_period: int = 150) -> bool:
    """A loop: the same `size`-word sequence starting 3 times, each one period after the
    last, with the same words in between (the text said again and again back to back)."""
    last_start: dict[tuple[str, ...], int] = {}
    for third in range(len(words) - size + 1):
        gram = tuple(words[third : third + size])
        second = last_start.get(gram)
        last_start[gram] = third
        if second is None or third - second > max_period:
            continue
        first = 2 * second - third
        if first >= 0 and words[first:second] == words[second:third]:
            return True
    return False


def junk_reason(text: str) -> str | None:
    """Why `text` is not language (a short phrase), or None when it reads as text."""
    if not text.strip():
        return "empty"
    chars = [c for c in text if not c.isspace()]
    letters = sum(c.isalpha() for c in chars)
    if letters == 0:
        return "no letters"
    if len(chars) > 20 and letters / len(chars) < 0.5:
        return "too few letters"
    words = _WORD.findall(text.lower())
    repeated = _has_word_run(words)
    if repeated:
        return f"the word {_one_line(repeated, 20)} repeated 4+ times in a row"
    if len(words) >= 40 and len(set(words)) / len(words) < 0.3:
        return "too few distinct words"
    if _has_phrase_loop(words):
        return "a phrase repeated in a loop"
    tokens = text.split()
    if len(tokens) >= 3 and sum(map(_is_non_word, tokens)) * 2 > len(tokens):
        return "mostly non-words"
    return None


# ---------------------------------------------------------------- content cleaning

_STAR_ACTION = re.compile(r"(?<!\*)\*(?!\s)[^*\n]{1,100}(?<!\s)\*(?!\*)")
_BRACKETED = re.compile(r"[(\[]([^()\[\]\n]{1,100})[)\]]")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,!?;:])")
_SENTENCE_END = tuple(".!?…:\"”—")
_STAGE_VERBS = _word_set(
    "laughs smiles sighs pauses nods chuckles grins whispers shrugs frowns winks gasps "
    "leans looks turns sits stands stares groans scoffs sneers bows gestures"
)
_NOT_STAGE_ING = _word_set(
    "during including according regarding concerning following excluding nothing something "
    "anything everything being morning evening king thing spring string"
)
_QUOTE_PAIRS = {'"': '"', "“": "”", "«": "»"}


def _is_stage_direction(match: re.Match[str]) -> bool:
    inner = match.group(1).strip()
    if sum(c.isalpha() for c in inner) < 3:
        return False  # "(b)", "(1)", "(#)"
    before = match.string[: match.start()].rstrip()
    after = match.string[match.end() :].lstrip()
    if not before:
        return True
    starts_sentence = not after or after[0].isupper() or after[0] in "\"“'‘*"
    if before.endswith(_SENTENCE_END) and starts_sentence:
        return True
    words = inner.split()
    if len(words) > 3 or not all(w.isalpha() and w.islower() for w in words):
        return False
    first = words[0]
    return first in _STAGE_VERBS or (first.endswith("ing") and first not in _NOT_STAGE_ING)


def _drop_stage_directions(line: str) -> str:
    line = _STAR_ACTION.sub(" ", line)
    kept = _BRACKETED.sub(lambda m: " " if _is_stage_direction(m) else m.group(0), line)
    return kept if kept == line else _SPACE_BEFORE_PUNCT.sub(r"\1", kept)


def _unquote(paragraph: str) -> str:
    closer = _QUOTE_PAIRS.get(paragraph[:1])
    if closer is None or len(paragraph) < 2 or paragraph[-1] != closer:
        return paragraph
    inner = paragraph[1:-1]
    if paragraph[0] in inner or closer in inner:
        return paragraph  # quotes inside: not one quoted whole
    return inner.strip()


def _paragraphs(text: str) -> list[str]:
    lines = (" ".join(line.split()) for line in text.replace("\r", "\n").split("\n"))
    return [line for line in lines if line]


def clean_content(text: str) -> str:
    """A turn's words: no markdown bold, stage directions or wrapping quotes,
    single spaces, paragraphs kept as one "\\n" each."""
    lines = text.replace("**", "").replace("__", "").replace("\r", "\n").split("\n")
    paragraphs = _paragraphs("\n".join(_drop_stage_directions(line) for line in lines))
    return "\n".join(p for p in map(_unquote, paragraphs) if p)


def _clean_field(value: str) -> str:
    """A scene field: one line, no markdown bold, no wrapping quotes or separators."""
    flat = " ".join(value.replace("**", "").replace("__", "").split())
    return _unquote(flat.strip(" |;,")).strip()


def _clean_scene_type(value: str) -> str:
    """"Chat (choice in chat, debate, ...)" -> "Chat"."""
    bare = re.sub(r"\s*[(\[][^)\]]*[)\]]?", " ", _clean_field(value))
    return " ".join(bare.split()).strip(" .") or _DEFAULT_SCENE_TYPE


# ---------------------------------------------------------------- scenes


class SceneScan(NamedTuple):
    """What a scenes answer held: the scenes kept, and how many blocks were skipped."""

    scenes: list[Scene]
    incomplete: int  # a block without a location or background
    junk: int  # a block whose location or background is not language


_SCENE_HEADER = re.compile(
    r"^[\s#>*_-]*scene\s*(?:#\s*)?\d{1,3}\s*[*_]*\s*(?:[:.)\-–—]|(?=\s)|$)[*_\s]*(?P<rest>.*)$",
    re.IGNORECASE,
)
_SCENE_KEY = re.compile(
    r"(?:^|(?<=[\s|;,]))[-•*_\s]*(?P<key>type|location|setting|place|background|status|"
    r"description)[*_]*\s*:[*_]*",
    re.IGNORECASE,
)
_KEY_FIELD = {"type": "type", "location": "location", "setting": "location", "place": "location",
              "background": "background", "status": "background", "description": "background"}


def _split_scene_blocks(text: str) -> list[list[str]]:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks: list[list[str]] = []
    for line in lines:
        header = _SCENE_HEADER.match(line)
        if header:
            blocks.append([header.group("rest")])
        elif blocks:
            blocks[-1].append(line)
    if blocks:
        return blocks
    starts = [i for i, line in enumerate(lines) if re.match(r"[-•*_\s\d.]*type\s*:", line, re.I)]
    bounds = zip(starts, [*starts[1:], len(lines)], strict=False)
    return [lines[a:b] for a, b in bounds] or [lines]


def _scene_fields(block: list[str]) -> dict[str, str]:
    """{"type"|"location"|"background": value}, a value ending at the next key or
    at a blank line once it has words."""
    fields: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in block:
        if not line.strip():
            if current is not None and "".join(current).strip():
                current = None
            continue
        pieces = _SCENE_KEY.split(line)
        if current is not None and pieces[0].strip():
            current.append(pieces[0])
        for key, value in zip(pieces[1::2], pieces[2::2], strict=False):
            current = fields.setdefault(_KEY_FIELD[key.lower()], [])
            current.append(value)
    return {name: " ".join(parts) for name, parts in fields.items()}


def _scene_from_fields(fields: dict[str, str]) -> Scene | None:
    location = _clean_field(fields.get("location", ""))
    background = _clean_field(fields.get("background", ""))
    if not location or not background:
        return None
    return Scene(type=_clean_scene_type(fields.get("type", "")), location=location,
                 background=background)


def _scene_is_language(scene: Scene) -> bool:
    if junk_reason(scene.location) or junk_reason(scene.background):
        return False
    return len(scene.background.split()) >= 5


def _checked_scenes(found: list[Scene | None]) -> SceneScan:
    complete = [scene for scene in found if scene is not None]
    kept = [scene for scene in complete if _scene_is_language(scene)]
    return SceneScan(kept, len(found) - len(complete), len(complete) - len(kept))


def scan_scenes_text(text: str) -> SceneScan:
    """All the usable scenes of a plain-text answer, with the skipped blocks counted."""
    blocks = _split_scene_blocks(text)
    return _checked_scenes([_scene_from_fields(_scene_fields(block)) for block in blocks])


def _accept_scenes(scan: SceneScan, blank: bool, min_scenes: int) -> list[Scene]:
    if scan.scenes:
        if len(scan.scenes) < min_scenes:
            raise Rejected("too_short", f"{len(scan.scenes)} usable scenes, fewer than "
                           f"{min_scenes} ({scan.incomplete} incomplete, {scan.junk} junk)")
        return scan.scenes
    if scan.junk:
        raise Rejected("junk", f"all {scan.junk} complete scenes are junk")
    if blank:
        raise Rejected("empty", "the answer holds no scenes")
    raise Rejected("invalid", f"no scene with a location and a background "
                   f"({scan.incomplete} incomplete blocks)")


def parse_scenes_text(text: str, *, min_scenes: int = 1) -> list[Scene]:
    """The scenes of a seed-format answer (``Scene 1:`` / ``Type:`` / ``Location:`` /
    ``Background:``); raises `Rejected`."""
    return _accept_scenes(scan_scenes_text(text), not text.strip(), min_scenes)


# ---------------------------------------------------------------- dialogue lines

_NAME = r"(?P<name>[^\W\d_][\w.'’ -]{0,40}?)"
_TAGGED_SPEAKER = re.compile(
    _NAME + r"\s*:?\s*[(\[]{1,2}\s*(?P<action>speaking|thinking)\b[^)\]\n]{0,40}[)\]]{1,2}"
    r"\s*:?\s*(?P<rest>.*)$",
    re.IGNORECASE,
)
_PLAIN_SPEAKER = re.compile(_NAME + r"\s*:\s*(?P<rest>.*)$")
_LINE_DECORATION = re.compile(r"^\s*(?:#{1,6}\s*|>\s*)?(?:[-*•]\s+|\d{1,3}[.)]\s+)?")
_BACKGROUND_LABEL = re.compile(r"^[\s#>*_-]*background[*_\s]*:[*_\s]*(?P<rest>.*)$", re.I)
_NAME_PARTICLES = _word_set("van von de der den da di du la le of the al bin ibn y")
_NOT_NAMES = _word_set(
    "background type location scene setting status note context example title time place "
    "characters date summary"
)


_RawTurn = tuple[str, Action, str]  # speaker as written, action, content as written


class _Header(NamedTuple):
    name: str
    action: Action | None  # None: plain "Name: words" script style
    rest: str


def _looks_like_name(name: str) -> bool:
    words = name.split()
    if not 1 <= len(words) <= 5 or name.lower() in _NOT_NAMES:
        return False
    if not words[0][0].isupper():
        return False
    return all(w[0].isupper() or w.lower() in _NAME_PARTICLES for w in words)


def _speaker_header(line: str, names: _MainNames) -> _Header | None:
    bare = _LINE_DECORATION.sub("", line.replace("**", "").replace("__", "")).strip()
    tagged = _TAGGED_SPEAKER.match(bare)
    if tagged:
        action: Action | None = "thinking" if tagged["action"].lower() == "thinking" else "speaking"
        match: re.Match[str] | None = tagged
    else:
        action, match = None, _PLAIN_SPEAKER.match(bare)
    if match is None:
        return None
    name = " ".join(match["name"].split()).strip(" .-'’")
    if not name or not (_looks_like_name(name) or names.is_main(name)):
        return None
    return _Header(name, action, match["rest"])


class _MainNames:
    """Who is the main character: its name, its aliases, and their single words."""

    def __init__(self, main_character: str, aliases: Sequence[str]) -> None:
        self.main = main_character
        names = [main_character, *aliases]
        self.full = {" ".join(n.split()).lower() for n in names if n.strip()}
        self.words = {w.lower() for n in names for w in re.findall(r"[^\W\d_]+", n)
                      if len(w) >= 3 and w[0].isupper()}

    def is_main(self, name: str) -> bool:
        lowered = name.lower()
        words = re.findall(r"[^\W\d_]+", lowered)
        return lowered in self.full or (bool(words) and all(w in self.words for w in words))

    def display(self, name: str) -> str:
        if self.is_main(name):
            return self.main
        return name.title() if name.isupper() else name


def _read_turns(lines: list[str], names: _MainNames) -> tuple[int | None, list[_RawTurn]]:
    """(index of the first speaker line, [(speaker, action, raw content)])."""
    headers = [_speaker_header(line, names) for line in lines]
    tagged_names = {h.name.lower() for h in headers if h and h.action}

    def is_speaker(h: _Header | None) -> bool:
        return h is not None and (h.action is not None or not tagged_names
                                  or h.name.lower() in tagged_names or names.is_main(h.name))

    first: int | None = None
    turns: list[tuple[str, Action, list[str]]] = []
    for i, (line, header) in enumerate(zip(lines, headers, strict=True)):
        if header is not None and is_speaker(header):
            first = i if first is None else first
            turns.append((header.name, header.action or "speaking", [header.rest]))
        elif turns:
            turns[-1][2].append(line)
    return first, [(name, action, "\n".join(body)) for name, action, body in turns]


def _background(lines: list[str]) -> str:
    """The text after a ``Background:`` label, else all the prose, before the turns."""
    for i, line in enumerate(lines):
        label = _BACKGROUND_LABEL.match(line)
        if label:
            lines = [label["rest"], *lines[i + 1 :]]
            break
    return "\n".join(_paragraphs("\n".join(lines).replace("**", "").replace("__", "")))


# ---------------------------------------------------------------- dialogue checks


def _build_dialogue(background: str, raw_turns: list[_RawTurn], *,
                    names: _MainNames, min_turns: int, require_background: bool) -> Dialogue:
    """Shared by text and JSON: names, thinking rules, cleaning, checks, merging."""
    if require_background and not background:
        raise Rejected("no_background", "no background paragraph before the first turn")
    problem = junk_reason(background) if background else None
    if problem:
        raise Rejected("junk", f"the background is not language: {problem}")
    kept: list[Turn] = []
    thinking_dropped = junk = 0
    for speaker, action, content in raw_turns:
        name = names.display(speaker)
        if action == "thinking" and name != names.main:
            thinking_dropped += 1
            continue
        words = clean_content(content)
        if junk_reason(words):
            junk += 1
            continue
        kept.append(Turn(speaker=name, action=action, content=words))
    checked = len(raw_turns) - thinking_dropped
    if junk and junk * 2 > checked:
        raise Rejected("junk", f"{junk} of {checked} turns are not language")
    turns = _merge_same_speaker(kept)
    _require_turns(turns, names.main, min_turns)
    return Dialogue(background=background, turns=turns, dropped_turns=thinking_dropped + junk)


def _merge_same_speaker(turns: list[Turn]) -> list[Turn]:
    merged: list[Turn] = []
    for turn in turns:
        last = merged[-1] if merged else None
        if last and (last.speaker, last.action) == (turn.speaker, turn.action):
            merged[-1] = last.model_copy(update={"content": f"{last.content}\n{turn.content}"})
        else:
            merged.append(turn)
    return merged


def _require_turns(turns: list[Turn], main_character: str, min_turns: int) -> None:
    if not any(turn.speaker == main_character for turn in turns):
        who = Counter(turn.speaker for turn in turns).most_common(3)
        raise Rejected("invalid", f"the main character {_one_line(main_character)} never speaks "
                       f"or thinks (speakers: {', '.join(_one_line(n, 20) for n, _ in who)})")
    if len(turns) < min_turns:
        raise Rejected("too_short", f"{len(turns)} usable turns, fewer than {min_turns}")


def parse_dialogue_text(text: str, *, main_character: str, aliases: Sequence[str] = (),
                        min_turns: int = 2, require_background: bool = True) -> Dialogue:
    """A seed-format experience: ``Background:`` then ``Name (speaking|thinking)`` turns."""
    if not text.strip():
        raise Rejected("empty", "the answer is blank")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    names = _MainNames(main_character, aliases)
    first, raw_turns = _read_turns(lines, names)
    if first is None:
        raise Rejected("invalid", "no speaker line like 'Name (speaking)' found")
    return _build_dialogue(_background(lines[:first]), raw_turns, names=names,
                           min_turns=min_turns, require_background=require_background)


# ---------------------------------------------------------------- JSON mode

_FENCE = re.compile(r"^\s*```[\w-]*\s*\n?|\n?\s*```\s*$")
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def _outermost(text: str, allow_list: bool) -> str:
    openers = "{[" if allow_list else "{"
    starts = [i for i in (text.find(o) for o in openers) if i >= 0]
    if not starts:
        return text
    start = min(starts)
    end = text.rfind("}" if text[start] == "{" else "]")
    return text[start : end + 1] if end > start else text[start:]


def _load_json(text: str, *, allow_list: bool = False) -> Any:
    """The JSON value in `text`, after one local repair when it does not parse."""
    if not text.strip():
        raise Rejected("empty", "the answer is blank")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    repaired = _TRAILING_COMMA.sub(r"\1", _outermost(_FENCE.sub("", text.strip()), allow_list))
    try:
        return json.loads(repaired)
    except json.JSONDecodeError as error:
        raise Rejected("invalid", f"not valid JSON: {error.msg} at line {error.lineno} column "
                       f"{error.colno}") from None
    except (ValueError, RecursionError) as error:
        raise Rejected("invalid", f"not valid JSON: {type(error).__name__}") from None


def _require_object(value: Any, where: str, keys: Sequence[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Rejected("invalid", f"{where} must be an object, not {type(value).__name__}")
    missing = [key for key in keys if key not in value]
    if missing:
        raise Rejected("invalid", f"{where} lacks {', '.join(missing)}")
    return value


def _require_str(item: dict[str, Any], key: str, where: str) -> str:
    value = item[key]
    if not isinstance(value, str):
        raise Rejected("invalid", f"{where}.{key} must be a string, not {type(value).__name__}")
    return value


def _require_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise Rejected("invalid", f"{where} must be an array, not {type(value).__name__}")
    return value


def parse_scenes_json(text: str, *, min_scenes: int = 1) -> list[Scene]:
    """Scenes from a `SCENES_SCHEMA` answer (a bare list of scenes is accepted too)."""
    data = _load_json(text, allow_list=True)
    if not isinstance(data, list):
        data = _require_object(data, "the answer", ["scenes"])["scenes"]
    items = _require_list(data, "scenes")
    found: list[Scene | None] = []
    for i, item in enumerate(items):
        where = f"scenes[{i}]"
        scene = _require_object(item, where, ["type", "location", "background"])
        fields = {key: _require_str(scene, key, where) for key in ("type", "location",
                                                                    "background")}
        found.append(_scene_from_fields(fields))
    return _accept_scenes(_checked_scenes(found), not items, min_scenes)


def _json_turn(item: Any, where: str) -> _RawTurn:
    turn = _require_object(item, where, ["speaker", "action", "content"])
    speaker = " ".join(_require_str(turn, "speaker", where).replace("**", "").split())
    action = _require_str(turn, "action", where).strip().strip("()[]").strip().lower()
    content = _require_str(turn, "content", where)
    if not speaker:
        raise Rejected("invalid", f"{where}.speaker is empty")
    if action not in ("thinking", "speaking"):
        raise Rejected("invalid", f"{where}.action must be thinking or speaking")
    return speaker, "thinking" if action == "thinking" else "speaking", content


def parse_dialogue_json(text: str, *, main_character: str, aliases: Sequence[str] = (),
                        min_turns: int = 2, require_background: bool = True) -> Dialogue:
    """A dialogue from a `DIALOGUE_SCHEMA` answer, checked like the text format."""
    data = _require_object(_load_json(text), "the answer", ["background", "turns"])
    background = _require_str(data, "background", "the answer")
    items = _require_list(data["turns"], "turns")
    raw_turns = [_json_turn(item, f"turns[{i}]") for i, item in enumerate(items)]
    if not raw_turns:
        raise Rejected("invalid", "turns is empty")
    return _build_dialogue("\n".join(_paragraphs(background.replace("**", ""))), raw_turns,
                           names=_MainNames(main_character, aliases), min_turns=min_turns,
                           require_background=require_background)


# ---------------------------------------------------------------- rendering


def render_dialogue_text(dialogue: Dialogue) -> str:
    """The seed's text format, which `parse_dialogue_text` reads back."""
    blocks = [f"Background:\n{dialogue.background}"] if dialogue.background else []
    blocks += [f"{turn.speaker} ({turn.action})\n{turn.content}" for turn in dialogue.turns]
    return "\n\n".join(blocks) + "\n"

