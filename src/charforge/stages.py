"""The one contract every stage keeps, and the one registry of stages.

A stage (Experience Reconstruction's scenes, experiences and protective scenes;
PersLLM's questions and answers; interviews; judges) declares:

- its templates: a system and a user template (plus the repair request), found
  along the workspace's and the stage's own template folders;
- its output model: the pydantic model a JSON answer is parsed into, from which
  the JSON schema is derived (`output_model` may narrow it per task);
- its options: a typed pydantic `Options` model with defaults and bounds;
- its models: the roles a task talks to (`("teacher",)` by default);
- how to plan its tasks (`plan`, from the character and earlier records, read
  through the store like every other stage), and how to run one (`run`: ask,
  parse, repair once by default; or a short recorded conversation).

Everything that makes a task's identity (templates, output schema, models,
sampling) is derived from these declarations by the core, never by the stage.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from charforge.character import Character
from charforge.errors import CharforgeError, StageOptionsError, first_problem
from charforge.llm.base import ChatMessage, Completion, Sampling
from charforge.llm.grammar import HINTS_KEY
from charforge.parse import response_format, truncation_check
from charforge.parse.schemas import schema_fingerprint
from charforge.prompts import PROMPTS, Templates, templates_for
from charforge.records import Feedback, Rejected
from charforge.session import TaskSession
from charforge.tasks import RecordRef, StoredRecord, TaskRow

OutputMode = Literal["text", "json"]
Records = list[tuple[str, dict[str, Any]]]
# Packages whose modules register the built-in stages when imported.
BUILTIN_STAGE_MODULES = ("charforge.generate", "charforge.evaluate.interview",
                         "charforge.evaluate.judges", "charforge.evaluate.persllm_judges",
                         "charforge.evaluate.interview_questions")


class StageOptions(BaseModel):
    """Base of every stage's `Options`: unknown names are errors, values are checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class PlannedTask:
    """One task a stage wants: its canonical inputs and the records it starts from."""

    inputs: dict[str, Any]
    parents: tuple[RecordRef, ...] = ()


class RecordReader(Protocol):
    """What a stage may read while planning: earlier records in a stable order, the
    inputs of its tasks planned before, and a reviewer's notes."""

    def records(self, character: str, kind: str) -> Iterator[StoredRecord]: ...

    def task_inputs(self, character: str, stage: str) -> Iterator[
        tuple[tuple[RecordRef, ...], dict[str, Any]]]: ...

    def feedback(self, character: str) -> list[Feedback]: ...


@dataclass(frozen=True)
class StageContext:
    """Everything a stage instance works from."""

    character: Character
    options: StageOptions
    sampling: Sampling
    mode: OutputMode
    templates: Templates
    reader: RecordReader
    # Where a stage may keep files derived from its inputs (a retrieval index); None:
    # the user's cache folder.
    cache_folder: Path | None = None


