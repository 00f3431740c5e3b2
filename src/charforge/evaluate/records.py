"""What evaluation keeps in the store and hands to the report, as typed records.

- `InterviewRecord` (kind `interview`): one agent's answers to one interview item, a
  single question or a multi-turn interview, asked here or imported;
- `Judgment` (kind `judgment`): one judge's score of one interview on one dimension
  (Character-LLM's 1-7 rubric, or PersLLM's 0-5 knowledge/attitude accuracy), or
  `score=None` when no score could be read after one retry;
- `Ranking` (kind `ranking`): one judge's order of several agents' answers to one item,
  shown in one rotation (PersLLM's ranking).

`ScoreRow` and `MetricRow` are the flat rows the report reads: from judgments and from
the judge-free metrics.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

InterviewMode = Literal["single", "multi"]
# Character-LLM's five dimensions, in its order, and PersLLM's two accuracies.
RUBRIC_DIMENSIONS = ("memorization", "values", "personality", "hallucination", "stability")
ACCURACY_DIMENSIONS = ("knowledge", "attitude")

INTERVIEW_KIND = "interview"
JUDGMENT_KIND = "judgment"
RANKING_KIND = "ranking"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InterviewTurn(_Record):
    """One question and the agent's reply (its thinking apart, when it showed any)."""

    question: str
    answer: str
    thinking: str = ""


class InterviewRecord(_Record):
    """One agent interviewed on one item."""

    agent: str = Field(description="the agent's label in the report: 'trained', "
                       "'prompted', 'chatgpt', an imported model's name, ...")
    model: str = Field(default="", description="what answered (model id), as recorded")
    mode: InterviewMode
    item: str = Field(description="the item's id within its question set: the same for "
                      "every agent asked it, so answers are paired")
    topic_id: str = ""
    topic: str = ""
    stage: str | None = Field(default=None, description="the time stage it was asked in")
    turns: list[InterviewTurn]
    source: str = Field(default="charforge", description="'charforge', or the file an "
                        "imported interview came from")
    seed: int | None = None
    temperature: float | None = None


class Judgment(_Record):
    """One judge's score of one interview on one dimension."""

    agent: str
    item: str
    mode: InterviewMode
    dimension: str
    judge: str = Field(description="the judge model's name")
    preset: str = Field(default="charforge", description="whose prompts: 'charforge' or "
                        "'character-llm'")
    stage: str | None = Field(default=None, description="the time stage of the interview")
    sample: int = Field(default=0, description="which of the judge's k samples")
    score: int | None = Field(description="None: no score could be read (never guessed)")
    low: int = 1
    high: int = 7
    reasoning: str = ""


class Ranking(_Record):
    """One judge's order of agents' answers to one item, as shown in one rotation."""

    item: str
    mode: InterviewMode = "single"
    judge: str
    rotation: int
    shown: list[str] = Field(description="agents in the order their answers were shown")
    ranks: dict[str, int] | None = Field(description="agent -> rank (1 best); None: the "
                                         "judge's answer could not be read")
    reasoning: str = ""


class ScoreRow(_Record):
    """A flat judgment, as the report reads it."""

    character: str
    agent: str
    item: str
    dimension: str
    judge: str
    sample: int = 0
    score: float | None
    low: float = 1
    high: float = 7
    reasoning: str = ""
    answer: str = ""


class MetricRow(_Record):
    """One judge-free figure of one agent (or a pair of them, `versus`)."""

    character: str
    agent: str
    metric: str
    value: float | None
    n: int = 0
    versus: str = ""
    note: str = ""
    low: float | None = None  # a paired difference's interval (rows with `versus`)
    high: float | None = None
