"""Character Card V2 (the format of SillyTavern and others): JSON files and PNG images.

A card maps onto a Character as: name -> name, description -> profile (paragraphs),
character_book entries -> knowledge, mes_example blocks -> style. What a card has no
field for (short name, stages, the stage of each passage) travels in
`data.extensions.charforge`. The whole original card is kept in `metadata["card"]`, so
export gives back every field charforge does not use and, where a mapped field is
unchanged, its original text byte for byte.

In a PNG card the JSON is base64 text in a `tEXt` chunk with keyword `chara` (`ccv3`
for V3 cards); chunks are read and written here with struct and zlib only.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
import struct
import zlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from charforge.character import Character, Passage, Stage
from charforge.errors import CharacterFormatError
from charforge.importers.common import (
    build_character,
    decode_utf8,
    default_short_name,
    read_file_bytes,
    split_paragraphs,
    validation_problem,
)

SPEC_V2 = "chara_card_v2"
SPEC_V3 = "chara_card_v3"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CARD_KEYWORDS = ("chara", "ccv3")
EXTENSION_KEY = "charforge"
AVATAR_SIZE = 256
_START = re.compile(r"<START>", re.IGNORECASE)
_NOT_A_CARD = "not a Character Card (no data.name)"
MAX_NESTING = 64  # real cards nest a handful of levels; deeper is an attack or a mistake


class _CharforgeExtension(BaseModel):
    """`data.extensions.charforge`: what a card has no field for."""

    short_name: str | None = None
    stages: list[Stage] = []
    knowledge: list[Passage] | None = None
    style: list[Passage] | None = None


# -- card <-> Character ---------------------------------------------------------
def character_from_card(card: Any, *, source: str) -> Character:
    """A Character from a parsed card (V2, V3 or V1); `source` names it in errors."""
    _, card_format = _card_data(card, source)
    fields = _card_fields(card, source)
    metadata = {"source_format": card_format, "card": copy.deepcopy(card)}
    return build_character(source, **fields, metadata=metadata)


def card_from_character(character: Character) -> dict[str, Any]:
    """A Card V2 dict. A character read from a card starts from that card: unchanged
    fields keep their original text, changed ones are written from the Character."""
    original = character.metadata.get("card")
    if original is None:
        return _fresh_card(character)
    source = f"{character.name} (metadata.card)"
    before = _card_fields(original, source)
    card = _as_v2_card(original, source)
    changed = _write_changed_fields(character, before, card["data"])
    for key in changed:  # SillyTavern mirrors V1 fields at the top level
        if key in card:
            card[key] = card["data"][key]
    _write_extension(character, before, card["data"])
    return card


def split_mes_example(mes_example: str) -> list[str]:
    """Example dialogues: the blocks between <START> markers, stripped, empty dropped."""
    blocks = (block.strip() for block in _START.split(mes_example))
    return [block for block in blocks if block]


def render_mes_example(style: list[Passage]) -> str:
    return "\n".join(f"<START>\n{passage.text}" for passage in style)


def _card_data(card: Any, source: str) -> tuple[dict[str, Any], str]:
    """The card's data dict and its format: 'card-v2', 'card-v3' or 'card-v1'."""
    if not isinstance(card, dict):
        raise CharacterFormatError(source, _NOT_A_CARD)
    if "spec" in card or "data" in card:
        data = card.get("data")
        card_format = "card-v3" if card.get("spec") == SPEC_V3 else "card-v2"
    else:
        data, card_format = card, "card-v1"
    if not isinstance(data, dict):
        raise CharacterFormatError(source, _NOT_A_CARD)
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise CharacterFormatError(source, _NOT_A_CARD)
    return data, card_format


def _card_fields(card: Any, source: str) -> dict[str, Any]:
    """What a card says in charforge's terms (the Character's fields but metadata)."""
    data, _ = _card_data(card, source)
    name = data["name"].strip()
    extension = _read_extension(data, source)
    book_texts = _book_texts(data, source)
    mes_example = _text_field(data, "mes_example", source)
    knowledge = [Passage(text=text) for text in book_texts]
    if extension.knowledge is not None and _texts(extension.knowledge) == book_texts:
        knowledge = extension.knowledge
    style = [Passage(text=text) for text in split_mes_example(mes_example)]
    if extension.style is not None and (
        _texts(extension.style) == split_mes_example(mes_example)
        or render_mes_example(extension.style) == mes_example
    ):
        style = extension.style
    return {
        "name": name,
        "short_name": (extension.short_name or "").strip() or default_short_name(name),
        "profile": split_paragraphs(_text_field(data, "description", source)),
        "knowledge": knowledge,
        "style": style,
        "stages": extension.stages,
    }


