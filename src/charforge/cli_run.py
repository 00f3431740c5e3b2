"""`charforge run CONFIG.yaml`: the main job, from one declarative file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from charforge.cli_common import err, out

StepOption = Annotated[str | None, typer.Option(show_default=False)]


def run_command(
    config: Annotated[Path, typer.Argument(help="the run configuration (YAML)",
                                           show_default=False)],
    workspace: Annotated[Path | None, typer.Option(
        "--workspace", "-w", help="workspace folder (default: the configuration's "
        "`workspace`, relative to the file)", show_default=False)] = None,
    start: Annotated[str | None, typer.Option(
        "--from", help="first stage to run (scenes, experiences, protective, questions, "
        "answers, dataset, train, dpo, interview, judge, report)", show_default=False)] = None,
    until: Annotated[str | None, typer.Option(
        "--until", help="last stage to run", show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="print the plan: tasks, tokens and cost per stage; ask nothing")
    ] = False,
) -> None:
    """Run the main job a configuration declares: the character's data, its dataset,
    training, interviews, judging and the report, in order.

    A stage already complete is skipped, so running the same command again continues
    where the last run stopped (Ctrl-C, a crash, a kill). Ends with a summary table and
    the commands to chat with, serve and export the new character."""
    from charforge.pipeline import Pipeline
    from charforge.pipeline.run import step_range
    from charforge.pipeline.summary import next_commands, print_summary, summary_data

    pipeline = Pipeline(config, workspace=workspace, console=err)
    steps = step_range(start, until, pipeline.config.steps())
    if dry_run:
        _print_plan(pipeline, steps)
        return
    result = asyncio.run(pipeline.run(start=start, until=until))
    data = summary_data(result)
    (result.workspace.root / "reports").mkdir(exist_ok=True)
    summary_path = result.workspace.root / "reports" / f"{result.character}-summary.json"
    summary_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    out.rule("summary")
    print_summary(data, out)
    out.print(f"summary data: {summary_path}", markup=False, highlight=False)
    if result.stopped:
        raise typer.Exit(130 if "interrupted" in result.stopped else 1)
    if not any(step.step == "train" for step in result.steps) and \
            not result.workspace.trained_runs(result.character):
        out.print(f"next: charforge run {config} --from {_next_step(pipeline, steps)}",
                  markup=False, highlight=False)
        return
    out.print("next:")
    for line in next_commands(result):
        out.print(f"  {line}", markup=False, highlight=False)


def _next_step(pipeline, steps: list[str]) -> str:
    every = pipeline.config.steps()
    after = every.index(steps[-1]) + 1 if steps else 0
    return every[after] if after < len(every) else every[0]


def _print_plan(pipeline, steps: list[str]) -> None:
    from charforge.pipeline.plan import plan_steps

    async def planned():
        ws, slug = await pipeline.prepare(steps)
        return ws, await plan_steps(pipeline, ws, slug, steps)

    ws, plans = asyncio.run(planned())
    prices = pipeline.config.prices
    table = Table(title=f"plan: {pipeline.config_path} ({'+'.join(pipeline.config.pipelines)}"
                        f", settings of the {pipeline.recipe.name} recipe)",
                  title_justify="left")
    for column in ("stage", "tasks", "prompt tokens", "output tokens (at most)", "model",
                   "cost", "note"):
        table.add_column(column, overflow="fold")
    total_cost, priced = 0.0, False
    for plan in plans:
        cost = plan.cost(prices)
        if cost is not None:
            total_cost, priced = total_cost + cost, True
        table.add_row(plan.step, "-" if plan.tasks is None else str(plan.tasks),
                      f"{plan.prompt_tokens:,}" if plan.prompt_tokens else "-",
                      f"{plan.output_tokens:,}" if plan.output_tokens else "-",
                      plan.model or "-", "-" if cost is None else f"${cost:.2f}", plan.note)
    out.print(table)
    from charforge.llm.registry import describe_model

    for role, name in (("teacher", pipeline.config.teacher),
                       ("judge", pipeline.config.judge_model)):
        out.print(f"{role}: {describe_model(*ws.config.entry(name))}", markup=False,
                  highlight=False)
    tokens_in = sum(p.prompt_tokens for p in plans)
    tokens_out = sum(p.output_tokens for p in plans)
    out.print(f"total: ~{tokens_in:,} prompt and at most {tokens_out:,} output tokens"
              + (f", ~${total_cost:.2f} at the configured prices" if priced else
                 " (no prices in the configuration: add prices: {model: {input, output}} "
                 "per million tokens for a cost)"))
