"""`charforge eval ...`: interviews, judges, Character-LLM imports and the report (a thin
shell over `charforge.evaluate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from charforge.cli_common import (
    CharacterArg,
    WorkspaceOption,
    err,
    find_workspace,
    out,
    report_run,
    shown_path,
)

eval_app = typer.Typer(help="Interview agents, judge them, import Character-LLM results, "
                       "report.", no_args_is_help=True)

PresetOption = Annotated[str, typer.Option(
    help="prompts: charforge (ours) or character-llm (the paper's, verbatim)")]
LimitOption = Annotated[int | None, typer.Option(help="at most this many tasks now",
                                                 show_default=False)]


def _fail(exc: Exception) -> None:
    err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(getattr(exc, "exit_code", 2)) from None


def _check_preset(preset: str) -> None:
    from charforge.errors import CharforgeError

    if preset not in ("charforge", "character-llm"):
        raise CharforgeError(f"unknown preset {preset!r}; use charforge or character-llm")


@eval_app.command("interview")
def interview_command(
    character: CharacterArg,
    agent: Annotated[str, typer.Option(help="trained, run:<run>, prompted, "
                                       "prompted:<model>, chatgpt-baseline[:<model>], "
                                       "model:<model>")] = "trained",
    multi: Annotated[bool, typer.Option("--multi/--single", help="multi-turn interviews "
                                        "(an interviewer asks follow-ups) or one question "
                                        "at a time")] = False,
    questions: Annotated[Path | None, typer.Option(
        help="question set in Character-LLM's JSON format (default: the character's "
        "interview.json, or the one shipped for it)", show_default=False)] = None,
    and_prompted: Annotated[bool, typer.Option(
        "--and-prompted", help="also interview the prompted baseline (the same base "
        "prompted with the character) on the same questions")] = False,
    interviewer: Annotated[str | None, typer.Option(
        help="the interviewer model of --multi (default: the workspace's default model)",
        show_default=False)] = None,
    turns: Annotated[int, typer.Option(help="questions per multi-turn interview")] = 5,
    preset: PresetOption = "charforge",
    location: Annotated[str, typer.Option(help="the scene's place and time")] = "",
    status: Annotated[str, typer.Option(help="the scene's situation")] = "",
    stage: Annotated[str | None, typer.Option(
        help="the time stage to ask in (its label or token)", show_default=False)] = None,
    temperature: Annotated[float | None, typer.Option(
        help="the agent's temperature [default: 0.2, the seed's]", show_default=False)] = None,
    max_tokens: Annotated[int | None, typer.Option(
        help="longest answer [default: 256]", show_default=False)] = None,
    limit: LimitOption = None,
    dry_run: Annotated[bool, typer.Option(help="count the tasks and show the first "
                                          "prompt; ask nothing")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Interview an agent playing the character, recorded in the store (run it again to
    resume; nothing asked twice)."""
    from charforge.errors import CharforgeError
    from charforge.evaluate.api import interview
    from charforge.runner import DryRun

    agents = [agent, "prompted"] if and_prompted and agent != "prompted" else [agent]
    try:
        _check_preset(preset)
        ws = find_workspace(workspace)
        for name in agents:
            result = interview(ws, character, agent=name, mode="multi" if multi else "single",
                               questions=questions, interviewer=interviewer, turns=turns,
                               preset=preset, location=location, status=status,
                               stage=stage, limit=limit,
                               sampling={"temperature": temperature, "max_tokens": max_tokens},
                               dry_run=dry_run)
            if isinstance(result, DryRun):
                out.print(f"{name}: {result.tasks} interview(s) to ask", highlight=False)
                continue
            report_run(f"interview ({name})", result)
    except CharforgeError as exc:
        _fail(exc)


