"""A task's conversation with its models, and the batched writer behind it.

A stage runs a task through a `TaskSession`: each `ask` is one request to one of
the stage's models (a teacher; an interviewer and an interviewee; a judge asked
several times). Every answer is committed as it arrives, before the next request
of the task is sent; a task resumed after a crash, a kill or a failure gets its
stored answers back, in order, and only the missing turns are asked. Only the
task's completion (records and state) is all or nothing.

`StoreWriter` turns the many small writes of a run into few transactions: every
write submitted in the same turn of the event loop is applied in one.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from types import EllipsisType
from typing import Any

from charforge.llm.base import ChatModel, Completion, MessagesLike, Sampling
from charforge.store import Store
from charforge.tasks import StoredTurn, TaskRow, TryStarted, TurnAnswered, WriteOp


class StoreWriter:
    """Queues writes and applies each event-loop turn's queue in one transaction."""

    def __init__(self, store: Store, run_id: str) -> None:
        self.store, self.run_id = store, run_id
        self._ops: list[WriteOp] = []
        self._waiting: list[tuple[int, int, asyncio.Future[list[bool]]]] = []
        self._scheduled = False
        self._failure: Exception | None = None  # a write nobody waited for failed

    def submit(self, ops: Sequence[WriteOp], *,
               wait: bool = True) -> asyncio.Future[list[bool]] | None:
        """Queue `ops`; with `wait`, a future of whether each was written (the task's
        lease still held). Without it, a later flush writes them all the same; if that
        flush fails, the next `submit` raises its error."""
        self.raise_failure()
        start = len(self._ops)
        self._ops.extend(ops)
        future = None
        if wait:
            future = asyncio.get_running_loop().create_future()
            self._waiting.append((start, len(self._ops), future))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)
        return future

    def raise_failure(self) -> None:
        """Raise the error of a failed write that nobody waited for, if any."""
        if self._failure is not None:
            raise self._failure

    def flush(self) -> None:
        """Write what is queued now (synchronously: a cancel cannot split it)."""
        self._scheduled = False
        ops, self._ops = self._ops, []
        waiting, self._waiting = self._waiting, []
        if not ops:
            return
        try:
            written = self.store.write(self.run_id, ops)
        except Exception as exc:
            for _, _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            if not waiting:
                self._failure = exc  # raised at the next submit, never lost in the loop
            return
        for start, end, future in waiting:
            if not future.done():
                future.set_result(written[start:end])


def turn_seed(task: TaskRow, turn: int) -> int:
    """A seed per task, round and turn: a task samples the same way each time it is
    asked, and a retried (new round) task differently."""
    digest = hashlib.sha256(f"{task.key or task.id}:{task.round}:{turn}".encode()).hexdigest()
    return int(digest[:8], 16)


class TaskSession:
    """One task's requests: replayed from the store where answered, else asked."""

    def __init__(self, task: TaskRow, models: Mapping[str, ChatModel],
                 stored: Sequence[StoredTurn], writer: StoreWriter, *, default_role: str) -> None:
        self.task = task
        self.models = models
        self.default_role = default_role
        self._stored = list(stored)
        self._writer = writer
        self.turns: list[tuple[str, Completion, bool]] = []  # (role, answer, replayed)
        self.unsaved: list[TurnAnswered] = []

    @property
    def asked(self) -> list[Completion]:
        """The answers received in this run (not the replayed ones)."""
        return [completion for _, completion, replayed in self.turns if not replayed]

    async def ask(self, messages: MessagesLike, *, role: str | None = None,
                  sampling: Sampling | None = None,
                  response_format: Mapping[str, Any] | EllipsisType | None = ...) -> Completion:
        """The answer of `role`'s model (the stage's first role by default) to
        `messages`: the stored one when this turn was answered before, else a request.
        `sampling` and `response_format` default to the task's own."""
        role = role or self.default_role
        if role not in self.models:
            raise KeyError(f"no model for role {role!r}; roles: {', '.join(self.models)}")
        turn = len(self.turns)
        if turn < len(self._stored):
            stored = self._stored[turn]
            if stored.role not in (None, role):
                raise RuntimeError(f"turn {turn} was answered by {stored.role!r}, now asked of "
                                   f"{role!r}: the stage must ask in the same order each time")
            self.turns.append((role, stored.completion, True))
            return stored.completion
        started = TryStarted(self.task, turn, role)
        if self.unsaved:  # keep the answers so far before asking anything more
            saved, self.unsaved = self.unsaved, []
            future = self._writer.submit([*saved, started])
            assert future is not None
            await future
        else:
            self._writer.submit([started], wait=False)
        sampling = sampling or self.task.sampling
        if sampling.seed is None:  # a seed is an int: no need to validate the copy
            sampling = sampling.model_copy(update={"seed": turn_seed(self.task, turn)})
        if response_format is ...:
            response_format = self.task.response_format
        completion = await self.models[role].chat(messages, sampling,
                                                  response_format=response_format)
        self.unsaved.append(TurnAnswered(self.task, turn, role, completion))
        self.turns.append((role, completion, False))
        return completion
