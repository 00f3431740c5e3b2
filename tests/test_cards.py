"""Character Card V2: JSON and PNG, both round trips, and every bad input."""

from __future__ import annotations

import base64
import copy
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, PngImagePlugin

from charforge.character import Character, Passage, Stage
from charforge.errors import CharacterFormatError
from charforge.importers.card import (
    card_from_character,
    character_from_card,
    read_card_json,
    read_card_png,
    write_card_json,
    write_card_png,
)

from conftest import assert_format_error


def rich_card() -> dict[str, Any]:
    """A card as SillyTavern might write it, with odd whitespace everywhere."""
    return {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {
            "name": "  Hermione Granger ",
            "description": "Clever witch.\r\n\r\n\n  Muggle-born, sorted into Gryffindor.  \n\n\n",
            "personality": "bossy, loyal",
            "scenario": "Hogwarts library, 1992.",
            "first_mes": "*looks up* Have you even *read* the book?",
            "mes_example": "<START>\n{{user}}: Hi\n{{char}}: Hello.  \n<START>\n\n<START>\n"
                           "{{char}}: It's Levi-O-sa!\n",
            "creator_notes": "for testing",
            "system_prompt": "",
            "post_history_instructions": "Stay in character.",
            "alternate_greetings": ["Oh, it's you.", "*sighs*"],
            "character_book": {
                "name": "Wizarding world",
                "scan_depth": 4,
                "extensions": {"world": True},
                "entries": [
                    {"keys": ["Hogwarts"], "content": " A school of magic. ", "extensions": {},
                     "enabled": True, "insertion_order": 0, "id": 7, "comment": "school"},
                    {"keys": ["empty"], "content": "   ", "extensions": {},
                     "enabled": False, "insertion_order": 1},
                    {"keys": ["SPEW"], "content": "Society for the Promotion of Elfish Welfare.",
                     "extensions": {"depth": 2}, "enabled": True, "insertion_order": 2},
                ],
            },
            "tags": ["harry potter", "witch"],
            "creator": "someone",
            "character_version": "1.2",
            "extensions": {"talkativeness": "0.5", "depth_prompt": {"depth": 4}},
        },
    }


def staged_character() -> Character:
    return Character(
        name="Harry James Potter",
        short_name="Harry",
        profile=["The boy who lived.", "A Gryffindor seeker."],
        knowledge=[
            Passage(text="Lives under the stairs.", stage="early"),
            Passage(text="Marries Ginny.", stage="late"),
            Passage(text="Has a scar."),
        ],
        style=[Passage(text="I'm not going anywhere.", stage="early"),
               Passage(text="Expelliarmus!", stage="late")],
        stages=[Stage(label="early", token="<TIME-I>", description="first years"),
                Stage(label="late", token="<TIME-II>")],
        metadata={"source_format": "persllm"},
    )


def without_metadata(character: Character) -> dict[str, Any]:
    return character.model_dump(exclude={"metadata"})


def png_text_chunks(path: Path) -> list[tuple[str, bytes]]:
    """(keyword, text) of every tEXt chunk, read independently of charforge."""
    data, offset, found = path.read_bytes(), 8, []
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"tEXt":
            keyword, _, text = body.partition(b"\0")
            found.append((keyword.decode("latin-1"), text))
        offset += 12 + length
    return found


# -- mapping ------------------------------------------------------------------------
def test_card_maps_onto_character() -> None:
    character = character_from_card(rich_card(), source="card.json")
    assert character.name == "Hermione Granger"
    assert character.short_name == "Granger"
    assert character.profile == ["Clever witch.", "Muggle-born, sorted into Gryffindor."]
    assert [p.text for p in character.knowledge] == [
        "A school of magic.", "Society for the Promotion of Elfish Welfare.",
    ]
    assert [p.text for p in character.style] == [
        "{{user}}: Hi\n{{char}}: Hello.", "{{char}}: It's Levi-O-sa!",
    ]
    assert character.metadata["source_format"] == "card-v2"
    assert character.metadata["card"] == rich_card()


