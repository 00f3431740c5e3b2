"""The files shipped inside the package: Beethoven's Character-LLM profile and his
interview questions (see data/NOTICE.md), used by `examples/beethoven.yaml`
(`builtin:wiki_Beethoven.txt`), by the tests and by newcomers' first imports."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEMO_PROFILE = "wiki_Beethoven.txt"
DEMO_QUESTIONS = "interview_Beethoven.json"


def demo_file(name: str) -> Path:
    return Path(str(resources.files("charforge").joinpath("data", name)))


def interview_questions(limit: int) -> list[str]:
    """The first `limit` questions of Beethoven's Character-LLM interview set."""
    import json

    rows = json.loads(demo_file(DEMO_QUESTIONS).read_text(encoding="utf-8"))
    return [row["question"] for row in rows[:limit]]
