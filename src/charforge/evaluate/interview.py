"""Interviews as stages: an agent answers a question set, one task per item.

- `interview` (single-turn): each question asked alone, as Character-LLM's single-turn
  interviews do;
- `interview-multi`: an interviewer model opens with the item's question and goes on
  for `turns` questions (5, the seed's length): it follows up when an answer is vague
  (fewer than `VAGUE_WORDS` words) and, at the second-to-last question, asks an earlier
  question again in other words, to test consistency. Every question and answer is kept
  as it arrives, so a killed interview resumes at the first missing turn.

The agent is the role `agent`: any `ChatModel` that plays the character (a
`charforge.agents.ServedCharacter`, an endpoint serving a character). Agents sample
at the seed's settings by default (temperature 0.2), each turn seeded from the task
(recorded with the answer). A task's inputs hold the agent's label and the item, so
a trained and a prompted agent asked the same question are two tasks whose records
pair up in the report.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from charforge.agents import split_thoughts
from charforge.llm.base import ChatMessage, Sampling
from charforge.records import Rejected
from charforge.session import TaskSession, turn_seed
from charforge.stages import PlannedTask, Records, StageOptions, TaskStage, register_stage
from charforge.tasks import TaskRow

from .compat import interviewer_system as compat_interviewer_system
from .questions import Question
from .records import INTERVIEW_KIND, InterviewRecord, InterviewTurn

PROMPTS = Path(__file__).parent / "prompts"
# Character-LLM samples its agents at 0.2.
AGENT_SAMPLING = Sampling(temperature=0.2, max_tokens=256)
INTERVIEWER_SAMPLING = Sampling(temperature=0.7, max_tokens=96)
SEED_TURNS = 5
VAGUE_WORDS = 12
PROFILE_WORDS = 250  # of the profile, in the interviewer's prompt


class InterviewOptions(StageOptions):
    agent: str = Field(min_length=1, max_length=200, description="the agent's label")
    questions: tuple[Question, ...] = Field(min_length=1, description="the items")
    turns: int = Field(default=SEED_TURNS, ge=1, le=20, description="questions per item "
                       "(multi-turn)")
    preset: Literal["charforge", "character-llm"] = Field(
        default="charforge", description="the interviewer's prompt: ours, or the seed's")
    location: str = Field(default="", max_length=2000)
    status: str = Field(default="", max_length=2000)
    stage: str | None = Field(default=None, max_length=100, description="the time stage "
                              "the agent is asked in (label or token), recorded")


def agent_messages(history: list[InterviewTurn], question: str) -> list[ChatMessage]:
    """What the agent sees: earlier questions and its own answers, then the question."""
    messages: list[ChatMessage] = []
    for turn in history:
        messages += [ChatMessage(role="user", content=turn.question),
                     ChatMessage(role="assistant", content=turn.answer)]
    return [*messages, ChatMessage(role="user", content=question)]


def answer_turn(question: str, text: str) -> InterviewTurn:
    thinking, answer = split_thoughts(text)
    return InterviewTurn(question=question, answer=answer.strip(), thinking=thinking.strip())


def clean_question(text: str) -> str:
    """The interviewer's question: its first paragraph, without a speaker label."""
    paragraph = next((p.strip() for p in text.strip().split("\n\n") if p.strip()), "")
    for label in ("interviewer:", "question:", "you:", "q:"):
        if paragraph.lower().startswith(label):
            paragraph = paragraph[len(label):].strip()
    if "(speaking):" in paragraph:  # the seed's format: "Man (speaking): ..."
        paragraph = paragraph.split("(speaking):", 1)[1].strip()
    return paragraph.strip().strip('"').strip()


class _Interview(TaskStage):
    system_template: ClassVar[str | None] = None
    repair_template: ClassVar[str | None] = None
    template_dirs: ClassVar[tuple[Path, ...]] = (PROMPTS,)
    generation: ClassVar[bool] = False
    Options: ClassVar[type[StageOptions]] = InterviewOptions
    sampling: ClassVar[Sampling] = AGENT_SAMPLING
    mode_name: ClassVar[Literal["single", "multi"]] = "single"

    def plan(self) -> Iterator[PlannedTask]:
        for question in self.options.questions:
            stage = {"stage": self.options.stage} if self.options.stage else {}
            yield PlannedTask({"agent": self.options.agent, "mode": self.mode_name, **stage,
                               "item": question.item, "topic_id": question.topic_id,
                               "topic": question.topic, "question": question.question,
                               **self.extra_inputs()})

    def extra_inputs(self) -> dict[str, Any]:
        return {}

    def record(self, task: TaskRow, turns: list[InterviewTurn], model: str) -> Records:
        """The interview as a record; the seed is the first answer's (each turn's is
        derived from the task, `charforge.session.turn_seed`)."""
        if not any(turn.answer for turn in turns):
            raise Rejected("empty", "the agent said nothing in character")
        sampling = task.sampling
        record = InterviewRecord(
            agent=task.inputs["agent"], model=model, mode=self.mode_name,
            item=task.inputs["item"], topic_id=task.inputs["topic_id"],
            topic=task.inputs["topic"], stage=task.inputs.get("stage"), turns=turns,
            temperature=sampling.temperature,
            seed=sampling.seed if sampling.seed is not None else turn_seed(task, 0))
        return [(INTERVIEW_KIND, record.model_dump(mode="json"))]