class TaskStage(ABC):
    """Subclasses set the class attributes and implement `plan` and `parse_answer`
    (or override `run` for a conversation)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    system_template: ClassVar[str | None] = "teacher_system"
    user_template: ClassVar[str] = ""
    repair_template: ClassVar[str | None] = "repair_json"
    template_dirs: ClassVar[tuple[Path, ...]] = ()
    Output: ClassVar[type[BaseModel] | None] = None
    Options: ClassVar[type[StageOptions]] = StageOptions
    roles: ClassVar[tuple[str, ...]] = ("teacher",)
    sampling: ClassVar[Sampling] = Sampling()
    record_version: ClassVar[int] = 1
    # Offered by `charforge generate` (teacher stages); interviews and judges have verbs
    # of their own (`charforge eval ...`).
    generation: ClassVar[bool] = True

    def __init__(self, context: StageContext) -> None:
        self.context = context
        self.character = context.character
        self.options: Any = context.options
        self.mode: OutputMode = context.mode
        self.templates = context.templates

    # -- declarations, as the core reads them ---------------------------------------
    @classmethod
    def template_names(cls) -> list[str]:
        names = [cls.system_template, cls.user_template, cls.repair_template]
        return [name for name in names if name]

    @classmethod
    def templates_in(cls, templates: Templates) -> Templates:
        """`templates` with this stage's own folders searched after the workspace's."""
        return templates_for(*templates.folders[:-1], *cls.template_dirs)

    @classmethod
    def parse_options(cls, values: Mapping[str, Any] | StageOptions | None) -> StageOptions:
        """`values` as this stage's `Options`; an unknown name or a bad value is a
        `StageOptionsError` naming the valid options."""
        if isinstance(values, cls.Options):
            return values
        given = {k: v for k, v in dict(values or {}).items() if v is not None}
        valid = ", ".join(cls.Options.model_fields) or "none"
        unknown = sorted(set(given) - set(cls.Options.model_fields))
        if unknown:
            raise StageOptionsError(f"stage {cls.name!r} has no option "
                                    f"{', '.join(map(repr, unknown))}; its options: {valid}")
        try:
            return cls.Options.model_validate(given)
        except ValidationError as exc:
            where, what = first_problem(exc)
            given_value = exc.errors()[0].get("input")
            raise StageOptionsError(f"stage {cls.name!r}, option {where or 'options'!r}: "
                                    f"{what}; given {given_value!r}") from None

    @classmethod
    def prompt_fingerprint_in(cls, templates: Templates) -> str:
        """Every template this stage renders (with what they include), found in
        `templates` and the stage's own folders."""
        return cls.templates_in(templates).fingerprint(cls.template_names())

    def prompt_fingerprint(self) -> str:
        return self.templates.fingerprint(self.template_names())

    @classmethod
    def output_fingerprint(cls) -> str:
        """The output model's schema and the records' version."""
        schema = schema_fingerprint(cls.Output) if cls.Output is not None else "text"
        return f"{schema}:v{cls.record_version}"

    # -- planning --------------------------------------------------------------------
    @abstractmethod
    def plan(self) -> Iterator[PlannedTask]:
        """The tasks, in a stable order (the same options plan the same tasks)."""

    def task_inputs(self, planned: PlannedTask) -> dict[str, Any]:
        """The inputs stored with a task: the character's names, then the stage's."""
        return {"name": self.character.name, "short_name": self.character.short_name,
                **planned.inputs}

    def output_model(self, inputs: Mapping[str, Any]) -> type[BaseModel] | None:
        """The model a JSON answer must match; narrow it per task by overriding."""
        return self.Output

    def decoding_hints(self, inputs: Mapping[str, Any]) -> dict[str, Any] | None:
        """Lengths a local grammar may hold a small model to (`HINTS_KEY` in
        charforge.llm.grammar): words per string property, items per list. Endpoints
        never see them."""
        return None

    def response_format(self, inputs: Mapping[str, Any]) -> dict[str, Any] | None:
        model = self.output_model(inputs)
        if self.mode != "json" or model is None:
            return None
        form = response_format(model, model.__name__ if model is not self.Output else self.name)
        hints = self.decoding_hints(inputs)
        return {**form, HINTS_KEY: hints} if hints else form

    def nothing_to_do(self) -> str | None:
        """Why this stage can plan no task at all for its character (e.g. no profile,
        no scenes yet), in a sentence with what to do about it; None when it can."""
        return None

    def report(self) -> list[str]:
        """Lines about the stage's output so far, printed after a run (e.g. coverage)."""
        return []

    # -- running -----------------------------------------------------------------------
    def render(self, template: str, task: TaskRow, **values: Any) -> str:
        """Render `template` with the task's inputs; `values` add to them or replace them
        (e.g. passage texts for the ids a task stores)."""
        return self.templates.render(template, **{"json": task.mode == "json", **task.inputs,
                                                  **values})

    def messages(self, task: TaskRow) -> list[ChatMessage]:
        messages = [ChatMessage(role="user", content=self.render(self.user_template, task))]
        if self.system_template:
            system = self.render(self.system_template, task)
            messages.insert(0, ChatMessage(role="system", content=system))
        return messages

    def parse(self, task: TaskRow, completion: Completion) -> Records:
        truncation_check(completion.finish_reason)
        return self.parse_answer(task, completion.text)

    def parse_answer(self, task: TaskRow, text: str) -> Records:
        """Answer text -> (kind, data) records, or raise `Rejected`."""
        raise TypeError(f"stage {self.name!r} implements neither parse_answer nor run")

    def repair_messages(self, task: TaskRow, answer: str,
                        problem: Rejected) -> list[ChatMessage] | None:
        """In JSON mode, an invalid answer earns one repair request."""
        if task.mode != "json" or problem.reason != "invalid" or not self.repair_template:
            return None
        repair = self.render(self.repair_template, task, problem=problem.detail)
        return [*self.messages(task), ChatMessage(role="assistant", content=answer),
                ChatMessage(role="user", content=repair)]

    async def run(self, task: TaskRow, session: TaskSession) -> Records:
        """Ask, parse, and (once, where the stage allows) ask for a repair. Raises
        `Rejected` when the answer cannot be used."""
        first = await session.ask(self.messages(task))
        try:
            return self.parse(task, first)
        except Rejected as problem:
            repair = self.repair_messages(task, first.text, problem)
            if repair is None:
                raise
        second = await session.ask(repair)
        return self.parse(task, second)


# -- the registry ---------------------------------------------------------------------------
STAGES: dict[str, type[TaskStage]] = {}


def register_stage(cls: type[TaskStage]) -> type[TaskStage]:
    """Class decorator: make a stage known by its name (the CLI, status and the
    pipeline find it here). Registering another class under a taken name replaces it."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    STAGES[cls.name] = cls
    return cls


def registered_stages() -> dict[str, type[TaskStage]]:
    for module in BUILTIN_STAGE_MODULES:
        importlib.import_module(module)
    return dict(STAGES)


def stage_class(name: str) -> type[TaskStage]:
    stages = registered_stages()
    if name not in stages:
        raise CharforgeError(f"unknown stage {name!r}; stages: {', '.join(stages)}")
    return stages[name]


def build_stage(
    stage: str | type[TaskStage],
    character: Character,
    reader: RecordReader,
    *,
    options: Mapping[str, Any] | StageOptions | None = None,
    sampling: Sampling | Mapping[str, Any] | None = None,
    mode: OutputMode = "text",
    templates: Templates | None = None,
    cache_folder: Path | None = None,
) -> TaskStage:
    """A stage instance: options checked against its `Options`, sampling settings laid
    over its defaults, its templates found after the workspace's own."""
    cls = stage_class(stage) if isinstance(stage, str) else stage
    if mode not in ("text", "json"):
        raise CharforgeError(f"unknown output format {mode!r}; use auto, text or json")
    overrides = sampling.model_dump() if isinstance(sampling, Sampling) else dict(sampling or {})
    try:
        merged = cls.sampling.but(**overrides)
    except ValueError as exc:
        raise StageOptionsError(f"stage {cls.name!r}: {exc}") from None
    context = StageContext(character=character, options=cls.parse_options(options),
                           sampling=merged, mode=mode,
                           templates=cls.templates_in(templates or PROMPTS), reader=reader,
                           cache_folder=cache_folder)
    return cls(context)
