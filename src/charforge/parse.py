"""Teacher answers -> typed records, or `Rejected` with a reason.

Two formats are read: the seed's plain text (``Scene 1:`` blocks; ``Background:``
then ``Name (speaking)`` turns) and JSON following `SCENES_SCHEMA` or
`DIALOGUE_SCHEMA`. Both share one normalisation and one set of content checks, as a
small teacher happily emits well-formed junk. Whatever the input string, the parsers
raise nothing but `Rejected`, and every pattern runs in linear time on long lines.
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
    """A JSON Schema object as OpenAI's strict mode wants it: all required, nothing else."""
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


def response_format_for(schema_name: str) -> dict[str, Any]:
    """The OpenAI `response_format` asking for `schema_name` ("scenes" or "dialogue")."""
    if schema_name not in _SCHEMAS:
        raise ValueError(f"unknown schema {schema_name!r}; expected one of {sorted(_SCHEMAS)}")
    schema = copy.deepcopy(_SCHEMAS[schema_name])
    return {"type": "json_schema",
            "json_schema": {"name": schema_name, "schema": schema, "strict": True}}


def truncation_check(finish_reason: str | None) -> None:
    """Reject an answer the teacher stopped at max_tokens: its end is missing."""
    if finish_reason == "length":
        raise Rejected("truncated", "the teacher stopped at max_tokens (finish_reason=length)")