@register_stage
class SingleInterview(_Interview):
    """One question, one answer."""

    name: ClassVar[str] = "interview"
    description: ClassVar[str] = "an agent answers each question of a set, one at a time"
    user_template: ClassVar[str] = ""  # the question is the prompt; the agent adds its own
    roles: ClassVar[tuple[str, ...]] = ("agent",)

    @classmethod
    def template_names(cls) -> list[str]:
        return []

    def messages(self, task: TaskRow) -> list[ChatMessage]:
        return agent_messages([], task.inputs["question"])

    async def run(self, task: TaskRow, session: TaskSession) -> Records:
        completion = await session.ask(self.messages(task), role="agent")
        return self.record(task, [answer_turn(task.inputs["question"], completion.text)],
                           completion.model)


@register_stage
class MultiInterview(_Interview):
    """An interviewer and the agent, `turns` questions on the item's topic."""

    name: ClassVar[str] = "interview-multi"
    description: ClassVar[str] = "an interviewer draws the agent out over several turns"
    user_template: ClassVar[str] = "interviewer_turn"
    roles: ClassVar[tuple[str, ...]] = ("agent", "interviewer")
    mode_name: ClassVar[Literal["single", "multi"]] = "multi"

    @classmethod
    def template_names(cls) -> list[str]:
        return ["interviewer", "interviewer_turn"]

    def extra_inputs(self) -> dict[str, Any]:
        options = self.options
        return {"turns": options.turns, "preset": options.preset,
                "location": options.location, "status": options.status,
                "interviewer_sampling": INTERVIEWER_SAMPLING.model_dump(mode="json")}

    def messages(self, task: TaskRow) -> list[ChatMessage]:
        return agent_messages([], task.inputs["question"])

    def reask_turn(self, turns: int) -> int | None:
        """The question (1-based) that asks an earlier one again; None when too short."""
        return turns - 1 if turns >= 3 else None

    def interviewer_messages(self, task: TaskRow,
                             history: list[InterviewTurn]) -> list[ChatMessage]:
        inputs = task.inputs
        number = len(history) + 1
        profile = " ".join(" ".join(self.character.profile_or_knowledge()).split()
                           [:PROFILE_WORDS])
        if inputs["preset"] == "character-llm":
            system = compat_interviewer_system(self.character, inputs["topic"], profile,
                                               inputs["location"], inputs["status"])
            # The seed's interviewer plays the curious man; the character's lines are
            # the user's side.
            messages = [ChatMessage(role="system", content=system)]
            for turn in history:
                messages += [ChatMessage(role="assistant", content=turn.question),
                             ChatMessage(role="user", content=turn.answer)]
            return messages
        reask = None
        if number == self.reask_turn(inputs["turns"]) and history:
            reask = history[0].question
        vague = bool(history) and len(history[-1].answer.split()) < VAGUE_WORDS
        values = {"name": self.character.short_name, "turns": inputs["turns"],
                  "topic": inputs["topic"], "profile": profile}
        system = self.templates.render("interviewer", **values)
        user = self.templates.render("interviewer_turn", **values, history=history,
                                     number=number, reask=reask, vague=vague)
        return [ChatMessage(role="system", content=system),
                ChatMessage(role="user", content=user)]

    async def run(self, task: TaskRow, session: TaskSession) -> Records:
        history: list[InterviewTurn] = []
        question = task.inputs["question"]
        model = ""
        for number in range(1, task.inputs["turns"] + 1):
            if number > 1:
                asked = await session.ask(self.interviewer_messages(task, history),
                                          role="interviewer", sampling=INTERVIEWER_SAMPLING,
                                          response_format=None)
                question = clean_question(asked.text)
                if not question:
                    raise Rejected("empty", f"the interviewer asked nothing at turn {number}")
            answer = await session.ask(agent_messages(history, question), role="agent")
            model = answer.model
            history.append(answer_turn(question, answer.text))
        return self.record(task, history, model)