@eval_app.command("questions")
def questions_command(
    character: CharacterArg,
    teacher: Annotated[str | None, typer.Option(
        help="the model that writes them (default: the workspace's default model)",
        show_default=False)] = None,
    per_topic: Annotated[int, typer.Option(help="questions per topic")] = 10,
    topic: Annotated[list[str] | None, typer.Option(
        help="only this topic (repeatable): topic-1 past, topic-2 relationships, topic-3 "
        "values, topic-4 anachronism probes", show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option(help="count the tasks and show the first "
                                          "prompt; ask nothing")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Have a teacher write interview questions from the profile, per Character-LLM topic
    (recorded; `eval interview` uses them when the character has no question set)."""
    from charforge.errors import CharforgeError
    from charforge.evaluate.api import questions
    from charforge.runner import DryRun

    try:
        ws = find_workspace(workspace)
        result = questions(ws, character, teacher=teacher, per_topic=per_topic, topics=topic,
                           dry_run=dry_run)
    except CharforgeError as exc:
        _fail(exc)
        return
    if isinstance(result, DryRun):
        out.print(f"{result.tasks} request(s) to ask", highlight=False)
        return
    report_run("questions", result)


@eval_app.command("judge")
def judge_command(
    character: CharacterArg,
    judge: Annotated[str | None, typer.Option(
        help="the judge model (default: the workspace's default model)",
        show_default=False)] = None,
    kind: Annotated[str, typer.Option(
        "--kind", help="rubric (Character-LLM, 1-7), rank (PersLLM: the --agent answers side "
        "by side, balanced rotations) or accuracy (PersLLM: 0-5 against --references)")
    ] = "rubric",
    references: Annotated[Path | None, typer.Option(
        help="reference answers for --kind accuracy (JSON)", show_default=False)] = None,
    rounds: Annotated[int | None, typer.Option(
        help="rotations per item for --kind rank [default: one per agent]",
        show_default=False)] = None,
    preset: PresetOption = "charforge",
    samples: Annotated[int, typer.Option(help="judgments per interview and dimension (above "
                                         "1 needs --temperature above 0)")] = 1,
    temperature: Annotated[float | None, typer.Option(
        help="the judge's temperature [default: 0]", show_default=False)] = None,
    max_tokens: Annotated[int | None, typer.Option(
        help="longest judge answer [default: 512]", show_default=False)] = None,
    agent: Annotated[list[str] | None, typer.Option(
        help="judge only this agent's interviews (repeatable)", show_default=False)] = None,
    dimension: Annotated[list[str] | None, typer.Option(
        help="only this dimension (repeatable): memorization, values, personality, "
        "hallucination, stability", show_default=False)] = None,
    mode: Annotated[list[str] | None, typer.Option(
        help="only single or multi interviews (repeatable)", show_default=False)] = None,
    topic: Annotated[list[str] | None, typer.Option(
        help="only this topic id (repeatable), e.g. topic-4", show_default=False)] = None,
    limit: LimitOption = None,
    dry_run: Annotated[bool, typer.Option(help="count the tasks; ask nothing")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Judge the character's interviews: Character-LLM's rubric (1-7, reasoning first; an
    answer with no score is asked again once, then recorded as unscored), PersLLM's ranking
    or its knowledge/attitude accuracy."""
    from charforge.errors import CharforgeError
    from charforge.evaluate.api import judge as judge_interviews
    from charforge.runner import DryRun

    try:
        _check_preset(preset)
        stages = {"rubric": "judge", "rank": "judge-rank", "accuracy": "judge-accuracy"}
        if kind not in stages:
            raise CharforgeError(f"unknown --kind {kind!r}; use rubric, rank or accuracy")
        ws = find_workspace(workspace)
        result = judge_interviews(ws, character, judge=judge, preset=preset, samples=samples,
                                  stage=stages[kind], references=references, rounds=rounds,
                                  agents=agent, dimensions=dimension, modes=mode,
                                  topics=topic, limit=limit,
                                  sampling={"temperature": temperature,
                                            "max_tokens": max_tokens}, dry_run=dry_run)
    except CharforgeError as exc:
        _fail(exc)
        return
    if isinstance(result, DryRun):
        out.print(f"{result.tasks} judgment(s) to ask", highlight=False)
        return
    report_run("judge", result)


@eval_app.command("import-characterllm")
def import_characterllm_command(
    folder: Annotated[Path, typer.Argument(help="the released gen_results folder (or a "
                                           "folder holding it)")],
    workspace: WorkspaceOption = None,
) -> None:
    """Import Character-LLM's released single- and multi-turn interview outputs for the
    workspace's characters (matched by name), as interviews the judges and the report
    read like any other."""
    from charforge.errors import CharforgeError
    from charforge.evaluate.imports import import_characterllm

    try:
        ws = find_workspace(workspace)
        summary = import_characterllm(ws, folder)
    except CharforgeError as exc:
        _fail(exc)
        return
    for slug, added in summary.imported.items():
        out.print(f"{slug}: {added} interview(s) imported, {summary.known[slug]} already "
                  "there", highlight=False)
    for name in summary.unmatched:
        err.print(f"{name}: no such character in the workspace; import its profile first "
                  "(charforge character import wiki_<Name>.txt)", highlight=False)
    for path, problem in summary.problems:
        err.print(f"could not read {shown_path(path)}: {problem}", markup=False,
                  highlight=False, soft_wrap=True)
    if summary.interrupted:
        err.print("interrupted: run the same command again to resume")
        raise typer.Exit(130)
    if not summary.imported:
        raise typer.Exit(1)


@eval_app.command("report")
def report_command(
    character: Annotated[list[str] | None, typer.Argument(
        help="characters (default: every one with interviews)", show_default=False)] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="folder [default: reports/evaluation in the workspace]",
        show_default=False)] = None,
    no_metrics: Annotated[bool, typer.Option(
        "--no-metrics", help="judgments only: skip the judge-free metrics")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Write the evaluation report (Markdown, a self-contained HTML page with charts, and
    JSON): per dimension and agent the mean and n, paired 95% intervals and win rates
    between agents, judge agreement, the judge-free metrics, the weakest answers."""
    from charforge.errors import CharforgeError
    from charforge.evaluate.reporting import evaluation_report, report_summary

    try:
        ws = find_workspace(workspace)
        metrics = None
        if not no_metrics:
            from charforge.evaluate.reporting import workspace_metrics as metrics
        report, files = evaluation_report(ws, output, characters=character, metrics=metrics)
    except CharforgeError as exc:
        _fail(exc)
        return
    for warning in report.warnings:
        err.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
    for line in report_summary(report):
        out.print(line, markup=False, highlight=False)
    for name in ("report.md", "report.html", "report.json"):
        out.print(f"{name}: {shown_path(files[name])}", markup=False, highlight=False)


@eval_app.command("metrics")
def metrics_command(
    character: Annotated[list[str] | None, typer.Argument(
        help="characters (default: every one with interviews)", show_default=False)] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """The judge-free metrics of the characters' interviews, and the order of the agents
    each metric gives, per character (no judge asked)."""
    from charforge.errors import CharforgeError
    from charforge.evaluate.metrics import print_orderings
    from charforge.evaluate.reporting import collect, workspace_metrics

    try:
        ws = find_workspace(workspace)
        _, rows, _, _ = collect(ws, character, workspace_metrics)
    except CharforgeError as exc:
        _fail(exc)
        return
    for row in rows:
        value = "-" if row.value is None else f"{row.value:.3f}"
        out.print(f"{row.character} · {row.agent} · {row.metric}: {value} (n={row.n})",
                  markup=False, highlight=False)
    print_orderings(rows, out)