def _texts(passages: list[Passage]) -> list[str]:
    return [passage.text.strip() for passage in passages]


def _text_field(data: dict[str, Any], key: str, source: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise CharacterFormatError(source, f"not a Character Card (data.{key} is not text)")
    return value


def _read_extension(data: dict[str, Any], source: str) -> _CharforgeExtension:
    extensions = data.get("extensions")
    raw = extensions.get(EXTENSION_KEY) if isinstance(extensions, dict) else None
    try:
        return _CharforgeExtension.model_validate(raw or {})
    except ValidationError as error:
        problem = validation_problem(error)
        raise CharacterFormatError(
            source, f"invalid data.extensions.{EXTENSION_KEY} ({problem})"
        ) from None


def _book_texts(data: dict[str, Any], source: str) -> list[str]:
    """The non-empty `content` of each character_book entry, stripped."""
    book = data.get("character_book")
    if book is None:
        return []
    entries = book.get("entries", []) if isinstance(book, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise CharacterFormatError(
            source, "not a Character Card (data.character_book.entries is not a list of entries)"
        )
    texts = []
    for entry in entries:
        content = entry.get("content")
        if content is not None and not isinstance(content, str):
            raise CharacterFormatError(
                source, "not a Character Card (a character_book entry's content is not text)"
            )
        if content and content.strip():
            texts.append(content.strip())
    return texts


# -- export -----------------------------------------------------------------------
def _empty_data_fields() -> dict[str, Any]:
    return {
        "name": "", "description": "", "personality": "", "scenario": "", "first_mes": "",
        "mes_example": "", "creator_notes": "", "system_prompt": "",
        "post_history_instructions": "", "alternate_greetings": [], "tags": [],
        "creator": "", "character_version": "", "extensions": {},
    }


def _fresh_card(character: Character) -> dict[str, Any]:
    """A card for a character that never was one."""
    data = _empty_data_fields()
    data["name"] = character.name
    data["description"] = "\n\n".join(character.profile)
    data["mes_example"] = render_mes_example(character.style)
    if character.knowledge:
        data["character_book"] = _book_for(character.knowledge, None, character.name)
    data["extensions"] = {EXTENSION_KEY: _extension_of(character)}
    return {"spec": SPEC_V2, "spec_version": "2.0", "data": data}


def _as_v2_card(original: Any, source: str) -> dict[str, Any]:
    """A deep copy of the original card; a V1 card becomes the data of a V2 one."""
    data, card_format = _card_data(original, source)
    if card_format != "card-v1":
        return copy.deepcopy(original)
    upgraded = copy.deepcopy(data)
    for key, value in _empty_data_fields().items():
        upgraded.setdefault(key, value)
    return {"spec": SPEC_V2, "spec_version": "2.0", "data": upgraded}


def _write_changed_fields(
    character: Character, before: dict[str, Any], data: dict[str, Any]
) -> list[str]:
    """Write each mapped field that differs from the card's; returns their keys."""
    changed = []
    if character.name != before["name"]:
        data["name"] = character.name
        changed.append("name")
    if character.profile != before["profile"]:
        data["description"] = "\n\n".join(character.profile)
        changed.append("description")
    if _texts(character.style) != _texts(before["style"]):
        data["mes_example"] = render_mes_example(character.style)
        changed.append("mes_example")
    if _texts(character.knowledge) != _texts(before["knowledge"]):
        old_book = data.get("character_book")
        if character.knowledge or old_book is not None:
            data["character_book"] = _book_for(character.knowledge, old_book, character.name)
        changed.append("character_book")
    return changed


def _book_for(knowledge: list[Passage], old_book: Any, name: str) -> dict[str, Any]:
    """A character_book with one entry per passage; an old entry whose content is
    the passage's is reused as it was (keys, comments and all)."""
    book = copy.deepcopy(old_book) if isinstance(old_book, dict) else None
    if book is None:
        book = {"name": f"{name} knowledge", "extensions": {}, "entries": []}
    unused = [entry for entry in book.get("entries") or [] if isinstance(entry, dict)]
    ids = [entry["id"] for entry in unused if isinstance(entry.get("id"), int)]
    next_id = max(ids, default=-1) + 1
    entries = []
    for passage in knowledge:
        wanted = passage.text.strip()
        found = next(
            (i for i, e in enumerate(unused) if str(e.get("content") or "").strip() == wanted),
            None,
        )
        if found is not None:
            entries.append(unused.pop(found))
            continue
        entries.append({
            "keys": [], "content": passage.text, "extensions": {}, "enabled": True,
            "insertion_order": len(entries), "id": next_id,
        })
        next_id += 1
    book["entries"] = entries
    return book


def _extension_of(character: Character) -> dict[str, Any]:
    return {
        "short_name": character.short_name,
        "stages": [stage.model_dump() for stage in character.stages],
        "knowledge": [passage.model_dump() for passage in character.knowledge],
        "style": [passage.model_dump() for passage in character.style],
    }


def _write_extension(character: Character, before: dict[str, Any], data: dict[str, Any]) -> None:
    """Write extensions.charforge where the card had one (and something changed) or
    where the card's own fields cannot carry everything."""
    extensions = data.get("extensions")
    had_extension = isinstance(extensions, dict) and EXTENSION_KEY in extensions
    keys = ("short_name", "stages", "knowledge", "style")
    unchanged = all(getattr(character, key) == before[key] for key in keys)
    if had_extension and unchanged:
        return
    if had_extension or _needs_extension(character):
        if not isinstance(extensions, dict):
            extensions = data["extensions"] = {}
        extensions[EXTENSION_KEY] = _extension_of(character)


def _needs_extension(character: Character) -> bool:
    return (
        character.short_name != default_short_name(character.name)
        or bool(character.stages)
        or any(p.stage is not None for p in [*character.knowledge, *character.style])
    )


# -- JSON files ----------------------------------------------------------------------
def read_card_json(path: str | Path) -> Character:
    path = Path(path)
    text = decode_utf8(read_file_bytes(path), path)
    return character_from_card(_parse_card_json(text, path, "invalid card JSON"), source=str(path))


def write_card_json(character: Character, path: str | Path) -> None:
    Path(path).write_bytes(card_json_bytes(character))


def card_json_bytes(character: Character) -> bytes:
    """The card as UTF-8 JSON, indented, ending with a newline."""
    text = json.dumps(card_from_character(character), indent=2, ensure_ascii=False)
    return (text + "\n").encode("utf-8")


def _parse_card_json(text: str, source: object, what: str) -> Any:
    try:
        card = json.loads(text)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}"
        raise CharacterFormatError(source, f"{what}: {error.msg} ({where})") from None
    except RecursionError:
        card = None
    else:
        if _depth_within(card, MAX_NESTING):
            return card
    raise CharacterFormatError(source, f"{what}: nested more than {MAX_NESTING} levels deep")


def _depth_within(value: Any, limit: int) -> bool:
    """Whether `value` nests at most `limit` lists and objects (checked without
    recursion, so any depth is safe to check)."""
    todo = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return False
            children = item.values() if isinstance(item, dict) else item
            todo.extend((child, depth + 1) for child in children)
    return True


# -- PNG files -----------------------------------------------------------------------
def read_card_png(path: str | Path) -> tuple[Character, bytes]:
    """The character in a PNG card, and the PNG's bytes (kept as the avatar)."""
    path = Path(path)
    png = read_file_bytes(path)
    texts = _card_chunk_texts(_png_chunks(png, path))
    keyword = next((keyword for keyword in CARD_KEYWORDS if keyword in texts), None)
    if keyword is None:
        raise CharacterFormatError(path, "PNG has no character card (no 'chara' tEXt chunk)")
    card = _decode_card_chunk(texts[keyword], keyword, path)
    return character_from_card(card, source=str(path)), png


def write_card_png(character: Character, path: str | Path, *, avatar: bytes | None) -> None:
    """Write the card into `avatar` (a PNG) before IEND, replacing any card there;
    without an avatar, into a plain 256x256 image."""
    Path(path).write_bytes(card_png_bytes(character, avatar, avatar_label=f"{path} (avatar)"))


def card_png_bytes(
    character: Character, avatar: bytes | None, *, avatar_label: str = "avatar"
) -> bytes:
    """The PNG card as bytes; `avatar_label` names the avatar in errors."""
    card = card_from_character(character)
    image = avatar if avatar is not None else solid_png(AVATAR_SIZE, _colour_for(character.name))
    chunks = _png_chunks(image, avatar_label)
    kept = [chunk for chunk in chunks if not _is_card_chunk(chunk)]
    payload = base64.b64encode(json.dumps(card, ensure_ascii=False).encode("utf-8"))
    keywords = CARD_KEYWORDS if card.get("spec") == SPEC_V3 else CARD_KEYWORDS[:1]
    card_chunks = [(b"tEXt", keyword.encode("latin-1") + b"\0" + payload) for keyword in keywords]
    chunks = [*kept[:-1], *card_chunks, kept[-1]]
    return PNG_SIGNATURE + b"".join(_chunk_bytes(*chunk) for chunk in chunks)


def solid_png(size: int, rgb: tuple[int, int, int]) -> bytes:
    """A size x size PNG of one colour."""
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB
    pixels = (b"\0" + bytes(rgb) * size) * size  # each row: filter byte 0, then pixels
    return PNG_SIGNATURE + b"".join(
        _chunk_bytes(kind, body)
        for kind, body in ((b"IHDR", header), (b"IDAT", zlib.compress(pixels, 9)), (b"IEND", b""))
    )


def _colour_for(name: str) -> tuple[int, int, int]:
    """A mid-tone colour that is the same for the same name."""
    hashed = zlib.crc32(name.encode("utf-8"))
    return tuple(64 + (hashed >> shift) % 128 for shift in (16, 8, 0))  # type: ignore[return-value]


def _chunk_bytes(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body)
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def _png_chunks(png: bytes, source: object) -> list[tuple[bytes, bytes]]:
    """(type, data) of each chunk up to and including IEND, CRCs checked."""
    if not png.startswith(PNG_SIGNATURE):
        raise CharacterFormatError(source, "not a PNG file")
    chunks: list[tuple[bytes, bytes]] = []
    offset = len(PNG_SIGNATURE)
    while True:
        if offset + 8 > len(png):
            raise CharacterFormatError(source, "truncated PNG (it ends before the IEND chunk)")
        length, kind = struct.unpack(">I4s", png[offset : offset + 8])
        name = kind.decode("ascii", "backslashreplace")
        end = offset + 12 + length
        if end > len(png):
            raise CharacterFormatError(
                source, f"truncated PNG (chunk '{name}' runs past the end of the file)"
            )
        body = png[offset + 8 : end - 4]
        if zlib.crc32(kind + body) != struct.unpack(">I", png[end - 4 : end])[0]:
            raise CharacterFormatError(source, f"corrupt PNG (chunk '{name}' fails its CRC check)")
        chunks.append((kind, body))
        if kind == b"IEND":
            return chunks
        offset = end


def _card_chunk_texts(chunks: list[tuple[bytes, bytes]]) -> dict[str, bytes]:
    """The text of the first tEXt chunk with each card keyword."""
    texts: dict[str, bytes] = {}
    for kind, body in chunks:
        keyword, _, text = body.partition(b"\0")
        name = keyword.decode("latin-1")
        if kind == b"tEXt" and name in CARD_KEYWORDS:
            texts.setdefault(name, text)
    return texts


def _is_card_chunk(chunk: tuple[bytes, bytes]) -> bool:
    kind, body = chunk
    return kind == b"tEXt" and body.partition(b"\0")[0].decode("latin-1") in CARD_KEYWORDS


def _decode_card_chunk(text: bytes, keyword: str, source: Path) -> Any:
    compact = b"".join(text.split())
    try:
        raw = base64.b64decode(compact + b"=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise CharacterFormatError(source, f"'{keyword}' chunk is not valid base64") from None
    try:
        card_text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CharacterFormatError(source, f"'{keyword}' chunk is not UTF-8 text") from None
    return _parse_card_json(card_text, source, f"'{keyword}' chunk holds invalid card JSON")