def _quote(text: str, limit: int = 40) -> str:
    """A short one-line quote of `text` for a rejection detail."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 3] + "...")


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _paragraphs(text: str) -> list[str]:
    """The non-blank lines of `text`, each with single spaces."""
    return [flat for flat in (" ".join(line.split()) for line in _lines(text)) if flat]


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


def _unbold(text: str) -> str:
    return text.replace("**", "").replace("__", "")


# ---------------------------------------------------------------- content checks

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
_VOWELS = frozenset("aeiouyAEIOUY")


def _is_non_word(token: str) -> bool:
    """A token no language writes: letters glued to digits, or a Latin word without vowels."""
    core = token.strip(".,;:!?\"'“”‘’()[]-—…")
    letters = [c for c in core if c.isalpha()]
    if not letters:
        return False
    if any(c.isdigit() for c in core):
        return re.fullmatch(r"\d+(st|nd|rd|th|s)", core.lower()) is None  # 19th, 1800s
    ascii_only = all(c.isascii() for c in letters)
    return ascii_only and (len(core) > 30 or (len(letters) >= 3 and not _VOWELS & set(letters)))


def _word_run(words: list[str], run: int = 4) -> str | None:
    """A word said `run` or more times in a row."""
    count = 1
    for previous, word in itertools.pairwise(words):
        count = count + 1 if word == previous else 1
        if count >= run:
            return word
    return None


def _has_phrase_loop(words: list[str], size: int = 5, max_period: int = 150) -> bool:
    """The same `size`-word sequence starting 3 times, one period apart, with the same words
    in between: text said again and again back to back. (Anaphora varies its gaps.)"""
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
    repeated = _word_run(words)
    if repeated:
        return f"the word {_quote(repeated, 20)} repeated 4+ times in a row"
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
_SPACE_BEFORE_PUNCT = re.compile(r" ([.,!?;:])")
_SENTENCE_END = tuple(".!?…:\"”—")
_STAGE_VERBS = _word_set(
    "laughs smiles sighs pauses nods chuckles grins whispers shrugs frowns winks gasps leans "
    "looks turns sits stands stares groans scoffs sneers bows gestures"
)
_NOT_STAGE_ING = _word_set(
    "during including according regarding concerning following excluding nothing something "
    "anything everything being morning evening king thing spring string"
)
_QUOTE_PAIRS = {'"': '"', "“": "”", "«": "»"}


def _is_stage_direction(match: re.Match[str]) -> bool:
    """"(smiling)" before a sentence, between sentences, or a lone "(laughing)"; not an
    aside inside a sentence such as "strategia (strategy)" or "(b)"."""
    inner = match.group(1).strip()
    if sum(c.isalpha() for c in inner) < 3:
        return False
    before = match.string[: match.start()].rstrip()
    after = match.string[match.end() :].lstrip()
    if not before or (before.endswith(_SENTENCE_END)
                      and (not after or after[0].isupper() or after[0] in "\"“'‘")):
        return True
    words = inner.split()
    if len(words) > 3 or not all(w.isalpha() and w.islower() for w in words):
        return False
    return words[0] in _STAGE_VERBS or (words[0].endswith("ing")
                                        and words[0] not in _NOT_STAGE_ING)


def _drop_stage_directions(line: str, thinking: bool) -> str:
    if thinking and _STAR_ACTION.fullmatch(line):
        return line[1:-1].strip()  # a thought in italics
    kept = _STAR_ACTION.sub(" ", line)
    kept = _BRACKETED.sub(lambda m: " " if _is_stage_direction(m) else m.group(0), kept)
    kept = " ".join(kept.split())
    return kept if kept == line else _SPACE_BEFORE_PUNCT.sub(r"\1", kept)


def _unquote(paragraph: str) -> str:
    """`paragraph` without the quotes around it, when it is one quoted whole."""
    closer = _QUOTE_PAIRS.get(paragraph[:1])
    if closer is None or len(paragraph) < 2 or paragraph[-1] != closer:
        return paragraph
    inner = paragraph[1:-1]
    return paragraph if paragraph[0] in inner or closer in inner else inner.strip()


def clean_content(text: str, *, thinking: bool = False) -> str:
    """A turn's words: no markdown bold, stage directions or wrapping quotes, single
    spaces, and each paragraph break kept as one "\\n". In a thinking turn a paragraph
    wholly in *italics* is the thought, not an action."""
    paragraphs = (_unquote(_drop_stage_directions(p, thinking))
                  for p in _paragraphs(_unbold(text)))
    return "\n".join(p for p in paragraphs if p)


# ---------------------------------------------------------------- scenes


class SceneScan(NamedTuple):
    """What a scenes answer held: the scenes kept, and how many blocks were skipped."""

    scenes: list[Scene]
    incomplete: int  # blocks without a location or a background
    junk: int  # blocks whose location or background is not language


_SCENE_HEADER = re.compile(
    r"[\s#>*_-]*scene\s?#?\s?\d{1,3}[*_]{0,2}\s?(?:[:.)\-–—]|\s|$)[*_\s]*(?P<rest>.*)", re.I
)
_SCENE_KEY = re.compile(
    r"(?:^|(?<=[\s|;,]))[-•*_ ]{0,4}(?P<key>type|location|background)[*_]{0,2} ?:[*_]{0,2}", re.I
)
_LIST_NUMBER = re.compile(r"^\d{1,3}[.)] ")
_TYPE_LINE = re.compile(r"[-•*_\s\d.]{0,8}type\s?:", re.I)
_DEFAULT_SCENE_TYPE = "Chat"
_SCENE_FIELDS = ("type", "location", "background")


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


def _clean_field(value: str) -> str:
    return _unquote(" ".join(_unbold(value).split()).strip(" |;,")).strip()


def _clean_scene_type(value: str) -> str:
    """"Chat (choice in chat, debate, ...)" -> "Chat"."""
    bare = re.split(r"[(\[]", _clean_field(value), maxsplit=1)[0].strip(" .")
    return bare or _clean_field(value).strip("()[] .") or _DEFAULT_SCENE_TYPE


def _scene(fields: dict[str, str]) -> Scene | None:
    location = _clean_field(fields.get("location", ""))
    background = _clean_field(fields.get("background", ""))
    if not location or not background:
        return None
    scene_type = _clean_scene_type(fields.get("type", ""))
    return Scene(type=scene_type, location=location, background=background)


def _scan(found: list[Scene | None]) -> SceneScan:
    """Count the incomplete scenes (None) and those whose words are not language."""
    complete = [scene for scene in found if scene is not None]
    kept = [scene for scene in complete if len(scene.background.split()) >= 5
            and not junk_reason(scene.location) and not junk_reason(scene.background)]
    return SceneScan(kept, len(found) - len(complete), len(complete) - len(kept))


def scan_scenes_text(text: str) -> SceneScan:
    """The usable scenes of a plain-text answer, with the skipped blocks counted."""
    return _scan([_scene(_scene_fields(block)) for block in _split_scene_blocks(_lines(text))])


def _accept_scenes(scan: SceneScan, nothing_given: bool, min_scenes: int) -> list[Scene]:
    counts = f"{scan.incomplete} incomplete, {scan.junk} junk"
    if scan.scenes and len(scan.scenes) < min_scenes:
        raise Rejected("too_short", f"{len(scan.scenes)} usable scenes, fewer than "
                       f"{min_scenes} ({counts})")
    if scan.scenes:
        return scan.scenes
    if scan.junk:
        raise Rejected("junk", f"all {scan.junk} complete scenes are junk")
    if nothing_given:
        raise Rejected("empty", "the answer holds no scenes")
    raise Rejected("invalid", f"no scene with a location and a background ({counts})")


def parse_scenes_text(text: str, *, min_scenes: int = 1) -> list[Scene]:
    """The scenes of a seed-format answer (``Scene 1:`` / ``Type:`` / ``Location:`` /
    ``Background:``); raises `Rejected`."""
    return _accept_scenes(scan_scenes_text(text), not text.strip(), min_scenes)


# ---------------------------------------------------------------- dialogue


class _MainNames:
    """Who the main character is: its name, its aliases, and their capitalised words."""

    def __init__(self, main_character: str, aliases: Sequence[str]) -> None:
        self.main = main_character
        names = [main_character, *aliases]
        self.full = {" ".join(name.split()).lower() for name in names}
        self.words = {word.lower() for name in names for word in _WORD.findall(name)
                      if len(word) >= 3 and word[0].isupper()}

    def is_main(self, name: str) -> bool:
        lowered = name.lower()
        words = _WORD.findall(lowered)
        return lowered in self.full or (bool(words) and all(w in self.words for w in words))

    def display(self, name: str) -> str:
        """The main character's own name, else the name (Title case if upper-case)."""
        if self.is_main(name):
            return self.main
        return name.title() if name.isupper() else name


