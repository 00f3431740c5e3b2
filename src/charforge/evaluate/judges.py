"""Judges as stages: Character-LLM's rubric, one task per interview, dimension and sample.

`judge` plans from the character's interview records (every agent's, or those named):
for each interview, each dimension of Character-LLM's rubric (memorization, values,
personality, avoiding hallucination, stability; 1-7) and each of `samples` samples, one
task whose parent is the interview. The judge reasons first, then scores; the score is
read by `scores.read_score` (charforge's prompts: the last labelled score; the
Character-LLM preset: the last line, as its prompts instruct). An answer with no score
is asked once more for the score alone; still none, and the judgment is recorded with
`score=None` (unscored), never guessed.

Prompts: charforge's own (prompts/judge_*.j2, versioned) by default, or the seed's five
`prompt_score_llm_*.txt` verbatim (`preset="character-llm"`).

Sampling a judge k times only says something at a temperature above 0; `samples > 1`
at temperature 0 is refused. Several judges: run the stage once per judge model (its
name is in the task's inputs, so their judgments sit side by side).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from charforge.llm.base import ChatMessage, Sampling
from charforge.session import TaskSession
from charforge.stages import PlannedTask, Records, StageOptions, TaskStage, register_stage
from charforge.tasks import RecordRef, TaskRow

from .compat import judge_prompt
from .records import INTERVIEW_KIND, JUDGMENT_KIND, RUBRIC_DIMENSIONS, InterviewRecord, Judgment
from .scores import read_score

PROMPTS = Path(__file__).parent / "prompts"
JUDGE_SAMPLING = Sampling(temperature=0.0, max_tokens=512)
PROFILE_WORDS = 400
INTERVIEWER_NAME = "Interviewer"
SEED_INTERVIEWER = "Man"  # who asks, in the seed's interactions


class JudgeOptions(StageOptions):
    judge: str = Field(min_length=1, max_length=200, description="the judge's name")
    dimensions: tuple[str, ...] = Field(default=RUBRIC_DIMENSIONS, min_length=1)
    agents: tuple[str, ...] = Field(default=(), description="judge only these agents' "
                                    "interviews (all when empty)")
    modes: tuple[Literal["single", "multi"], ...] = Field(
        default=("single", "multi"), min_length=1, description="which interviews")
    topics: tuple[str, ...] = Field(default=(), description="only these topic ids (all "
                                    "when empty)")
    samples: int = Field(default=1, ge=1, le=20, description="judgments per interview and "
                         "dimension (above 1 only at a temperature above 0)")
    preset: Literal["charforge", "character-llm"] = "charforge"
    location: str = Field(default="", max_length=2000)
    status: str = Field(default="", max_length=2000)

    @model_validator(mode="after")
    def _known_dimensions(self) -> JudgeOptions:
        unknown = [d for d in self.dimensions if d not in RUBRIC_DIMENSIONS]
        if unknown:
            raise ValueError(f"unknown dimension {unknown[0]!r}; dimensions: "
                             f"{', '.join(RUBRIC_DIMENSIONS)}")
        return self


class RubricAnswer(BaseModel):
    """A judge's answer as JSON, where its endpoint takes a schema (a local model decodes
    it under a grammar, so even a small judge always gives a score on the scale)."""

    model_config = ConfigDict(extra="forbid")

    reasoning: str = Field(description="a few sentences, before the score")
    score: Literal[1, 2, 3, 4, 5, 6, 7]


def interactions_text(record: InterviewRecord, name: str, *, seed_format: bool) -> str:
    """The interview as the judge reads it: questions and spoken answers (thinking is
    not shown), in charforge's format or the seed's `Name (speaking): ...` lines."""
    lines = []
    for turn in record.turns:
        if seed_format:
            lines += [f"{SEED_INTERVIEWER} (speaking): {turn.question}",
                      f"{name} (speaking): {turn.answer}"]
        else:
            lines += [f"{INTERVIEWER_NAME}: {turn.question}", f"{name}: {turn.answer}"]
    return "\n\n".join(lines)


@register_stage
class RubricJudge(TaskStage):
    """One score of one interview on one dimension."""

    name: ClassVar[str] = "judge"
    description: ClassVar[str] = "Character-LLM's rubric: five dimensions, 1-7"
    system_template: ClassVar[str | None] = "judge_system"
    user_template: ClassVar[str] = "judge_rubric"
    repair_template: ClassVar[str | None] = "judge_retry"
    template_dirs: ClassVar[tuple[Path, ...]] = (PROMPTS,)
    generation: ClassVar[bool] = False
    Options: ClassVar[type[StageOptions]] = JudgeOptions
    roles: ClassVar[tuple[str, ...]] = ("judge",)
    sampling: ClassVar[Sampling] = JUDGE_SAMPLING
    Output: ClassVar[type[BaseModel] | None] = RubricAnswer  # used in JSON mode only
    # A local grammar keeps the reasoning to a few sentences.
    hints: ClassVar[dict[str, Any]] = {"words": {"reasoning": [8, 60]}}
    low: ClassVar[int] = 1
    high: ClassVar[int] = 7

    def decoding_hints(self, inputs: Any) -> dict[str, Any] | None:
        return self.hints

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self.interviews: dict[RecordRef, InterviewRecord] = {}
        if self.options.samples > 1 and context.sampling.temperature == 0:
            from charforge.errors import StageOptionsError

            raise StageOptionsError(f"{self.options.samples} samples of a judge at temperature "
                                    "0 are one answer repeated; set a temperature above 0 "
                                    "(e.g. 0.7) or use one sample")

    def nothing_to_do(self) -> str | None:
        if not self._read_interviews():
            return (f"{self.character.short_name} has no interviews to judge"
                    f"{' by ' + ', '.join(self.options.agents) if self.options.agents else ''}; "
                    "run charforge eval interview first (or import results)")
        return None

    def _read_interviews(self) -> dict[RecordRef, InterviewRecord]:
        if not self.interviews:
            options = self.options
            for stored in self.context.reader.records(self.character.slug, INTERVIEW_KIND):
                record = InterviewRecord.model_validate(stored.data)
                if ((not options.agents or record.agent in options.agents)
                        and record.mode in options.modes
                        and (not options.topics or record.topic_id in options.topics)):
                    self.interviews[(stored.task_id, stored.idx)] = record
        return self.interviews

    def plan(self) -> Iterator[PlannedTask]:
        options = self.options
        for ref, record in self._read_interviews().items():
            for dimension in options.dimensions:
                for sample in range(options.samples):
                    stage = {"stage": record.stage} if record.stage else {}
                    yield PlannedTask({
                        **stage, "judge": options.judge, "agent": record.agent,
                        "item": record.item,
                        "mode": record.mode, "dimension": dimension, "sample": sample,
                        "preset": options.preset, "location": options.location,
                        "status": options.status}, parents=(ref,))

    def _interview(self, task: TaskRow) -> InterviewRecord:
        ref = task.parents[0]
        if ref not in self._read_interviews():
            raise RuntimeError(f"the interview {ref} this judgment is of is not in the store")
        return self.interviews[ref]

    @cached_property
    def _profile(self) -> str:
        """The profile's first words, as the judge reads it (split once per stage)."""
        words = " ".join(self.character.profile_or_knowledge()).split()
        return " ".join(words[:PROFILE_WORDS])

    def messages(self, task: TaskRow) -> list[ChatMessage]:
        inputs = task.inputs
        seed_format = inputs["preset"] == "character-llm"
        interactions = interactions_text(self._interview(task), self.character.short_name,
                                         seed_format=seed_format)
        if seed_format:
            text = judge_prompt(inputs["dimension"], self.character, self._profile,
                                inputs["location"], inputs["status"], interactions)
            return [ChatMessage(role="user", content=text)]
        user = self.render(self.user_template, task, profile=self._profile,
                           interactions=interactions, low=self.low, high=self.high)
        return [ChatMessage(role="system", content=self.render("judge_system", task)),
                ChatMessage(role="user", content=user)]

    async def run(self, task: TaskRow, session: TaskSession) -> Records:
        score, reasoning = await ask_for_score(
            self, task, session, self.messages(task),
            last_line=task.inputs["preset"] == "character-llm")
        inputs = task.inputs
        judgment = Judgment(agent=inputs["agent"], item=inputs["item"], mode=inputs["mode"],
                            dimension=inputs["dimension"], judge=inputs["judge"],
                            preset=inputs["preset"], sample=inputs["sample"], score=score,
                            stage=inputs.get("stage"),
                            low=self.low, high=self.high, reasoning=reasoning)
        return [(JUDGMENT_KIND, judgment.model_dump(mode="json"))]


