"""Interview questions written by a teacher from the profile, per topic: the stage
`interview-questions`, for characters with no question set of their own.

The topics are Character-LLM's four (its interview files number them per character; here
they are fixed): personal information and past experiences, interpersonal relationships,
values and preferences, and questions that are difficult to answer without breaking
character (anachronism probes, for the protective-refusal rate). One task per topic and
profile passage (cycled until `per_topic` questions are asked for), recorded like any
other stage; `questions_from_store` turns the records into a question set.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from charforge.generate.base import LanguageCheck, teacher_sampling
from charforge.parse.persona import parse_questions
from charforge.parse.schemas import QuestionsAnswer
from charforge.records import Rejected
from charforge.stages import PlannedTask, Records, StageOptions, register_stage
from charforge.tasks import TaskRow

from .questions import Question

PROMPTS = Path(__file__).parent / "prompts"
QUESTION_KIND = "interview_question"
TOPICS = {"topic-1": "personal information and past experiences",
          "topic-2": "interpersonal relationships",
          "topic-3": "values and preferences",
          "topic-4": "difficult to answer without breaking character"}


class InterviewQuestionOptions(StageOptions):
    per_topic: int = Field(default=10, ge=1, le=1000, description="questions per topic")
    per_task: int = Field(default=5, ge=1, le=20, description="questions asked of a request")
    topics: tuple[str, ...] = Field(default=tuple(TOPICS), min_length=1,
                                    description="topic ids (topic-1 .. topic-4)")


@register_stage
class InterviewQuestions(LanguageCheck):
    name: ClassVar[str] = "interview-questions"
    description: ClassVar[str] = "interview questions per topic, from the profile"
    user_template: ClassVar[str] = "interview_questions"
    template_dirs: ClassVar[tuple[Path, ...]] = (PROMPTS,)
    Output: ClassVar[type[BaseModel] | None] = QuestionsAnswer
    Options: ClassVar[type[StageOptions]] = InterviewQuestionOptions
    sampling: ClassVar[Any] = teacher_sampling(512)
    generation: ClassVar[bool] = False

    def nothing_to_do(self) -> str | None:
        unknown = [t for t in self.options.topics if t not in TOPICS]
        if unknown:
            return f"unknown topic {unknown[0]!r}; topics: {', '.join(TOPICS)}"
        if not self.character.profile_or_knowledge():
            return f"{self.character.short_name} has no profile to draw questions from"
        return None

    def plan(self) -> Iterator[PlannedTask]:
        passages = self.character.profile_or_knowledge()
        if not passages:
            return
        options = self.options
        for topic_id in options.topics:
            if topic_id not in TOPICS:
                continue
            for number in range(math.ceil(options.per_topic / options.per_task)):
                yield PlannedTask({"topic_id": topic_id, "topic": TOPICS[topic_id],
                                   "passage": passages[number % len(passages)],
                                   "n": options.per_task, "sample": number // len(passages)})

    def decoding_hints(self, inputs: Mapping[str, Any]) -> dict[str, Any] | None:
        n = int(inputs["n"])
        return {"words": {"questions": [5, 30]}, "items": {"questions": [n, n]}}

    def parse_answer(self, task: TaskRow, text: str) -> Records:
        raised = parse_questions(text, json_mode=task.mode == "json", with_claims=False)
        asked = [item.text for item in raised if item.text.rstrip().endswith("?")]
        if not asked:
            raise Rejected("invalid", f"none of the {len(raised)} lines is a question")
        self.check_language("\n".join(asked))
        inputs = task.inputs
        return [(QUESTION_KIND, {"topic_id": inputs["topic_id"], "topic": inputs["topic"],
                                 "question": question}) for question in asked]


def questions_from_store(reader: Any, slug: str) -> list[Question]:
    """The character's generated interview questions, in the order they were recorded,
    one per distinct item."""
    found: dict[str, Question] = {}
    for record in reader.records(slug, QUESTION_KIND):
        question = Question.model_validate(record.data)
        found.setdefault(question.item, question)
    return list(found.values())
