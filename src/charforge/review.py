"""Review feedback (PersLLM): a person reads a few of a character's answers and writes a
free-text note on their style; the note is kept with its time and goes into the prompt
of every answer planned after it (see `charforge.generate.answers`)."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from pydantic import BaseModel

from charforge.errors import CharforgeError
from charforge.records import Feedback

if TYPE_CHECKING:
    from charforge.workspace import Workspace

MAX_FEEDBACK_CHARS = 4000


class ReviewedAnswer(BaseModel):
    question: str
    response: str
    stage: str | None
    pattern: str
    feedback_id: int


def answers_to_review(workspace: Workspace, character_name: str, count: int = 3, *,
                      seed: int = 0) -> list[ReviewedAnswer]:
    """`count` of the character's answers, drawn with `seed` from those written with
    the latest feedback (or all, before any), in store order."""
    character = workspace.load_character(character_name)
    with workspace.store() as store:
        answers = [ReviewedAnswer(question=r.data["question"], response=r.data["response"],
                                  stage=r.data.get("stage"), pattern=r.data["pattern"],
                                  feedback_id=int(r.data.get("feedback_id", 0)))
                   for r in store.records(character.slug, "answer")]
    if not answers:
        return []
    latest = max(answer.feedback_id for answer in answers)
    pool = [answer for answer in answers if answer.feedback_id == latest]
    picked = sorted(random.Random(seed).sample(range(len(pool)), min(count, len(pool))))
    return [pool[i] for i in picked]


def add_feedback(workspace: Workspace, character_name: str, text: str) -> Feedback:
    """Keep a review note for a character; answers planned from now on follow it."""
    note = " ".join(text.split())
    if not note:
        raise CharforgeError("the feedback is empty; write what the answers should do "
                             "differently")
    if len(note) > MAX_FEEDBACK_CHARS:
        raise CharforgeError(f"the feedback is {len(note):,} characters long; keep it under "
                             f"{MAX_FEEDBACK_CHARS:,} (it goes into every answer's prompt)")
    character = workspace.load_character(character_name)
    with workspace.store() as store:
        return store.add_feedback(character.slug, note)


def feedback_history(workspace: Workspace, character_name: str) -> list[Feedback]:
    character = workspace.load_character(character_name)
    with workspace.store() as store:
        return store.feedback(character.slug)
