"""Runs a stage's tasks through its models, concurrently, resumably: `run_stage`.

`run_stage` is the flow every stage goes through (generation, interviews, judges,
the pipeline): check that each model answers, plan the stage's tasks into the store
(known work is not added twice; the same work under another model, prompt or setting
is reported stale), and run the pending tasks of this configuration.

The runner pages through pending tasks (memory does not grow with the task count),
keeps up to `concurrency` tasks in flight, and runs each through its stage with a
`TaskSession`. Ctrl-C (or SIGTERM) stops leasing, cancels the tasks in flight,
keeps every answer already received, hands the leases back and returns: rerunning
resumes where it stopped, and nothing answered is asked again. Retries happen in
exactly one place, the chat model; every try is recorded in the store.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

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

from charforge import __version__
from charforge.errors import CharforgeError, ChatModelError
from charforge.llm.base import ChatMessage, ChatModel, FailedTry, model_fingerprint
from charforge.records import Rejected
from charforge.session import StoreWriter, TaskSession
from charforge.stages import TaskStage
from charforge.store import Store
from charforge.tasks import (
    ModelRef,
    PlanCounts,
    StoredTurn,
    TaskConfig,
    TaskFailed,
    TaskFinished,
    TaskRow,
    TaskSpec,
)

Retry = Literal["failed", "rejected"]


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
    plan: PlanCounts = field(default_factory=PlanCounts)
    run_id: str = ""
    # Filled in by `generate`: the answered rounds of this run that were accepted (a
    # repair request is part of its round), and what the stage says about its output.
    accepted_tries: int = 0
    tries: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def finished(self) -> int:
        return self.done + self.rejected + self.failed


@dataclass
class DryRun:
    """What a run would do: how many tasks, how many stale, and the first prompt."""

    tasks: int
    first_messages: list[ChatMessage] | None
    stale: int = 0


def task_config(stage: TaskStage, models: Mapping[str, ChatModel],
                names: Mapping[str, str] | None = None) -> TaskConfig:
    """How every task of `stage` is asked with these models (names default to the
    models' own). A stage that renders no template (an import) has version 0."""
    refs = {role: ModelRef(name=(names or {}).get(role, model.name), fp=model_fingerprint(model))
            for role, model in models.items()}
    return TaskConfig(models=refs, prompt_fp=stage.prompt_fingerprint(),
                      output_fp=stage.output_fingerprint(), sampling=stage.context.sampling,
                      mode=stage.mode, template=stage.user_template,
                      template_version=stage.templates.version(stage.user_template)
                      if stage.user_template else 0)


def task_specs(stage: TaskStage, config: TaskConfig) -> Iterator[TaskSpec]:
    """The stage's planned tasks as specs, streamed (never all in memory)."""
    for planned in stage.plan():
        inputs = stage.task_inputs(planned)
        yield TaskSpec(character=stage.character.slug, stage=stage.name, inputs=inputs,
                       config=config, parents=planned.parents,
                       response_format=stage.response_format(inputs))


def _role_models(stage: TaskStage, models: Mapping[str, ChatModel] | ChatModel
                 ) -> dict[str, ChatModel]:
    if not isinstance(models, Mapping):
        models = {stage.roles[0]: models}
    missing = [role for role in stage.roles if role not in models]
    if missing:
        raise CharforgeError(f"stage {stage.name!r} needs a model for {', '.join(missing)} "
                             f"(its roles: {', '.join(stage.roles)})")
    return {role: models[role] for role in stage.roles}


async def run_stage(
    store: Store,
    stage: TaskStage,
    models: Mapping[str, ChatModel] | ChatModel,
    *,
    model_names: Mapping[str, str] | None = None,
    concurrency: int = 16,
    limit: int | None = None,
    retry: Retry | None = None,
    rerun_stale: bool = False,
    dry_run: bool = False,
    check: bool = True,
    console: Console | None = None,
    show_progress: bool = True,
    command: str = "run_stage",
    settings: Mapping[str, Any] | None = None,
) -> RunSummary | DryRun:
    """Check, plan and run one stage. `models` maps each of the stage's roles to a
    model (one model serves a one-role stage). The caller owns the models: close them
    in the same event loop (`async with model:`)."""
    if concurrency < 1:
        raise CharforgeError("concurrency must be at least 1")
    role_models = _role_models(stage, models)
    config = task_config(stage, role_models, model_names)
    if dry_run:
        return _dry_run(store, stage, config, rerun_stale)
    if check:
        for model in role_models.values():  # an unreachable model fails before any task
            await model.check()
    plan = store.plan(task_specs(stage, config), rerun_stale=rerun_stale)
    if retry:
        store.reset(stage.character.slug, stage.name, retry, config=config.fingerprint)
    recorded = {
        "stage": stage.name, "character": stage.character.slug,
        "options": stage.context.options.model_dump(mode="json"),
        "sampling": stage.context.sampling.model_dump(mode="json"), "mode": stage.mode,
        "models": {role: {"name": ref.name, "fp": ref.fp,
                          "identity": getattr(role_models[role], "identity", dict)()}
                   for role, ref in config.models.items()},
        "prompt_fp": config.prompt_fp, "output_fp": config.output_fp,
        "concurrency": concurrency, "limit": limit, "retry": retry, "rerun_stale": rerun_stale,
        "charforge": __version__, **(settings or {}),
    }
    runner = Runner(store, stage, role_models, config=config.fingerprint,
                    concurrency=concurrency, limit=limit, console=console,
                    show_progress=show_progress, command=command, settings=recorded)
    summary = await runner.run_async()
    summary.plan = plan
    return summary


def _dry_run(store: Store, stage: TaskStage, config: TaskConfig, rerun_stale: bool) -> DryRun:
    """Count what a run would do without writing anything."""
    count = stale = 0
    first = None
    for spec in task_specs(stage, config):
        status = store.task_status(spec.id)
        if status in ("done", "rejected", "failed"):
            continue
        if status is None and store.key_started(spec.key, spec.id):
            stale += 1
            if not rerun_stale:
                continue
        if first is None:
            first = stage.messages(spec.as_row())
        count += 1
    return DryRun(tasks=count, first_messages=first, stale=stale)


class Runner:
    def __init__(
        self,
        store: Store,
        stage: TaskStage,
        models: Mapping[str, ChatModel],
        *,
        config: str | None = None,
        concurrency: int = 16,
        limit: int | None = None,
        console: Console | None = None,
        show_progress: bool = True,
        command: str = "generate",
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.store, self.stage, self.models = store, stage, dict(models)
        self.character = stage.character.slug
        self.config = config
        self.concurrency = concurrency
        self.limit = limit
        self.console = console or Console(stderr=True)
        self.show_progress = show_progress
        self.command = command
        self.settings = dict(settings or {})
        self.summary = RunSummary()
        self._writer: StoreWriter | None = None
        self._stored: dict[str, list[StoredTurn]] = {}
        self._progress: Progress | None = None
        self._bar: Any = None

    # -- the entry point --------------------------------------------------------------
    async def run_async(self) -> RunSummary:
        """Run the pending tasks to completion (or until interrupted)."""
        started = time.perf_counter()
        self.store.reclaim_leases()
        run_id = self.store.begin_run(f"{self.command} {self.stage.name} {self.character}",
                                      self.settings)
        self.summary.run_id = run_id
        self._writer = StoreWriter(self.store, run_id)
        total = self.store.count(self.character, self.stage.name, "pending", config=self.config)
        if self.limit is not None:
            total = min(total, self.limit)
        try:
            with self._progress_bar(total):
                await self._run_all(total)
        finally:
            self._writer.flush()  # answers already received are kept, even on Ctrl-C
            self.summary.released = self.store.end_run(run_id)
            self.summary.elapsed_s = time.perf_counter() - started
        self._writer.raise_failure()
        return self.summary

    # -- progress ------------------------------------------------------------------------
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

    # -- scheduling ----------------------------------------------------------------------
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
        assert self._writer is not None
        while handed < total:
            batch = self.store.lease(self._writer.run_id, self.character, self.stage.name,
                                     min(page, total - handed), config=self.config)
            if not batch:
                break
            self._stored.update(self.store.stored_turns(batch))
            for task in batch:
                await queue.put(task)
            handed += len(batch)
        for _ in range(self.concurrency):
            await queue.put(None)  # one stop sign per worker

    async def _worker(self, queue: asyncio.Queue[TaskRow | None]) -> None:
        while (task := await queue.get()) is not None:
            await self._process(task)

    # -- one task ------------------------------------------------------------------------
    async def _process(self, task: TaskRow) -> None:
        writer = self._writer
        assert writer is not None
        session = TaskSession(task, self.models, self._stored.pop(task.id, ()), writer,
                              default_role=self.stage.roles[0])
        final: TaskFinished | TaskFailed
        try:
            records = await self.stage.run(task, session)
            final = TaskFinished.of(task, records=records, version=self.stage.record_version,
                                    answers=session.unsaved)
        except Rejected as problem:
            final = TaskFinished.of(task, rejection=(problem.reason, problem.detail),
                                    answers=session.unsaved)
        except ChatModelError as exc:
            final = TaskFailed(task, str(exc), exc.tries or [FailedTry(error=str(exc))],
                               session.unsaved)
        except asyncio.CancelledError:
            writer.submit(session.unsaved, wait=False)  # kept by the run's final flush
            raise
        except Exception as exc:  # a bug in a stage must not lose the rest of the run
            detail = f"internal error in stage {self.stage.name}: {type(exc).__name__}: {exc}"
            final = TaskFailed(task, detail, [FailedTry(error=detail)], session.unsaved)
        future = writer.submit([final])
        assert future is not None
        written = await future
        self._count(final, session, held=written[-1])
        self._advance()

    def _count(self, final: TaskFinished | TaskFailed, session: TaskSession, *,
               held: bool) -> None:
        for completion in session.asked:
            self.summary.prompt_tokens += completion.usage.prompt_tokens
            self.summary.completion_tokens += completion.usage.completion_tokens
        if not held:
            return
        if isinstance(final, TaskFailed):
            self.summary.failed += 1
        elif final.rejection:
            self.summary.rejected += 1
            reasons = self.summary.rejection_reasons
            reasons[final.rejection[0]] = reasons.get(final.rejection[0], 0) + 1
        else:
            self.summary.done += 1
