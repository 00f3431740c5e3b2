"""Stages written outside the package, as a user or a later issue would write them:
their own templates (one includes another), their own typed options, registered like
the built-in ones. The core runs them with no change: proof that the next stages
(PersLLM questions, interviews, judges) need none either."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pydantic import Field

from charforge.llm.base import ChatMessage
from charforge.records import Rejected
from charforge.session import TaskSession
from charforge.stages import PlannedTask, Records, StageOptions, TaskStage, register_stage
from charforge.tasks import TaskRow

PROMPTS = Path(__file__).parent / "custom_prompts"


class RiddleOptions(StageOptions):
    riddles: int = Field(default=3, ge=1, le=100, description="riddles to write")
    lines: int = Field(default=2, ge=1, le=8, description="lines per riddle")


@register_stage
class RiddleStage(TaskStage):
    """One request per riddle; an answer without a question mark is rejected."""

    name = "riddles"
    system_template = "riddle_system"
    user_template = "riddle_user"
    repair_template = None
    template_dirs = (PROMPTS,)
    Options = RiddleOptions
    record_version = 2  # its records' shape changed once

    def plan(self) -> Iterator[PlannedTask]:
        for number in range(self.options.riddles):
            passage = self.character.profile[number % len(self.character.profile)]
            yield PlannedTask({"number": number, "lines": self.options.lines,
                               "passage": passage[:200]})

    def parse_answer(self, task: TaskRow, text: str) -> Records:
        if "?" not in text:
            raise Rejected("invalid", "a riddle asks something")
        return [("riddle", {"number": task.inputs["number"], "text": text.strip()})]


class InterviewOptions(StageOptions):
    topics: list[str] = Field(default=["music"], min_length=1, description="one task each")
    turns: int = Field(default=4, ge=1, le=10, description="questions per interview")


@register_stage
class InterviewStage(TaskStage):
    """A task that is a conversation with two models: an interviewer asks, the
    character answers, `turns` times. Each answer is kept as it arrives."""

    name = "test-interview"
    system_template = None
    user_template = "interview_question"
    repair_template = None
    template_dirs = (PROMPTS,)
    Options = InterviewOptions
    roles = ("interviewer", "agent")

    @classmethod
    def template_names(cls) -> list[str]:
        return ["interview_question", "interview_answer"]

    def plan(self) -> Iterator[PlannedTask]:
        for topic in self.options.topics:
            yield PlannedTask({"topic": topic, "turns": self.options.turns})

    def messages(self, task: TaskRow) -> list[ChatMessage]:
        """The first request (what a dry run shows)."""
        return self._ask("interview_question", task, 1, [])

    def _ask(self, template: str, task: TaskRow, turn: int, transcript: list[str]):
        text = self.render(template, task, turn=turn, transcript=transcript)
        return [ChatMessage(role="user", content=text)]

    async def run(self, task: TaskRow, session: TaskSession) -> Records:
        transcript: list[str] = []
        for turn in range(1, task.inputs["turns"] + 1):
            question = await session.ask(self._ask("interview_question", task, turn, transcript),
                                         role="interviewer")
            transcript.append(f"Q{turn}: {question.text}")
            reply = await session.ask(self._ask("interview_answer", task, turn, transcript),
                                      role="agent")
            transcript.append(f"A{turn}: {reply.text}")
        return [("interview", {"topic": task.inputs["topic"], "transcript": transcript})]
