"""Character-LLM wiki profiles: '# Full Name', a blank line, then paragraphs."""

from __future__ import annotations

import re
from pathlib import Path

from charforge.character import Character
from charforge.errors import CharacterFormatError
from charforge.importers.common import (
    build_character,
    default_short_name,
    given_text,
    read_text_file,
    split_paragraphs,
)

WIKI_FORMAT = "character-llm-wiki"
_WIKI_TITLE = re.compile(r"#(?!#)\s*(\S.*?)")


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
    short = given_text(short_name) or _short_name_from_file_name(path) or default_short_name(name)
    return build_character(
        path, name=name, short_name=short, profile=paragraphs,
        metadata={"source_format": WIKI_FORMAT},
    )


def _short_name_from_file_name(path: Path) -> str | None:
    """'wiki_Beethoven.txt' -> 'Beethoven' (Character-LLM's naming), else None."""
    match = re.fullmatch(r"wiki_(.+)", path.stem)
    return given_text(match.group(1).replace("_", " ")) if match else None
