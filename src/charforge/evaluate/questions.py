"""Interview question sets in the Character-LLM JSON format: a list of
`{"topic_id", "topic", "question"}` objects (the seed's
`generated_agent_interview_<Name>.json`; the multi-turn files have the same shape, each
question opening a conversation).

An item's id is derived from its topic and its question's words (`item_id`), so the same
question asked of several agents, here or in imported results, pairs up in the report.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from charforge.errors import CharforgeError, first_problem

MAX_QUESTIONS = 10_000


class QuestionFileError(CharforgeError):
    """A question file that is not a list of {topic_id, topic, question} objects."""


class Question(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    topic_id: str = Field(min_length=1, max_length=200)
    topic: str = Field(default="", max_length=2000)
    question: str = Field(min_length=1, max_length=20_000)

    @property
    def item(self) -> str:
        return item_id(self.topic_id, self.question)


def item_id(topic_id: str, question: str) -> str:
    """`<topic_id>/<8 hex>`: the question's words, lower-cased, hashed."""
    words = " ".join(re.findall(r"[^\W_]+", question.lower()))
    return f"{topic_id}/{hashlib.sha256(words.encode('utf-8')).hexdigest()[:8]}"


def parse_questions(data: Any, where: str) -> list[Question]:
    """`data` (a decoded JSON file) as questions, in file order, duplicates dropped."""
    if not isinstance(data, list):
        raise QuestionFileError(f"{where}: expected a JSON list of {{topic_id, topic, "
                                f"question}} objects, found {type(data).__name__}")
    if not data:
        raise QuestionFileError(f"{where}: the question list is empty")
    if len(data) > MAX_QUESTIONS:
        raise QuestionFileError(f"{where}: {len(data)} questions; at most {MAX_QUESTIONS}")
    questions: dict[str, Question] = {}
    for number, entry in enumerate(data, start=1):
        if not isinstance(entry, dict):
            raise QuestionFileError(f"{where}: entry {number} is not an object with "
                                    "topic_id, topic and question")
        try:
            question = Question.model_validate(entry)
        except ValidationError as exc:
            field, problem = first_problem(exc)
            raise QuestionFileError(f"{where}: entry {number}, {field or 'entry'}: "
                                    f"{problem}") from None
        questions.setdefault(question.item, question)
    return list(questions.values())


def read_json_file(path: str | Path, what: str,
                   error: type[CharforgeError]) -> tuple[Path, Any]:
    """(path, decoded JSON) of an evaluation input file (questions, references); `error`
    with one line when it is missing or not JSON."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise error(f"no {what} file {path}")
    try:
        return path, json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: not JSON ({exc})") from None


def load_questions(path: str | Path) -> list[Question]:
    """The questions of a Character-LLM format file; a clear one-line error otherwise."""
    path, data = read_json_file(path, "question", QuestionFileError)
    return parse_questions(data, str(path))
