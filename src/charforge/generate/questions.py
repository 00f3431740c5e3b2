"""PersLLM questions: from each knowledge or style passage, K questions from different
angles (ordinary), K questions on a false premise the passage contradicts (error), or
K opinion passages to react to (thought), per time stage.

PersLLM drew about five items per paragraph (14.5K from 2.8K paragraphs). A task is one
passage of one stage; `count` asks for more passes over the passages (each pass a new
sample) until that many questions are asked for.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from charforge.generate.base import ExampleStage, teacher_sampling
from charforge.generate.personified import (
    PersonifiedStage,
    in_stage,
    passages_of,
    run_stages,
    stage_now,
)
from charforge.parse.persona import parse_questions, touches
from charforge.parse.quality import quote
from charforge.parse.schemas import ErrorQuestionsAnswer, QuestionsAnswer
from charforge.records import Rejected
from charforge.stages import PlannedTask, Records, StageContext, StageOptions, register_stage
from charforge.tasks import TaskRow

if TYPE_CHECKING:
    from charforge.retrieval import Side as PassageKind

Pattern = Literal["ordinary", "error", "thought"]
class QuestionOptions(StageOptions):
    pattern: Pattern = Field(default="ordinary", description="ordinary, error (a false "
                             "premise) or thought (opinion passages)")
    stage: str | None = Field(default=None, description="the time stage (every stage of the "
                              "character when not given)")
    count: int | None = Field(default=None, ge=1, le=1_000_000, description="questions to "
                              "ask for in all (not given: one pass over the passages)")
    per_passage: int = Field(default=5, ge=1, le=20, description="questions per passage")


@register_stage
class QuestionStage(PersonifiedStage, ExampleStage):
    name = "questions"
    description = "passage -> questions, error questions or opinions (PersLLM)"
    user_template = "questions"
    example_template = "example_questions"
    Output = QuestionsAnswer
    Options = QuestionOptions
    sampling = teacher_sampling(1024)

    def __init__(self, context: StageContext) -> None:
        super().__init__(context)
        self.stages = run_stages(self.character, self.options.stage)  # unknown: an error here

    def kinds(self) -> tuple[PassageKind, ...]:
        """Opinions and false premises come from facts; ordinary questions from style too."""
        return ("knowledge", "style") if self.options.pattern == "ordinary" else ("knowledge",)

    def sources(self) -> list[tuple[Any, PassageKind, int, str]]:
        """(stage, kind, index, text) of each passage a pass visits, in a stable order:
        the stages taken in turn, so that a `count` short of a pass still covers each."""
        per_stage = []
        for stage in self.stages:
            found = []
            for kind in self.kinds():
                for index, (text, label) in enumerate(passages_of(self.character, kind)):
                    if in_stage(label, stage):
                        found.append((stage, kind, index, text))
            per_stage.append(found)
        return [source for turn in itertools.zip_longest(*per_stage) for source in turn
                if source is not None]

    def plan(self) -> Iterator[PlannedTask]:
        options: QuestionOptions = self.options
        sources = self.sources()
        if not sources:
            return
        per_passage = options.per_passage
        tasks = (len(sources) if options.count is None
                 else math.ceil(options.count / per_passage))
        for number in range(tasks):
            stage, kind, index, text = sources[number % len(sources)]
            inputs: dict[str, Any] = {
                "pattern": options.pattern,
                "stage": stage.label if stage else None,
                "stage_now": stage_now(self.character, stage),
                "source": {"kind": kind, "index": index},
                "passage": text,
                "n": per_passage,
                "sample": number // len(sources),
            }
            yield PlannedTask(inputs)

    def nothing_to_do(self) -> str | None:
        if self.sources():
            return None
        where = f" for stage {self.options.stage!r}" if self.options.stage else ""
        kinds = " or ".join(self.kinds())
        return (f"{self.character.short_name} has no {kinds} passages{where} to raise "
                "questions from; import a knowledge file (charforge character import)")

    def output_model(self, inputs: Mapping[str, Any]) -> type[BaseModel] | None:
        return ErrorQuestionsAnswer if inputs.get("pattern") == "error" else QuestionsAnswer

    def decoding_hints(self, inputs: Mapping[str, Any]) -> dict[str, Any] | None:
        n = int(inputs["n"])
        words = [20, 80] if inputs.get("pattern") == "thought" else [5, 35]
        return {"words": {"questions": words, "question": [5, 35], "false_claim": [4, 30]},
                "items": {"questions": [n, n]}}

    def parse_answer(self, task: TaskRow, text: str) -> Records:
        inputs = task.inputs
        pattern = inputs["pattern"]
        raised = parse_questions(text, json_mode=task.mode == "json",
                                 with_claims=pattern == "error",
                                 min_words=8 if pattern == "thought" else 4)
        self.check_copy(task, "\n".join(item.text for item in raised))
        self.check_language("\n".join(item.text for item in raised))
        if pattern != "thought":  # opinions may wander to a neighbouring subject
            names = (inputs["name"], inputs["short_name"])
            on_topic = [item for item in raised
                        if touches(f"{item.text} {item.false_claim or ''}", inputs["passage"],
                                   names)]
            if not on_topic:
                raise Rejected("off_topic", f"none of the {len(raised)} questions touches its "
                               f"passage (e.g. {quote(raised[0].text)})")
            raised = on_topic
        asked = int(inputs["n"])
        if len(raised) * 2 < asked:
            raise Rejected("too_short", f"{len(raised)} usable questions of {asked} asked")
        return [("question", {
            "question": item.text, "pattern": pattern, "stage": inputs["stage"],
            "source": inputs["source"], "passage": inputs["passage"],
            "angle": item.position if pattern == "ordinary" else None,
            "false_claim": item.false_claim,
        }) for item in raised]