_NAME = r"(?P<name>[^\W\d_][\w.'’ -]{0,40}?)"
_TAGGED_SPEAKER = re.compile(
    _NAME + r" ?:? ?[(\[]{1,2} ?(?P<action>speaking|thinking)\b[^)\]]{0,40}[)\]]{1,2}[*_]{0,2}"
    r" ?[:\-–—]? ?(?P<rest>.*)", re.I)
_PLAIN_SPEAKER = re.compile(_NAME + r" ?: ?(?P<rest>.*)")
_LINE_DECORATION = re.compile(r"(?:#{1,6} ?|> ?)?(?:[-*•] |\d{1,3}[.)] |[*_](?=\w))?")
_BACKGROUND_LABEL = re.compile(r"[\s#>*_-]*background\b[*_\s]*(?::|$)[*_\s]*(?P<rest>.*)", re.I)
_NAME_PARTICLES = _word_set("van von de der den da di du la le of the al bin ibn y")
_NOT_NAMES = _word_set(
    "background type location scene setting status note context example title time "
    "place characters date summary"
)
_RawTurn = tuple[str, Action, str]  # speaker and content as written


class _Header(NamedTuple):
    name: str
    action: Action | None  # None: the plain "Name: words" script style
    rest: str


def _action(word: str) -> Action:
    return "thinking" if word.lower() == "thinking" else "speaking"


def _looks_like_name(name: str) -> bool:
    words = name.split()
    if not 1 <= len(words) <= 5 or name.lower() in _NOT_NAMES or not words[0][0].isupper():
        return False
    return all(word[0].isupper() or word.lower() in _NAME_PARTICLES for word in words)


