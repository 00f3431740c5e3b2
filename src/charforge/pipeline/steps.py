"""The steps of `charforge run`, one function each. A step returns whether it did any
work and a line saying what it found or did; `StepContext.stop` ends the run early
(an interrupted stage, or nothing to build a dataset from)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from charforge.errors import CharforgeError
from charforge.evaluate.interview_questions import QUESTION_KIND
from charforge.evaluate.records import INTERVIEW_KIND, JUDGMENT_KIND, RANKING_KIND
from charforge.runner import RunSummary

if TYPE_CHECKING:
    from charforge.llm.base import ChatModel
    from charforge.pipeline.run import Pipeline, PipelineRun
    from charforge.workspace import Workspace

EVALUATION_KINDS = {INTERVIEW_KIND, JUDGMENT_KIND, RANKING_KIND, QUESTION_KIND}


class StepContext:
    def __init__(self, pipeline: Pipeline, ws: Workspace, slug: str,
                 result: PipelineRun) -> None:
        self.pipeline, self.ws, self.slug, self.result = pipeline, ws, slug, result
        self.config = pipeline.config
        self.console = pipeline.console
        self.stop: str | None = None
        self._teacher: ChatModel | None = None

    def teacher(self) -> ChatModel:
        """The teacher, loaded once for every generation stage."""
        if self._teacher is None:
            from charforge.llm.registry import load_chat_model

            self._teacher = load_chat_model(self.config.teacher, config=self.ws.config)
        return self._teacher

    async def aclose(self) -> None:
        if self._teacher is not None:
            await self._teacher.aclose()
            shutdown = getattr(self._teacher, "shutdown", None)
            if shutdown is not None:
                shutdown()
            self._teacher = None

    def print(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)


def _summary_line(summary: RunSummary) -> str:
    if summary.finished == 0 and not summary.interrupted:
        return "complete, nothing new to ask"
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(summary.rejection_reasons.items()))
    share = (f" ({summary.accepted_tries}/{summary.tries} tries accepted)"
             if summary.tries else "")
    line = (f"{summary.done} done{share}, {summary.rejected} rejected"
            f"{f' ({reasons})' if reasons else ''}, {summary.failed} failed")
    return line + (" · interrupted" if summary.interrupted else "")


def _check_interrupted(ctx: StepContext, step: str, summary: Any) -> None:
    if isinstance(summary, RunSummary) and summary.interrupted:
        ctx.stop = f"{step} was interrupted: run the same command again to continue"


async def generation(ctx: StepContext, stage: str) -> tuple[bool, str]:
    from charforge.generate import generate_async

    plan = ctx.pipeline.plans.get(stage)
    patterns = (plan.patterns if plan and plan.patterns else [None])
    lines, ran = [], False
    for pattern in patterns:
        options = dict(plan.options) if plan else {}
        if pattern is not None:
            options["pattern"] = pattern
        try:
            summary = await generate_async(
                ctx.ws, ctx.slug, stage, model=ctx.teacher(),
                concurrency=ctx.config.concurrency, limit=plan.limit if plan else None,
                retry="rejected" if plan and plan.retry_rejected else "failed",
                options=options, sampling=plan.sampling if plan else None,
                recipe=ctx.pipeline.recipe, console=ctx.console)
        except CharforgeError as exc:
            if not str(exc).startswith("nothing to do"):
                raise
            lines.append(str(exc))
            continue
        assert isinstance(summary, RunSummary)
        ran = ran or summary.finished > 0
        for note in summary.notes:
            ctx.print(f"  {note}")
        lines.append((f"{pattern}: " if pattern else "") + _summary_line(summary))
        _check_interrupted(ctx, stage, summary)
        if ctx.stop:
            break
    return ran, "; ".join(lines)


async def dataset(ctx: StepContext) -> tuple[bool, str]:
    """Rebuilt only when the character's records or the options changed."""
    from charforge.dataset.export import build_dataset
    from charforge.pipeline.run import fingerprint

    options = ctx.config.dataset
    with ctx.ws.store() as store:  # the data records (an interview or a judgment is not)
        counts = [row for row in store.record_kinds(ctx.slug) if row[0] not in EVALUATION_KINDS]
    key = fingerprint([list(row) for row in counts], options.model_dump(),
                      ctx.pipeline.recipe.dataset.meta_prompt)
    folder = ctx.ws.datasets_dir / ctx.slug
    state = ctx.pipeline.state(ctx.ws)
    if state.get("dataset", {}).get(ctx.slug) == key and (folder / "sft.jsonl").is_file():
        return False, f"unchanged since the last build ({folder})"
    try:
        build = build_dataset(ctx.ws, ctx.slug, preset=ctx.pipeline.recipe.dataset.meta_prompt,
                              test_fraction=options.test_fraction,
                              dedup_threshold=options.dedup_threshold,
                              dialogue_threshold=options.dialogue_threshold,
                              with_analysis=options.with_analysis, dpo=options.dpo,
                              seed=options.seed, dedup=options.dedup)
    except CharforgeError as exc:
        ctx.stop = f"no dataset: {exc}"
        return False, str(exc)
    ctx.pipeline.save_state(ctx.ws, {"dataset": {**state.get("dataset", {}), ctx.slug: key}})
    stats = build.stats
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(stats.dialogues.items()))
    return True, (f"{stats.sft_records} SFT records ({stats.train} train, {stats.test} test;"
                  f" dialogues: {kinds or 'none'}) -> {build.folder}")


