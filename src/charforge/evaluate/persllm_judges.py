"""PersLLM's two judges as stages: a ranking of several agents' answers to one item, and
knowledge or attitude accuracy against reference answers.

- `judge-rank`: for each item that every agent named in `agents` answered, the judge reads
  their answers side by side, labelled A, B, C, ... and never by the agents' names, and
  orders them best-first ("B > A > C") on knowledge, attitude, style and staying in
  character. Each item is shown in `rounds` rotations from `rotations.balanced_orders`
  (one task per rotation, its parents the interviews shown), so that a judge's taste for
  a position lands on every agent alike. The labels are read back with
  `scores.read_ranking`; an answer with no complete ranking is asked once more for the
  ranking alone, and when that fails too a `Ranking` with `ranks=None` is recorded, never
  guessed. An item that some named agent did not answer is skipped and counted in the
  report.
- `judge-accuracy`: PersLLM's accuracy, 0-5: for each interview whose item has a reference
  answer, the judge compares the agent's answer with the reference on facts (`knowledge`)
  or on stance (`attitude`), reasons first, then ends with "Score: N". The score is read
  by `scores.read_score`, asked for once more when missing or out of range, and recorded
  as a `Judgment` with `score=None` when still unreadable.

`ranking_shares` turns rankings into each agent's first-place share and pairwise win rate.

Where ours differs from PersLLM's: its ranking judge also sees a reference answer and
returns a Python list of dictionaries; ours ranks without a reference (the accuracy judge
is the one that uses references) and writes a plain best-first line, read without
guessing. Its accuracy judge answers with the bare number; ours reasons first. Both
prompts are charforge's own (prompts/rank_*.j2, prompts/accuracy_*.j2, versioned).
"""

from __future__ import annotations

import math
import string
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from charforge.character import Character
from charforge.errors import CharforgeError, first_problem
from charforge.llm.base import ChatMessage, Sampling
from charforge.session import TaskSession
from charforge.stages import PlannedTask, Records, StageOptions, TaskStage, register_stage
from charforge.tasks import RecordRef, TaskRow

from .judges import JUDGE_SAMPLING, PROFILE_WORDS, ask_for_score, interactions_text
from .questions import item_id, read_json_file
from .records import (
    INTERVIEW_KIND,
    JUDGMENT_KIND,
    RANKING_KIND,
    InterviewMode,
    InterviewRecord,
    Judgment,
    Ranking,
)
from .rotations import balanced_orders, first_place_shares, pairwise_win_rates
from .scores import read_ranking

PROMPTS = Path(__file__).parent / "prompts"
LABELS = string.ascii_uppercase  # at most 26 agents side by side
# Several answers compared in a few sentences need more room than one score.
RANK_SAMPLING = Sampling(temperature=0.0, max_tokens=768)
MAX_ROUNDS = 1000
AccuracyKind = Literal["knowledge", "attitude"]


def profile_excerpt(character: Character, words: int = PROFILE_WORDS) -> str:
    """The first `words` words of what is known of the character, as judges read it."""
    return " ".join(" ".join(character.profile_or_knowledge()).split()[:words])


def labels_for(count: int) -> list[str]:
    return list(LABELS[:count])


def example_order(labels: list[str]) -> str:
    """A best-first line to show the format, not in the listed order ("B > A > C")."""
    shown = [labels[1], labels[0], *labels[2:]] if len(labels) > 1 else labels
    return " > ".join(shown)


def _interviews(stage: TaskStage, agents: Iterable[str]) -> dict[RecordRef, InterviewRecord]:
    """The character's interviews by record, only those of `agents` (all when empty)."""
    wanted = set(agents)
    found: dict[RecordRef, InterviewRecord] = {}
    for stored in stage.context.reader.records(stage.character.slug, INTERVIEW_KIND):
        record = InterviewRecord.model_validate(stored.data)
        if not wanted or record.agent in wanted:
            found[(stored.task_id, stored.idx)] = record
    return found


# -- the ranking judge -----------------------------------------------------------------------
class RankOptions(StageOptions):
    judge: str = Field(min_length=1, max_length=200, description="the judge's name")
    agents: tuple[str, ...] = Field(min_length=2, max_length=len(LABELS),
                                    description="the agents whose answers are ranked "
                                    "together; an item is ranked only when all answered it")
    rounds: int | None = Field(default=None, ge=1, le=MAX_ROUNDS,
                               description="rotations per item, a multiple of the number "
                               "of agents (default: one per agent)")
    mode: InterviewMode = Field(default="single", description="rank single-turn or "
                                "multi-turn interviews")

    @model_validator(mode="after")
    def _balanced(self) -> RankOptions:
        if len(set(self.agents)) != len(self.agents):
            raise ValueError(f"agents must be distinct: {list(self.agents)!r}")
        if self.rounds is not None and self.rounds % len(self.agents):
            raise ValueError(f"rounds must be a multiple of the number of agents "
                             f"({len(self.agents)}), so that each is shown in each position "
                             "equally often")
        return self

    @property
    def rotations(self) -> int:
        return self.rounds or len(self.agents)


