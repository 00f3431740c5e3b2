"""`charforge run CONFIG.yaml`: every step of the main job in order, through the same
stage contract, runner and store as the single commands.

Each step is resumable on its own terms, so a rerun continues where the last one
stopped and redoes nothing finished: a generation stage, an interview and a judge
ask only their tasks not yet answered (the store), the dataset is rebuilt only when
its records or options changed, and training finds its identical finished run (or
resumes from its last checkpoint). Every check that can fail on the configuration
(the character file, the stage names, the models, the base) runs before any work.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from charforge.demo import demo_file
from charforge.errors import CharforgeError
from charforge.pipeline.config import STEPS, RunConfig, StagePlan, load_config, stage_plan
from charforge.recipes import get_recipe
from charforge.workspace import Workspace

BUILTIN_PREFIX = "builtin:"
STATE_FILE = "pipeline.json"


@dataclass
class StepResult:
    step: str
    ran: bool
    seconds: float
    detail: str = ""


@dataclass
class PipelineRun:
    """What one invocation did, for the summary."""

    workspace: Workspace
    character: str
    steps: list[StepResult] = field(default_factory=list)
    report_path: Path | None = None
    report: Any = None  # the evaluation Report, when the report step ran
    stopped: str | None = None  # why the run ended before its last step


def resolve_source(value: str, base: Path) -> Path:
    """A character source: `builtin:NAME` (shipped with charforge) or a path relative to
    the configuration's folder."""
    if value.startswith(BUILTIN_PREFIX):
        name = value[len(BUILTIN_PREFIX):]
        path = demo_file(name)
        if not name or not path.is_file():
            shipped = sorted(p.name for p in Path(str(resources.files("charforge").joinpath(
                "data"))).iterdir() if p.suffix in (".txt", ".json", ".png"))
            raise CharforgeError(f"character.source: no built-in file {name!r}; built-in: "
                                 f"{', '.join(shipped)}")
        return path
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def step_range(start: str | None, until: str | None, steps: list[str]) -> list[str]:
    """The steps between `start` and `until` (inclusive) of `steps`; a name that is not a
    step is one line naming them."""
    for name in (start, until):
        if name is not None and name not in STEPS:
            raise CharforgeError(f"unknown stage {name!r}; stages: {', '.join(STEPS)}")
    order = {name: number for number, name in enumerate(STEPS)}
    low = order[start] if start else 0
    high = order[until] if until else len(STEPS)
    if low > high:
        raise CharforgeError(f"--from {start} comes after --until {until}")
    return [step for step in steps if low <= order[step] <= high]


