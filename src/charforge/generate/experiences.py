"""Experiences: each scene -> a full dialogue where the character thinks and speaks."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import Field

from charforge.generate.base import DialogueStage, people_in, teacher_sampling
from charforge.stages import PlannedTask, Records, StageOptions, register_stage
from charforge.tasks import TaskRow


class ExperienceOptions(StageOptions):
    min_words: int = Field(default=600, ge=50, le=20_000,
                           description="words asked for per scene")


@register_stage
class ExperienceStage(DialogueStage):
    name = "experiences"
    description = "scene -> dialogue with thoughts"
    user_template = "experience"
    Options = ExperienceOptions
    sampling = teacher_sampling(2048)
    min_turns = 3

    def plan(self) -> Iterator[PlannedTask]:
        min_words = self.options.min_words
        for scene in self.context.reader.records(self.character.slug, "scene"):
            yield PlannedTask(
                {"context": scene.inputs["context"], "scene": scene.data, "min_words": min_words},
                parents=((scene.task_id, scene.idx),),
            )

    def nothing_to_do(self) -> str | None:
        if next(iter(self.context.reader.records(self.character.slug, "scene")), None):
            return None
        return (f"{self.character.short_name} has no accepted scenes yet; run charforge "
                f"generate scenes {self.character.slug} first (--retry-rejected asks the "
                "rejected ones again)")

    def derived(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The people the scene names besides the character (a function of the scene,
        so not part of the task's inputs)."""
        scene = inputs["scene"]
        return {"people": people_in(f"{scene['location']}. {scene['background']}",
                                    inputs["short_name"], (inputs["name"],))}

    def parse_answer(self, task: TaskRow, text: str) -> Records:
        dialogue = self.dialogue_from(task, text)
        return [("experience", {"scene": task.inputs["scene"], "dialogue": dialogue})]