def answer_text(record: InterviewRecord, name: str) -> str:
    """An agent's side as the ranking judge reads it: the answer to a single question, or
    the whole exchange of a multi-turn interview (thinking is never shown)."""
    if len(record.turns) == 1:
        return record.turns[0].answer
    return interactions_text(record, name, seed_format=False)


@register_stage
class RankJudge(TaskStage):
    """One judge's best-first order of the named agents' answers to one item, in one
    rotation."""

    name: ClassVar[str] = "judge-rank"
    description: ClassVar[str] = ("PersLLM's ranking: agents' answers to one item side by "
                                  "side, best first, in balanced rotations")
    system_template: ClassVar[str | None] = "rank_system"
    user_template: ClassVar[str] = "rank_answers"
    repair_template: ClassVar[str | None] = "rank_retry"
    template_dirs: ClassVar[tuple[Path, ...]] = (PROMPTS,)
    generation: ClassVar[bool] = False
    Options: ClassVar[type[StageOptions]] = RankOptions
    roles: ClassVar[tuple[str, ...]] = ("judge",)
    sampling: ClassVar[Sampling] = RANK_SAMPLING

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._read: dict[RecordRef, InterviewRecord] | None = None
        self.items: dict[str, dict[str, RecordRef]] = {}  # item -> agent -> its interview
        self.skipped: dict[str, list[str]] = {}  # item -> the named agents that missed it

    def _interviews(self) -> dict[RecordRef, InterviewRecord]:
        """The named agents' interviews in the option's mode, grouped by item once: an
        item is ranked when every agent answered it (an agent's first interview of an
        item, in store order, stands for it), else skipped."""
        if self._read is None:
            agents, mode = self.options.agents, self.options.mode
            self._read = {ref: record for ref, record in _interviews(self, agents).items()
                          if record.mode == mode}
            by_item: dict[str, dict[str, RecordRef]] = {}
            for ref, record in self._read.items():
                by_item.setdefault(record.item, {}).setdefault(record.agent, ref)
            for item, answered in by_item.items():
                missing = [agent for agent in agents if agent not in answered]
                if missing:
                    self.skipped[item] = missing
                else:
                    self.items[item] = answered
        return self._read

    def nothing_to_do(self) -> str | None:
        self._interviews()
        if not self.items:
            return (f"no {self.options.mode}-turn item of {self.character.short_name}'s was "
                    f"answered by every one of {', '.join(self.options.agents)}; interview "
                    "each agent on the same questions first (charforge eval interview)")
        return None

    def plan(self) -> Iterator[PlannedTask]:
        self._interviews()
        options = self.options
        orders = balanced_orders(options.agents, options.rotations)
        for item, answered in self.items.items():
            for rotation, order in enumerate(orders):
                yield PlannedTask({"judge": options.judge, "item": item, "mode": options.mode,
                                   "rotation": rotation, "shown": list(order)},
                                  parents=tuple(answered[agent] for agent in order))

    def _shown(self, task: TaskRow) -> list[InterviewRecord]:
        """The task's interviews in the order shown. The store hands parents back in its
        own order, so they are matched to the shown agents by the records' agent."""
        interviews = self._interviews()
        by_agent: dict[str, InterviewRecord] = {}
        for ref in task.parents:
            if ref not in interviews:
                raise RuntimeError(f"the interview {ref} this ranking shows is not in the store")
            by_agent[interviews[ref].agent] = interviews[ref]
        return [by_agent[agent] for agent in task.inputs["shown"]]

    def messages(self, task: TaskRow) -> list[ChatMessage]:
        shown = self._shown(task)
        labels = labels_for(len(shown))
        answers = [{"label": label, "text": answer_text(record, self.character.short_name)}
                   for label, record in zip(labels, shown, strict=True)]
        user = self.render(self.user_template, task, profile=profile_excerpt(self.character),
                           question=shown[0].turns[0].question, answers=answers,
                           labels=labels, example=example_order(labels))
        return [ChatMessage(role="system", content=self.render(self.system_template or "",
                                                               task)),
                ChatMessage(role="user", content=user)]

    async def run(self, task: TaskRow, session: TaskSession) -> Records:
        shown: list[str] = task.inputs["shown"]
        labels = labels_for(len(shown))
        messages = self.messages(task)
        first = await session.ask(messages)
        ranks = read_ranking(first.text, labels)
        reasoning = first.text.strip()
        if ranks is None:  # asked once more, for the ranking alone
            retry = self.render("rank_retry", task, labels=labels, example=example_order(labels))
            second = await session.ask([*messages, ChatMessage(role="assistant",
                                                               content=first.text),
                                        ChatMessage(role="user", content=retry)])
            ranks = read_ranking(second.text, labels)
            if ranks is None:
                reasoning = f"{reasoning}\n\n[unranked: no complete ranking after one retry]"
        by_agent = None if ranks is None else {
            agent: ranks[label] for label, agent in zip(labels, shown, strict=True)}
        ranking = Ranking(item=task.inputs["item"], mode=task.inputs["mode"],
                          judge=task.inputs["judge"],
                          rotation=task.inputs["rotation"], shown=list(shown), ranks=by_agent,
                          reasoning=reasoning)
        return [(RANKING_KIND, ranking.model_dump(mode="json"))]

    def rankings(self) -> list[Ranking]:
        """This judge's rankings of these agents in this mode, as stored so far."""
        options = self.options
        found = []
        for stored in self.context.reader.records(self.character.slug, RANKING_KIND):
            inputs = stored.inputs
            if (inputs.get("judge"), inputs.get("mode")) != (options.judge, options.mode):
                continue
            ranking = Ranking.model_validate(stored.data)
            if sorted(ranking.shown) == sorted(options.agents):
                found.append(ranking)
        return found

    def report(self) -> list[str]:
        self._interviews()
        options = self.options
        lines = [f"items ranked: {len(self.items)} ({options.rotations} rotations each; "
                 f"agents: {', '.join(options.agents)})"]
        if self.skipped:
            missing = Counter(agent for agents in self.skipped.values() for agent in agents)
            lines.append(f"items skipped, not answered by every agent: {len(self.skipped)} "
                         f"(missing: {', '.join(f'{a} {n}' for a, n in missing.items())})")
        rankings = self.rankings()
        unread = sum(ranking.ranks is None for ranking in rankings)
        if unread:
            lines.append(f"rankings that could not be read: {unread} of {len(rankings)}")
        return lines


