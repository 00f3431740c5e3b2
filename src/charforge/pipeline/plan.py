"""`charforge run --dry-run`: each step's task count and an estimate of its tokens
(and cost, where the configuration gives prices), asking no model.

A stage that can plan now (its inputs exist) is planned by the runner itself (the
same dry run as `charforge generate --dry-run`); one that builds on a stage not yet
run is estimated from the counts asked of that stage. Output tokens are an upper
bound (every answer at its max_tokens); prompt tokens are the first prompt's words
times 1.35, or a typical prompt's size where there is none yet.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console

from charforge.errors import CharforgeError
from charforge.llm.base import Sampling
from charforge.runner import DryRun

if TYPE_CHECKING:
    from charforge.pipeline.run import Pipeline
    from charforge.workspace import Workspace

TOKENS_PER_WORD = 1.35
TYPICAL_PROMPT_TOKENS = 700  # a stage prompt with its profile excerpt, when none is planned
JUDGE_PROMPT_TOKENS = 600
DIMENSIONS = 5


@dataclass
class StepPlan:
    step: str
    tasks: int | None
    prompt_tokens: int = 0
    output_tokens: int = 0
    model: str | None = None
    note: str = ""

    def cost(self, prices: dict[str, Any]) -> float | None:
        price = prices.get(self.model or "")
        if price is None:
            return None
        return (self.prompt_tokens * price.input + self.output_tokens * price.output) / 1e6


def _prompt_tokens(dry: DryRun) -> int:
    if not dry.first_messages:
        return TYPICAL_PROMPT_TOKENS
    words = sum(len(str(m.content).split()) for m in dry.first_messages)
    return int(words * TOKENS_PER_WORD)


def _resolved(pipeline: Pipeline, stage: str) -> tuple[dict[str, Any], Sampling]:
    """The stage's options and sampling as the run will use them (stage defaults, then
    the recipe's, then the configuration's)."""
    from charforge.stages import stage_class

    cls = stage_class(stage)
    part = pipeline.recipe.stage(stage)
    plan = pipeline.plans.get(stage)
    options = {**part.options, **(plan.options if plan else {})}
    sampling = cls.sampling.but(**{**part.sampling, **(plan.sampling if plan else {})})
    return cls.parse_options(options).model_dump(), sampling


async def plan_steps(pipeline: Pipeline, ws: Workspace, slug: str,
                     steps: list[str]) -> list[StepPlan]:
    from charforge.generate import generate_async

    config = pipeline.config
    quiet = Console(file=io.StringIO())  # each stage's "teacher: ..." line: said once, below
    plans: list[StepPlan] = []
    expected: dict[str, int] = {}  # records each generation stage should give
    for step in steps:
        if step in config.generation_stages():
            options, sampling = _resolved(pipeline, step)
            plan = pipeline.plans.get(step)
            patterns = plan.patterns if plan and plan.patterns else [None]
            tasks = prompt = 0
            note = ""
            for pattern in patterns:
                given = {**(plan.options if plan else {}),
                         **({"pattern": pattern} if pattern else {})}
                try:
                    dry = await generate_async(ws, slug, step, model=config.teacher, dry_run=True,
                                               options=given,
                                               sampling=plan.sampling if plan else None,
                                               recipe=pipeline.recipe, show_progress=False,
                                               console=quiet)
                    assert isinstance(dry, DryRun)
                    count, prompt_each = dry.tasks, _prompt_tokens(dry)
                except CharforgeError as exc:
                    if not str(exc).startswith("nothing to do"):
                        raise
                    count = _upstream(step, expected)
                    prompt_each = TYPICAL_PROMPT_TOKENS
                    note = "from the counts before"
                if plan and plan.limit is not None:
                    count = min(count, plan.limit)
                tasks += count
                prompt += count * prompt_each
            expected[step] = _records(step, tasks, options)
            plans.append(StepPlan(step, tasks, prompt, tasks * sampling.max_tokens,
                                  config.teacher, note))
        elif step == "interview":
            questions = _question_count(pipeline, ws, slug)
            turns = sum(config.evaluation.turns if mode == "multi" else 1
                        for mode in config.evaluation.modes)
            agents = len(config.agents)
            tasks = questions * agents * len(config.evaluation.modes)
            requests = questions * agents * turns
            plans.append(StepPlan(step, tasks, requests * 150,
                                  requests * config.evaluation.max_tokens, None,
                                  f"{requests} requests to the agents"))
            expected["interview"] = tasks
        elif step == "judge":
            agents = len(config.agents)
            tasks = expected.get("interview") or _question_count(pipeline, ws, slug) * agents
            judges = config.judges
            rubric = tasks * DIMENSIONS if "rubric" in judges else 0
            # PersLLM's ranking: each item once per rotation (one per agent by default),
            # every agent's answer in the prompt
            rank = tasks if "rank" in judges else 0
            answer = config.evaluation.max_tokens
            plans.append(StepPlan(
                step, rubric + rank,
                rubric * JUDGE_PROMPT_TOKENS + rank * (JUDGE_PROMPT_TOKENS + agents * answer),
                (rubric + rank) * config.evaluation.judge_max_tokens, config.judge_model,
                " + ".join(f"{n} {kind}" for n, kind in ((rubric, "rubric"), (rank, "rank"))
                           if n)))
        elif step in ("train", "dpo"):
            settings = config.training
            method = settings.settings_changes().get("method", pipeline.recipe.training.method)
            plans.append(StepPlan(step, None, note=f"{method} on {settings.base}"))
        else:
            plans.append(StepPlan(step, None))
    return plans


def _upstream(step: str, expected: dict[str, int]) -> int:
    if step == "experiences":
        return expected.get("scenes", 0)
    if step == "answers":
        return expected.get("questions", 0)
    return 0


def _records(step: str, tasks: int, options: dict[str, Any]) -> int:
    """Records a stage's tasks give at most (every answer accepted)."""
    if step == "scenes":
        return tasks * int(options.get("scenes_per_prompt", 1))
    if step == "questions":
        per = tasks * int(options.get("per_passage", 1))
        return min(per, options["count"]) if options.get("count") else per
    return tasks


def _question_count(pipeline: Pipeline, ws: Workspace, slug: str) -> int:
    from charforge.evaluate.api import default_questions
    from charforge.evaluate.questions import load_questions

    try:
        character = ws.load_character(slug)
        found = (load_questions(pipeline.questions) if pipeline.questions
                 else default_questions(ws, slug, character.short_name))
        count = len(found)
    except CharforgeError:
        count = 0
    limit = pipeline.config.evaluation.limit
    return min(count, limit) if limit else count
