"""Teacher text -> records: every tolerance, every rejection, the shared interview
outputs read back, and random input that must only ever be `Rejected`."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from charforge.parse import (
    DIALOGUE_SCHEMA,
    SCENES_SCHEMA,
    junk_reason,
    parse_dialogue_json,
    parse_dialogue_text,
    parse_scenes_json,
    parse_scenes_text,
    render_dialogue_text,
    response_format_for,
    scan_scenes_text,
    truncation_check,
)
from charforge.records import Dialogue, Rejected, Scene

INTERVIEWS = Path(__file__).resolve().parents[2] / "shared/data/character-llm/gen_results"
INTERVIEW_FILES = sorted(INTERVIEWS.glob("interview_turns/*/*.jsonl"))
REASONS = {"invalid", "empty", "too_short", "no_background", "truncated", "junk"}

BG = "Bonn, 1787. A small room above the tavern; a harpsichord stands by the window."
SCENE_BG = "Young Beethoven plays for Mozart in a crowded Viennese salon."


def rejection(call: Any, *args: Any, **kwargs: Any) -> Rejected:
    with pytest.raises(Rejected) as caught:
        call(*args, **kwargs)
    problem = caught.value
    assert problem.reason in REASONS
    assert problem.detail.strip() and "\n" not in problem.detail and len(problem.detail) < 200
    return problem


def beethoven(text: str, **kwargs: Any) -> Dialogue:
    kwargs.setdefault("aliases", ["Ludwig van Beethoven"])
    return parse_dialogue_text(text, main_character="Beethoven", **kwargs)


def triples(dialogue: Dialogue) -> list[tuple[str, str, str]]:
    return [(t.speaker, t.action, t.content) for t in dialogue.turns]


# ---------------------------------------------------------------- scenes, text


def test_seed_scene_format_with_placeholder_type() -> None:
    text = (
        "Scene 1: \nType: Chat (choice in chat, debate, discussion, speech)\n"
        f"Location: The Breuning house in Bonn\nBackground: {SCENE_BG}\n\n"
        "Scene 2: \nType: Debate\nLocation: A Vienna coffee house\n"
        "Background: Beethoven argues with Salieri about Italian opera and its singers.\n"
    )
    assert parse_scenes_text(text) == [
        Scene(type="Chat", location="The Breuning house in Bonn", background=SCENE_BG),
        Scene(type="Debate", location="A Vienna coffee house",
              background="Beethoven argues with Salieri about Italian opera and its singers."),
    ]


@pytest.mark.parametrize("header", ["**Scene 1:**", "Scene 1 -", "### Scene 1", "Scene 1.",
                                    "Scene 1", "**Scene 1**:", "SCENE 1:", "## Scene 1: Salon"])
def test_scene_header_styles(header: str) -> None:
    text = f"{header}\nType: Speech\nLocation: Vienna\nBackground: {SCENE_BG}\n"
    assert parse_scenes_text(text) == [Scene(type="Speech", location="Vienna",
                                             background=SCENE_BG)]


def test_scene_keys_bold_bullets_any_case_crlf_blank_lines_and_preamble() -> None:
    text = (
        "Sure! Here are the scenes you asked for.\r\n\r\n"
        "**Scene 1:**\r\n\r\n- **Type:** Discussion\r\n\r\n* LOCATION: Heiligenstadt\r\n"
        f"\r\n  background: {SCENE_BG}\r\n\r\n\r\n"
        "Scene 2:\r\n**type**: chat\r\n**location**: The Kärntnertortheater\r\n"
        "**Background**: The premiere of the Ninth Symphony has just ended to loud applause.\r\n"
    )
    assert parse_scenes_text(text) == [
        Scene(type="Discussion", location="Heiligenstadt", background=SCENE_BG),
        Scene(type="chat", location="The Kärntnertortheater",
              background="The premiere of the Ninth Symphony has just ended to loud applause."),
    ]


def test_scene_fields_on_the_header_line_and_multiline_values() -> None:
    text = (
        "Scene 1: Type: Chat Location: Vienna, the Theater an der Wien Background: "
        f"{SCENE_BG}\n"
        "Scene 2:\nType: Speech\nLocation: The Augarten\n"
        "Background: Beethoven conducts a morning concert\nin the park\n   for a small crowd.\n\n"
        "I hope these scenes help you with your project!\n"
    )
    assert parse_scenes_text(text) == [
        Scene(type="Chat", location="Vienna, the Theater an der Wien", background=SCENE_BG),
        Scene(type="Speech", location="The Augarten",
              background="Beethoven conducts a morning concert in the park for a small crowd."),
    ]


def test_numbered_fields() -> None:
    background = "Heiligenstadt, October 1802. Beethoven writes to his brothers."
    wrapped = background.replace("October ", "October\n")  # "1802. " starts a line
    text = f"Scene 1:\n1. Type: Debate\n2. Location: Bonn\n3. Background: {wrapped}\n"
    assert parse_scenes_text(text) == [Scene(type="Debate", location="Bonn",
                                             background=background)]


def test_value_starting_after_a_blank_line_and_quoted_values() -> None:
    text = f'Scene 1:\nType: "Chat"\nLocation:\n\n"Bonn"\nBackground:\n\n{SCENE_BG}\n'
    assert parse_scenes_text(text) == [Scene(type="Chat", location="Bonn", background=SCENE_BG)]


def test_incomplete_blocks_are_skipped_and_counted() -> None:
    text = (
        f"Scene 1:\nType: Chat\nBackground: {SCENE_BG}\n\n"  # no location
        "Scene 2:\nType: Chat\nLocation: Bonn\n\n"  # no background
        f"Scene 3:\nLocation: Bonn\nBackground: {SCENE_BG}\n"  # no type: the default
    )
    scan = scan_scenes_text(text)
    assert scan.scenes == [Scene(type="Chat", location="Bonn", background=SCENE_BG)]
    assert (scan.incomplete, scan.junk) == (2, 0)


def test_blocks_without_scene_headers_split_at_each_type() -> None:
    text = (f"Type: Chat\nLocation: Bonn\nBackground: {SCENE_BG}\n"
            f"Type: Speech\nLocation: Vienna\nBackground: {SCENE_BG}\n")
    assert [s.location for s in parse_scenes_text(text)] == ["Bonn", "Vienna"]


def test_junk_scenes_are_skipped_and_counted() -> None:
    text = (
        f"Scene 1:\nType: Chat\nLocation: Bonn\nBackground: {SCENE_BG}\n\n"
        "Scene 2:\nType: Chat\nLocation: Bonn\nBackground: the the the the the the\n\n"
        "Scene 3:\nType: Chat\nLocation: %%%% 1234 ####\nBackground: " + SCENE_BG + "\n\n"
        "Scene 4:\nType: Chat\nLocation: Bonn\nBackground: A salon.\n"  # under five words
    )
    scan = scan_scenes_text(text)
    assert [s.background for s in scan.scenes] == [SCENE_BG]
    assert (scan.incomplete, scan.junk) == (0, 3)


@pytest.mark.parametrize(
    ("text", "kwargs", "reason"),
    [
        ("", {}, "empty"),
        ("  \n\r\n\t", {}, "empty"),
        ("I am sorry, but I cannot imagine scenes for this person.", {}, "invalid"),
        ("Scene 1:\nType: Chat\nLocation: Bonn\n\nScene 2:\nType: Chat\n", {}, "invalid"),
        ("Scene 1:\nType: Chat\nLocation: Bonn\nBackground: salon salon salon salon salon",
         {}, "junk"),
        (f"Scene 1:\nType: Chat\nLocation: Bonn\nBackground: {SCENE_BG}", {"min_scenes": 3},
         "too_short"),
    ],
)
def test_scene_rejections(text: str, kwargs: dict[str, Any], reason: str) -> None:
    assert rejection(parse_scenes_text, text, **kwargs).reason == reason


# ---------------------------------------------------------------- dialogue, text

SEED_DIALOGUE = f"""Background:
{BG}

