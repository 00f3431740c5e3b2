"""What the local backend's grammar allows: prose strings within word bounds, the
schema's enums and item counts; checked with xgrammar's own matcher on a real
tokenizer, and the hints never reaching an endpoint."""

from __future__ import annotations

import json

import pytest

from charforge.generate.base import DialogueStage, dialogue_model
from charforge.llm.grammar import (
    HINTS_KEY,
    GrammarCompiler,
    constrain_strings,
    prose_pattern,
    schema_of,
)
from charforge.parse.schemas import strict_json_schema

from tiny_models import build_tokenizer

DIALOGUE = constrain_strings(strict_json_schema(dialogue_model(("Beethoven", "Karl"))),
                             {"background": [4, 30], "content": [6, 40]},
                             items={"turns": [2, 4]})


@pytest.fixture(scope="module")
def grammars(tmp_path_factory):
    tokenizer = build_tokenizer(tmp_path_factory.mktemp("tok"))
    return GrammarCompiler(tokenizer, len(tokenizer))


def accepts(grammars, schema, text: str) -> bool:
    """Whether `text` is a whole answer the grammar allows."""
    import xgrammar

    matcher = xgrammar.GrammarMatcher(grammars.compile(schema))
    return matcher.accept_string(text) and matcher.is_completed()


def turn(speaker: str, content: str, action: str = "speaking") -> dict:
    return {"speaker": speaker, "action": action, "content": content}


def answer(background: str, *turns: dict) -> str:
    return json.dumps({"background": background, "turns": list(turns)},
                      separators=(", ", ": "))


GOOD_LINE = "You will study, Karl, or you will answer to me."


@pytest.mark.parametrize(("text", "ok"), [
    (answer("Vienna, a cold room in 1816.", turn("Beethoven", GOOD_LINE),
            turn("Karl", "I study every day, uncle, whatever you believe.")), True),
    # a speaker the scene does not have
    (answer("Vienna, a cold room in 1816.", turn("Schindler", GOOD_LINE),
            turn("Karl", GOOD_LINE)), False),
    # a turn of one word (a small model's placeholder)
    (answer("Vienna, a cold room in 1816.", turn("Beethoven", "Aristotle"),
            turn("Karl", GOOD_LINE)), False),
    # markup and brackets
    (answer("Vienna, a cold room in 1816.", turn("Beethoven", "<b>You will study now, Karl!</b>"),
            turn("Karl", GOOD_LINE)), False),
    # a line break inside a string
    (answer("Vienna, a cold room in 1816.", turn("Beethoven", GOOD_LINE + "\\nAnd more."),
            turn("Karl", GOOD_LINE)), False),
    # one turn, fewer than the hint's two
    (answer("Vienna, a cold room in 1816.", turn("Beethoven", GOOD_LINE)), False),
    # five turns, more than four
    (answer("Vienna, a cold room in 1816.", *[turn("Karl", GOOD_LINE)] * 5), False),
    # a background past 30 words
    (answer(" ".join(["Vienna"] + ["rain"] * 40) + ".", turn("Beethoven", GOOD_LINE),
            turn("Karl", GOOD_LINE)), False),
    # whitespace the compact grammar does not allow
    ('{ "background": "Vienna, a cold room in 1816.", "turns": []}', False),
])
def test_the_dialogue_grammar(grammars, text, ok):
    assert accepts(grammars, DIALOGUE, text) == ok


def test_constrain_strings_leaves_enums_and_sets_bounds():
    schema = constrain_strings(strict_json_schema(dialogue_model(("A", "B"))),
                               {"content": [8, 60]}, items={"turns": [4, 12]})
    turns = schema["properties"]["turns"]
    assert (turns["minItems"], turns["maxItems"]) == (4, 12)
    item = turns["items"]["properties"]
    assert item["speaker"] == {"enum": ["A", "B"], "type": "string"}
    assert "pattern" not in item["action"]
    assert item["content"]["pattern"] == prose_pattern(8, 60)
    assert "{7,59}" in prose_pattern(8, 60) and prose_pattern(1).endswith("{0,}")
    assert schema["properties"]["background"]["pattern"] == prose_pattern(1, None)


def test_schema_of_reads_every_response_format():
    assert schema_of({"type": "text"}) is None
    assert schema_of({"type": "json_object"}) == {"type": "object"}
    assert schema_of({"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}) \
        == {"type": "object"}
    with pytest.raises(ValueError, match="unsupported"):
        schema_of({"type": "json_schema", "json_schema": {}})


def test_stage_hints_reach_the_grammar_but_never_an_endpoint(tmp_path):
    from charforge.generate import generate
    from charforge.testing import ScriptedOpenAIServer

    from conftest import teacher_workspace
    from scripted_teacher import answer as scripted

    with ScriptedOpenAIServer(responder=scripted) as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url, json_schema=True)
        generate(ws, "beethoven", "protective", options={"count": 1}, show_progress=False)
        [request] = server.chat_requests
    sent = request.json["response_format"]
    assert HINTS_KEY not in sent and sent["type"] == "json_schema"
    turns = sent["json_schema"]["schema"]["properties"]["turns"]
    assert turns["items"]["properties"]["speaker"]["enum"] == ["Beethoven", "Anna"]
    assert "minItems" not in turns  # the bounds are the grammar's, not the endpoint's
    with ws.store() as store:
        [params] = store._all("SELECT params FROM tasks WHERE stage='protective'")
    stored = json.loads(params[0])["response_format"]
    assert stored[HINTS_KEY] == DialogueStage.hints
    # kept in the schema's own order: the order a model writes the fields in
    assert list(stored["json_schema"]["schema"]["properties"]) == ["background", "turns"]


def test_a_lead_makes_the_string_start_with_the_character(grammars):
    scenes = constrain_strings(
        {"type": "object", "properties": {"background": {"type": "string"}},
         "required": ["background"], "additionalProperties": False},
        {"background": [4, 12]}, leads={"background": "J. S. Bach"})
    assert accepts(grammars, scenes, '{"background": "J. S. Bach plays the organ."}')
    assert not accepts(grammars, scenes, '{"background": "Handel plays the organ today."}')
    assert not accepts(grammars, scenes, '{"background": "J. S. Bach."}')  # 4+ words
