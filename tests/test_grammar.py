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
    name_pattern,
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
    hints = stored[HINTS_KEY]
    assert {key: hints[key] for key in DialogueStage.hints} == DialogueStage.hints
    # who says what, turn by turn: Anna asks, Beethoven answers
    assert [(t["speaker"], t["action"]) for t in hints["sequence"]["turns"]] == \
        [("Anna", "speaking"), ("Beethoven", "speaking")] * 2
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


def test_a_sequence_makes_the_speakers_alternate_and_the_visitor_ask(grammars):
    seq = [{"speaker": "Anna", "action": "speaking", "content": {"question": True}},
           {"speaker": "Beethoven", "action": "speaking"},
           {"speaker": "Anna", "action": "speaking"},
           {"speaker": "Beethoven", "action": ["thinking", "speaking"]}]
    schema = constrain_strings(strict_json_schema(dialogue_model(("Beethoven", "Anna"))),
                               {"background": [4, 30], "content": [6, 40]},
                               items={"turns": [3, 6]}, sequence={"turns": seq})
    ask = "Have you ever heard of the telephone, Master?"
    bg = "Vienna, a cold room in 1816."
    assert accepts(grammars, schema, answer(bg, turn("Anna", ask), turn("Beethoven", GOOD_LINE),
                                            turn("Anna", GOOD_LINE)))
    assert accepts(grammars, schema, answer(bg, turn("Anna", ask), turn("Beethoven", GOOD_LINE),
                                            turn("Anna", GOOD_LINE),
                                            turn("Beethoven", GOOD_LINE, "thinking")))
    # the first turn is not a question
    assert not accepts(grammars, schema, answer(bg, turn("Anna", GOOD_LINE),
                                                turn("Beethoven", GOOD_LINE),
                                                turn("Anna", GOOD_LINE)))
    # the same speaker twice in a row, fewer turns than asked, more than the sequence
    assert not accepts(grammars, schema, answer(bg, turn("Anna", ask), turn("Anna", GOOD_LINE),
                                                turn("Anna", GOOD_LINE)))
    assert not accepts(grammars, schema, answer(bg, turn("Anna", ask),
                                                turn("Beethoven", GOOD_LINE)))
    assert not accepts(grammars, schema, answer(
        bg, turn("Anna", ask), turn("Beethoven", GOOD_LINE), turn("Anna", GOOD_LINE),
        turn("Beethoven", GOOD_LINE), turn("Anna", GOOD_LINE)))


def test_mentions_leads_and_other_names(grammars):
    import re

    mention = prose_pattern(8, 30, mention="Beethoven")
    assert re.fullmatch(mention, "In 1795, Beethoven plays for Prince Lichnowsky in Vienna.")
    assert re.fullmatch(mention, "Beethoven's pupil Ries comes to the house in Vienna.")
    assert not re.fullmatch(mention, "A cold room where nobody plays the piano at all today.")
    leads = prose_pattern(4, 30, ["I do not know", "What is"])
    assert re.fullmatch(leads, "What is this thing you speak of?")
    assert not re.fullmatch(leads, "Yes, I know it very well.")
    other = name_pattern(["Beethoven", "Ludwig"])
    for name, ok in [("Beethoven", False), ("Ludwig", False), ("Karl Holz", True),
                     ("Haydn", True), ("Beeth", True), ("Ludwig Haydn", False)]:
        assert bool(re.fullmatch(other, name)) == ok, name
    # no runs of capitals (SmolLM2's "DEBU DEBT DEBF"), Roman numerals are fine
    assert not re.fullmatch(prose_pattern(2, 10), "HERE IS DEBU")
    assert re.fullmatch(prose_pattern(2, 10), "Louis XVI and I.")


def test_the_english_openings_are_given_to_english_characters_only(tmp_path):
    from charforge.generate.protective import ASKING, ProtectiveStage
    from charforge.stages import build_stage
    from charforge.workspace import Workspace

    german = " ".join(["Ludwig van Beethoven wurde im Dezember 1770 in Bonn geboren und "
                       "starb im März 1827 in Wien, wo er die meisten Jahre seines Lebens "
                       "verbrachte und seine Sinfonien schrieb."] * 12)
    english = " ".join(["Ada Lovelace was born in London in 1815 and worked with Charles "
                        "Babbage on his Analytical Engine, writing the first published "
                        "program for it."] * 12)
    hints = {}
    for name, text in (("Beethoven", german), ("Ada", english)):
        source = tmp_path / f"wiki_{name}.txt"
        source.write_text(f"# {name}\n\n{text}\n", encoding="utf-8")
        ws = Workspace.init(tmp_path / name)
        ws.import_character(source)
        with ws.store() as store:
            stage = build_stage(ProtectiveStage, ws.load_character(name), store,
                                options={"count": 1}, templates=ws.templates())
            [planned] = list(stage.plan())
            hints[name] = stage.decoding_hints(stage.task_inputs(planned))
    asked = hints["Ada"]["sequence"]["turns"][0]["content"]
    assert asked["lead"] == ASKING and hints["Ada"]["leads"]["background"].startswith("One day")
    german_turns = hints["Beethoven"]["sequence"]["turns"]
    assert "leads" not in hints["Beethoven"]
    assert [turn["speaker"] for turn in german_turns] == ["Anna", "Beethoven"] * 2
    assert german_turns[0]["content"] == {"question": True}  # still a question, any words
    assert all("lead" not in turn.get("content", {}) for turn in german_turns)
