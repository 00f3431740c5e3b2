"""Importers for the Character-LLM wiki profile and PersLLM files, and the dispatcher."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from charforge.character import STAGE_TOKENS, Character, Passage, Stage
from charforge.demo import demo_file
from charforge.errors import CharacterFormatError
from charforge.importers import load_character_file
from charforge.importers.common import stage_token
from charforge.importers.persllm import read_persllm, read_persllm_folder
from charforge.importers.wiki import read_wiki_profile

from conftest import SHARED, assert_format_error

BEETHOVEN = demo_file("wiki_Beethoven.txt")  # the copy shipped inside the package
PROFILES_DIR = SHARED / "data/character-llm/seed_data/profiles"
PROFILES = sorted(PROFILES_DIR.glob("wiki_*.txt")) if PROFILES_DIR.is_dir() else []


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# -- wiki profiles ------------------------------------------------------------------
def test_wiki_beethoven_shipped_copy() -> None:
    character = read_wiki_profile(BEETHOVEN)
    assert character.name == "Ludwig van Beethoven"
    assert character.short_name == "Beethoven"
    assert len(character.profile) == 59
    assert character.profile[0].startswith("Ludwig van Beethoven (baptised")
    assert character.profile[-1].endswith("Schubert.")
    assert character.metadata == {"source_format": "character-llm-wiki"}
    assert character.stages == [] and character.knowledge == [] and character.style == []


@pytest.mark.parametrize("path", PROFILES, ids=lambda path: path.name)
def test_wiki_every_character_llm_profile(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    title, body = text.split("\n", 1)
    expected = [part.strip() for part in re.split(r"\n\s*\n", body) if part.strip()]
    character = read_wiki_profile(path)
    assert character.name == title.removeprefix("# ").strip()
    assert character.short_name == path.stem.removeprefix("wiki_")
    assert character.profile == expected
    assert len(character.profile) > 10


def test_wiki_short_name_argument_and_last_word(tmp_path: Path) -> None:
    path = write(tmp_path / "profile.txt", "# Isaac Newton\n\nA physicist.\n")
    assert read_wiki_profile(path).short_name == "Newton"
    assert read_wiki_profile(path, short_name="Sir Isaac").short_name == "Sir Isaac"
    path = write(tmp_path / "king.txt", "# Martin Luther King Jr.\n\nA minister.\n")
    assert read_wiki_profile(path).short_name == "King"


def test_wiki_bom_crlf_and_extra_blank_lines(tmp_path: Path) -> None:
    text = (
        "\r\n\r\n# Ada Lovelace\r\n\r\n"
        "First  paragraph,\r\nsecond line.\r\n\r\n \r\n\r\nLast one.  \r\n"
    )
    path = write(tmp_path / "wiki_Ada.txt", b"\xef\xbb\xbf" + text.encode("utf-8"))
    character = read_wiki_profile(path)
    assert character.name == "Ada Lovelace"
    assert character.short_name == "Ada"
    assert character.profile == ["First  paragraph,\nsecond line.", "Last one."]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\xff\xfe# N\x00a\x00", "not UTF-8 text"),
        (b"Ludwig van Beethoven\n\nA composer.\n", "first line must be '# Full Name'"),
        (b"## Life and career\n\nA composer.\n", "first line must be '# Full Name'"),
        (b"#\n\nA composer.\n", "first line must be '# Full Name'"),
        (b"# Ludwig van Beethoven\n\n  \n\n", "profile is empty"),
        (b"\n\n  \n", "file is empty"),
    ],
    ids=["utf-16", "no-title", "section-title", "blank-title", "no-paragraphs", "blank-file"],
)
def test_wiki_bad_files(tmp_path: Path, content: bytes, problem: str) -> None:
    path = write(tmp_path / "wiki_Bad.txt", content)
    with pytest.raises(CharacterFormatError) as excinfo:
        read_wiki_profile(path)
    assert_format_error(excinfo, path, problem)


def test_wiki_missing_file_and_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(CharacterFormatError) as excinfo:
        read_wiki_profile(missing)
    assert_format_error(excinfo, missing, "file not found")
    with pytest.raises(CharacterFormatError) as excinfo:
        read_wiki_profile(tmp_path)
    assert_format_error(excinfo, tmp_path, "is a folder")


# -- PersLLM ------------------------------------------------------------------------
KNOWLEDGE = (
    "【Harry Potter and the Philosopher's Stone】  Harry lives under the stairs.\n"
    "\n"
    "   \n"
    "Hogwarts is a school of magic.\r\n"
    "【Chapter 2】\n"
)
STYLE = "【Dialogue】\u3000I'm not going anywhere.\n\nWhat's Quidditch?\n"


def test_stage_tokens_are_one_reserved_set() -> None:
    assert [stage_token(n) for n in (1, 2, 3, 4, 5)] == list(STAGE_TOKENS)
    with pytest.raises(CharacterFormatError, match="reserves 5 stage tokens"):
        stage_token(6)
    with pytest.raises(ValueError, match="not a stage token"):
        Stage(label="late", token="<LATE>")


def test_persllm_files_strip_tags_and_blank_lines(tmp_path: Path) -> None:
    knowledge = write(tmp_path / "k.txt", KNOWLEDGE)
    style = write(tmp_path / "s.txt", STYLE)
    character = read_persllm(knowledge, style, name="Harry Potter")
    assert character.name == "Harry Potter"
    assert character.short_name == "Potter"
    assert character.knowledge == [
        Passage(text="Harry lives under the stairs."),
        Passage(text="Hogwarts is a school of magic."),
    ]
    assert character.style == [
        Passage(text="I'm not going anywhere."),
        Passage(text="What's Quidditch?"),
    ]
    assert character.stages == []
    assert character.metadata == {"source_format": "persllm"}


def test_persllm_files_with_stage(tmp_path: Path) -> None:
    knowledge = write(tmp_path / "k.txt", KNOWLEDGE)
    style = write(tmp_path / "s.txt", "")
    character = read_persllm(knowledge, style, name="Harry Potter", short_name="Harry",
                             stage="early")
    assert character.short_name == "Harry"
    assert character.stages == [Stage(label="early", token="<TIME-I>")]
    assert {passage.stage for passage in character.knowledge} == {"early"}
    assert character.style == []


def test_persllm_files_errors(tmp_path: Path) -> None:
    knowledge = write(tmp_path / "k.txt", "\n【tag only】\n \n")
    style = write(tmp_path / "s.txt", "")
    with pytest.raises(CharacterFormatError) as excinfo:
        read_persllm(knowledge, style, name="Harry Potter")
    assert_format_error(excinfo, knowledge, "no passages in knowledge or style file")
    with pytest.raises(CharacterFormatError) as excinfo:
        read_persllm(knowledge, style, name="  ")
    assert_format_error(excinfo, knowledge, "carry no name; pass --name")
    missing = tmp_path / "missing_style.txt"
    with pytest.raises(CharacterFormatError) as excinfo:
        read_persllm(knowledge, missing, name="Harry Potter")
    assert_format_error(excinfo, missing, "file not found")
    latin1 = write(tmp_path / "latin1.txt", "Caf\xe9".encode("latin-1"))
    with pytest.raises(CharacterFormatError) as excinfo:
        read_persllm(latin1, style, name="Harry Potter")
    assert_format_error(excinfo, latin1, "not UTF-8 text")


def test_persllm_folder_without_stages(tmp_path: Path) -> None:
    write(tmp_path / "harry" / "knowledge.txt", KNOWLEDGE)
    write(tmp_path / "harry" / "style.txt", STYLE)
    character = read_persllm_folder(tmp_path / "harry", name="Harry Potter")
    assert character.knowledge[0].text == "Harry lives under the stairs."
    assert len(character.style) == 2
    assert character.stages == []
    assert all(p.stage is None for p in [*character.knowledge, *character.style])


def test_persllm_folder_stages_in_life_order(tmp_path: Path) -> None:
    folder = tmp_path / "harry"
    for label in ("late", "epilogue", "early", "middle", "afterlife"):
        write(folder / f"{label}_knowledge.txt", f"【{label}】 {label} fact\n\n")
        write(folder / f"{label}_style.txt", f"{label} line one\n{label} line two\n")
    write(folder / "notes.md", "not a PersLLM file")
    character = read_persllm_folder(folder, name="Harry Potter", short_name="Harry")
    assert [(s.label, s.token) for s in character.stages] == [
        ("early", "<TIME-I>"), ("middle", "<TIME-II>"), ("late", "<TIME-III>"),
        ("afterlife", "<TIME-IV>"), ("epilogue", "<TIME-V>"),
    ]
    assert [(p.text, p.stage) for p in character.knowledge][:2] == [
        ("early fact", "early"), ("middle fact", "middle"),
    ]
    assert [p.stage for p in character.style][:4] == ["early", "early", "middle", "middle"]
    assert character.stage("late").token == "<TIME-III>"


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ({"early_knowledge.txt": "a", "early_style.txt": "b", "late_knowledge.txt": "c"},
         "stage 'late' has no late_style.txt"),
        ({"knowledge.txt": "a"}, "has knowledge.txt but no style.txt"),
        ({"knowledge.txt": "a", "style.txt": "b", "early_knowledge.txt": "c",
          "early_style.txt": "d"}, "keep one layout"),
        ({"readme.md": "hello"}, "no PersLLM files"),
        ({}, "no PersLLM files"),
        ({"knowledge.txt": "\n", "style.txt": "【x】\n"}, "no passages"),
    ],
    ids=["stage-without-style", "no-style", "mixed-layouts", "other-files", "empty", "blank"],
)
def test_persllm_folder_errors(tmp_path: Path, files: dict[str, str], problem: str) -> None:
    folder = tmp_path / "persona"
    folder.mkdir()
    for file_name, text in files.items():
        write(folder / file_name, text)
    with pytest.raises(CharacterFormatError) as excinfo:
        read_persllm_folder(folder, name="Someone Else")
    assert_format_error(excinfo, folder, problem)


def test_persllm_folder_missing(tmp_path: Path) -> None:
    with pytest.raises(CharacterFormatError) as excinfo:
        read_persllm_folder(tmp_path / "gone", name="Harry Potter")
    assert_format_error(excinfo, tmp_path / "gone", "folder not found")


# -- the dispatcher -----------------------------------------------------------------
def test_load_wiki_with_overrides(tmp_path: Path) -> None:
    path = write(tmp_path / "wiki_Ada.txt", "# Ada Lovelace\n\nA mathematician.\n")
    character, avatar = load_character_file(path)
    assert (character.name, character.short_name, avatar) == ("Ada Lovelace", "Ada", None)
    character, _ = load_character_file(path, name="Augusta Ada King", short_name="Lovelace")
    assert (character.name, character.short_name) == ("Augusta Ada King", "Lovelace")
    assert character.profile == ["A mathematician."]


def test_load_persllm_folder_and_files(tmp_path: Path) -> None:
    write(tmp_path / "harry" / "knowledge.txt", KNOWLEDGE)
    write(tmp_path / "harry" / "style.txt", STYLE)
    character, avatar = load_character_file(tmp_path / "harry", name="Harry Potter")
    assert avatar is None and len(character.knowledge) == 2
    character, _ = load_character_file(
        tmp_path / "harry" / "knowledge.txt", style=tmp_path / "harry" / "style.txt",
        name="Harry Potter", short_name="Harry",
    )
    assert (character.short_name, len(character.style)) == ("Harry", 2)


def test_load_persllm_needs_name(tmp_path: Path) -> None:
    write(tmp_path / "harry" / "knowledge.txt", KNOWLEDGE)
    write(tmp_path / "harry" / "style.txt", STYLE)
    with pytest.raises(CharacterFormatError) as excinfo:
        load_character_file(tmp_path / "harry")
    assert_format_error(excinfo, tmp_path / "harry", "PersLLM files carry no name; pass --name")
    knowledge = tmp_path / "harry" / "knowledge.txt"
    with pytest.raises(CharacterFormatError) as excinfo:
        load_character_file(knowledge, style=tmp_path / "harry" / "style.txt")
    assert_format_error(excinfo, knowledge, "PersLLM files carry no name; pass --name")
    with pytest.raises(CharacterFormatError) as excinfo:
        load_character_file(knowledge, fmt="persllm", name="Harry Potter")
    assert_format_error(excinfo, knowledge, "pass --style")


def test_load_cards_by_suffix_and_by_fmt(tmp_path: Path) -> None:
    from charforge.importers.card import write_card_json, write_card_png

    character = Character(name="Ada Lovelace", short_name="Ada", profile=["A mathematician."])
    write_card_json(character, tmp_path / "ada.json")
    write_card_png(character, tmp_path / "ada.png", avatar=None)
    (tmp_path / "ada.card").write_bytes((tmp_path / "ada.png").read_bytes())
    from_json, avatar = load_character_file(tmp_path / "ada.json")
    assert (from_json.name, from_json.short_name, avatar) == ("Ada Lovelace", "Ada", None)
    from_png, avatar = load_character_file(tmp_path / "ada.png", short_name="Countess")
    assert from_png.short_name == "Countess"
    assert avatar == (tmp_path / "ada.png").read_bytes()
    sniffed, avatar = load_character_file(tmp_path / "ada.card", fmt="card")
    assert sniffed.profile == ["A mathematician."] and avatar is not None


def test_load_bad_arguments(tmp_path: Path) -> None:
    path = write(tmp_path / "wiki_Ada.txt", "# Ada Lovelace\n\nA mathematician.\n")
    with pytest.raises(CharacterFormatError) as excinfo:
        load_character_file(path, fmt="yaml")
    assert_format_error(excinfo, path, "unknown format 'yaml'")
    with pytest.raises(CharacterFormatError) as excinfo:
        load_character_file(path, fmt="wiki", style=path)
    assert_format_error(excinfo, path, "--style applies only to a PersLLM knowledge file")
    with pytest.raises(CharacterFormatError) as excinfo:
        load_character_file(tmp_path / "absent.json")
    assert_format_error(excinfo, tmp_path / "absent.json", "file not found")


def test_paragraphs_within_a_word_budget() -> None:
    from charforge.character import paragraphs_within

    paragraphs = ["one two three", "four five", "six seven eight nine", "ten"]
    assert paragraphs_within(paragraphs, 0, 5) == ["one two three", "four five"]
    assert paragraphs_within(paragraphs, 1, 5) == ["four five"]
    assert paragraphs_within(paragraphs, 1, 6) == ["four five", "six seven eight nine"]
    assert paragraphs_within(paragraphs, 2, 100) == ["six seven eight nine", "ten"]
    assert paragraphs_within(paragraphs, 2, 2) == ["six seven"]  # cut, never empty
