"""The `Character`: who the agent is, and the formats it is read from.

A character is a name, a profile (paragraphs), optional knowledge and style
passages (PersLLM), optional time stages, and free metadata. Importers for
the Character-LLM wiki profile and PersLLM knowledge/style files live here;
Character Card V2 (JSON and PNG) lives in `cards.py`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from charforge.errors import CharacterFormatError

WIKI_FORMAT = "character-llm-wiki"
PERSLLM_FORMAT = "persllm"
LOAD_FORMATS = ("auto", "wiki", "persllm", "card")
KNOWN_STAGE_ORDER = ("early", "middle", "late")
_NAME_SUFFIXES = {"jr", "jr.", "sr", "sr.", "ii", "iii", "iv"}
_WIKI_TITLE = re.compile(r"#(?!#)\s*(\S.*?)")
_PERSLLM_TAG = re.compile(r"^【[^】]*】\s*")
_PERSLLM_FILE = re.compile(r"(.+)_(knowledge|style)\.txt")
_ROMAN = ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
          (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"))


class Stage(BaseModel):
    """A period of the character's life (PersLLM's time stages)."""

    label: str = Field(description="short name, e.g. 'early'")
    token: str = Field(description="special token marking the stage, e.g. '<TIME-I>'")
    description: str = ""


class Passage(BaseModel):
    """One knowledge or speech-style passage, optionally tied to a stage."""

    text: str
    stage: str | None = Field(default=None, description="label of the stage it belongs to")


class Character(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="full name, e.g. 'Ludwig van Beethoven'")
    short_name: str = Field(description="what others call them, e.g. 'Beethoven'")
    profile: list[str] = Field(default_factory=list, description="profile paragraphs")
    knowledge: list[Passage] = Field(default_factory=list)
    style: list[Passage] = Field(default_factory=list)
    stages: list[Stage] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name", "short_name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        return value

    @property
    def slug(self) -> str:
        """Folder name in a workspace: the short name, lower case, ASCII-safe."""
        return slugify(self.short_name)

    def stage(self, label: str) -> Stage:
        for stage in self.stages:
            if stage.label == label:
                return stage
        known = ", ".join(s.label for s in self.stages) or "none"
        raise KeyError(f"{self.short_name} has no stage {label!r} (stages: {known})")


def paragraphs_within(paragraphs: list[str], start: int, max_words: int) -> list[str]:
    """Paragraph `start` and those after it while they fit in `max_words`; at least
    one, cut at a word boundary when even that one is too long."""
    kept: list[str] = []
    used = 0
    for paragraph in paragraphs[start:]:
        words = paragraph.split()
        if used + len(words) > max_words:
            if not kept:
                kept.append(" ".join(words[:max_words]))
            break
        kept.append(paragraph)
        used += len(words)
    return kept


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "character"


# -- helpers shared by the importers (and by cards.py) --------------------------
def default_short_name(full_name: str) -> str:
    """The last word of a full name, passing over suffixes such as 'Jr.'."""
    words = full_name.split()
    while len(words) > 1 and words[-1].lower().rstrip(",") in _NAME_SUFFIXES:
        words.pop()
    return words[-1].rstrip(",") if words else full_name


def split_paragraphs(text: str) -> list[str]:
    """Blank-line-separated paragraphs, stripped, empty ones dropped."""
    paragraphs = (part.strip() for part in re.split(r"\n\s*\n", text.replace("\r\n", "\n")))
    return [paragraph for paragraph in paragraphs if paragraph]


def stage_token(position: int) -> str:
    """PersLLM's token for the stage at `position` (1-based): '<TIME-I>', '<TIME-II>', ..."""
    numeral, rest = "", position
    for value, letters in _ROMAN:
        count, rest = divmod(rest, value)
        numeral += letters * count
    return f"<TIME-{numeral}>"


def read_file_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CharacterFormatError(path, "file not found") from None
    except IsADirectoryError:
        raise CharacterFormatError(path, "is a folder, expected a file") from None
    except OSError as error:
        raise CharacterFormatError(path, f"cannot read file ({error.strerror or error})") from None


