"""Experience Reconstruction (Character-LLM): scenes, experiences, protective scenes.

`generate(...)` is what `charforge generate STAGE CHARACTER` calls: it checks
the model can be reached, plans the stage's tasks into the store (known tasks
are not added twice), and runs the pending ones.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal

from rich.console import Console

from charforge.errors import CharforgeError
from charforge.generate.base import OutputMode, TeacherStage
from charforge.generate.experiences import ExperienceStage
from charforge.generate.protective import ProtectiveStage
from charforge.generate.scenes import SceneStage
from charforge.llm.base import ChatMessage, ChatModel
from charforge.llm.registry import load_chat_model
from charforge.runner import Runner, RunSummary
from charforge.store import Store
from charforge.workspace import Workspace

STAGES: dict[str, type[TeacherStage]] = {
    "scenes": SceneStage,
    "experiences": ExperienceStage,
    "protective": ProtectiveStage,
}

__all__ = ["STAGES", "DryRun", "ExperienceStage", "ProtectiveStage", "SceneStage", "generate"]


@dataclass
class DryRun:
    """What a run would do: how many tasks, and the first prompt."""

    tasks: int
    first_messages: list[ChatMessage] | None


def _pick_mode(requested: str, model: ChatModel) -> OutputMode:
    if requested == "auto":
        return "json" if model.supports_json_schema else "text"
    if requested not in ("text", "json"):
        raise CharforgeError(f"unknown output format {requested!r}; use auto, text or json")
    return requested  # type: ignore[return-value]


def generate(
    workspace: Workspace,
    character_name: str,
    stage_name: str,
    *,
    model: str | ChatModel | None = None,
    concurrency: int = 16,
    limit: int | None = None,
    retry: Literal["failed", "rejected"] | None = None,
    dry_run: bool = False,
    output_format: str = "auto",
    sampling: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    console: Console | None = None,
    show_progress: bool = True,
) -> RunSummary | DryRun:
    """Plan and run one stage for one character. `sampling` holds temperature,
    top_p and max_tokens; `options` the stage's own settings (e.g. prompts)."""
    if stage_name not in STAGES:
        raise CharforgeError(f"unknown stage {stage_name!r}; stages: {', '.join(STAGES)}")
    character = workspace.load_character(character_name)
    if model is None or isinstance(model, str):
        chat_model = load_chat_model(model, workspace=workspace)
    else:
        chat_model = model
    store = workspace.store()
    try:
        extra = {"store": store} if stage_name == "experiences" else {}
        stage = STAGES[stage_name](
            character, chat_model.name, mode=_pick_mode(output_format, chat_model),
            **(sampling or {}), **extra, **(options or {}),
        )
        if dry_run:
            return _dry_run(store, stage)
        runner = Runner(
            store, stage, chat_model, character=character.slug, concurrency=concurrency,
            limit=limit, console=console, show_progress=show_progress,
            command=f"generate {stage_name}",
        )
        return asyncio.run(_check_plan_run(chat_model, store, stage, runner, retry))
    finally:
        store.close()


async def _check_plan_run(
    model: ChatModel, store: Store, stage: TeacherStage, runner: Runner,
    retry: Literal["failed", "rejected"] | None,
) -> RunSummary:
    try:
        await model.check()  # an unreachable endpoint fails here, before any task is queued
        store.add_tasks(stage.plan())
        if retry:
            store.reset(stage.character.slug, stage.name, retry)
        return await runner.run_async()
    finally:
        await model.aclose()


def _dry_run(store: Store, stage: TeacherStage) -> DryRun:
    count = 0
    first = None
    for spec in stage.plan():
        if store.task_status(spec.id) in (None, "pending", "leased"):
            if first is None:
                first = stage.messages(spec.as_row())
            count += 1
    return DryRun(tasks=count, first_messages=first)
