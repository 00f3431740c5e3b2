"""The teacher stages: Experience Reconstruction (Character-LLM: scenes, experiences,
protective scenes) and personified data (PersLLM: questions, answers, stylized
instructions, and the base model's own answers).

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
from charforge.generate.answers import AnswerStage
from charforge.generate.base_answers import BaseAnswerStage
from charforge.generate.experiences import ExperienceStage
from charforge.generate.protective import ProtectiveStage
from charforge.generate.questions import QuestionStage
from charforge.generate.scenes import SceneStage
from charforge.generate.stylized import StylizedStage
from charforge.llm.base import ChatModel, Sampling
from charforge.llm.registry import (
    NO_TEACHER_HINT,
    build_chat_model,
    describe_chat_model,
    describe_model,
    no_teacher_configured,
)
from charforge.recipes import Recipe, get_recipe
from charforge.runner import DryRun, Retry, RunSummary, run_stage
from charforge.stages import OutputMode, StageOptions, build_stage, stage_class

if TYPE_CHECKING:
    from charforge.workspace import Workspace

__all__ = ["AnswerStage", "BaseAnswerStage", "DryRun", "ExperienceStage", "ProtectiveStage",
           "QuestionStage", "SceneStage", "StylizedStage", "generate", "generate_async"]


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
    recipe: str | Recipe | None = None,
) -> RunSummary | DryRun:
    """Plan and run one stage for one character. `sampling` overrides the stage's
    defaults (temperature, top_p, max_tokens, ...); `options` are the stage's own,
    checked against its `Options` (an unknown name is an error naming the valid ones).
    A `recipe` (e.g. "character-llm") supplies both, under what is given explicitly.
    The model, when built here from its name, is closed here."""
    cls = stage_class(stage_name)
    if recipe is not None:
        part = get_recipe(recipe).stage(stage_name)
        given = options.model_dump() if isinstance(options, StageOptions) else options
        options = {**part.options, **{k: v for k, v in dict(given or {}).items()
                                      if v is not None}}
        explicit = sampling.model_dump() if isinstance(sampling, Sampling) else sampling
        sampling = {**part.sampling, **{k: v for k, v in dict(explicit or {}).items()
                                        if v is not None}}
    checked = cls.parse_options(options)
    character = workspace.load_character(character_name)
    if model is None or isinstance(model, str):
        name, entry = workspace.config.entry(model)
        chat_model = build_chat_model(name, entry)
        described = describe_model(name, entry)
    else:
        name, chat_model = model.name, model
        described = describe_chat_model(model)
    console = console or Console(stderr=True)
    async with chat_model:
        store = workspace.store()
        try:
            stage = build_stage(cls, character, store, options=checked, sampling=sampling,
                                mode=pick_mode(output_format, chat_model),
                                templates=workspace.templates(),
                                cache_folder=workspace.root / "cache")
            empty = stage.nothing_to_do()
            if empty:
                raise CharforgeError(f"nothing to do: {empty}")
            if not dry_run:  # an unreachable teacher fails here, before any task
                await chat_model.check()
            # The teacher is always named (a dry run too); the embedded one with a hint.
            console.print(f"{cls.roles[0]}: {described}", markup=False, highlight=False)
            if model is None and no_teacher_configured(workspace.config):
                console.print(NO_TEACHER_HINT, markup=False, highlight=False)
            result = await run_stage(
                store, stage, chat_model, model_names={cls.roles[0]: name},
                concurrency=concurrency, limit=limit, retry=retry, rerun_stale=rerun_stale,
                dry_run=dry_run, check=False, console=console, show_progress=show_progress,
                command=f"generate {stage_name}",
            )
            if isinstance(result, RunSummary):
                slug = character.slug
                result.accepted_tries, result.tries = store.acceptance(
                    slug, cls.name, run_id=result.run_id)
                result.notes = stage.report()
            return result
        finally:
            store.close()


def generate(workspace: Workspace, character_name: str, stage_name: str,
             **kwargs: Any) -> RunSummary | DryRun:
    """The sync form of `generate_async` (same arguments); inside a running event loop
    (Jupyter, FastAPI) it refuses and names the async form."""
    return run_sync(generate_async(workspace, character_name, stage_name, **kwargs),
                    sync_name="generate", async_name="generate_async")
