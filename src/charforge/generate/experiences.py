"""Experiences: each scene -> a full dialogue where the character thinks and speaks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from charforge.generate.base import DialogueStage, Records
from charforge.store import Store, TaskRow


class ExperienceStage(DialogueStage):
    name = "experiences"
    template = "experience"
    default_max_tokens = 2048
    min_turns = 3

    def __init__(self, *args: Any, store: Store, min_words: int = 600, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.store = store
        self.min_words = min_words

    def plan_inputs(self) -> Iterator[dict[str, Any]]:
        for scene in self.store.records(self.character.slug, "scene"):
            yield {
                "context": scene.inputs["context"],
                "scene": scene.data,
                "scene_ref": f"{scene.task_id}:{scene.idx}",
                "min_words": self.min_words,
            }

    def parse_answer(self, task: TaskRow, text: str, mode: str) -> Records:
        dialogue = self.dialogue_from(task, text, mode)
        return [("experience", {"scene": task.inputs["scene"], "dialogue": dialogue})]
