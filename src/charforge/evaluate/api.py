"""The evaluation verbs as Python functions (the CLI is a shell over them): interview an
agent, judge the interviews, import Character-LLM's released results.

Each runs a stage through `run_stage`, so it is recorded, resumable and never repeated:
run the same call again after an interruption and only the missing tasks are asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from charforge.aio import run_sync
from charforge.errors import CharforgeError
from charforge.llm.base import Sampling
from charforge.llm.registry import load_chat_model
from charforge.runner import DryRun, RunSummary, run_stage
from charforge.serve.catalogue import Scene
from charforge.stages import build_stage
from charforge.workspace import Workspace

from .agents import Agents
from .interview import MultiInterview, SingleInterview
from .interview_questions import questions_from_store
from .judges import RubricJudge
from .persllm_judges import AccuracyJudge, RankJudge, load_references
from .questions import Question, load_questions

BUNDLED_QUESTIONS = Path(__file__).parents[1] / "data"
Mode = Literal["single", "multi"]
JUDGE_STAGES = {"judge": RubricJudge, "judge-rank": RankJudge, "judge-accuracy": AccuracyJudge}


def _workspace(workspace: Workspace | str | Path) -> Workspace:
    return workspace if isinstance(workspace, Workspace) else Workspace(Path(workspace))


def default_questions(workspace: Workspace, slug: str, short_name: str) -> list[Question]:
    """The character's own question set: `characters/<slug>/interview.json` in the
    workspace, else one shipped with charforge for that name (Beethoven's), else the
    questions written for it by `charforge eval questions`."""
    own = workspace.root / "characters" / slug / "interview.json"
    if own.is_file():
        return load_questions(own)
    bundled = BUNDLED_QUESTIONS / f"interview_{short_name}.json"
    if bundled.is_file():
        return load_questions(bundled)
    with workspace.store() as store:
        generated = questions_from_store(store, slug)
    if generated:
        return generated
    raise CharforgeError(f"no interview questions for {short_name}: pass --questions FILE "
                         "(Character-LLM's format: a JSON list of {topic_id, topic, "
                         f"question}}), put them in {own}, or have a teacher write them: "
                         f"charforge eval questions {slug}")


def _sampling(changes: Sampling | Mapping[str, Any] | None) -> dict[str, Any]:
    if isinstance(changes, Sampling):
        return changes.model_dump()
    return {k: v for k, v in dict(changes or {}).items() if v is not None}


async def interview_async(
    workspace: Workspace | str | Path, character_name: str, *, agent: str = "trained",
    mode: Mode = "single", questions: str | Path | list[Question] | None = None,
    interviewer: str | None = None, preset: Literal["charforge", "character-llm"] = "charforge",
    location: str = "", status: str = "", stage: str | None = None, turns: int = 5,
    limit: int | None = None,
    concurrency: int = 16, sampling: Sampling | Mapping[str, Any] | None = None,
    dry_run: bool = False, console: Console | None = None, show_progress: bool = True,
) -> RunSummary | DryRun:
    """Interview `agent` (see `charforge.evaluate.agents`) playing the character on a
    question set, single-turn or multi-turn (an `interviewer` model asks follow-ups)."""
    ws = _workspace(workspace)
    character = ws.load_character(character_name)
    if stage and not any(stage in (s.label, s.token) for s in character.stages):
        known = ", ".join(s.label for s in character.stages) or "none"
        raise CharforgeError(f"{character.short_name} has no stage {stage!r} (stages: {known})")
    if questions is None:
        questions = default_questions(ws, character.slug, character.short_name)
    elif not isinstance(questions, list):
        questions = load_questions(questions)
    if mode not in ("single", "multi"):
        raise CharforgeError(f"unknown interview mode {mode!r}; use single or multi")
    cls = MultiInterview if mode == "multi" else SingleInterview
    agents = Agents.of(ws)
    scene = Scene(location=location, status=status, stage=stage)
    owned = []
    try:
        label, model = agents.resolve(agent, character, scene)
        models: dict[str, Any] = {"agent": model}
        names = {"agent": label}
        if mode == "multi":
            interviewer_model = load_chat_model(interviewer, config=ws.config)
            owned.append(interviewer_model)
            models["interviewer"] = interviewer_model
            names["interviewer"] = interviewer_model.name
        options = {"agent": label, "questions": tuple(questions), "turns": turns,
                   "preset": preset, "location": location, "status": status, "stage": stage}
        store = ws.store()
        try:
            built = build_stage(cls, character, store, options=options,
                                sampling=_sampling(sampling), templates=ws.templates())
            return await run_stage(store, built, models, model_names=names,
                                   concurrency=concurrency, limit=limit, retry="failed",
                                   dry_run=dry_run, console=console or Console(stderr=True),
                                   show_progress=show_progress,
                                   command=f"eval interview {character.slug} --agent {agent}")
        finally:
            store.close()
    finally:
        for model in owned:
            await model.aclose()
        await agents.aclose()


def interview(workspace: Workspace | str | Path, character_name: str,
              **kwargs: Any) -> RunSummary | DryRun:
    return run_sync(interview_async(workspace, character_name, **kwargs),
                    sync_name="interview", async_name="interview_async")


async def judge_async(
    workspace: Workspace | str | Path, character_name: str, *, judge: str | None = None,
    preset: Literal["charforge", "character-llm"] = "charforge", samples: int = 1,
    agents: list[str] | None = None, dimensions: list[str] | None = None,
    stage: str = "judge", references: str | Path | None = None, rounds: int | None = None,
    modes: list[Mode] | None = None, topics: list[str] | None = None, location: str = "",
    status: str = "", limit: int | None = None, concurrency: int = 16,
    sampling: Sampling | Mapping[str, Any] | None = None, dry_run: bool = False,
    console: Console | None = None, show_progress: bool = True,
) -> RunSummary | DryRun:
    """Judge the character's interviews with the `judge` model (default: the workspace's
    default model): Character-LLM's rubric (`stage="judge"`), PersLLM's ranking of
    `agents` in balanced rotations (`"judge-rank"`), or its knowledge and attitude
    accuracy against `references` (`"judge-accuracy"`, a JSON file)."""
    ws = _workspace(workspace)
    character = ws.load_character(character_name)
    if stage not in JUDGE_STAGES:
        raise CharforgeError(f"unknown judge {stage!r}; judges: {', '.join(JUDGE_STAGES)}")
    cls = JUDGE_STAGES[stage]
    judge_model = load_chat_model(judge, config=ws.config)
    options: dict[str, Any] = {"judge": judge_model.name}
    if stage == "judge":
        options.update(samples=samples, preset=preset, location=location, status=status,
                       agents=tuple(agents or ()))
        if dimensions:
            options["dimensions"] = tuple(dimensions)
        if modes:
            options["modes"] = tuple(modes)
        if topics:
            options["topics"] = tuple(topics)
    elif stage == "judge-rank":
        options.update(agents=tuple(agents or ()), rounds=rounds,
                       mode=(modes or ["single"])[0])
    else:
        if references is None:
            raise CharforgeError("judge-accuracy needs --references FILE (a JSON list of "
                                 "{item or topic_id+question, kind, reference})")
        options.update(references=load_references(references), agents=tuple(agents or ()))
    async with judge_model:
        store = ws.store()
        try:
            # The rubric in JSON where the judge takes a schema (never the seed's prompts,
            # which ask for a last line).
            mode = ("json" if stage == "judge" and preset == "charforge"
                    and judge_model.supports_json_schema else "text")
            built = build_stage(cls, character, store, options=options,
                                sampling=_sampling(sampling), templates=ws.templates(),
                                mode=mode)
            empty = built.nothing_to_do()
            if empty:
                raise CharforgeError(f"nothing to do: {empty}")
            result = await run_stage(store, built, judge_model,
                                     model_names={"judge": judge_model.name},
                                     concurrency=concurrency, limit=limit, retry="failed",
                                     dry_run=dry_run, console=console or Console(stderr=True),
                                     show_progress=show_progress,
                                     command=f"eval judge {character.slug} ({stage})")
            if isinstance(result, RunSummary):
                result.notes = built.report()
            return result
        finally:
            store.close()


def judge(workspace: Workspace | str | Path, character_name: str,
          **kwargs: Any) -> RunSummary | DryRun:
    return run_sync(judge_async(workspace, character_name, **kwargs),
                    sync_name="judge", async_name="judge_async")


async def questions_async(workspace: Workspace | str | Path, character_name: str, *,
                          teacher: str | None = None, per_topic: int = 10,
                          topics: list[str] | None = None, **kwargs: Any
                          ) -> RunSummary | DryRun:
    """Have the `teacher` write interview questions per topic from the profile (the
    stage `interview-questions`); `interview` uses them when the character has no
    question set of its own."""
    from charforge.generate import generate_async

    options: dict[str, Any] = {"per_topic": per_topic}
    if topics:
        options["topics"] = tuple(topics)
    return await generate_async(_workspace(workspace), character_name,
                                "interview-questions", model=teacher, options=options,
                                **kwargs)


def questions(workspace: Workspace | str | Path, character_name: str,
              **kwargs: Any) -> RunSummary | DryRun:
    return run_sync(questions_async(workspace, character_name, **kwargs),
                    sync_name="questions", async_name="questions_async")