class Pipeline:
    """One configuration, checked, ready to run (or to show its plan)."""

    def __init__(self, config_path: str | Path, *, workspace: str | Path | None = None,
                 console: Console | None = None) -> None:
        self.config_path = Path(config_path)
        self.config: RunConfig = load_config(self.config_path)
        self.base_dir = self.config_path.resolve().parent
        folder = Path(workspace) if workspace else Path(self.config.workspace).expanduser()
        self.workspace_path = folder if folder.is_absolute() or workspace else \
            self.base_dir / folder
        self.console = console or Console(stderr=True)
        self.recipe = get_recipe(self.config.recipe_name)
        self.source = resolve_source(self.config.character.source, self.base_dir)
        self.style = (resolve_source(self.config.character.style, self.base_dir)
                      if self.config.character.style else None)
        self.questions = (resolve_source(self.config.evaluation.questions, self.base_dir)
                          if self.config.evaluation.questions else None)
        self.plans: dict[str, StagePlan] = {name: stage_plan(name, entry)
                                            for name, entry in self.config.stages.items()}

    # -- checks before any work ------------------------------------------------
    def check_files(self) -> None:
        for what, path in (("character.source", self.source), ("character.style", self.style),
                           ("evaluation.questions", self.questions)):
            if path is not None and not path.exists():
                raise CharforgeError(f"{what}: {path} does not exist")

    def open_workspace(self) -> Workspace:
        """The workspace, made if missing, with the configuration's models written into
        its charforge.yaml (names only and endpoints: keys stay in the environment)."""
        self.check_model_entries()
        ws = Workspace.init(self.workspace_path)
        if self.config.models:
            raw = yaml.safe_load(ws.config_path.read_text(encoding="utf-8")) or {}
            models = dict(raw.get("models") or {})
            if any(models.get(name) != entry for name, entry in self.config.models.items()):
                models.update(self.config.models)
                raw["models"] = models
                ws.config_path.write_text(yaml.safe_dump(raw, sort_keys=False),
                                          encoding="utf-8")
            ws.reload_config()
        return ws

    def check_model_entries(self) -> None:
        """Each model entry of the file is one its backend accepts (before it is written)."""
        from pydantic import ValidationError

        from charforge.llm.registry import ModelEntry, build_chat_model

        for name, entry in self.config.models.items():
            try:
                build_chat_model(name, ModelEntry.model_validate(entry))
            except (ValidationError, CharforgeError, ValueError) as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])
                detail = first[-1].strip() if isinstance(exc, ValidationError) else first[0]
                raise CharforgeError(f"models.{name}: {detail}") from None

    async def check_models(self, ws: Workspace, steps: list[str]) -> None:
        """Every model the chosen steps use exists; an endpoint answers. A local model is
        found on disk here and loaded by its first step."""
        from charforge.llm.registry import build_chat_model, model_identity

        gen = set(self.config.generation_stages())
        wanted: dict[str, str] = {}
        if gen & set(steps):
            wanted[self.config.teacher] = "teacher"
        if "judge" in steps:
            wanted.setdefault(self.config.judge_model, "judge")
        if "interview" in steps and "multi" in self.config.evaluation.modes:
            wanted.setdefault(self.config.evaluation.interviewer or self.config.judge_model,
                              "interviewer")
        for name, role in wanted.items():
            try:
                name, entry = ws.config.entry(name)
                if entry.backend == "local":
                    model_identity(name, ws.config)
                    continue
                model = build_chat_model(name, entry)
                async with model:
                    await model.check()
            except CharforgeError as exc:
                raise CharforgeError(f"{role} {name!r}: {exc}") from None
        if "train" in steps:
            from charforge.train.base import resolve_base

            resolve_base(ws, self.config.training.base)

    def character(self, ws: Workspace) -> str:
        """The character's slug, imported on the first run."""
        from charforge.importers import load_character_file

        character, avatar = load_character_file(self.source, style=self.style,
                                                name=self.config.character.name,
                                                max_bytes=ws.config.limits.max_import_bytes)
        if character.slug not in {c.slug for c in ws.characters()}:
            ws.save_character(character, avatar=avatar)  # read once, as import would
            self.console.print(f"imported {character.name} into {ws.character_dir(character)}",
                               markup=False, highlight=False)
        return character.slug

    async def prepare(self, steps: list[str]) -> tuple[Workspace, str]:
        """Every check, in order (files, model entries, models, base), then the workspace
        and the character's slug: what a run and a dry run both start from."""
        self.check_files()
        made = not self.workspace_path.exists()
        try:
            ws = self.open_workspace()
            await self.check_models(ws, steps)
            return ws, self.character(ws)
        except BaseException:
            if made:  # a run refused before any work leaves no empty workspace behind
                shutil.rmtree(self.workspace_path, ignore_errors=True)
            raise

    # -- running ---------------------------------------------------------------
    async def run(self, *, start: str | None = None, until: str | None = None
                  ) -> PipelineRun:
        from charforge.pipeline import steps as step_functions

        steps = step_range(start, until, self.config.steps())
        ws, slug = await self.prepare(steps)
        result = PipelineRun(ws, slug)
        context = step_functions.StepContext(self, ws, slug, result)
        try:
            for step in steps:
                began = time.perf_counter()
                self.console.rule(f"{step}")
                ran, detail = await step_functions.run_step(context, step)
                seconds = time.perf_counter() - began
                result.steps.append(StepResult(step, ran, seconds, detail))
                self.console.print(f"{step}: {detail} ({duration(seconds)})",
                                   markup=False, highlight=False)
                if context.stop:
                    result.stopped = context.stop
                    break
        finally:
            await context.aclose()
        return result

    # -- state ------------------------------------------------------------------
    def state(self, ws: Workspace) -> dict[str, Any]:
        path = ws.root / STATE_FILE
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def save_state(self, ws: Workspace, changes: dict[str, Any]) -> None:
        path = ws.root / STATE_FILE
        state = {**self.state(ws), **changes}
        staging = path.with_suffix(".partial")
        staging.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        staging.replace(path)


def fingerprint(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {seconds % 60:02.0f} s"
