"""Protective scenes: someone tries to make the character talk about what it
cannot know; the character shows ignorance, as the real one would.

The seed found that fewer than 100 such scenes per character suffice; each
takes one profile paragraph, in order, cycling when more are asked for.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import Field

from charforge.generate.base import DialogueStage, teacher_sampling
from charforge.records import Rejected
from charforge.stages import PlannedTask, Records, StageOptions, register_stage
from charforge.tasks import TaskRow

# Who provokes the character: plain first names, one per scene in turn.
VISITORS = ("Anna", "Thomas", "Clara", "Samuel", "Maria", "Jonas", "Helena", "Victor")


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
        """Who provokes the character: a name taken in turn from `VISITORS`."""
        return {"people": [VISITORS[int(inputs["sample"]) % len(VISITORS)]]}

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