def test_v1_card_is_read_as_data_and_exported_as_v2() -> None:
    v1 = {"name": "Luna Lovegood", "description": "Dreamy.", "personality": "odd",
          "scenario": "", "first_mes": "Hello.", "mes_example": "<START>\nNargles."}
    character = character_from_card(v1, source="luna.json")
    assert (character.name, character.short_name) == ("Luna Lovegood", "Lovegood")
    assert character.metadata["source_format"] == "card-v1"
    card = card_from_character(character)
    assert card["spec"] == "chara_card_v2"
    assert {key: card["data"][key] for key in v1} == v1
    assert card["data"]["tags"] == [] and card["data"]["alternate_greetings"] == []


# -- card -> charforge -> card --------------------------------------------------------
def test_card_round_trip_loses_nothing() -> None:
    original = rich_card()
    assert card_from_character(character_from_card(original, source="x")) == original


def test_card_json_file_round_trip(tmp_path: Path) -> None:
    source = tmp_path / "hermione.json"
    source.write_text(json.dumps(rich_card(), indent=4), encoding="utf-8")
    character = read_card_json(source)
    write_card_json(character, tmp_path / "out.json")
    text = (tmp_path / "out.json").read_text(encoding="utf-8")
    assert json.loads(text) == rich_card()
    assert '"name": "  Hermione Granger ",' in text  # indent 2, original text kept


def test_edited_fields_are_written_and_the_rest_kept() -> None:
    character = character_from_card(rich_card(), source="x")
    edited = character.model_copy(update={
        "profile": ["Clever witch.", "Head Girl."],
        "knowledge": [character.knowledge[1], Passage(text="Crookshanks is her cat.")],
    })
    card = card_from_character(edited)
    data, original = card["data"], rich_card()["data"]
    assert data["description"] == "Clever witch.\n\nHead Girl."
    assert data["name"] == original["name"] and data["mes_example"] == original["mes_example"]
    for key in ("personality", "first_mes", "alternate_greetings", "tags", "extensions"):
        assert data[key] == original[key]
    book = data["character_book"]
    assert (book["name"], book["scan_depth"]) == ("Wizarding world", 4)
    assert book["entries"][0] == original["character_book"]["entries"][2]  # reused as it was
    assert book["entries"][1]["content"] == "Crookshanks is her cat."
    assert book["entries"][1]["id"] == 8
    assert character_from_card(card, source="y").knowledge == edited.knowledge


def test_sillytavern_top_level_copies_follow_edits() -> None:
    original = rich_card()
    original.update(name=original["data"]["name"], description=original["data"]["description"],
                    personality="bossy, loyal")
    character = character_from_card(original, source="x")
    assert card_from_character(character) == original
    card = card_from_character(character.model_copy(update={"profile": ["Changed."]}))
    assert card["description"] == card["data"]["description"] == "Changed."
    assert card["personality"] == "bossy, loyal"


def test_charforge_card_round_trip_keeps_its_extension_as_is() -> None:
    card = card_from_character(staged_character())
    card["data"]["extensions"]["charforge"]["note"] = "kept"
    card["data"]["extensions"]["charforge"]["stages"][0]["description"] = "  first years "
    assert card_from_character(character_from_card(card, source="x")) == card


def test_short_name_and_stages_go_to_extensions_when_needed() -> None:
    character = character_from_card(rich_card(), source="x")
    card = card_from_character(character.model_copy(update={"short_name": "Hermione"}))
    assert card["data"]["extensions"]["charforge"]["short_name"] == "Hermione"
    assert card["data"]["extensions"]["talkativeness"] == "0.5"
    assert character_from_card(card, source="y").short_name == "Hermione"


# -- charforge -> card -> charforge ---------------------------------------------------
def test_character_round_trip_keeps_stages_and_passages(tmp_path: Path) -> None:
    character = staged_character()
    write_card_json(character, tmp_path / "harry.json")
    back = read_card_json(tmp_path / "harry.json")
    assert without_metadata(back) == without_metadata(character)
    assert back.metadata["source_format"] == "card-v2"


