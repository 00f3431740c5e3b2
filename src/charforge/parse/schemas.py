"""Output models: the pydantic shape a teacher's JSON answer is parsed into, and the
strict JSON schema derived from it (what `response_format` sends, and what a grammar
is compiled from).

A stage declares its output model; it may narrow it per task (for example the
speakers of a dialogue limited to the scene's people) with `narrowed`, which builds
a subclass with some fields replaced, cached by its arguments.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, create_model


class SceneOutline(BaseModel):
    """One imagined scene: what kind, where and when, and what is going on."""

    model_config = ConfigDict(extra="forbid")

    type: str
    location: str
    background: str


class ScenesAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scenes: list[SceneOutline]


class TurnAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    speaker: str
    action: Literal["thinking", "speaking"]
    content: str


class DialogueAnswer(BaseModel):
    """An experience or protective scene: a background, then turns."""

    model_config = ConfigDict(extra="forbid")

    background: str
    turns: list[TurnAnswer]


class QuestionsAnswer(BaseModel):
    """PersLLM questions (or opinion passages) raised from one passage."""

    model_config = ConfigDict(extra="forbid")

    questions: list[str]


class ErrorQuestion(BaseModel):
    """A question resting on a false premise, and the false claim it makes."""

    model_config = ConfigDict(extra="forbid")

    question: str
    false_claim: str


class ErrorQuestionsAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    questions: list[ErrorQuestion]


class PersonaAnswer(BaseModel):
    """The character's answer to a question."""

    model_config = ConfigDict(extra="forbid")

    response: str


class AnalyzedAnswer(BaseModel):
    """An analysis (what the character knows, feels, how they would say it), then the
    response: PersLLM's chain of thought."""

    model_config = ConfigDict(extra="forbid")

    analysis: str
    response: str


class PremiseVerdict(BaseModel):
    """Whether an answer took a false premise for true."""

    model_config = ConfigDict(extra="forbid")

    accepts_false_premise: bool
    reason: str


_SCHEMA_WORDS = ("title", "default")


def _strict(node: Any, defs: dict[str, Any]) -> Any:
    """OpenAI's strict mode: $refs inlined, every object closed with all its properties
    required, no titles or defaults."""
    if isinstance(node, list):
        return [_strict(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _strict(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _SCHEMA_WORDS:
            continue
        if key == "properties":
            out[key] = {name: _strict(prop, defs) for name, prop in value.items()}
        else:
            out[key] = _strict(value, defs)
    if out.get("type") == "object":
        out["required"] = list(out.get("properties", {}))
        out["additionalProperties"] = False
    return out


@cache
def _schema_text(model: type[BaseModel]) -> str:
    schema = model.model_json_schema()
    return json.dumps(_strict(schema, schema.get("$defs", {})), sort_keys=False)


def strict_json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The strict JSON schema of an output model (a fresh copy each call)."""
    return json.loads(_schema_text(model))


def schema_fingerprint(model: type[BaseModel]) -> str:
    return hashlib.sha256(_schema_text(model).encode()).hexdigest()[:24]


def response_format(model: type[BaseModel], name: str) -> dict[str, Any]:
    """The OpenAI `response_format` asking for `model`'s strict schema."""
    return {"type": "json_schema",
            "json_schema": {"name": name, "schema": strict_json_schema(model), "strict": True}}


@cache
def narrowed(model: type[BaseModel], name: str, /, **fields: Any) -> type[BaseModel]:
    """A subclass of `model` whose `fields` have new types (`fields` values are types,
    e.g. ``Literal["Beethoven", "Karl"]``). Cached: the same arguments give the same
    class, so schemas and compiled grammars are built once."""
    return create_model(name, __base__=model, **{key: (kind, ...) for key, kind in fields.items()})


SCENES_SCHEMA: dict[str, Any] = strict_json_schema(ScenesAnswer)
DIALOGUE_SCHEMA: dict[str, Any] = strict_json_schema(DialogueAnswer)
_NAMED = {"scenes": ScenesAnswer, "dialogue": DialogueAnswer}


def response_format_for(schema_name: str) -> dict[str, Any]:
    """The `response_format` of a built-in output model by name ("scenes", "dialogue")."""
    if schema_name not in _NAMED:
        raise ValueError(f"unknown schema {schema_name!r}; expected one of {sorted(_NAMED)}")
    return response_format(_NAMED[schema_name], schema_name)