def _json_answer(text: str) -> RubricAnswer | None:
    try:
        return RubricAnswer.model_validate_json(text)
    except ValidationError:
        return None


async def ask_for_score(stage: Any, task: TaskRow, session: TaskSession,
                        messages: list[ChatMessage], *, last_line: bool = False
                        ) -> tuple[int | None, str]:
    """(score, reasoning) of a judge asked `messages`, on the stage's `low`..`high` scale:
    an answer with no readable score is asked once more for the score alone
    (`judge_retry`); still none, and the score is None, the reasoning saying why. In JSON
    mode the answer's `score` is read (a JSON answer that does not fit the schema is
    read as text)."""
    low, high = stage.low, stage.high
    first = await session.ask(messages)
    answer = _json_answer(first.text) if task.mode == "json" else None
    if answer is not None:
        return answer.score, answer.reasoning.strip()
    read = read_score(first.text, low, high, last_line=last_line)
    reasoning = first.text.strip()
    if read.score is None:
        retry = stage.render("judge_retry", task, problem=read.problem, low=low, high=high)
        second = await session.ask([*messages, ChatMessage(role="assistant", content=first.text),
                                    ChatMessage(role="user", content=retry)],
                                   response_format=None)
        read = read_score(second.text, low, high)
        if read.score is None:
            reasoning = f"{reasoning}\n\n[unscored: {read.problem}]"
    return read.score, reasoning
