"""Runs a stage's pending tasks through a chat model, concurrently, resumably.

The runner pages through pending tasks (memory does not grow with the task
count), keeps up to `concurrency` requests in flight, and writes each finished
task in one store transaction. Ctrl-C (or SIGTERM) stops leasing, cancels the
requests in flight, hands their leases back and returns: rerunning resumes
where it stopped, and nothing is done twice. Retries happen in exactly one
place, the chat model; every try is recorded in the store.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from charforge.errors import ChatModelError
from charforge.llm.base import ChatMessage, ChatModel, Completion
from charforge.records import Rejected
from charforge.store import AttemptLog, FinishedTask, Store, TaskRow

Records = list[tuple[str, dict[str, Any]]]


class TaskStage(Protocol):
    """A stage is a prompt template plus two functions: task -> messages, and
    answer text -> records (raising `Rejected` with a reason)."""

    name: str

    def messages(self, task: TaskRow) -> list[ChatMessage]: ...

    def parse(self, task: TaskRow, completion: Completion) -> Records: ...

    def repair_messages(
        self, task: TaskRow, answer: str, problem: Rejected
    ) -> list[ChatMessage] | None:
        """Messages for one repair request after a rejected answer, or None."""
        ...


@dataclass
class RunSummary:
    done: int = 0
    rejected: int = 0
    failed: int = 0
    released: int = 0
    interrupted: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    elapsed_s: float = 0.0
    rejection_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def finished(self) -> int:
        return self.done + self.rejected + self.failed


@dataclass
class _Outcome:
    completions: list[Completion]
    records: Records = field(default_factory=list)
    rejection: Rejected | None = None


def _attempt_logs(completion: Completion) -> list[AttemptLog]:
    failed = [AttemptLog(ok=False, latency_s=0.0, error=e, model=completion.model)
              for e in completion.retry_errors]
    return [*failed, AttemptLog(
        ok=True, latency_s=completion.latency_s, model=completion.model,
        prompt_tokens=completion.usage.prompt_tokens,
        completion_tokens=completion.usage.completion_tokens,
    )]


def sampling_seed(task: TaskRow) -> int:
    """A per-task seed derived from its id: the same task samples the same way."""
    return int(task.id[:8], 16)


async def _ask(model: ChatModel, task: TaskRow, messages: list[ChatMessage]) -> Completion:
    params = task.params
    return await model.chat(
        messages,
        temperature=params.get("temperature", 0.7),
        top_p=params.get("top_p", 1.0),
        max_tokens=params.get("max_tokens", 1024),
        stop=params.get("stop"),
        seed=sampling_seed(task),
        response_format=params.get("response_format"),
    )


async def execute_task(stage: TaskStage, model: ChatModel, task: TaskRow) -> _Outcome:
    """Ask, parse, and (once, where the stage allows) ask for a repair."""
    first = await _ask(model, task, stage.messages(task))
    try:
        return _Outcome([first], records=stage.parse(task, first))
    except Rejected as problem:
        repair = stage.repair_messages(task, first.text, problem)
        if repair is None:
            return _Outcome([first], rejection=problem)
    second = await _ask(model, task, repair)
    try:
        return _Outcome([first, second], records=stage.parse(task, second))
    except Rejected as again:
        return _Outcome([first, second], rejection=again)


class Runner:
    def __init__(
        self,
        store: Store,
        stage: TaskStage,
        model: ChatModel,
        *,
        character: str,
        concurrency: int = 16,
        limit: int | None = None,
        console: Console | None = None,
        show_progress: bool = True,
        command: str = "generate",
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.store, self.stage, self.model = store, stage, model
        self.character = character
        self.concurrency = concurrency
        self.limit = limit
        self.console = console or Console(stderr=True)
        self.show_progress = show_progress
        self.command = command
        self.summary = RunSummary()
        self._run_id = ""
        self._progress: Progress | None = None
        self._bar: Any = None
        self._to_write: list[tuple[FinishedTask, _Outcome]] = []
        self._flushing = False

    # -- the entry point --------------------------------------------------------------
    async def run_async(self) -> RunSummary:
        """Run the pending tasks to completion (or until interrupted). The caller owns
        the model: close it in the same event loop (`charforge.generate` does)."""
        started = time.perf_counter()
        self.store.reclaim_leases()
        self._run_id = self.store.begin_run(f"{self.command} {self.stage.name} {self.character}")
        total = self.store.count(self.character, self.stage.name, "pending")
        if self.limit is not None:
            total = min(total, self.limit)
        try:
            with self._progress_bar(total):
                await self._run_all(total)
        finally:
            self.summary.released = self.store.end_run(self._run_id)
            self.summary.elapsed_s = time.perf_counter() - started
        return self.summary

    # -- internals ----------------------------------------------------------------------
    def _progress_bar(self, total: int) -> Progress:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("done {task.fields[done]} · rejected {task.fields[rejected]} · "
                       "failed {task.fields[failed]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=not self.show_progress,
            transient=False,
        )
        self._bar = self._progress.add_task(
            f"{self.stage.name} · {self.character}", total=total, rate="", done=0, rejected=0,
            failed=0,
        )
        return self._progress

    def _advance(self) -> None:
        if self._progress is None or not self.show_progress:
            return
        elapsed = self._progress.tasks[0].elapsed or 0.0
        rate = f"{self.summary.finished / elapsed:.1f} tasks/s" if elapsed > 0 else ""
        self._progress.update(
            self._bar, advance=1, rate=rate, done=self.summary.done,
            rejected=self.summary.rejected, failed=self.summary.failed,
        )

    async def _run_all(self, total: int) -> None:
        queue: asyncio.Queue[TaskRow | None] = asyncio.Queue(maxsize=self.concurrency)
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(self.concurrency)]
        producer = asyncio.create_task(self._produce(queue, total))
        everything = [producer, *workers]
        restore = self._install_interrupt(everything)
        try:
            await asyncio.gather(*everything)
        except BaseException as exc:
            for job in everything:
                job.cancel()
            await asyncio.gather(*everything, return_exceptions=True)
            if not isinstance(exc, asyncio.CancelledError):
                raise
            self.summary.interrupted = True
        finally:
            restore()
            self._flush_writes()  # answers already received are written, even on Ctrl-C

    def _install_interrupt(self, jobs: list[asyncio.Task[Any]]) -> Callable[[], None]:
        loop = asyncio.get_running_loop()

        def interrupt() -> None:
            self.summary.interrupted = True
            for job in jobs:
                job.cancel()

        installed = []
        # Signal handlers belong to the main thread, and Windows event loops have none.
        usable = sys.platform != "win32" and threading.current_thread() is threading.main_thread()
        for signum in (signal.SIGINT, signal.SIGTERM) if usable else ():
            loop.add_signal_handler(signum, interrupt)
            installed.append(signum)

        def restore() -> None:
            for signum in installed:
                loop.remove_signal_handler(signum)

        return restore

    async def _produce(self, queue: asyncio.Queue[TaskRow | None], total: int) -> None:
        page = max(64, self.concurrency * 2)
        handed = 0
        while handed < total:
            batch = self.store.lease(
                self._run_id, self.character, self.stage.name, min(page, total - handed)
            )
            if not batch:
                break
            for task in batch:
                await queue.put(task)
            handed += len(batch)
        for _ in range(self.concurrency):
            await queue.put(None)  # one stop sign per worker

    async def _worker(self, queue: asyncio.Queue[TaskRow | None]) -> None:
        while (task := await queue.get()) is not None:
            await self._process(task)

    async def _process(self, task: TaskRow) -> None:
        try:
            outcome = await execute_task(self.stage, self.model, task)
        except ChatModelError as exc:
            logs = [AttemptLog(ok=False, latency_s=0.0, error=e) for e in exc.errors]
            if self.store.fail(task, self._run_id, str(exc), logs):
                self.summary.failed += 1
            self._advance()
            return
        except Exception as exc:  # a bug in a stage must not lose the rest of the run
            detail = f"internal error in stage {self.stage.name}: {type(exc).__name__}: {exc}"
            if self.store.fail(task, self._run_id, detail, []):
                self.summary.failed += 1
            self._advance()
            return
        attempts = [log for completion in outcome.completions for log in _attempt_logs(completion)]
        rejection = outcome.rejection
        try:
            item = FinishedTask.of(
                task, completions=outcome.completions, attempts=attempts,
                records=outcome.records,
                rejection=(rejection.reason, rejection.detail) if rejection else None,
            )
        except (TypeError, ValueError) as exc:  # a stage produced a record that is not JSON
            detail = f"internal error in stage {self.stage.name}: {type(exc).__name__}: {exc}"
            if self.store.fail(task, self._run_id, detail, attempts):
                self.summary.failed += 1
            self._advance()
            return
        await self._write_soon(item, outcome)

    async def _write_soon(self, item: FinishedTask, outcome: _Outcome) -> None:
        """Queue a finished task; the first writer of a loop turn yields once, so every
        task that finished in the same turn is written in one transaction."""
        self._to_write.append((item, outcome))
        if self._flushing:
            return
        self._flushing = True
        try:
            await asyncio.sleep(0)
            self._flush_writes()
        finally:
            self._flushing = False

    def _flush_writes(self) -> None:
        """Write what is queued (synchronously: a cancel cannot split it)."""
        batch, self._to_write = self._to_write, []
        if not batch:
            return
        written = self.store.finish(self._run_id, [item for item, _ in batch])
        for held, (_, outcome) in zip(written, batch, strict=True):
            if held:
                self._count(outcome)
            self._advance()

    def _count(self, outcome: _Outcome) -> None:
        for completion in outcome.completions:
            self.summary.prompt_tokens += completion.usage.prompt_tokens
            self.summary.completion_tokens += completion.usage.completion_tokens
        rejection = outcome.rejection
        if rejection:
            self.summary.rejected += 1
            reasons = self.summary.rejection_reasons
            reasons[rejection.reason] = reasons.get(rejection.reason, 0) + 1
        else:
            self.summary.done += 1
