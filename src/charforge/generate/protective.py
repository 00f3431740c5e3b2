"""Protective scenes: someone tries to make the character talk about what it
cannot know; the character shows ignorance, as the real one would.

The seed found that fewer than 100 such scenes per character suffice; each
takes one profile paragraph, in order, cycling when more are asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from charforge.generate.base import DialogueStage, Records
from charforge.store import TaskRow


class ProtectiveStage(DialogueStage):
    name = "protective"
    template = "protective"
    default_max_tokens = 1536
    min_turns = 2

    def __init__(self, *args: Any, count: int = 50, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.count = count

    def plan_inputs(self) -> Iterator[dict[str, Any]]:
        paragraphs = self.character.profile
        for sample in range(self.count if paragraphs else 0):
            index = sample % len(paragraphs)
            yield {"context": paragraphs[index], "paragraph": index, "sample": sample}

    def parse_answer(self, task: TaskRow, text: str, mode: str) -> Records:
        return [("protective", {"dialogue": self.dialogue_from(task, text, mode)})]
