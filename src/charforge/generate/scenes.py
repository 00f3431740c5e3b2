"""Scenes: profile passages -> short outlines of moments in the character's life.

Like the seed: a target number of prompts; each picks a profile paragraph at
random in proportion to its length (so every paragraph can recur, long ones
more often), adds the following paragraphs up to a word budget as context,
and asks for N scenes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from pydantic import Field

from charforge import parse
from charforge.character import paragraphs_within
from charforge.generate.base import teacher_sampling
from charforge.parse.schemas import ScenesAnswer
from charforge.stages import PlannedTask, Records, StageOptions, TaskStage, register_stage
from charforge.tasks import TaskRow


class SceneOptions(StageOptions):
    prompts: int = Field(default=20, ge=1, le=100_000, description="prompts to send")
    scenes_per_prompt: int = Field(default=5, ge=1, le=50, description="scenes asked per prompt")
    context_words: int = Field(default=300, ge=20, le=5_000,
                               description="profile words per prompt")
    seed: int = Field(default=0, description="which paragraphs are drawn")


@register_stage
class SceneStage(TaskStage):
    name = "scenes"
    description = "profile -> scene outlines"
    user_template = "scenes"
    Output = ScenesAnswer
    Options = SceneOptions
    sampling = teacher_sampling(1024)

    def plan(self) -> Iterator[PlannedTask]:
        options: SceneOptions = self.options
        paragraphs = self.character.profile
        if not paragraphs:
            return
        weights = [max(1, len(p.split())) for p in paragraphs]
        rng = random.Random(options.seed)
        for sample in range(options.prompts):
            start = rng.choices(range(len(paragraphs)), weights=weights)[0]
            yield PlannedTask({
                "context": "\n\n".join(paragraphs_within(paragraphs, start,
                                                         options.context_words)),
                "paragraph": start,
                "sample": sample,
                "n_scenes": options.scenes_per_prompt,
            })

    def parse_answer(self, task: TaskRow, text: str) -> Records:
        read = parse.parse_scenes_json if task.mode == "json" else parse.parse_scenes_text
        return [("scene", scene.model_dump()) for scene in read(text)]
