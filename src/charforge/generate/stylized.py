"""PersLLM's stylized instruction data: general instructions (a local JSONL file or a
saved `datasets` folder) answered by the teacher in the character's voice and with its
knowledge, so the trained agent keeps its general ability without leaving character."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from charforge.errors import CharforgeError
from charforge.generate.base import teacher_sampling
from charforge.generate.personified import PersonifiedStage, run_stages, stage_now
from charforge.jsonl import json_objects
from charforge.parse.persona import parse_character_answer
from charforge.parse.schemas import PersonaAnswer
from charforge.stages import PlannedTask, Records, StageContext, StageOptions, register_stage
from charforge.tasks import TaskRow

MAX_INSTRUCTION_BYTES = 200 * 1024 * 1024


class StylizedOptions(StageOptions):
    instructions: str = Field(default="", description="a JSONL file (instruction [+ input], "
                              "prompt, question or messages per line) or a saved datasets "
                              "folder")
    count: int | None = Field(default=None, ge=1, le=10_000_000,
                              description="instructions to use")
    stage: str | None = Field(default=None, description="answer as of this time stage")
    knowledge_words: int = Field(default=1500, ge=0, le=20_000,
                                 description="words of retrieved knowledge per prompt")
    style_words: int = Field(default=500, ge=0, le=20_000,
                             description="words of retrieved style per prompt")


def instruction_of(row: Mapping[str, Any]) -> str | None:
    """The instruction text of one row in the common layouts: Alpaca's instruction (+
    input), prompt, question, or the first user message of `messages`."""
    if isinstance(row.get("instruction"), str):
        extra = row.get("input")
        text = row["instruction"] + (f"\n\n{extra}" if isinstance(extra, str) and extra.strip()
                                     else "")
        return text.strip() or None
    for key in ("prompt", "question"):
        if isinstance(row.get(key), str) and row[key].strip():
            return row[key].strip()
    messages = row.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, Mapping) and message.get("role") == "user":
                content = message.get("content")
                return content.strip() if isinstance(content, str) and content.strip() else None
    return None


def read_instructions(path: Path, limit: int | None = None) -> list[str]:
    """Every instruction in a JSONL file or a saved dataset, in order. A missing file, a
    line that is not JSON or a row without an instruction is a one-line error."""
    if not path.exists():
        raise CharforgeError(f"{path}: instructions file not found")
    rows: Iterator[Mapping[str, Any]]
    if path.is_dir():
        rows = _dataset_rows(path)
    else:
        if path.stat().st_size > MAX_INSTRUCTION_BYTES:
            raise CharforgeError(f"{path}: over {MAX_INSTRUCTION_BYTES >> 20} MB of "
                                 "instructions; split it")
        rows = _jsonl_rows(path)
    found: list[str] = []
    for number, row in enumerate(rows, 1):
        text = instruction_of(row)
        if text is None:
            raise CharforgeError(f"{path}: row {number} has no instruction (expected "
                                 "instruction, prompt, question or messages)")
        found.append(text)
        if limit is not None and len(found) >= limit:
            break
    if not found:
        raise CharforgeError(f"{path}: no instructions in it")
    return found


def _jsonl_rows(path: Path) -> Iterator[Mapping[str, Any]]:
    for _, row in json_objects(path):
        yield row


def _dataset_rows(folder: Path) -> Iterator[Mapping[str, Any]]:
    from datasets import DatasetDict, load_from_disk

    try:
        loaded = load_from_disk(str(folder))
    except (FileNotFoundError, ValueError, OSError) as error:
        raise CharforgeError(f"{folder}: not a saved dataset ({error})") from None
    if isinstance(loaded, DatasetDict):
        if "train" not in loaded:
            raise CharforgeError(f"{folder}: a saved dataset without a train split")
        loaded = loaded["train"]
    yield from loaded


@register_stage
class StylizedStage(PersonifiedStage):
    name = "stylized"
    description = "general instruction -> answer in the character's voice (PersLLM)"
    user_template = "stylized"
    Output = PersonaAnswer
    Options = StylizedOptions
    sampling = teacher_sampling(1024)

    def __init__(self, context: StageContext) -> None:
        super().__init__(context)
        if not self.options.instructions:
            raise CharforgeError("the stylized stage needs --instructions FILE (a JSONL file "
                                 "or a saved datasets folder)")
        if self.options.stage is not None:
            run_stages(self.character, self.options.stage)
        self.instructions  # noqa: B018 - a bad file is an error before anything runs

    @cached_property
    def instructions(self) -> list[str]:
        return read_instructions(Path(self.options.instructions).expanduser(),
                                 self.options.count)

    def plan(self) -> Iterator[PlannedTask]:
        options: StylizedOptions = self.options
        key, budget = self.index.key, [options.knowledge_words, options.style_words]
        # An instruction planned before against the same passages, budget and stage keeps
        # what was retrieved for it: a resumed run encodes no query again.
        pinned: dict[tuple[int, str], dict[str, Any]] = {}
        for _, inputs in self.context.reader.task_inputs(self.character.slug, self.name):
            if (inputs.get("passages"), inputs.get("budget"), inputs.get("stage")) == (
                    key, budget, options.stage):
                pinned[(int(inputs["index"]), str(inputs["instruction"]))] = inputs
        fresh = [(index, text) for index, text in enumerate(self.instructions)
                 if (index, text) not in pinned]
        found = dict(zip(fresh, self.retrieve([(text, options.stage, None) for _, text in fresh],
                                              options.knowledge_words, options.style_words),
                         strict=True))
        stage = self.stage_of(options.stage)
        for index, text in enumerate(self.instructions):
            if (index, text) in found:
                retrieved = found[(index, text)]
                knowledge, style = list(retrieved.knowledge), list(retrieved.style)
            else:
                knowledge = pinned[(index, text)]["knowledge"]
                style = pinned[(index, text)]["style"]
            yield PlannedTask({
                "instruction": text, "index": index, "stage": options.stage,
                "stage_now": stage_now(self.character, stage),
                "knowledge": knowledge, "style": style, "passages": key, "budget": budget,
            })

    def output_model(self, inputs: Mapping[str, Any]) -> type[BaseModel] | None:
        return PersonaAnswer

    def decoding_hints(self, inputs: Mapping[str, Any]) -> dict[str, Any] | None:
        return {"words": {"response": [12, 300]}}

    def render(self, template: str, task: TaskRow, **values: Any) -> str:
        return super().render(template, task, **{**self.passage_texts(task.inputs), **values})

    def parse_answer(self, task: TaskRow, text: str) -> Records:
        answer = parse_character_answer(text, json_mode=task.mode == "json",
                                        with_analysis=False)
        self.check_language(answer.response)
        inputs = task.inputs
        self.check_topic(answer.response, inputs["instruction"], inputs)
        return [("stylized", {"instruction": inputs["instruction"], "index": inputs["index"],
                              "stage": inputs["stage"],
                              "stage_token": self.token_of(inputs["stage"]),
                              "response": answer.response})]
