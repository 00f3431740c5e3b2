"""PersLLM answers: each question answered in character, from the knowledge and style
passages retrieved for it (only its time stage's), optionally as an analysis and then
the response (`cot`).

An answer to an error question is checked by a second, recorded request: one that takes
the false claim for true is rejected (`accepted_false_premise`).

Review feedback applies to answers planned after it: a question keeps the feedback its
answer was first planned with, so new feedback never redoes earlier answers by itself;
`rerun_older` plans every answer again with the latest feedback. Likewise an answer keeps
being planned with or without its analysis as first asked, unless `cot` says otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel, Field

from charforge.generate.base import teacher_sampling
from charforge.generate.personified import PersonifiedStage, run_stages, stage_now
from charforge.llm.base import Sampling
from charforge.parse import response_format, truncation_check
from charforge.parse.persona import parse_character_answer, parse_premise_verdict
from charforge.parse.schemas import (
    AnalyzedAnswer,
    PersonaAnswer,
    PremiseVerdict,
    schema_fingerprint,
)
from charforge.records import Rejected
from charforge.session import TaskSession
from charforge.stages import PlannedTask, Records, StageContext, StageOptions, register_stage
from charforge.tasks import RecordRef, TaskRow

CHECK_SAMPLING = Sampling(temperature=0.0, top_p=1.0, max_tokens=200)
# How the check is asked, in an error question's task inputs: changing it redoes the work.
CHECK_IDENTITY = {"sampling": CHECK_SAMPLING.model_dump(mode="json"),
                  "schema": schema_fingerprint(PremiseVerdict)}


class AnswerOptions(StageOptions):
    cot: bool | None = Field(default=None, description="write an analysis, then the "
                             "response (not given: as the question's answer was first "
                             "planned, else no)")
    stage: str | None = Field(default=None, description="answer only this time stage's "
                              "questions")
    knowledge_words: int = Field(default=1500, ge=0, le=20_000,
                                 description="words of retrieved knowledge per prompt")
    style_words: int = Field(default=500, ge=0, le=20_000,
                             description="words of retrieved style per prompt")
    rerun_older: bool = Field(default=False, description="ask again the answers planned "
                              "before the latest review feedback")


@register_stage
class AnswerStage(PersonifiedStage):
    name = "answers"
    description = "question -> answer in character, from retrieved passages (PersLLM)"
    user_template = "answer"
    Output = PersonaAnswer
    Options = AnswerOptions
    sampling = teacher_sampling(1024)

    def __init__(self, context: StageContext) -> None:
        super().__init__(context)
        if self.options.stage is not None:
            run_stages(self.character, self.options.stage)  # an unknown stage: an error here

    @classmethod
    def template_names(cls) -> list[str]:
        return [*super().template_names(), "premise_check"]

    def questions(self) -> Iterator[Any]:
        for record in self.context.reader.records(self.character.slug, "question"):
            if self.options.stage is None or record.data.get("stage") == self.options.stage:
                yield record

    def plan(self) -> Iterator[PlannedTask]:
        options: AnswerOptions = self.options
        slug = self.character.slug
        # A question of a stage the character no longer has cannot be answered as of it.
        questions = [q for q in self.questions()
                     if q.data.get("stage") is None or self.stage_of(q.data["stage"])]
        if not questions:
            return
        feedback = self.context.reader.feedback(slug)
        latest = feedback[-1].id if feedback else 0
        # Per question, what its answer was last planned with (the latest planned wins):
        # the feedback, the analysis, and the passages retrieved for it. Retrieval is not
        # redone for a question already planned against the same passages and budget, so a
        # resumed run plans the same tasks without encoding a query.
        pinned: dict[RecordRef, dict[str, Any]] = {}
        for parents, inputs in self.context.reader.task_inputs(slug, self.name):
            for parent in parents:
                pinned[parent] = inputs
        budget = [options.knowledge_words, options.style_words]
        key = self.index.key

        def reusable(ref: RecordRef) -> bool:
            earlier = pinned.get(ref)
            return bool(earlier and earlier.get("passages") == key
                        and earlier.get("budget") == budget)

        fresh = [q for q in questions if not reusable((q.task_id, q.idx))]
        found = dict(zip(((q.task_id, q.idx) for q in fresh), self.retrieve(
            [(q.data["question"], q.data.get("stage"),
              self.source_ref(q.data.get("source"), q.data.get("passage"), q.data.get("stage")))
             for q in fresh], options.knowledge_words, options.style_words), strict=True))
        for question in questions:
            ref = (question.task_id, question.idx)
            earlier = pinned.get(ref, {})
            pin = latest if options.rerun_older or not earlier else int(
                earlier.get("feedback_id", 0))
            cot = bool(earlier.get("cot")) if options.cot is None else options.cot
            if ref in found:
                knowledge, style = list(found[ref].knowledge), list(found[ref].style)
            else:
                knowledge, style = earlier["knowledge"], earlier["style"]
            data = question.data
            inputs = {
                "question": data["question"], "pattern": data["pattern"],
                "stage": data.get("stage"),
                "stage_now": stage_now(self.character, self.stage_of(data.get("stage"))),
                "cot": cot,
                "knowledge": knowledge, "style": style, "passages": key, "budget": budget,
                "feedback_id": pin,
                "feedback": [note.text for note in feedback if note.id <= pin],
            }
            if data["pattern"] == "error":  # what the check compares the answer with, how
                inputs |= {"passage": data.get("passage", ""),
                           "false_claim": data.get("false_claim") or "",
                           "check": CHECK_IDENTITY}
            yield PlannedTask(inputs, parents=(ref,))

    def nothing_to_do(self) -> str | None:
        if next(self.questions(), None) is not None:
            return None
        where = f" of stage {self.options.stage!r}" if self.options.stage else ""
        return (f"{self.character.short_name} has no accepted questions{where} yet; run "
                f"charforge generate questions {self.character.slug} first (--retry-rejected "
                "asks the rejected ones again; charforge status shows why they were)")

    def output_model(self, inputs: Mapping[str, Any]) -> type[BaseModel] | None:
        return AnalyzedAnswer if inputs.get("cot") else PersonaAnswer

    def decoding_hints(self, inputs: Mapping[str, Any]) -> dict[str, Any] | None:
        return {"words": {"analysis": [15, 90], "response": [12, 150]}}

    def render(self, template: str, task: TaskRow, **values: Any) -> str:
        return super().render(template, task, **{**self.passage_texts(task.inputs), **values})

    def parse_answer(self, task: TaskRow, text: str) -> Records:
        inputs = task.inputs
        answer = parse_character_answer(text, json_mode=task.mode == "json",
                                        with_analysis=bool(inputs.get("cot")))
        self.check_language(answer.response)
        self.check_topic(answer.response, inputs["question"], task.inputs)
        (question_task, question_idx), = task.parents
        return [("answer", {
            "question": inputs["question"], "pattern": inputs["pattern"],
            "stage": inputs["stage"], "stage_token": self.token_of(inputs["stage"]),
            "analysis": answer.analysis, "response": answer.response,
            "feedback_id": inputs["feedback_id"], "question_ref": [question_task, question_idx],
        })]

    async def run(self, task: TaskRow, session: TaskSession) -> Records:
        records = await super().run(task, session)
        if task.inputs["pattern"] != "error":
            return records
        json_mode = task.mode == "json"
        check = self.templates.render(
            "premise_check", json=json_mode, short_name=task.inputs["short_name"],
            passage=task.inputs["passage"], question=task.inputs["question"],
            false_claim=task.inputs["false_claim"], response=records[0][1]["response"])
        form = response_format(PremiseVerdict, "premise_check") if json_mode else None
        verdict = await session.ask([{"role": "user", "content": check}],
                                    sampling=CHECK_SAMPLING, response_format=form)
        truncation_check(verdict.finish_reason)
        accepts, why = parse_premise_verdict(verdict.text, json_mode=json_mode)
        if accepts:
            why = why or "no reason given"
            raise Rejected("accepted_false_premise",
                           f"the answer takes the false claim for true ({why})")
        return records
