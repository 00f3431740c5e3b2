"""The base model's own answers to the character's questions, with no persona: one
source of "rejected" answers for preference (DPO) pairs. A stage of its own, so each
answer is recorded and resumable like the teacher's; run it with `--model` naming the
base model that will be trained."""

from __future__ import annotations

from collections.abc import Iterator

from charforge.llm.base import Sampling
from charforge.parse.quality import junk_reason, quote
from charforge.records import Rejected
from charforge.stages import PlannedTask, Records, TaskStage, register_stage
from charforge.tasks import TaskRow


@register_stage
class BaseAnswerStage(TaskStage):
    name = "base-answers"
    description = "question -> the base model's own answer, no persona (DPO rejected side)"
    system_template = None
    user_template = "base_answer"
    repair_template = None
    roles = ("base",)
    sampling = Sampling(temperature=0.7, top_p=1.0, max_tokens=512)

    def plan(self) -> Iterator[PlannedTask]:
        for record in self.context.reader.records(self.character.slug, "question"):
            yield PlannedTask({"question": record.data["question"]},
                              parents=((record.task_id, record.idx),))

    def nothing_to_do(self) -> str | None:
        if next(iter(self.context.reader.records(self.character.slug, "question")), None):
            return None
        return (f"{self.character.short_name} has no accepted questions yet; run charforge "
                f"generate questions {self.character.slug} first (--retry-rejected asks the "
                "rejected ones again)")

    def parse_answer(self, task: TaskRow, text: str) -> Records:
        response = text.strip()
        problem = junk_reason(response)
        if problem:
            raise Rejected("empty" if problem == "empty" else "junk",
                           f"the answer is not language ({problem}): {quote(response)}")
        (question_task, question_idx), = task.parents
        return [("base_answer", {"question": task.inputs["question"], "response": response,
                                 "question_ref": [question_task, question_idx]})]
