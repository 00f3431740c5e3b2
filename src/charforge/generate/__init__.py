"""Experience Reconstruction (Character-LLM): scenes, experiences, protective scenes.

`generate_async(...)` (and its sync form `generate`) is what `charforge generate
STAGE CHARACTER` calls: it finds the stage in the registry, checks its options,
loads the teacher named in the workspace, and hands over to `run_stage` (check the
model, plan the tasks, run the pending ones). Any registered stage runs this way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rich.console import Console

from charforge.aio import run_sync
from charforge.errors import CharforgeError
from charforge.generate.experiences import ExperienceStage
from charforge.generate.protective import ProtectiveStage
from charforge.generate.scenes import SceneStage
from charforge.llm.base import ChatModel, Sampling
from charforge.llm.registry import load_chat_model
from charforge.runner import DryRun, Retry, RunSummary, run_stage
from charforge.stages import OutputMode, StageOptions, build_stage, stage_class

if TYPE_CHECKING:
    from charforge.workspace import Workspace

__all__ = ["DryRun", "ExperienceStage", "ProtectiveStage", "SceneStage", "generate",
           "generate_async"]


def pick_mode(requested: str, model: ChatModel) -> OutputMode:
    if requested == "auto":
        return "json" if model.supports_json_schema else "text"
    if requested not in ("text", "json"):
        raise CharforgeError(f"unknown output format {requested!r}; use auto, text or json")
    return requested  # type: ignore[return-value]


async def generate_async(
    workspace: Workspace,
    character_name: str,
    stage_name: str,
    *,
    model: str | ChatModel | None = None,
    concurrency: int = 16,
    limit: int | None = None,
    retry: Retry | None = None,
    rerun_stale: bool = False,
    dry_run: bool = False,
    output_format: str = "auto",
    sampling: Sampling | Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | StageOptions | None = None,
    console: Console | None = None,
    show_progress: bool = True,
) -> RunSummary | DryRun:
    """Plan and run one stage for one character. `sampling` overrides the stage's
    defaults (temperature, top_p, max_tokens, ...); `options` are the stage's own,
    checked against its `Options` (an unknown name is an error naming the valid ones).
    The model, when built here from its name, is closed here."""
    cls = stage_class(stage_name)
    checked = cls.parse_options(options)
    character = workspace.load_character(character_name)
    if model is None or isinstance(model, str):
        name = model or workspace.config.default_model
        chat_model = load_chat_model(name, config=workspace.config)
    else:
        name, chat_model = model.name, model
    async with chat_model:
        store = workspace.store()
        try:
            stage = build_stage(cls, character, store, options=checked, sampling=sampling,
                                mode=pick_mode(output_format, chat_model),
                                templates=workspace.templates())
            return await run_stage(
                store, stage, chat_model, model_names={cls.roles[0]: name},
                concurrency=concurrency, limit=limit, retry=retry, rerun_stale=rerun_stale,
                dry_run=dry_run, console=console, show_progress=show_progress,
                command=f"generate {stage_name}",
            )
        finally:
            store.close()


def generate(workspace: Workspace, character_name: str, stage_name: str,
             **kwargs: Any) -> RunSummary | DryRun:
    """The sync form of `generate_async` (same arguments); inside a running event loop
    (Jupyter, FastAPI) it refuses and names the async form."""
    return run_sync(generate_async(workspace, character_name, stage_name, **kwargs),
                    sync_name="generate", async_name="generate_async")
