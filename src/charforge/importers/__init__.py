"""Reading characters: one module per format, and the dispatcher that picks one.

- `wiki`: Character-LLM wiki profiles;
- `persllm`: PersLLM knowledge and style files, with time stages;
- `card`: Character Card V2 (and V3/V1 on import), JSON and PNG, both ways.

Every reader refuses an oversized file before reading it, and reports a bad file
as one `CharacterFormatError` line naming the file and the problem.
"""

from __future__ import annotations

from pathlib import Path

from charforge.character import Character
from charforge.errors import CharacterFormatError
from charforge.importers import card
from charforge.importers.common import (
    DEFAULT_MAX_IMPORT_BYTES,
    build_character,
    check_size,
    given_text,
)
from charforge.importers.persllm import read_persllm, read_persllm_folder
from charforge.importers.wiki import read_wiki_profile

LOAD_FORMATS = ("auto", "wiki", "persllm", "card")


def load_character_file(
    path: str | Path,
    *,
    style: str | Path | None = None,
    name: str | None = None,
    short_name: str | None = None,
    fmt: str = "auto",
    max_bytes: int | None = DEFAULT_MAX_IMPORT_BYTES,
) -> tuple[Character, bytes | None]:
    """Read a character in any supported format; returns it and, for a PNG card,
    the PNG's bytes (the avatar). `name`/`short_name` override the file's. Files
    larger than `max_bytes` (None: no limit) are refused before they are read."""
    path = Path(path)
    kind = _file_kind(path, style, fmt)
    check_size(path, max_bytes)
    if style is not None:
        check_size(Path(style), max_bytes)
    if style is not None and kind != "persllm-files":
        raise CharacterFormatError(path, "--style applies only to a PersLLM knowledge file")
    avatar = None
    if kind == "persllm-folder":
        character = read_persllm_folder(path, name=name or "", short_name=short_name)
    elif kind == "persllm-files":
        assert style is not None
        character = read_persllm(path, style, name=name or "", short_name=short_name)
    elif kind == "card-png":
        character, avatar = card.read_card_png(path)
    elif kind == "card-json":
        character = card.read_card_json(path)
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
    overrides = {"name": given_text(name), "short_name": given_text(short_name)}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if all(getattr(character, key) == value for key, value in overrides.items()):
        return character
    return build_character(source, **{**character.model_dump(), **overrides})
