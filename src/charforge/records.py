"""Typed records that stages produce and the dataset builder consumes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Action = Literal["thinking", "speaking"]
RejectionReason = Literal[
    "invalid",  # not in the expected format at all / invalid JSON or schema
    "empty",  # nothing usable in the answer
    "too_short",  # below the stage's minimum (words, turns, scenes)
    "no_background",  # an experience without its background paragraph
    "truncated",  # the teacher stopped at max_tokens
    "junk",  # schema-valid but not language: repeats, fragments, non-words
    "one_speaker",  # a dialogue in which nobody answers the main character
    "copied",  # shares a long run of words with the prompt's own example
    "off_topic",  # touches nothing in its passage (questions) or in the question (answers)
    "out_of_character",  # the answer speaks as an AI or a narrator, not as the character
    "accepted_false_premise",  # an answer that takes an error question's false claim as true
]
# Reasons that say what the answer got wrong as the character (its persona), not how it
# is written: such answers are fair "rejected" examples for preference training, while
# format failures (truncated, junk) would teach length or noise instead.
CONTENT_REASONS: tuple[RejectionReason, ...] = ("out_of_character", "accepted_false_premise")


class Scene(BaseModel):
    """A moment of the character's life, imagined from a profile passage."""

    type: str = Field(description="chat, debate, discussion, speech, ...")
    location: str
    background: str


class Turn(BaseModel):
    """One line of a dialogue: who, thinking or speaking, and what."""

    speaker: str
    action: Action
    content: str


class Dialogue(BaseModel):
    """An experience or protective scene: a background, then turns."""

    background: str
    turns: list[Turn]
    dropped_turns: int = Field(default=0, description="turns removed while parsing")

    def words(self) -> int:
        return len(self.background.split()) + sum(len(t.content.split()) for t in self.turns)


class Rejected(Exception):
    """A teacher answer that could not become a record, with a reason."""

    def __init__(self, reason: RejectionReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: RejectionReason = reason
        self.detail = detail


class Feedback(BaseModel):
    """A reviewer's note on a character's answers (PersLLM's review), in the order given."""

    id: int
    character: str
    text: str
    created_at: float