def ranking_shares(rankings: Iterable[Ranking]) -> dict[str, dict[str, float]]:
    """Agent -> its `first_place_share` and `pairwise_win_rate` over the readable rankings
    (`rotations.first_place_shares` and `pairwise_win_rates`), with `rankings` (how many
    readable rankings it was in) and `unreadable` (how many rankings it was shown in that
    could not be read; those count toward nothing else). A share is NaN for an agent none
    of whose rankings could be read. Pass one judge's rankings of one set of agents."""
    read: list[dict[str, int]] = []
    unreadable: Counter[str] = Counter()
    for ranking in rankings:
        if ranking.ranks is None:
            unreadable.update(ranking.shown)
        else:
            read.append(ranking.ranks)
    firsts, wins = first_place_shares(read), pairwise_win_rates(read)
    counted = Counter(agent for ranks in read for agent in ranks)
    return {agent: {"first_place_share": firsts.get(agent, math.nan),
                    "pairwise_win_rate": wins.get(agent, math.nan),
                    "rankings": float(counted[agent]),
                    "unreadable": float(unreadable[agent])}
            for agent in sorted(set(counted) | set(unreadable))}


# -- the accuracy judge ----------------------------------------------------------------------
class ReferenceFileError(CharforgeError):
    """A references file that is not a list of {item, kind, reference} objects."""


