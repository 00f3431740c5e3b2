"""What the three Experience Reconstruction stages share.

A stage is a prompt template plus two functions (`messages`, `parse`), a
planner that yields its tasks, and its sampling settings. Output comes in two
modes: `json` (response_format with a JSON schema, validated, one repair
request) and `text` (the seed's plain-text layout, parsed robustly).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, Literal

from charforge import parse
from charforge.character import Character
from charforge.llm.base import ChatMessage, Completion
from charforge.prompts import render_prompt, template_version
from charforge.records import Rejected
from charforge.store import TaskRow, TaskSpec

OutputMode = Literal["text", "json"]
Records = list[tuple[str, dict[str, Any]]]


class TeacherStage(ABC):
    """Base class: subclasses set the names and implement `plan_inputs` and
    `parse_answer`."""

    name: str = ""
    template: str = ""
    schema_name: str = ""
    default_max_tokens: int = 1024

    def __init__(
        self,
        character: Character,
        model_name: str,
        *,
        mode: OutputMode = "text",
        temperature: float = 0.7,
        top_p: float = 1.0,
        max_tokens: int | None = None,
    ) -> None:
        self.character = character
        self.model_name = model_name
        self.mode = mode
        self.sampling = {
            "temperature": temperature,
            "top_p": top_p,
            "max_tokens": max_tokens or self.default_max_tokens,
        }

    # -- planning ------------------------------------------------------------------------
    @abstractmethod
    def plan_inputs(self) -> Iterator[dict[str, Any]]:
        """The canonical inputs of each task, in a stable order."""

    def plan(self) -> Iterator[TaskSpec]:
        params: dict[str, Any] = {**self.sampling, "mode": self.mode}
        if self.mode == "json":
            params["response_format"] = parse.response_format_for(self.schema_name)
        version = template_version(self.template)
        for inputs in self.plan_inputs():
            yield TaskSpec(
                character=self.character.slug, stage=self.name, template=self.template,
                template_version=version, model=self.model_name, params=params,
                inputs={"name": self.character.name, "short_name": self.character.short_name,
                        **inputs},
            )

    # -- the two functions -----------------------------------------------------------------
    def messages(self, task: TaskRow) -> list[ChatMessage]:
        user = render_prompt(task.template, json=task.params.get("mode") == "json",
                             **task.inputs)
        return [
            ChatMessage(role="system", content=render_prompt("teacher_system")),
            ChatMessage(role="user", content=user),
        ]

    def parse(self, task: TaskRow, completion: Completion) -> Records:
        parse.truncation_check(completion.finish_reason)
        return self.parse_answer(task, completion.text, task.params.get("mode", "text"))

    @abstractmethod
    def parse_answer(self, task: TaskRow, text: str, mode: str) -> Records:
        """Answer text -> (kind, data) records, or raise `Rejected`."""

    def repair_messages(
        self, task: TaskRow, answer: str, problem: Rejected
    ) -> list[ChatMessage] | None:
        """In JSON mode, an invalid answer earns one repair request."""
        if task.params.get("mode") != "json" or problem.reason != "invalid":
            return None
        return [
            *self.messages(task),
            ChatMessage(role="assistant", content=answer),
            ChatMessage(role="user", content=render_prompt("repair_json", problem=problem.detail)),
        ]


class DialogueStage(TeacherStage):
    """Experiences and protective scenes: the answer is one dialogue."""

    schema_name = "dialogue"
    record_kind = ""
    min_turns = 2

    def dialogue_from(self, task: TaskRow, text: str, mode: str) -> dict[str, Any]:
        read = parse.parse_dialogue_json if mode == "json" else parse.parse_dialogue_text
        dialogue = read(text, main_character=task.inputs["short_name"],
                        aliases=[task.inputs["name"]], min_turns=self.min_turns)
        return dialogue.model_dump()