def _train_line(result: Any) -> str:
    metrics = result.record.metrics
    loss = metrics.get("train_loss")
    evals = metrics.get("eval_loss")
    before = metrics.get("eval_loss_before")
    parts = [f"run {result.model_name}", f"{metrics.get('steps')} steps"]
    if loss is not None:
        parts.append(f"train loss {loss:.3f}")
    if evals is not None:
        parts.append(f"eval loss {before:.3f} -> {evals:.3f}" if before is not None
                     else f"eval loss {evals:.3f}")
    return ("trained: " if result.trained else "already trained: ") + ", ".join(parts)


async def train(ctx: StepContext) -> tuple[bool, str]:
    import asyncio

    from charforge.train.sft import train_sft

    settings = ctx.config.training
    result = await asyncio.to_thread(
        train_sft, ctx.ws, ctx.slug, base=settings.base, recipe=ctx.pipeline.recipe.name,
        changes=settings.settings_changes(), console=ctx.console)
    ctx.ws.reload_config()
    return result.trained, _train_line(result)


async def dpo(ctx: StepContext) -> tuple[bool, str]:
    import asyncio

    from charforge.train.dpo import train_dpo

    result = await asyncio.to_thread(
        train_dpo, ctx.ws, ctx.slug, recipe=ctx.pipeline.recipe.name,
        changes=ctx.config.training.settings_changes(), console=ctx.console)
    ctx.ws.reload_config()
    return result.trained, _train_line(result)


def agents(ctx: StepContext) -> list[str]:
    return ctx.config.agents


def questions(ctx: StepContext) -> list[Any]:
    """The interview set: the file's, else the character's own; its first `limit`
    questions (the same ones on every run, so a rerun asks nothing new)."""
    from charforge.evaluate.api import default_questions
    from charforge.evaluate.questions import load_questions

    if ctx.pipeline.questions is not None:
        found = load_questions(ctx.pipeline.questions)
    else:
        character = ctx.ws.load_character(ctx.slug)
        found = default_questions(ctx.ws, ctx.slug, character.short_name)
    limit = ctx.config.evaluation.limit
    return found[:limit] if limit else found


async def interview(ctx: StepContext) -> tuple[bool, str]:
    from charforge.evaluate.api import interview_async

    options = ctx.config.evaluation
    sampling = {"max_tokens": options.max_tokens, "temperature": options.temperature}
    asked = questions(ctx)
    lines, ran = [], False
    for agent in agents(ctx):
        for mode in options.modes:
            summary = await interview_async(
                ctx.ws, ctx.slug, agent=agent, mode=mode, questions=asked,
                interviewer=options.interviewer or ctx.config.judge_model,
                preset=_preset(ctx), turns=options.turns,
                concurrency=options.concurrency, sampling=sampling, console=ctx.console)
            assert isinstance(summary, RunSummary)
            ran = ran or summary.finished > 0
            lines.append(f"{agent} ({mode}): {_summary_line(summary)}")
            _check_interrupted(ctx, "interview", summary)
            if ctx.stop:
                return ran, "; ".join(lines)
    return ran, "; ".join(lines)


def _preset(ctx: StepContext) -> Any:
    return ctx.config.evaluation.preset or ctx.pipeline.recipe.evaluation.judge_prompts


async def judge(ctx: StepContext) -> tuple[bool, str]:
    """The rubric judge (and PersLLM's ranking judge, where the file asks for it)."""
    from charforge.evaluate.api import judge_async

    options = ctx.config.evaluation
    lines, ran = [], False
    for kind in ctx.config.judges:
        try:
            summary = await judge_async(
                ctx.ws, ctx.slug, judge=ctx.config.judge_model, preset=_preset(ctx),
                stage="judge" if kind == "rubric" else "judge-rank", agents=agents(ctx),
                modes=list(options.modes), sampling={"max_tokens": options.judge_max_tokens},
                concurrency=options.concurrency, console=ctx.console)
        except CharforgeError as exc:
            if not str(exc).startswith("nothing to do"):
                raise
            lines.append(f"{kind}: {exc}")
            continue
        assert isinstance(summary, RunSummary)
        for note in summary.notes:
            ctx.print(f"  {note}")
        ran = ran or summary.finished > 0
        lines.append(f"{kind}: {_summary_line(summary)}")
        _check_interrupted(ctx, "judge", summary)
        if ctx.stop:
            break
    return ran, "; ".join(lines)


async def report(ctx: StepContext) -> tuple[bool, str]:
    import asyncio

    from charforge.evaluate.reporting import evaluation_report, workspace_metrics

    folder = ctx.ws.root / "reports" / ctx.slug
    built, paths = await asyncio.to_thread(
        evaluation_report, ctx.ws, folder, characters=[ctx.slug], metrics=workspace_metrics,
        title=f"charforge run: {ctx.slug}")
    ctx.result.report = built
    ctx.result.report_path = paths["report.md"]
    return True, f"written to {ctx.result.report_path}"


async def run_step(ctx: StepContext, step: str) -> tuple[bool, str]:
    if step in ("scenes", "experiences", "protective", "questions", "answers"):
        return await generation(ctx, step)
    function = {"dataset": dataset, "train": train, "dpo": dpo, "interview": interview,
                "judge": judge, "report": report}[step]
    return await function(ctx)
