"""The `Character`: who the agent is.

A character is a name, a profile (paragraphs), optional knowledge and style
passages (PersLLM), optional time stages, and free metadata. Reading and writing
the file formats lives in `charforge.importers`; this module imports none of them.

Names and texts are cleaned on the way in: control characters, bidirectional
overrides and invisible format characters never reach a folder name, a prompt or
a terminal, and two names that look the same are the same name.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MAX_NAME_CHARS = 100
MAX_SLUG_CHARS = 64
# Bidirectional embeddings, overrides and isolates: they reorder what a terminal shows.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


_TEXT_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def clean_name(value: str) -> str:
    """A name as one line of visible text: Unicode NFC, control characters as spaces,
    format characters (bidirectional overrides, zero-width marks) removed, runs of
    white space as one space. Raises ValueError when empty or too long."""
    kept = []
    for char in unicodedata.normalize("NFC", value):
        category = unicodedata.category(char)
        if category == "Cc":
            kept.append(" ")
        elif category != "Cf":
            kept.append(char)
    name = " ".join("".join(kept).split())
    if not name:
        raise ValueError("must not be empty")
    if len(name) > MAX_NAME_CHARS:
        raise ValueError(f"is {len(name):,} characters long; a name has at most "
                         f"{MAX_NAME_CHARS}")
    return name


def clean_text(value: str) -> str:
    """A text without control characters (newlines and tabs kept) or bidirectional
    controls, so that nothing in it can rewrite a terminal or reorder what it shows."""
    return _TEXT_CONTROLS.sub("", value)


Name = Annotated[str, AfterValidator(clean_name)]
Text = Annotated[str, AfterValidator(clean_text)]


# The stage tokens charforge reserves, the same for every character: characters trained
# on one base share its tokenizer, and their adapters stay exportable.
STAGE_TOKENS = ("<TIME-I>", "<TIME-II>", "<TIME-III>", "<TIME-IV>", "<TIME-V>")


def _reserved_token(token: str) -> str:
    if token not in STAGE_TOKENS:
        raise ValueError(f"{token!r} is not a stage token; use one of {', '.join(STAGE_TOKENS)}")
    return token


class Stage(BaseModel):
    """A period of the character's life (PersLLM's time stages)."""

    label: Name = Field(description="short name, e.g. 'early'")
    token: Annotated[str, AfterValidator(_reserved_token)] = Field(
        description="its token, one of STAGE_TOKENS, e.g. '<TIME-I>'")
    description: Text = ""


class Passage(BaseModel):
    """One knowledge or speech-style passage, optionally tied to a stage."""

    text: Text
    stage: str | None = Field(default=None, description="label of the stage it belongs to")


class Character(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name = Field(description="full name, e.g. 'Ludwig van Beethoven'")
    short_name: Name = Field(description="what others call them, e.g. 'Beethoven'")
    profile: list[Text] = Field(default_factory=list, description="profile paragraphs")
    knowledge: list[Passage] = Field(default_factory=list)
    style: list[Passage] = Field(default_factory=list)
    stages: list[Stage] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def slug(self) -> str:
        """Folder name in a workspace and the character's id in the store: the short
        name, lower case, accents dropped, safe in any file system."""
        return slugify(self.short_name)

    def profile_or_knowledge(self) -> list[str]:
        """What the teacher's scenes are drawn from: the profile paragraphs, else (a
        PersLLM import has none) the knowledge passages, in order."""
        return list(self.profile) or [passage.text for passage in self.knowledge]

    def knowledge_passages(self) -> list[Passage]:
        """What retrieval reads as knowledge: the knowledge passages (a PersLLM file, a
        card's lorebook), then the profile paragraphs as unstaged passages. A passage's
        index in this list is how questions and answers refer to it."""
        return [*self.knowledge, *(Passage(text=text) for text in self.profile)]

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
    """Letters and digits (any script; accents dropped) joined by '-', at most
    MAX_SLUG_CHARS; a name with neither gets 'character-' and a hash of itself, so
    different names never share a folder by accident."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    bare = "".join(char for char in decomposed if not unicodedata.combining(char))
    slug = re.sub(r"[\W_]+", "-", bare).strip("-")[:MAX_SLUG_CHARS].strip("-")
    if slug:
        return slug
    return "character-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