def test_fresh_card_has_sensible_fields() -> None:
    card = card_from_character(staged_character())
    data = card["data"]
    assert (card["spec"], card["spec_version"]) == ("chara_card_v2", "2.0")
    assert data["name"] == "Harry James Potter"
    assert data["description"] == "The boy who lived.\n\nA Gryffindor seeker."
    assert data["mes_example"] == "<START>\nI'm not going anywhere.\n<START>\nExpelliarmus!"
    assert [e["content"] for e in data["character_book"]["entries"]] == [
        "Lives under the stairs.", "Marries Ginny.", "Has a scar.",
    ]
    assert all(e["enabled"] and e["keys"] == [] for e in data["character_book"]["entries"])
    for key in ("personality", "scenario", "first_mes", "creator_notes", "system_prompt",
                "post_history_instructions", "creator", "character_version"):
        assert data[key] == ""
    assert data["tags"] == [] and data["alternate_greetings"] == []
    extension = data["extensions"]["charforge"]
    assert extension["short_name"] == "Harry"
    assert extension["stages"][0] == {"label": "early", "token": "<TIME-I>",
                                      "description": "first years"}
    assert extension["knowledge"][1] == {"text": "Marries Ginny.", "stage": "late"}


def test_card_edited_elsewhere_wins_over_stale_extension() -> None:
    card = card_from_character(staged_character())
    card["data"]["character_book"]["entries"].pop(0)
    card["data"]["mes_example"] = "<START>\nSomething new."
    character = character_from_card(card, source="x")
    assert character.knowledge == [Passage(text="Marries Ginny."), Passage(text="Has a scar.")]
    assert character.style == [Passage(text="Something new.")]
    assert character.short_name == "Harry"
    assert [s.label for s in character.stages] == ["early", "late"]


# -- PNG ------------------------------------------------------------------------------
def test_png_without_avatar_is_a_valid_image(tmp_path: Path) -> None:
    path = tmp_path / "harry.png"
    write_card_png(staged_character(), path, avatar=None)
    with Image.open(path) as image:
        image.load()
        assert image.size == (256, 256)
    assert [keyword for keyword, _ in png_text_chunks(path)] == ["chara"]
    card = json.loads(base64.b64decode(png_text_chunks(path)[0][1]))
    assert card == card_from_character(staged_character())
    character, avatar = read_card_png(path)
    assert without_metadata(character) == without_metadata(staged_character())
    assert avatar == path.read_bytes()


def test_png_card_round_trip_replaces_the_chunk(tmp_path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "drawn by hand")
    info.add_text("chara", base64.b64encode(json.dumps(rich_card()).encode()).decode())
    Image.new("RGBA", (40, 30), (200, 10, 10, 255)).save(tmp_path / "in.png", pnginfo=info)
    character, avatar = read_card_png(tmp_path / "in.png")
    assert character.name == "Hermione Granger"
    write_card_png(character, tmp_path / "out.png", avatar=avatar)
    chunks = png_text_chunks(tmp_path / "out.png")
    assert [keyword for keyword, _ in chunks] == ["Comment", "chara"]
    assert json.loads(base64.b64decode(chunks[1][1])) == rich_card()
    with Image.open(tmp_path / "out.png") as image:
        image.load()
        assert (image.size, image.getpixel((0, 0))) == ((40, 30), (200, 10, 10, 255))
    edited = character.model_copy(update={"profile": ["Edited."]})
    write_card_png(edited, tmp_path / "out.png", avatar=(tmp_path / "out.png").read_bytes())
    assert [keyword for keyword, _ in png_text_chunks(tmp_path / "out.png")] == [
        "Comment", "chara",
    ]
    assert read_card_png(tmp_path / "out.png")[0].profile == ["Edited."]


def test_png_with_only_ccv3_is_read(tmp_path: Path) -> None:
    v3 = copy.deepcopy(rich_card())
    v3.update(spec="chara_card_v3", spec_version="3.0")
    info = PngImagePlugin.PngInfo()
    info.add_text("ccv3", base64.b64encode(json.dumps(v3).encode()).decode())
    Image.new("RGB", (8, 8)).save(tmp_path / "v3.png", pnginfo=info)
    character, _ = read_card_png(tmp_path / "v3.png")
    assert character.metadata["source_format"] == "card-v3"
    write_card_png(character, tmp_path / "out.png", avatar=None)
    assert [k for k, _ in png_text_chunks(tmp_path / "out.png")] == ["chara", "ccv3"]