def _speaker_header(line: str, names: _MainNames) -> _Header | None:
    bare = _LINE_DECORATION.sub("", " ".join(_unbold(line).split()), count=1)
    match = _TAGGED_SPEAKER.match(bare) or _PLAIN_SPEAKER.match(bare)
    if match is None:
        return None
    name = " ".join(match["name"].split()).strip(" .-'’_")
    if not name or not (_looks_like_name(name) or names.is_main(name)):
        return None
    tag = match.groupdict().get("action")
    return _Header(name, None if tag is None else _action(tag), match["rest"])


def _read_turns(lines: list[str], names: _MainNames) -> tuple[int | None, list[_RawTurn]]:
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
    return "\n".join(_paragraphs(_unbold("\n".join(lines))))


def _build_dialogue(background: str, raw_turns: list[_RawTurn], names: _MainNames,
                    min_turns: int, require_background: bool) -> Dialogue:
    """Shared by text and JSON: names, who may think, cleaning, checks, merging."""
    if require_background and not background:
        raise Rejected("no_background", "no background paragraph before the first turn")
    problem = junk_reason(background) if background else None
    if problem:
        raise Rejected("junk", f"the background is not language: {problem}")
    kept: list[Turn] = []
    others_thinking = junk = 0
    for speaker, action, content in raw_turns:
        name, words = names.display(speaker), clean_content(content, thinking=action == "thinking")
        if action == "thinking" and name != names.main:
            others_thinking += 1
        elif junk_reason(words):
            junk += 1
        else:
            kept.append(Turn(speaker=name, action=action, content=words))
    if junk * 2 > len(raw_turns) - others_thinking:
        raise Rejected("junk", f"{junk} of {len(raw_turns) - others_thinking} turns are junk")
    turns = _merge_same_speaker(kept)
    _require_turns(turns, names.main, min_turns)
    return Dialogue(background=background, turns=turns, dropped_turns=others_thinking + junk)


def _merge_same_speaker(turns: list[Turn]) -> list[Turn]:
    merged: list[Turn] = []
    for turn in turns:
        if merged and (merged[-1].speaker, merged[-1].action) == (turn.speaker, turn.action):
            merged[-1] = Turn(speaker=turn.speaker, action=turn.action,
                              content=f"{merged[-1].content}\n{turn.content}")
        else:
            merged.append(turn)
    return merged


def _require_turns(turns: list[Turn], main_character: str, min_turns: int) -> None:
    if not any(turn.speaker == main_character for turn in turns):
        who = ", ".join(_quote(n, 20) for n, _ in Counter(t.speaker for t in turns).most_common(3))
        raise Rejected("invalid", f"the main character {_quote(main_character)} never speaks "
                       f"or thinks (speakers: {who or 'none'})")
    if len(turns) < min_turns:
        raise Rejected("too_short", f"{len(turns)} usable turns, fewer than {min_turns}")


def parse_dialogue_text(text: str, *, main_character: str, aliases: Sequence[str] = (),
                        min_turns: int = 2, require_background: bool = True) -> Dialogue:
    """A seed-format experience: ``Background:`` then ``Name (speaking|thinking)`` turns."""
    if not text.strip():
        raise Rejected("empty", "the answer is blank")
    lines, names = _lines(text), _MainNames(main_character, aliases)
    first, raw_turns = _read_turns(lines, names)
    if first is None:
        raise Rejected("invalid", "no speaker line like 'Name (speaking)' found")
    return _build_dialogue(_background(lines[:first]), raw_turns, names, min_turns,
                           require_background)


# ---------------------------------------------------------------- JSON mode

_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def _repair_json(text: str, allow_list: bool) -> str:
    """Keep the outermost {...} (or [...]): no ``` fences or prose around it; then drop
    trailing commas."""
    body = text.strip()
    starts = [i for i in (body.find("{"), body.find("[") if allow_list else -1) if i >= 0]
    if starts:
        start = min(starts)
        end = body.rfind("}" if body[start] == "{" else "]")
        body = body[start : end + 1] if end > start else body[start:]
    return _TRAILING_COMMA.sub(r"\1", body)


