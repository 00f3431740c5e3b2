"""JSON answers (`response_format` json_schema mode): located, repaired once locally,
checked field by field, then assembled and checked like the text layout."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from charforge.parse.quality import (
    SCENE_FIELDS,
    DialogueRules,
    MainNames,
    RawTurn,
    accept_scenes,
    action_of,
    build_dialogue,
    paragraphs,
    scan_scenes,
    scene_from_fields,
    unbold,
)
from charforge.records import Dialogue, Rejected, Scene

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


def load_json(text: str) -> Any:
    """The JSON object in a teacher's answer (fences and prose around it dropped, one
    local repair); `Rejected` ("empty", "invalid") when there is none."""
    return _load_json(text)


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
        scene = _require(item, dict, f"scenes[{i}]", SCENE_FIELDS)
        fields = {key: _require(scene[key], str, f"scenes[{i}].{key}") for key in SCENE_FIELDS}
        found.append(scene_from_fields(fields))
    return accept_scenes(scan_scenes(found), not found, min_scenes)


def _json_turn(item: Any, where: str) -> RawTurn:
    turn = _require(item, dict, where, ["speaker", "action", "content"])
    speaker = " ".join(unbold(_require(turn["speaker"], str, f"{where}.speaker")).split())
    action = _require(turn["action"], str, f"{where}.action").strip(" ()[]").lower()
    content = _require(turn["content"], str, f"{where}.content")
    if not speaker:
        raise Rejected("invalid", f"{where}.speaker is empty")
    if action not in ("thinking", "speaking"):
        raise Rejected("invalid", f"{where}.action must be thinking or speaking")
    return speaker, action_of(action), content


def parse_dialogue_json(text: str, *, main_character: str, aliases: Sequence[str] = (),
                        min_turns: int = 2, require_background: bool = True,
                        min_speakers: int = 1, min_median_words: int = 0,
                        main_speaks: bool = False) -> Dialogue:
    """A dialogue from a `DIALOGUE_SCHEMA` answer, checked like the text format."""
    data = _require(_load_json(text), dict, "the answer", ["background", "turns"])
    background = _require(data["background"], str, "background")
    turns = _require(data["turns"], list, "turns")
    raw_turns = [_json_turn(item, f"turns[{i}]") for i, item in enumerate(turns)]
    if not raw_turns:
        raise Rejected("invalid", "turns is empty")
    return build_dialogue("\n".join(paragraphs(unbold(background))), raw_turns,
                          MainNames(main_character, aliases),
                          DialogueRules(min_turns, min_speakers, min_median_words,
                                        require_background, main_speaks))