def decode_utf8(raw: bytes, path: object) -> str:
    """Text from UTF-8 bytes, a byte order mark dropped."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise CharacterFormatError(
            path, f"not UTF-8 text (invalid byte at offset {error.start})"
        ) from None


def read_text_file(path: Path) -> str:
    """A UTF-8 text file with '\\n' line endings (CRLF and CR converted)."""
    text = decode_utf8(read_file_bytes(path), path)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def validation_problem(error: ValidationError) -> str:
    """A pydantic error as one line: 'field: message; field: message'."""
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        parts.append(f"{where}: {item['msg']}" if where else item["msg"])
    return " ".join("; ".join(parts).split())


def build_character(source: object, **fields: Any) -> Character:
    """A Character, with a validation failure reported as a CharacterFormatError."""
    try:
        return Character(**fields)
    except ValidationError as error:
        raise CharacterFormatError(
            source, f"invalid character ({validation_problem(error)})"
        ) from None


def _given(value: str | None) -> str | None:
    """`value` stripped, or None where it is missing or blank."""
    return (value.strip() or None) if value is not None else None


# -- Character-LLM wiki profiles -----------------------------------------------
def read_wiki_profile(path: str | Path, *, short_name: str | None = None) -> Character:
    """A Character-LLM wiki profile: '# Full Name', a blank line, paragraphs."""
    path = Path(path)
    lines = read_text_file(path).split("\n")
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise CharacterFormatError(
            path, "file is empty (a Character-LLM wiki profile starts with '# Full Name')"
        )
    title = _WIKI_TITLE.fullmatch(lines[first].strip())
    if title is None:
        raise CharacterFormatError(
            path, "first line must be '# Full Name' (a Character-LLM wiki profile)"
        )
    name = title.group(1)
    paragraphs = split_paragraphs("\n".join(lines[first + 1 :]))
    if not paragraphs:
        raise CharacterFormatError(path, "profile is empty (no paragraphs after the name)")
    short = _given(short_name) or _short_name_from_file_name(path) or default_short_name(name)
    return build_character(
        path, name=name, short_name=short, profile=paragraphs,
        metadata={"source_format": WIKI_FORMAT},
    )


def _short_name_from_file_name(path: Path) -> str | None:
    """'wiki_Beethoven.txt' -> 'Beethoven' (Character-LLM's naming), else None."""
    match = re.fullmatch(r"wiki_(.+)", path.stem)
    return _given(match.group(1).replace("_", " ")) if match else None


# -- PersLLM knowledge and style files ------------------------------------------
def read_persllm(
    knowledge_path: str | Path,
    style_path: str | Path,
    *,
    name: str,
    short_name: str | None = None,
    stage: str | None = None,
) -> Character:
    """PersLLM's two files, one passage a line, optionally all of one stage."""
    knowledge_path, style_path = Path(knowledge_path), Path(style_path)
    full_name = _required_name(name, knowledge_path)
    label = _given(stage)
    knowledge = _read_passages(knowledge_path, label)
    style = _read_passages(style_path, label)
    if not knowledge and not style:
        raise CharacterFormatError(
            knowledge_path, f"no passages in knowledge or style file (style file: {style_path})"
        )
    return build_character(
        knowledge_path, name=full_name,
        short_name=_given(short_name) or default_short_name(full_name),
        knowledge=knowledge, style=style,
        stages=[Stage(label=label, token=stage_token(1))] if label else [],
        metadata={"source_format": PERSLLM_FORMAT},
    )


def read_persllm_folder(
    folder: str | Path, *, name: str, short_name: str | None = None
) -> Character:
    """A folder of knowledge.txt + style.txt, or LABEL_knowledge.txt + LABEL_style.txt
    per stage (stages ordered early, middle, late, then others alphabetically)."""
    folder = Path(folder)
    full_name = _required_name(name, folder)
    if not folder.is_dir():
        problem = "is a file, expected a folder" if folder.exists() else "folder not found"
        raise CharacterFormatError(folder, problem)
    stages: list[Stage] = []
    knowledge: list[Passage] = []
    style: list[Passage] = []
    for position, (label, knowledge_path, style_path) in enumerate(_persllm_pairs(folder), 1):
        if label is not None:
            stages.append(Stage(label=label, token=stage_token(position)))
        knowledge += _read_passages(knowledge_path, label)
        style += _read_passages(style_path, label)
    if not knowledge and not style:
        raise CharacterFormatError(folder, "no passages in any knowledge or style file")
    return build_character(
        folder, name=full_name,
        short_name=_given(short_name) or default_short_name(full_name),
        knowledge=knowledge, style=style, stages=stages,
        metadata={"source_format": PERSLLM_FORMAT},
    )


def _required_name(name: str | None, path: Path) -> str:
    full_name = _given(name)
    if full_name is None:
        raise CharacterFormatError(path, "PersLLM files carry no name; pass --name")
    return full_name


def _read_passages(path: Path, stage: str | None) -> list[Passage]:
    """One passage a line; a leading 【tag】 and blank lines dropped."""
    passages = []
    for line in read_text_file(path).split("\n"):
        text = _PERSLLM_TAG.sub("", line.strip()).strip()
        if text:
            passages.append(Passage(text=text, stage=stage))
    return passages


def _persllm_pairs(folder: Path) -> list[tuple[str | None, Path, Path]]:
    """(stage label or None, knowledge file, style file) for each stage, in order."""
    files = {path.name: path for path in folder.iterdir() if path.is_file()}
    plain = sorted({"knowledge.txt", "style.txt"} & files.keys())
    staged: dict[str, dict[str, Path]] = {}
    for file_name, path in files.items():
        match = _PERSLLM_FILE.fullmatch(file_name)
        if match:
            staged.setdefault(match.group(1), {})[match.group(2)] = path
    if plain and staged:
        raise CharacterFormatError(
            folder, "mixes knowledge.txt/style.txt with per-stage LABEL_knowledge.txt files; "
            "keep one layout"
        )
    if plain:
        if len(plain) < 2:
            missing = "style.txt" if plain == ["knowledge.txt"] else "knowledge.txt"
            raise CharacterFormatError(folder, f"has {plain[0]} but no {missing}")
        return [(None, files["knowledge.txt"], files["style.txt"])]
    if not staged:
        raise CharacterFormatError(
            folder, "no PersLLM files (expected knowledge.txt + style.txt, "
            "or LABEL_knowledge.txt + LABEL_style.txt for each stage)"
        )
    pairs = []
    for label in sorted(staged, key=_stage_order):
        for kind in ("knowledge", "style"):
            if kind not in staged[label]:
                raise CharacterFormatError(folder, f"stage {label!r} has no {label}_{kind}.txt")
        pairs.append((label, staged[label]["knowledge"], staged[label]["style"]))
    return pairs


def _stage_order(label: str) -> tuple[int, str]:
    lowered = label.lower()
    known = KNOWN_STAGE_ORDER.index(lowered) if lowered in KNOWN_STAGE_ORDER else None
    return (known, "") if known is not None else (len(KNOWN_STAGE_ORDER), lowered)


# -- the dispatcher the CLI calls ----------------------------------------------
def load_character_file(
    path: str | Path,
    *,
    style: str | Path | None = None,
    name: str | None = None,
    short_name: str | None = None,
    fmt: str = "auto",
) -> tuple[Character, bytes | None]:
    """Read a character in any supported format; returns it and, for a PNG card,
    the PNG's bytes (the avatar). `name`/`short_name` override the file's."""
    from charforge import cards  # cards imports this module

    path = Path(path)
    kind = _file_kind(path, style, fmt)
    if style is not None and kind != "persllm-files":
        raise CharacterFormatError(path, "--style applies only to a PersLLM knowledge file")
    avatar = None
    if kind == "persllm-folder":
        character = read_persllm_folder(path, name=name or "", short_name=short_name)
    elif kind == "persllm-files":
        assert style is not None
        character = read_persllm(path, style, name=name or "", short_name=short_name)
    elif kind == "card-png":
        character, avatar = cards.read_card_png(path)
    elif kind == "card-json":
        character = cards.read_card_json(path)
    else:
        character = read_wiki_profile(path, short_name=short_name)
    return _with_names(character, name, short_name, path), avatar


def _file_kind(path: Path, style: str | Path | None, fmt: str) -> str:
    """Which reader a file needs: persllm-folder, persllm-files, card-png, card-json, wiki."""
    if fmt not in LOAD_FORMATS:
        raise CharacterFormatError(
            path, f"unknown format {fmt!r} (use one of: {', '.join(LOAD_FORMATS)})"
        )
    if fmt in ("auto", "persllm") and path.is_dir():
        return "persllm-folder"
    if fmt == "persllm" or (fmt == "auto" and style is not None):
        if style is None:
            raise CharacterFormatError(
                path, "a PersLLM knowledge file needs its style file; pass --style"
            )
        return "persllm-files"
    suffix = path.suffix.lower()
    if fmt == "card":
        return "card-png" if suffix == ".png" or _starts_like_png(path) else "card-json"
    if fmt == "auto" and suffix in (".json", ".png"):
        return "card-json" if suffix == ".json" else "card-png"
    return "wiki"


def _starts_like_png(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            return file.read(8) == b"\x89PNG\r\n\x1a\n"
    except OSError:
        return False  # the reader reports the problem


def _with_names(
    character: Character, name: str | None, short_name: str | None, source: Path
) -> Character:
    overrides = {"name": _given(name), "short_name": _given(short_name)}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if all(getattr(character, key) == value for key, value in overrides.items()):
        return character
    return build_character(source, **{**character.model_dump(), **overrides})