def _load_json(text: str, *, allow_list: bool = False) -> Any:
    """The JSON value in `text`, after one local repair when it does not parse as is."""
    if not text.strip():
        raise Rejected("empty", "the answer is blank")
    for attempt in (text, _repair_json(text, allow_list)):
        try:
            return json.loads(attempt)
        except json.JSONDecodeError as error:
            problem = f"{error.msg} at line {error.lineno} column {error.colno}"
        except (ValueError, RecursionError) as error:
            problem = type(error).__name__
    raise Rejected("invalid", f"not valid JSON: {problem}")


_KIND_NAMES = {dict: "an object", list: "an array", str: "a string"}


def _require(value: Any, kind: type, where: str, keys: Sequence[str] = ()) -> Any:
    """`value` if it is a `kind` (holding `keys`), else `Rejected` saying what is wrong."""
    if not isinstance(value, kind):
        raise Rejected("invalid", f"{where} must be {_KIND_NAMES[kind]}, "
                       f"not {type(value).__name__}")
    missing = [key for key in keys if key not in value]
    if missing:
        raise Rejected("invalid", f"{where} lacks {', '.join(missing)}")
    return value


def parse_scenes_json(text: str, *, min_scenes: int = 1) -> list[Scene]:
    """Scenes from a `SCENES_SCHEMA` answer (a bare list of scenes is accepted too)."""
    data = _load_json(text, allow_list=True)
    if not isinstance(data, list):
        data = _require(data, dict, "the answer", ["scenes"])["scenes"]
    found: list[Scene | None] = []
    for i, item in enumerate(_require(data, list, "scenes")):
        scene = _require(item, dict, f"scenes[{i}]", _SCENE_FIELDS)
        fields = {key: _require(scene[key], str, f"scenes[{i}].{key}") for key in _SCENE_FIELDS}
        found.append(_scene(fields))
    return _accept_scenes(_scan(found), not found, min_scenes)


def _json_turn(item: Any, where: str) -> _RawTurn:
    turn = _require(item, dict, where, ["speaker", "action", "content"])
    speaker = " ".join(_unbold(_require(turn["speaker"], str, f"{where}.speaker")).split())
    action = _require(turn["action"], str, f"{where}.action").strip(" ()[]").lower()
    content = _require(turn["content"], str, f"{where}.content")
    if not speaker:
        raise Rejected("invalid", f"{where}.speaker is empty")
    if action not in ("thinking", "speaking"):
        raise Rejected("invalid", f"{where}.action must be thinking or speaking")
    return speaker, _action(action), content


def parse_dialogue_json(text: str, *, main_character: str, aliases: Sequence[str] = (),
                        min_turns: int = 2, require_background: bool = True) -> Dialogue:
    """A dialogue from a `DIALOGUE_SCHEMA` answer, checked like the text format."""
    data = _require(_load_json(text), dict, "the answer", ["background", "turns"])
    background = _require(data["background"], str, "background")
    turns = _require(data["turns"], list, "turns")
    raw_turns = [_json_turn(item, f"turns[{i}]") for i, item in enumerate(turns)]
    if not raw_turns:
        raise Rejected("invalid", "turns is empty")
    return _build_dialogue("\n".join(_paragraphs(_unbold(background))), raw_turns,
                           _MainNames(main_character, aliases), min_turns, require_background)


def render_dialogue_text(dialogue: Dialogue) -> str:
    """The seed's text format, which `parse_dialogue_text` reads back."""
    blocks = [f"Background:\n{dialogue.background}"] if dialogue.background else []
    blocks += [f"{turn.speaker} ({turn.action})\n{turn.content}" for turn in dialogue.turns]
    return "\n\n".join(blocks) + "\n"