# -- bad input ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\xff\xfe{}", "not UTF-8 text"),
        (b'{"spec": "chara_card_v2",\n "data": {"name": "x",}}', "invalid card JSON: "
         "Expecting property name enclosed in double quotes (line 2, column 23)"),
        (b"", "invalid card JSON: Expecting value (line 1, column 1)"),
        (b"[1, 2]", "not a Character Card (no data.name)"),
        (b'{"spec": "chara_card_v2", "data": {"description": "no name"}}',
         "not a Character Card (no data.name)"),
        (b'{"spec": "chara_card_v2", "data": "Hermione"}', "not a Character Card (no data.name)"),
        (b'{"description": "a V1 card without a name"}', "not a Character Card (no data.name)"),
        (b'{"data": {"name": "H", "description": 3}}', "data.description is not text"),
        (b'{"data": {"name": "H", "character_book": {"entries": {}}}}',
         "character_book.entries is not a list"),
        (b'{"data": {"name": "H", "extensions": {"charforge": {"stages": [1]}}}}',
         "invalid data.extensions.charforge"),
    ],
    ids=["latin-1", "trailing-comma", "empty", "list", "no-name", "data-not-object", "v1-no-name",
         "description-number", "entries-not-list", "bad-extension"],
)
def test_bad_card_json(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "card.json"
    path.write_bytes(content)
    with pytest.raises(CharacterFormatError) as excinfo:
        read_card_json(path)
    assert_format_error(excinfo, path, problem)


def png_with(chunks: list[tuple[bytes, bytes]]) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\0\0")
    parts = [(b"IHDR", header), *chunks, (b"IDAT", pixels), (b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunk(kind, body) for kind, body in parts)


GOOD_PNG = png_with([(b"tEXt", b"chara\0" + base64.b64encode(b'{"name": "H"}'))])


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"name": "H"}', "not a PNG file"),
        (png_with([(b"tEXt", b"Comment\0hello")]),
         "PNG has no character card (no 'chara' tEXt chunk)"),
        (png_with([(b"tEXt", b"chara\0not base64!")]), "'chara' chunk is not valid base64"),
        (png_with([(b"tEXt", b"chara\0" + base64.b64encode(b"\xff\xfe"))]),
         "'chara' chunk is not UTF-8 text"),
        (png_with([(b"tEXt", b"chara\0" + base64.b64encode(b"{oops"))]),
         "'chara' chunk holds invalid card JSON: Expecting property name"),
        (png_with([(b"tEXt", b"chara\0" + base64.b64encode(b'{"tags": []}'))]),
         "not a Character Card (no data.name)"),
        (GOOD_PNG[:45], "truncated PNG (chunk 'tEXt' runs past the end of the file)"),
        (GOOD_PNG[:-12], "truncated PNG (it ends before the IEND chunk)"),
        (GOOD_PNG[:45] + b"X" + GOOD_PNG[46:], "corrupt PNG (chunk 'tEXt' fails its CRC check)"),
    ],
    ids=["json-not-png", "no-card-chunk", "bad-base64", "not-utf8", "bad-json", "no-name",
         "truncated-chunk", "no-iend", "bad-crc"],
)
def test_bad_card_png(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "card.png"
    path.write_bytes(content)
    with pytest.raises(CharacterFormatError) as excinfo:
        read_card_png(path)
    assert_format_error(excinfo, path, problem)


def test_good_png_fixture_reads(tmp_path: Path) -> None:
    (tmp_path / "card.png").write_bytes(GOOD_PNG)
    assert read_card_png(tmp_path / "card.png")[0].name == "H"


def test_missing_card_files(tmp_path: Path) -> None:
    for reader, name in ((read_card_json, "gone.json"), (read_card_png, "gone.png")):
        with pytest.raises(CharacterFormatError) as excinfo:
            reader(tmp_path / name)
        assert_format_error(excinfo, tmp_path / name, "file not found")


def test_bad_avatar_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    with pytest.raises(CharacterFormatError) as excinfo:
        write_card_png(staged_character(), target, avatar=b"GIF89a not a png")
    assert_format_error(excinfo, target, "not a PNG file")
    assert not target.exists()