Beethoven (speaking)
Neefe, listen to this passage. I wrote it last night.

Christian Gottlob Neefe (speaking)
It is bold, Ludwig. Perhaps too bold for the court.

Beethoven (thinking)
He does not hear it yet. He will.
"""

SEED_TURNS = [
    ("Beethoven", "speaking", "Neefe, listen to this passage. I wrote it last night."),
    ("Christian Gottlob Neefe", "speaking", "It is bold, Ludwig. Perhaps too bold for the court."),
    ("Beethoven", "thinking", "He does not hear it yet. He will."),
]


def test_seed_dialogue_format() -> None:
    dialogue = beethoven(SEED_DIALOGUE)
    assert dialogue.background == BG
    assert triples(dialogue) == SEED_TURNS
    assert dialogue.dropped_turns == 0


@pytest.mark.parametrize(
    ("speaker_line", "content_line"),
    [
        ("Beethoven (speaking): {}", None),
        ("**Beethoven** (speaking)", "{}"),
        ("**Beethoven (speaking)**", "{}"),
        ("**Beethoven (speaking):** {}", None),
        ("BEETHOVEN (SPEAKING)", "{}"),
        ("Beethoven(speaking)", "{}"),
        ("Beethoven [speaking]", "{}"),
        ("Beethoven: (speaking) {}", None),
        ("1. Beethoven (speaking)", "{}"),
        ("- Beethoven (speaking)", "{}"),
        ("Ludwig van Beethoven (speaking)", "{}"),
        ("ludwig (speaking)", "{}"),
        ("Beethoven (speaking, quietly)", "{}"),
    ],
)
def test_speaker_line_styles(speaker_line: str, content_line: str | None) -> None:
    words = "I shall seize fate by the throat."
    first = speaker_line.format(words) if content_line is None else speaker_line
    lines = [first] if content_line is None else [first, content_line.format(words)]
    text = "\n".join(["Background:", BG, "", *lines, "", "Neefe (speaking)", "Good."])
    assert triples(beethoven(text)) == [("Beethoven", "speaking", words),
                                         ("Neefe", "speaking", "Good.")]


def test_thinking_with_colon_before_the_tag_and_upper_case_other_speaker() -> None:
    text = f"Background: {BG}\nBEETHOVEN: (thinking) Again the ringing.\nLILY (SPEAKING)\nMaster?\n"
    text += "MR. SMITH (speaking): Shall I come back later?"
    assert triples(beethoven(text)) == [("Beethoven", "thinking", "Again the ringing."),
                                        ("Lily", "speaking", "Master?"),
                                        ("Mr. Smith", "speaking", "Shall I come back later?")]


def test_plain_script_style_counts_as_speaking() -> None:
    text = f"{BG}\n\nBeethoven: The sonata is finished.\nFerdinand Ries: May I play it?\n"
    dialogue = beethoven(text)
    assert dialogue.background == BG
    assert triples(dialogue) == [("Beethoven", "speaking", "The sonata is finished."),
                                 ("Ferdinand Ries", "speaking", "May I play it?")]


def test_colon_lines_inside_tagged_turns_stay_content() -> None:
    text = (f"Background: {BG}\nBeethoven (speaking)\nTempo: the tempo is wrong.\n"
            "Ries (speaking)\nI see.\nBeethoven: Again, from the top.\n")
    assert triples(beethoven(text)) == [
        ("Beethoven", "speaking", "Tempo: the tempo is wrong."),
        ("Ries", "speaking", "I see."),
        ("Beethoven", "speaking", "Again, from the top."),  # a known speaker: a turn
    ]


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ('"I will not play for them."', "I will not play for them."),
        ("“I will not play for them.”", "I will not play for them."),
        ('"Play," he said, "now."', '"Play," he said, "now."'),
        ("(smiling) Hello, Neefe.", "Hello, Neefe."),
        ("*sighs* Very well.", "Very well."),
        ("Very well. *sighs deeply* Play it again.", "Very well. Play it again."),
        ("I did. (pauses) Then I left.", "I did. Then I left."),
        ("I took a nap (laughing).", "I took a nap."),
        ('(leaning forward) "Tell me."', "Tell me."),
        ("strategia (strategy), virtus (courage)", "strategia (strategy), virtus (courage)"),
        ("I founded S.P.E.W. (Society for the Promotion of Elfish Welfare) to help",
         "I founded S.P.E.W. (Society for the Promotion of Elfish Welfare) to help"),
        ("the flat symbol (b) and (during the war) the sharp",
         "the flat symbol (b) and (during the war) the sharp"),
        ("  So   many\tspaces   here.  ", "So many spaces here."),
        ("First paragraph.\n\n\n   Second   paragraph.", "First paragraph.\nSecond paragraph."),
        ("**Never** again.", "Never again."),
    ],
)
def test_content_cleaning(raw: str, clean: str) -> None:
    text = f"Background: {BG}\nBeethoven (speaking)\n{raw}\nNeefe (speaking)\nGood."
    assert beethoven(text).turns[0].content == clean


def test_stage_direction_only_turn_is_dropped() -> None:
    text = f"Background: {BG}\nBeethoven (speaking)\nYes.\nNeefe (speaking)\n(He leaves.)\n"
    text += "Ries (speaking)\nGone."
    dialogue = beethoven(text)
    assert [t.speaker for t in dialogue.turns] == ["Beethoven", "Ries"]
    assert dialogue.dropped_turns == 1


def test_only_the_main_character_thinks_and_same_speaker_turns_merge() -> None:
    text = (f"Background:\n{BG}\n\nNeefe (thinking)\nHe is brilliant.\n\n"
            "Beethoven (speaking)\nFirst part.\n\nBeethoven (speaking)\nSecond part.\n\n"
            "Neefe (speaking)\nAgain.\n\nNeefe (thinking)\nI must write to Bonn.\n")
    dialogue = beethoven(text)
    assert triples(dialogue) == [("Beethoven", "speaking", "First part.\nSecond part."),
                                 ("Neefe", "speaking", "Again.")]
    assert dialogue.dropped_turns == 2


def test_background_variants() -> None:
    labelled = f"Here it is.\n\n**Background:** {BG}\nIt is winter.\n\nBeethoven (speaking)\nYes."
    assert beethoven(labelled, min_turns=1).background == f"{BG}\nIt is winter."
    unlabelled = f"{BG}\n\nBeethoven (speaking)\nYes."
    assert beethoven(unlabelled, min_turns=1).background == BG
    bare = "Beethoven (speaking)\nYes.\nNeefe (speaking)\nNo."
    assert beethoven(bare, require_background=False).background == ""
    crlf = SEED_DIALOGUE.replace("\n", "\r\n")
    assert triples(beethoven(crlf)) == SEED_TURNS


def test_markdown_chat_style_answer() -> None:
    text = (
        "Sure! Here's a scene:\n\n## Background\n"
        "The year is 1802. Beethoven walks with Ries near Heiligenstadt.\n\n"
        "**Beethoven (thinking):** *I can no longer hear the flute...*\n\n"
        "**Ries (speaking):** \"Master, do you hear the shepherd's pipe?\"\n\n"
        "**Beethoven (speaking):** (pausing) \"No... I hear nothing.\"\n\n"
        "**Ries (speaking):** *looks away* I am sorry, master.\n"
    )
    dialogue = beethoven(text)
    assert dialogue.background == "The year is 1802. Beethoven walks with Ries near Heiligenstadt."
    assert triples(dialogue) == [
        ("Beethoven", "thinking", "I can no longer hear the flute..."),  # italics: the thought
        ("Ries", "speaking", "Master, do you hear the shepherd's pipe?"),
        ("Beethoven", "speaking", "No... I hear nothing."),
        ("Ries", "speaking", "I am sorry, master."),
    ]


def test_empty_trailing_turn_is_dropped_and_counted() -> None:
    dialogue = beethoven(SEED_DIALOGUE + "\nNeefe (speaking)\n")
    assert triples(dialogue) == SEED_TURNS
    assert dialogue.dropped_turns == 1


@pytest.mark.parametrize(
    ("text", "kwargs", "reason", "says"),
    [
        ("", {}, "empty", "blank"),
        ("\n \r\n", {}, "empty", "blank"),
        (f"Background: {BG}\nBeethoven sat at the piano and played.", {}, "invalid", "speaker"),
        ("Beethoven (speaking)\nYes.\nNeefe (speaking)\nNo.", {}, "no_background", "background"),
        (f"Background: {BG}\nBeethoven (speaking)\nYes.", {}, "too_short", "fewer than 2"),
        (SEED_DIALOGUE, {"min_turns": 5}, "too_short", "fewer than 5"),
        (f"Background: {BG}\nNeefe (speaking)\nYes.\nRies (speaking)\nNo.", {}, "invalid",
         "never speaks"),
        (f"Background: {BG}\nBeethoven (speaking)\nla la la la la\nNeefe (speaking)\n"
         "!!!! ???? ---- ####\nBeethoven (speaking)\nGood.", {}, "junk", "2 of 3"),
        ("Background: zzzz zzzz zzzz zzzz\nBeethoven (speaking)\nYes.\nNeefe (speaking)\nNo.",
         {}, "junk", "background"),
    ],
)
def test_dialogue_rejections(text: str, kwargs: dict[str, Any], reason: str, says: str) -> None:
    problem = rejection(beethoven, text, **kwargs)
    assert (problem.reason, says in problem.detail) == (reason, True), problem.detail


def test_render_round_trip() -> None:
    dialogue = beethoven(SEED_DIALOGUE)
    text = render_dialogue_text(dialogue)
    assert text.startswith(f"Background:\n{BG}\n\nBeethoven (speaking)\nNeefe, listen")
    assert beethoven(text) == dialogue


# ---------------------------------------------------------------- content checks


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("   \n\t ", "empty"),
        ("1234 5678 !!!", "no letters"),
        ("a12 b34 c56 d78 e90 f12 g34", "too few letters"),
        ("I am am am am here", "repeated"),
        (" ".join(["music", "is", "life"] * 15), "distinct"),
        ("I love the sea. " + "I will go to the river, and then " * 3 + "home.", "loop"),
        ("xkcd qwrtp zxcvb mnbvc plkjh", "non-words"),
    ],
)
def test_junk_reason_finds_junk(text: str, problem: str) -> None:
    found = junk_reason(text)
    assert found is not None and problem in found


@pytest.mark.parametrize(
    "text",
    [
        "Yes.",
        "Hmm.",
        "Mr. Newton, 1687?",
        "Ich bin Beethoven, und ich komme aus Bonn.",
        "我是贝多芬。我来自波恩。",
        # anaphora is rhetoric, not a loop
        "I never lost faith. I never lost faith in the power of nonviolence. I never lost "
        "faith in the power of love. And I never lost faith in the power of God.",
    ],
)
def test_junk_reason_passes_language(text: str) -> None:
    assert junk_reason(text) is None


def test_truncation_check() -> None:
    truncation_check(None)
    truncation_check("stop")
    problem = rejection(truncation_check, "length")
    assert problem.reason == "truncated"


# ---------------------------------------------------------------- JSON mode

TRAILING_COMMAS = """{"scenes": [
  {"type": "Chat (choice in chat, debate)", "location": " Bonn ",
   "background": "%s",},
],}""".replace("%s", SCENE_BG)
SCENE_ITEM = {"type": "Chat (choice in chat, debate)", "location": " Bonn ", "background": SCENE_BG}
EXPECTED_SCENE = Scene(type="Chat", location="Bonn", background=SCENE_BG)
DIALOGUE_JSON = {
    "background": BG,
    "turns": [
        {"speaker": "BEETHOVEN", "action": "speaking", "content": "(smiling) Come in."},
        {"speaker": "Neefe", "action": "thinking", "content": "He looks tired."},
        {"speaker": "Neefe", "action": "speaking", "content": '"You look tired."'},
        {"speaker": "Ludwig", "action": "(thinking)", "content": "I am."},
    ],
}
EXPECTED_TURNS = [("Beethoven", "speaking", "Come in."), ("Neefe", "speaking", "You look tired."),
                  ("Beethoven", "thinking", "I am.")]


@pytest.mark.parametrize(
    "text",
    [
        json.dumps({"scenes": [SCENE_ITEM]}),
        "```json\n" + json.dumps({"scenes": [SCENE_ITEM]}, indent=2) + "\n```",
        "Here you go:\n" + json.dumps({"scenes": [SCENE_ITEM]}) + "\nEnjoy!",
        TRAILING_COMMAS,
        json.dumps([SCENE_ITEM]),
    ],
)
def test_scenes_json_tolerances(text: str) -> None:
    assert parse_scenes_json(text) == [EXPECTED_SCENE]


@pytest.mark.parametrize(
    ("text", "reason", "says"),
    [
        ("", "empty", "blank"),
        ('{"scenes": []}', "empty", "no scenes"),
        ("{scenes: [", "invalid", "not valid JSON"),
        ('{"scene": []}', "invalid", "lacks scenes"),
        ('{"scenes": {"type": "Chat"}}', "invalid", "scenes must be an array"),
        ('{"scenes": ["Chat"]}', "invalid", "scenes[0] must be an object"),
        (json.dumps({"scenes": [SCENE_ITEM, {"type": "Chat", "location": "Bonn"}]}), "invalid",
         "scenes[1] lacks background"),
        (json.dumps({"scenes": [{**SCENE_ITEM, "location": 7}]}), "invalid",
         "scenes[0].location must be a string, not int"),
        (json.dumps({"scenes": [{**SCENE_ITEM, "background": "ok ok ok ok ok"}]}), "junk", "junk"),
        (json.dumps({"scenes": [{**SCENE_ITEM, "location": ""}]}), "invalid", "incomplete"),
        (json.dumps({"scenes": [SCENE_ITEM]}), "too_short", "fewer than 2"),
        ("[" * 5000 + "]" * 5000, "invalid", "JSON"),
    ],
)
def test_scenes_json_rejections(text: str, reason: str, says: str) -> None:
    problem = rejection(parse_scenes_json, text, min_scenes=2 if reason == "too_short" else 1)
    assert (problem.reason, says in problem.detail) == (reason, True), problem.detail


def test_dialogue_json_is_normalised_like_text() -> None:
    fenced = "```\n" + json.dumps(DIALOGUE_JSON) + "\n```"
    for text in (json.dumps(DIALOGUE_JSON), fenced, json.dumps(DIALOGUE_JSON, indent=2) + ",,"):
        dialogue = parse_dialogue_json(text, main_character="Beethoven",
                                       aliases=["Ludwig van Beethoven"])
        assert dialogue.background == BG
        assert triples(dialogue) == EXPECTED_TURNS
        assert dialogue.dropped_turns == 1  # Neefe may not think


def test_dialogue_json_trailing_commas() -> None:
    text = ('{"background": "BG", "turns": [{"speaker": "Beethoven", "action": "speaking", '
            '"content": "Yes.",}, {"speaker": "Neefe", "action": "speaking", "content": "No.",},],}'
            ).replace("BG", BG)
    assert triples(parse_dialogue_json(text, main_character="Beethoven")) == [
        ("Beethoven", "speaking", "Yes."), ("Neefe", "speaking", "No.")]


def _with_turn(**changes: Any) -> str:
    turns = [dict(t) for t in DIALOGUE_JSON["turns"]]
    turns[2].update(changes)
    return json.dumps({**DIALOGUE_JSON, "turns": turns})


@pytest.mark.parametrize(
    ("text", "reason", "says"),
    [
        ("   ", "empty", "blank"),
        ("not json at all", "invalid", "not valid JSON"),
        ('["background", "turns"]', "invalid", "must be an object"),
        (json.dumps({"turns": []}), "invalid", "lacks background"),
        (json.dumps({"background": BG, "turns": []}), "invalid", "turns is empty"),
        (json.dumps({"background": BG, "turns": "Beethoven: hi"}), "invalid", "turns must be"),
        (json.dumps({"background": 3, "turns": []}), "invalid", "background must be a string"),
        (_with_turn(action="shouting"), "invalid", "turns[2].action must be thinking or speaking"),
        (_with_turn(content=None), "invalid", "turns[2].content must be a string, not NoneType"),
        (_with_turn(speaker="  "), "invalid", "turns[2].speaker is empty"),
        (json.dumps({k: v for k, v in DIALOGUE_JSON.items()} | {"background": ""}),
         "no_background", "background"),
    ],
)
def test_dialogue_json_rejections(text: str, reason: str, says: str) -> None:
    problem = rejection(parse_dialogue_json, text, main_character="Beethoven")
    assert (problem.reason, says in problem.detail) == (reason, True), problem.detail


def _object_schemas(schema: dict[str, Any]) -> list[dict[str, Any]]:
    found = [schema] if schema.get("type") == "object" else []
    for child in schema.get("properties", {}).values():
        found += _object_schemas(child)
    return found + (_object_schemas(schema["items"]) if "items" in schema else [])


@pytest.mark.parametrize(("name", "schema", "objects"),
                         [("scenes", SCENES_SCHEMA, 2), ("dialogue", DIALOGUE_SCHEMA, 2)])
def test_schemas_are_strict_json_schema(name: str, schema: dict[str, Any], objects: int) -> None:
    json.dumps(schema)
    found = _object_schemas(schema)
    assert len(found) == objects
    for obj in found:
        assert sorted(obj["required"]) == sorted(obj["properties"])
        assert obj["additionalProperties"] is False
        for prop in obj["properties"].values():
            assert prop["type"] in {"string", "array", "object"}
    fmt = response_format_for(name)
    assert fmt == {"type": "json_schema",
                   "json_schema": {"name": name, "schema": schema, "strict": True}}
    fmt["json_schema"]["schema"]["required"].append("x")
    assert "x" not in schema["required"]


def test_schema_shapes_and_unknown_name() -> None:
    scene = SCENES_SCHEMA["properties"]["scenes"]["items"]["properties"]
    assert set(scene) == {"type", "location", "background"}
    turn = DIALOGUE_SCHEMA["properties"]["turns"]["items"]["properties"]
    assert set(turn) == {"speaker", "action", "content"}
    assert turn["action"]["enum"] == ["thinking", "speaking"]
    with pytest.raises(ValueError, match="unknown schema"):
        response_format_for("poems")


# ---------------------------------------------------------------- shared interviews

TAG_IN_CONTENT = re.compile(r"[(\[]\s*(speaking|thinking)\s*[)\]]", re.IGNORECASE)
ING_DIRECTION = re.compile(r"\([a-z]+ing\)")  # "(laughing)": a stage direction, removed


def _normalise(content: str) -> str:
    return "\n".join(" ".join(line.split()) for line in content.split("\n") if line.strip())


def _merged(turns: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    merged: list[tuple[str, str, str]] = []
    for speaker, action, content in turns:
        if merged and merged[-1][:2] == (speaker, action):
            merged[-1] = (speaker, action, f"{merged[-1][2]}\n{content}")
        else:
            merged.append((speaker, action, content))
    return merged


def _render(turns: list[tuple[str, str, str]], one_line: bool) -> str:
    sep = ": " if one_line else "\n"
    body = "\n\n".join(f"{who} ({action}){sep}{content}" for who, action, content in turns)
    return f"Background:\nAn interview in a quiet study.\n\n{body}\n"


@pytest.mark.skipif(not INTERVIEW_FILES, reason="the shared interview outputs are absent")
@pytest.mark.parametrize("path", INTERVIEW_FILES, ids=lambda p: p.parent.name)
def test_shared_interviews_read_back(path: Path) -> None:
    checked = turns_checked = ambiguous = with_junk = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        turns = [(said["role"], said["action"].strip("()"), said["content"])
                 for turn in record["content"] for said in turn["turn_content"]]
        main = next(said["role"] for turn in record["content"] if turn["turn_role"] == "character"
                    for said in turn["turn_content"])
        if any(TAG_IN_CONTENT.search(c) or ING_DIRECTION.search(c) for _, _, c in turns):
            ambiguous += 1  # speaker tags or stage directions inside the words: not literal
            continue
        junk = sum(junk_reason(c) is not None for _, _, c in turns)
        for one_line in (False, True):
            text = _render(turns, one_line)
            if junk:
                try:
                    dialogue = parse_dialogue_text(text, main_character=main)
                    assert dialogue.dropped_turns == junk
                except Rejected as problem:
                    assert problem.reason in {"junk", "invalid"}
                continue
            dialogue = parse_dialogue_text(text, main_character=main)
            expected = _merged([(who, action, _normalise(c)) for who, action, c in turns])
            assert triples(dialogue) == expected, (record["qid"], one_line)
            assert dialogue.background == "An interview in a quiet study."
            assert dialogue.dropped_turns == 0
        with_junk += bool(junk)
        checked += not junk
        turns_checked += 0 if junk else len(turns)
    print(f"{path.parent.name}: {checked} dialogues / {turns_checked} turns read back exactly "
          f"in 2 styles; {with_junk} with junk turns, {ambiguous} ambiguous")
    assert checked >= 0.9 * (checked + ambiguous + with_junk) and turns_checked > 0


# ---------------------------------------------------------------- fuzz

PIECES = ["Scene 1:", "Type:", "Location:", "Background:", "(speaking)", "(thinking)", "**",
          "Beethoven", "NEEFE", ":", "\n", "\r\n", "\n\n", " ", "(", ")", "[", "]", "{", "}",
          '"', "“", "*", ",", "scenes", "turns", "speaker", "action", "content", "```", "1.",
          "la", "é", "贝", "\x00", "\t", "-", "#", "the sea is calm tonight"]


def _valid_outputs() -> list[str]:
    scenes = (f"Scene 1:\nType: Chat\nLocation: Bonn\nBackground: {SCENE_BG}\n\n"
              f"**Scene 2:** Type: Speech Location: Vienna Background: {SCENE_BG}\n")
    return [SEED_DIALOGUE, scenes, json.dumps(DIALOGUE_JSON, indent=1),
            json.dumps({"scenes": [SCENE_ITEM, SCENE_ITEM]}), render_dialogue_text(
                beethoven(SEED_DIALOGUE))]


def _parse_everything(text: str) -> None:
    calls = [
        lambda: parse_scenes_text(text),
        lambda: parse_scenes_json(text),
        lambda: beethoven(text),
        lambda: beethoven(text, require_background=False, min_turns=1),
        lambda: parse_dialogue_json(text, main_character="Beethoven"),
    ]
    for call in calls:
        try:
            result = call()
        except Rejected as problem:
            assert problem.reason in REASONS and "\n" not in problem.detail
        else:
            assert isinstance(result, Dialogue | list)


def test_fuzz_only_ever_rejected() -> None:
    rng = random.Random(0)
    outputs = _valid_outputs()
    for case in range(2400):
        kind = case % 3
        if kind == 0:
            text = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 60)))
        elif kind == 1:
            source = rng.choice(outputs)
            start = rng.randint(0, len(source))
            text = source[start : rng.randint(start, len(source))]
        else:
            text = "".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(0, 80)))
        _parse_everything(text)