class Reference(BaseModel):
    """The reference answer to one item, and whether it is judged on facts or stance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item: str = Field(min_length=1, max_length=300, description="the item's id "
                      "(topic_id/hash, as interview records hold it); or give topic_id and "
                      "question and it is derived")
    kind: AccuracyKind = Field(description="knowledge: judged on facts; attitude: on stance")
    reference: str = Field(min_length=1, max_length=20_000)

    @model_validator(mode="before")
    @classmethod
    def _item_from_question(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("item") and "question" in data:
            data = dict(data)
            topic_id, question = data.pop("topic_id", ""), data.pop("question")
            if not topic_id or not question:
                raise ValueError("a reference needs its item, or its topic_id and question")
            data["item"] = item_id(str(topic_id), str(question))
        return data


class AccuracyOptions(StageOptions):
    judge: str = Field(min_length=1, max_length=200, description="the judge's name")
    references: tuple[Reference, ...] = Field(min_length=1, description="the reference "
                                              "answers (a file: `load_references`)")
    agents: tuple[str, ...] = Field(default=(), description="judge only these agents' "
                                    "interviews (all when empty)")

    @model_validator(mode="after")
    def _one_per_item(self) -> AccuracyOptions:
        twice = [item for item, n in Counter(r.item for r in self.references).items() if n > 1]
        if twice:
            raise ValueError(f"item {twice[0]!r} has more than one reference")
        return self


def load_references(path: str | Path) -> tuple[Reference, ...]:
    """The references of a JSON file: a list of {item, kind, reference} objects (or
    {topic_id, question, kind, reference}); a one-line error otherwise."""
    path, data = read_json_file(path, "references", ReferenceFileError)
    if not isinstance(data, list) or not data:
        raise ReferenceFileError(f"{path}: expected a non-empty JSON list of {{item, kind, "
                                 "reference}} objects")
    references = []
    for number, entry in enumerate(data, start=1):
        try:
            references.append(Reference.model_validate(entry))
        except ValidationError as exc:
            field, problem = first_problem(exc)
            raise ReferenceFileError(f"{path}: entry {number}, {field or 'entry'}: "
                                     f"{problem}") from None
    return tuple(references)


@register_stage
class AccuracyJudge(TaskStage):
    """One score, 0-5, of how far one answer agrees with its item's reference answer."""

    name: ClassVar[str] = "judge-accuracy"
    description: ClassVar[str] = ("PersLLM's knowledge and attitude accuracy: answers "
                                  "against reference answers, 0-5")
    system_template: ClassVar[str | None] = "accuracy_system"
    user_template: ClassVar[str] = "accuracy_score"
    repair_template: ClassVar[str | None] = "judge_retry"
    template_dirs: ClassVar[tuple[Path, ...]] = (PROMPTS,)
    generation: ClassVar[bool] = False
    Options: ClassVar[type[StageOptions]] = AccuracyOptions
    roles: ClassVar[tuple[str, ...]] = ("judge",)
    sampling: ClassVar[Sampling] = JUDGE_SAMPLING
    low: ClassVar[int] = 0
    high: ClassVar[int] = 5

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._read: dict[RecordRef, InterviewRecord] | None = None
        self.references = {ref.item: ref for ref in self.options.references}

    def _interviews(self) -> dict[RecordRef, InterviewRecord]:
        """The agents' interviews of items that have a reference."""
        if self._read is None:
            self._read = {ref: record for ref, record
                          in _interviews(self, self.options.agents).items()
                          if record.item in self.references}
        return self._read

    def nothing_to_do(self) -> str | None:
        if not self._interviews():
            return (f"none of {self.character.short_name}'s interviews"
                    f"{' by ' + ', '.join(self.options.agents) if self.options.agents else ''}"
                    " is of an item with a reference answer; check the references' items "
                    "against the question set, or run charforge eval interview first")
        return None

    def plan(self) -> Iterator[PlannedTask]:
        for ref, record in self._interviews().items():
            reference = self.references[record.item]
            yield PlannedTask({"judge": self.options.judge, "agent": record.agent,
                               "item": record.item, "mode": record.mode,
                               "dimension": reference.kind, "reference": reference.reference},
                              parents=(ref,))

    def messages(self, task: TaskRow) -> list[ChatMessage]:
        """The item's question and the agent's answer to it (a multi-turn interview's
        opening exchange), beside the reference."""
        ref = task.parents[0]
        interviews = self._interviews()
        if ref not in interviews:
            raise RuntimeError(f"the interview {ref} this judgment is of is not in the store")
        turn = interviews[ref].turns[0]
        user = self.render(self.user_template, task, question=turn.question,
                           answer=turn.answer, low=self.low, high=self.high)
        return [ChatMessage(role="system", content=self.render(self.system_template or "",
                                                               task)),
                ChatMessage(role="user", content=user)]

    async def run(self, task: TaskRow, session: TaskSession) -> Records:
        score, reasoning = await ask_for_score(self, task, session, self.messages(task))
        inputs = task.inputs
        judgment = Judgment(agent=inputs["agent"], item=inputs["item"], mode=inputs["mode"],
                            dimension=inputs["dimension"], judge=inputs["judge"],
                            score=score, low=self.low, high=self.high, reasoning=reasoning)
        return [(JUDGMENT_KIND, judgment.model_dump(mode="json"))]

    def report(self) -> list[str]:
        judged = {record.item for record in self._interviews().values()}
        unmatched = [item for item in self.references if item not in judged]
        lines = [f"answers judged against a reference: {len(self._interviews())} "
                 f"(references used: {len(judged)} of {len(self.references)})"]
        if unmatched:
            lines.append(f"references that matched no interview: {len(unmatched)} (e.g. "
                         f"{unmatched[0]})")
        scores = [stored.data["score"] for stored
                  in self.context.reader.records(self.character.slug, JUDGMENT_KIND)
                  if stored.inputs.get("judge") == self.options.judge
                  and "reference" in stored.inputs]
        unscored = sum(score is None for score in scores)
        if unscored:
            lines.append(f"judgments that could not be scored: {unscored} of {len(scores)}")
        return lines
