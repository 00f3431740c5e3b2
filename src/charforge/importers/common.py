"""What every importer shares: reading files (with a size limit), paragraphs, names,
stage tokens, and turning a validation failure into one line that names the file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from charforge.character import STAGE_TOKENS, Character
from charforge.errors import CharacterFormatError

DEFAULT_MAX_IMPORT_BYTES = 10 * 1024 * 1024
_NAME_SUFFIXES = {"jr", "jr.", "sr", "sr.", "ii", "iii", "iv"}


def check_size(path: Path, limit: int | None) -> None:
    """Refuse a file (or a folder's files together) larger than `limit` bytes, before
    anything is read."""
    if limit is None:
        return
    try:
        size = (sum(p.stat().st_size for p in path.iterdir() if p.is_file())
                if path.is_dir() else path.stat().st_size)
    except OSError:
        return  # the reader reports a missing or unreadable file in its own words
    if size > limit:
        raise CharacterFormatError(
            path, f"is {_human(size)}, over the import limit of {_human(limit)} (raise "
            "limits.max_import_mb in charforge.yaml if this is really a profile)")


def _human(size: float) -> str:
    """2048 -> '2.0 KB'; sizes in bytes, KB, MB or GB."""
    unit = "bytes"
    for larger in ("KB", "MB", "GB"):
        if size < 1024:
            break
        size, unit = size / 1024, larger
    return f"{size:.0f} bytes" if unit == "bytes" else f"{size:.1f} {unit}"


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


def stage_token(position: int, source: object = "stages") -> str:
    """The reserved token of the stage at `position` (1-based): '<TIME-I>' ... '<TIME-V>'."""
    if not 1 <= position <= len(STAGE_TOKENS):
        raise CharacterFormatError(source, f"has {position} time stages; charforge reserves "
                                   f"{len(STAGE_TOKENS)} stage tokens (<TIME-I> to <TIME-V>)")
    return STAGE_TOKENS[position - 1]


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


def given_text(value: str | None) -> str | None:
    """`value` stripped, or None where it is missing or blank."""
    return (value.strip() or None) if value is not None else None
