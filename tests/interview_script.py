"""A scripted interviewer and interviewee for the conversation tests: each answer
says which model gave it and for which turn (read from the prompt)."""

from __future__ import annotations

import re
from typing import Any


def turn_of(request: dict[str, Any]) -> int:
    text = request["messages"][-1]["content"]
    return int(re.search(r"Turn (\d+) of", text).group(1))


def who(request: dict[str, Any]) -> str:
    return "interviewer" if "You interview" in request["messages"][-1]["content"] else "agent"


def answer(request: dict[str, Any]) -> str:
    turn = turn_of(request)
    if who(request) == "interviewer":
        return f"What did you compose in year {turn}?"
    return f"In year {turn} I wrote a sonata, of course."
