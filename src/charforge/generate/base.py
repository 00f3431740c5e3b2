"""What the Experience Reconstruction stages share: the teacher's system prompt, JSON
or the seed's plain-text layout, and the dialogue stages' parsing."""

from __future__ import annotations

from typing import Any, ClassVar

from charforge import parse
from charforge.llm.base import Sampling
from charforge.parse.schemas import DialogueAnswer
from charforge.stages import TaskStage
from charforge.tasks import TaskRow


class DialogueStage(TaskStage):
    """Experiences and protective scenes: the answer is one dialogue."""

    Output = DialogueAnswer
    min_turns: ClassVar[int] = 2

    def dialogue_from(self, task: TaskRow, text: str) -> dict[str, Any]:
        read = parse.parse_dialogue_json if task.mode == "json" else parse.parse_dialogue_text
        dialogue = read(text, main_character=task.inputs["short_name"],
                        aliases=[task.inputs["name"]], min_turns=self.min_turns)
        return dialogue.model_dump()


def teacher_sampling(max_tokens: int) -> Sampling:
    """The teacher's defaults: some variety (T=0.7), the stage's answer length."""
    return Sampling(temperature=0.7, top_p=1.0, max_tokens=max_tokens)

