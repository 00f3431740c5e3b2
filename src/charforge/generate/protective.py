"""Protective scenes: someone tries to make the character talk about what it
cannot know; the character shows ignorance, as the real one would.

The seed found that fewer than 100 such scenes per character suffice; each
takes one profile paragraph, in order, cycling when more are asked for.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import Field

from charforge.generate.base import SPOKEN_OPENINGS, DialogueStage, teacher_sampling
from charforge.records import Rejected
from charforge.stages import PlannedTask, Records, StageOptions, register_stage
from charforge.tasks import TaskRow

# Who provokes the character: plain first names, one per scene in turn.
VISITORS = ("Anna", "Thomas", "Clara", "Samuel", "Maria", "Jonas", "Helena", "Victor")
# What the visitor asks about first, one per scene in turn (12 topics against 8
# visitors: 24 different pairs): things from after most historical characters' time.
# A named subject keeps a small teacher on the scene's point.
TOPICS = ("the telephone", "the railway", "the aeroplane", "the radio", "photography",
          "the electric light", "the motor car", "the computer", "television",
          "the cinema", "the typewriter", "the steamship")
# How the visitor's first question and the character's first answer open, for a local
# grammar: the question is asked (a small teacher writes statements), and the answer
# starts from not knowing (it otherwise chats about anything).
ASKING = "Tell me, have you ever heard of"
ANSWERING = ["I have never heard of", "I do not know", "What is", "I do not understand"]


class ProtectiveOptions(StageOptions):
    count: int = Field(default=50, ge=1, le=10_000, description="scenes to ask for")


@register_stage
class ProtectiveStage(DialogueStage):
    name = "protective"
    description = "the character shows ignorance of what it cannot know"
    user_template = "protective"
    Options = ProtectiveOptions
    sampling = teacher_sampling(1536)

    def plan(self) -> Iterator[PlannedTask]:
        paragraphs = self.character.profile_or_knowledge()
        for sample in range(self.options.count if paragraphs else 0):
            index = sample % len(paragraphs)
            yield PlannedTask({"context": paragraphs[index], "paragraph": index,
                               "sample": sample})

    def nothing_to_do(self) -> str | None:
        if self.character.profile_or_knowledge():
            return None
        return (f"{self.character.short_name} has no profile paragraphs or knowledge passages "
                "to set protective scenes in")

    def derived(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Who provokes the character, a name taken in turn from `VISITORS`, and what
        about first, a subject taken in turn from `TOPICS`."""
        sample = int(inputs["sample"])
        return {"people": [VISITORS[sample % len(VISITORS)]],
                "topic": TOPICS[sample % len(TOPICS)]}

    def background_lead(self, inputs: Mapping[str, Any]) -> str | list[str]:
        return f"One day, {self.derived(inputs)['people'][0]} visits {inputs['short_name']} and"

    def turn_sequence(self, inputs: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The visitor asks (the turn ends with "?"), the character answers from not
        knowing; the visitor pushes, the character has the last word."""
        main, visitor = inputs["short_name"], self.derived(inputs)["people"][0]
        return [{"speaker": visitor, "action": "speaking",
                 "content": {"question": True, "lead": ASKING}},
                {"speaker": main, "action": "speaking", "content": {"lead": ANSWERING}},
                {"speaker": visitor, "action": "speaking", "content": {"lead": SPOKEN_OPENINGS}},
                {"speaker": main, "action": "speaking", "content": {"lead": SPOKEN_OPENINGS}}]

    def parse_answer(self, task: TaskRow, text: str) -> Records:
        dialogue = self.dialogue_from(task, text)
        # The scene's job: someone asks, and the character answers after the question.
        main = task.inputs["short_name"]
        turns = dialogue["turns"]
        asked = next((i for i, turn in enumerate(turns)
                      if turn["speaker"] != main and "?" in turn["content"]), None)
        if asked is None or not any(turn["speaker"] == main and turn["action"] == "speaking"
                                    for turn in turns[asked + 1:]):
            raise Rejected("invalid", f"nobody asks {main} a question that {main} then "
                           "answers: the scene does not provoke")
        return [("protective", {"dialogue": dialogue})]
