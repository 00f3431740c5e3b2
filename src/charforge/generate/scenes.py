"""Scenes: profile passages -> short outlines of moments in the character's life.

Like the seed: a target number of prompts; each picks a profile paragraph at
random in proportion to its length (so every paragraph can recur, long ones
more often), adds the following paragraphs up to a word budget as context,
and asks for N scenes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from charforge import parse
from charforge.character import paragraphs_within
from charforge.generate.base import Records, TeacherStage
from charforge.store import TaskRow


class SceneStage(TeacherStage):
    name = "scenes"
    template = "scenes"
    schema_name = "scenes"
    default_max_tokens = 1024

    def __init__(
        self, *args: Any, prompts: int = 20, scenes_per_prompt: int = 5,
        context_words: int = 300, seed: int = 0, **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.prompts = prompts
        self.scenes_per_prompt = scenes_per_prompt
        self.context_words = context_words
        self.seed = seed

    def plan_inputs(self) -> Iterator[dict[str, Any]]:
        paragraphs = self.character.profile
        if not paragraphs:
            return
        weights = [max(1, len(p.split())) for p in paragraphs]
        rng = random.Random(self.seed)
        for sample in range(self.prompts):
            start = rng.choices(range(len(paragraphs)), weights=weights)[0]
            yield {
                "context": "\n\n".join(paragraphs_within(paragraphs, start, self.context_words)),
                "paragraph": start,
                "sample": sample,
                "n_scenes": self.scenes_per_prompt,
            }

    def parse_answer(self, task: TaskRow, text: str, mode: str) -> Records:
        read = parse.parse_scenes_json if mode == "json" else parse.parse_scenes_text
        scenes = read(text)
        return [("scene", scene.model_dump()) for scene in scenes]
