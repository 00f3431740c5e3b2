"""The `charforge` command: a thin shell over the Python API.

Each command parses its arguments and calls one API function. Errors a user
caused (`CharforgeError`) are printed here, once, on one line; a traceback
only with CHARFORGE_DEBUG=1. Heavy libraries load inside the commands that
need them, so `charforge --help` answers at once.
"""

from __future__ import annotations

import inspect
import json
import os
import sqlite3
import sys
import textwrap
from contextlib import nullcontext, suppress
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from charforge.errors import CharforgeError
from charforge.roleplay import ASK_SAMPLING

try:  # typer ships its own copy of click; its usage errors are these
    from typer._click import exceptions as usage_errors
except ImportError:  # an older typer on plain click
    from click import exceptions as usage_errors  # type: ignore[no-redef]  # the `ask` defaults, shared with the demo

if TYPE_CHECKING:
    from charforge.dataset.export import DatasetBuild
    from charforge.runner import RunSummary

app = typer.Typer(
    name="charforge",
    help="Turn a character's profile into a trainable role-playing agent, and measure it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
character_app = typer.Typer(help="Import, list, show and export characters.", no_args_is_help=True)
app.add_typer(character_app, name="character")
dataset_app = typer.Typer(help="Build training data from generated records.",
                          no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")

out = Console()
err = Console(stderr=True)

WorkspaceOption = Annotated[
    Path | None,
    typer.Option(
        "--workspace", "-w", help="workspace folder (default: $CHARFORGE_WORKSPACE or the "
        "nearest folder with charforge.yaml)", show_default=False
    ),
]


def _workspace(path: Path | None):
    from charforge.workspace import Workspace

    return Workspace.find(path)


def _optional_workspace(path: Path | None):
    from charforge.workspace import Workspace

    try:
        return Workspace.find(path)
    except CharforgeError:
        if path is not None:
            raise
        return None


# -- workspace ---------------------------------------------------------------------
@app.command()
def init(
    folder: Annotated[Path, typer.Argument(help="folder to make a workspace")] = Path("."),
) -> None:
    """Create a workspace (charforge.yaml and characters/) in FOLDER."""
    from charforge.workspace import Workspace

    workspace = Workspace.init(folder)
    out.print(f"workspace ready: {workspace.root}")


# -- characters ----------------------------------------------------------------------
@character_app.command("import")
def character_import(
    source: Annotated[Path, typer.Argument(help="wiki profile .txt, Card V2 .json/.png, "
                                           "PersLLM knowledge .txt, or a PersLLM folder")],
    style: Annotated[Path | None, typer.Option(help="PersLLM style file (SOURCE is then "
                                                    "the knowledge file)")] = None,
    name: Annotated[str | None, typer.Option(help="full name (required for PersLLM)")] = None,
    short_name: Annotated[str | None, typer.Option(help="what others call the character")] = None,
    fmt: Annotated[str, typer.Option("--format", help="auto, wiki, persllm or card")] = "auto",
    replace: Annotated[bool, typer.Option(help="overwrite a character of the same name")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Import a character into the workspace."""
    ws = _workspace(workspace)
    character = ws.import_character(
        source, style=style, name=name, short_name=short_name, fmt=fmt, replace=replace
    )
    out.print(
        f"imported {character.name} as '{character.slug}': {len(character.profile)} profile "
        f"paragraphs, {len(character.knowledge)} knowledge and {len(character.style)} style "
        f"passages, {len(character.stages)} stages"
    )


@character_app.command("list")
def character_list(workspace: WorkspaceOption = None) -> None:
    """List the workspace's characters."""
    characters = _workspace(workspace).character_summaries()
    if not characters:
        out.print("no characters yet; run: charforge character import FILE")
        return
    table = Table("id", "name", "profile", "knowledge", "style", "stages", "source")
    for c in characters:
        table.add_row(c.slug, escape(c.name), f"{c.profile} ¶", str(c.knowledge), str(c.style),
                      ", ".join(c.stages) or "-", c.source_format)
    out.print(table)


@character_app.command("show")
def character_show(
    name: Annotated[str, typer.Argument(help="id, short name or full name")],
    as_json: Annotated[bool, typer.Option("--json", help="print the whole record")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Show one character."""
    character = _workspace(workspace).load_character(name)
    if as_json:
        print(json.dumps(character.model_dump(mode="json"), ensure_ascii=False, indent=2))
        return
    out.print(f"[bold]{character.name}[/bold] ({character.short_name}, id '{character.slug}')")
    words = sum(len(p.split()) for p in character.profile)
    out.print(f"profile: {len(character.profile)} paragraphs, {words} words")
    for stage in character.stages:
        out.print(f"stage {stage.label} {stage.token} {stage.description}".rstrip())
    out.print(f"knowledge: {len(character.knowledge)} passages; style: {len(character.style)}")
    if character.profile:
        out.print()
        out.print(character.profile[0], markup=False, highlight=False)


@character_app.command("export")
def character_export(
    name: Annotated[str, typer.Argument(help="id, short name or full name")],
    output: Annotated[Path, typer.Option("--output", "-o", help="file to write (.json/.png)")],
    fmt: Annotated[str, typer.Option("--format", help="auto, card-json or card-png")] = "auto",
    workspace: WorkspaceOption = None,
) -> None:
    """Export a character as a Character Card V2 (JSON or PNG)."""
    path = _workspace(workspace).export_character(name, output, fmt=fmt)
    out.print(f"wrote {path}")


# -- generation ------------------------------------------------------------------------
def _stage_names() -> dict[str, str]:
    from charforge.stages import registered_stages

    return {name: name for name in registered_stages()}


StageName = StrEnum("StageName", _stage_names())
CharacterArg = Annotated[str, typer.Argument(help="id, short name or full name")]


def _generate(
    stage_name: Annotated[StageName, typer.Argument(
        metavar="STAGE",
        help="scenes (profile -> scene outlines), experiences (scene -> dialogue with "
        "thoughts), protective (the character shows ignorance of what it cannot know); "
        "PersLLM: questions (passage -> questions), answers (question -> answer in "
        "character), stylized (general instructions in the character's voice), "
        "base-answers (the base model's own answers, for DPO); or any other registered "
        "stage")],
    character: CharacterArg,
    model: Annotated[str | None, typer.Option("--model", "-m", help="teacher model name")] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=4096, help="requests in flight")] = 16,
    limit: Annotated[int | None, typer.Option(min=1, help="run at most N tasks now")] = None,
    retry_failed: Annotated[bool, typer.Option(help="queue failed tasks again")] = False,
    retry_rejected: Annotated[bool, typer.Option(help="queue rejected answers again (they "
                                                 "are kept as history)")] = False,
    rerun_stale: Annotated[bool, typer.Option(help="ask again the work done with a model, "
                                              "prompt or setting that has changed")] = False,
    dry_run: Annotated[bool, typer.Option(
        help="print the first prompt and the task count")] = False,
    fmt: Annotated[str, typer.Option("--format", help="teacher output: auto (json where the "
                                     "endpoint supports it), text or json")] = "auto",
    temperature: Annotated[float | None, typer.Option(
        min=0.0, max=2.0, help="sampling temperature (default: the stage's, 0.7)",
        show_default=False)] = None,
    top_p: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="nucleus sampling (default 1.0)", show_default=False)] = None,
    max_tokens: Annotated[int | None, typer.Option(
        min=1, help="longest answer, in tokens (default: the stage's)",
        show_default=False)] = None,
    recipe: Annotated[str | None, typer.Option(
        help="defaults for the stage's options and sampling from a recipe: character-llm "
        "(the seed's scale), default or demo; options given here win (charforge recipes)",
        show_default=False)] = None,
    workspace: WorkspaceOption = None,
    **stage_options: Any,
) -> None:
    """Run one stage for one character through the teacher.

    Every call is stored: interrupt at will and run the same command to resume. Work done
    with a model or prompt that has changed since is kept (stale) until --rerun-stale."""
    from charforge.generate import DryRun, generate
    from charforge.stages import stage_class

    stage = stage_name
    cls = stage_class(stage.value)
    options = {name: value for name, value in stage_options.items() if value is not None}
    for name in options:
        if name not in cls.Options.model_fields:
            owners = ", ".join(sorted(_STAGE_OPTIONS[name]))
            raise CharforgeError(f"--{name.replace('_', '-')} applies to the {owners} stage "
                                 f"only, not {stage.value}")
    if retry_failed and retry_rejected:
        raise CharforgeError("pass --retry-failed or --retry-rejected, not both")
    retry = "failed" if retry_failed else "rejected" if retry_rejected else None
    result = generate(
        _workspace(workspace), character, stage.value, model=model, concurrency=concurrency,
        limit=limit, retry=retry, rerun_stale=rerun_stale, dry_run=dry_run, output_format=fmt,
        sampling={"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens},
        options=options, console=err, recipe=recipe,
    )
    if isinstance(result, DryRun):
        out.print(f"{result.tasks} task(s) to run for {stage.value}")
        if result.stale:
            out.print(f"{result.stale} earlier answer(s) are stale (another model, prompt or "
                      f"setting); --rerun-stale asks them again")
        for message in result.first_messages or []:
            out.rule(message.role)
            out.print(message.content, markup=False, highlight=False)
        return
    _report_run(stage.value, result)


def _stage_option_parameters() -> tuple[dict[str, set[str]], list[inspect.Parameter]]:
    """One `--option` per option name of any registered stage, typed from its `Options`
    field; its help names the stages that take it, with their defaults and bounds."""
    from charforge.stages import registered_stages

    uses: dict[str, list[tuple[str, Any]]] = {}
    for stage_name, cls in registered_stages().items():
        for field, info in cls.Options.model_fields.items():
            uses.setdefault(field, []).append((stage_name, info))
    parameters = []
    for field, where in sorted(uses.items()):
        kind = where[0][1].annotation
        helps = [f"{stage}: {info.description or field} (default {info.default}"
                 f"{_bounds(info)})" for stage, info in where]
        flag = f"--{field.replace('_', '-')}"
        if kind is bool or kind == bool | None:  # a switch: --cot / --no-cot
            flag = f"{flag}/--no-{flag[2:]}"
        option = typer.Option(flag, help="; ".join(helps), show_default=False)
        kind = bool if kind == bool | None else kind
        parameters.append(inspect.Parameter(field, inspect.Parameter.KEYWORD_ONLY, default=None,
                                            annotation=Annotated[kind | None, option]))
    return {field: {stage for stage, _ in where} for field, where in uses.items()}, parameters


def _bounds(info: Any) -> str:
    limits = []
    for meta in info.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(meta, attr, None)
            if value is not None:
                limits.append(f"{sign} {value}")
    return f", {' and '.join(limits)}" if limits else ""


def _with_stage_options(function: Any) -> Any:
    signature = inspect.signature(function, eval_str=True)
    fixed = [p for p in signature.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    taken = {p.name for p in fixed} & set(_STAGE_OPTIONS)
    if taken:
        raise RuntimeError(f"stage options {sorted(taken)} clash with generate's own options")
    function.__signature__ = signature.replace(parameters=[*fixed, *_OPTION_PARAMETERS])
    return function


_STAGE_OPTIONS, _OPTION_PARAMETERS = _stage_option_parameters()
app.command("generate")(_with_stage_options(_generate))


def _report_run(stage: str, result: RunSummary) -> None:
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(result.rejection_reasons.items()))
    out.print(
        f"{stage}: {result.done} done, {result.rejected} rejected"
        f"{f' ({reasons})' if reasons else ''}, {result.failed} failed in "
        f"{result.elapsed_s:.1f} s; tokens {result.prompt_tokens} in, "
        f"{result.completion_tokens} out"
    )
    if result.tries:
        out.print(f"accepted {result.accepted_tries} of {result.tries} answered tries "
                  f"({result.accepted_tries / result.tries:.0%})")
    for note in result.notes:
        out.print(note, markup=False, highlight=False)
    plan = result.plan
    if plan.stale > plan.stale_queued:
        left = plan.stale - plan.stale_queued
        err.print(f"{left} task(s) were done before with another model, prompt or setting: "
                  "kept as they are (stale); --rerun-stale asks them again")
    if result.interrupted:
        err.print(f"interrupted: {result.released} task(s) went back to pending; run the same "
                  "command again to resume")
        raise typer.Exit(130)
    if result.failed:
        err.print("some tasks failed; see charforge status, then rerun with --retry-failed")
        raise typer.Exit(1)


@dataset_app.command("build")
def dataset_build(
    character: CharacterArg,
    preset: Annotated[str | None, typer.Option(
        help="system prompt: charforge (ours, the default) or character-llm (the released "
        "checkpoints' meta prompt)", show_default=False)] = None,
    test_fraction: Annotated[float | None, typer.Option(
        min=0.0, max=0.9, help="share of dialogues held out (default 0)",
        show_default=False)] = None,
    recipe: Annotated[str | None, typer.Option(
        help="defaults for --preset and --test-fraction from a recipe (charforge recipes)",
        show_default=False)] = None,
    dedup_threshold: Annotated[float, typer.Option(
        help="questions this alike (cosine of their embeddings) count as one; in (0, 1]")] = 0.95,
    dialogue_threshold: Annotated[float, typer.Option(
        help="dialogues this alike (Jaccard of word 5-grams) count as one; in (0, 1]")] = 0.5,
    with_analysis: Annotated[bool, typer.Option(
        help="keep the teacher's analysis in the reply, inside <think>...</think>")] = False,
    dpo: Annotated[bool, typer.Option(
        help="also write dpo.jsonl: preference pairs (TRL's conversational format)")] = False,
    seed: Annotated[int, typer.Option(help="seed of the train/test split")] = 0,
    dedup: Annotated[bool, typer.Option(help="drop near-duplicates (--no-dedup keeps every "
                                        "record)")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the statistics as JSON, "
                                          "for scripts")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """A character's records -> SFT chat records, prompted records, DPO pairs, statistics.

    Experiences and protective scenes (Character-LLM) and answers and stylized
    instructions (PersLLM) go into one dataset; near-duplicates are removed and the
    train/test split keeps paraphrases of one passage or scene on one side."""
    from charforge.dataset.export import build_dataset
    from charforge.recipes import get_recipe

    part = get_recipe(recipe).dataset
    preset = preset or part.meta_prompt
    test_fraction = part.test_fraction if test_fraction is None else test_fraction
    if preset not in ("charforge", "character-llm"):
        raise CharforgeError(f"unknown preset {preset!r}; use charforge or character-llm")
    ws = _workspace(workspace)
    with err.status(f"building the dataset of {escape(character)}…"):
        result = build_dataset(ws, character, preset=preset,  # type: ignore[arg-type]
                               test_fraction=test_fraction, dedup_threshold=dedup_threshold,
                               dialogue_threshold=dialogue_threshold,
                               with_analysis=with_analysis, dpo=dpo, seed=seed,
                               dedup=dedup)
    if as_json:
        print(json.dumps(result.model_dump(mode="json"), ensure_ascii=False, indent=2))
        return
    _print_dataset_stats(result)




@app.command()
def review(
    character: CharacterArg,
    feedback: Annotated[str | None, typer.Option(
        help="the note to keep, without asking (for scripts)", show_default=False)] = None,
    show: Annotated[int, typer.Option(min=0, max=50, help="answers to show first")] = 3,
    list_: Annotated[bool, typer.Option("--list", help="show the feedback history and "
                                        "stop")] = False,
    rerun_older: Annotated[bool, typer.Option(help="then ask again every answer written "
                                              "before the latest feedback")] = False,
    model: Annotated[str | None, typer.Option("--model", "-m", help="teacher model name, "
                                              "for --rerun-older")] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Read a few answers of a character and keep a note on their style (PersLLM's review).

    The note goes into the prompt of every answer planned after it; earlier answers keep
    theirs until --rerun-older (or generate answers --rerun-older) asks them again."""
    from charforge.review import add_feedback, answers_to_review, feedback_history

    ws = _workspace(workspace)
    if list_:
        history = feedback_history(ws, character)
        if not history:
            out.print("no feedback yet")
        for note in history:
            when = _local_time(note.created_at)
            out.print(f"#{note.id}  {when}  {note.text}", markup=False, highlight=False)
        return
    shown = answers_to_review(ws, character, show)
    if show and not shown:
        err.print(f"{character} has no answers yet (charforge generate answers {character}); "
                  "a note kept now applies to all of them", markup=False, highlight=False)
    for number, answer in enumerate(shown, 1):
        stage = f" [{answer.stage}]" if answer.stage else ""
        out.rule(f"answer {number}{stage}, {answer.pattern}")
        out.print(f"Q: {answer.question}\nA: {answer.response}", markup=False, highlight=False)
    if feedback is None and sys.stdin.isatty():
        feedback = typer.prompt("Your note on these answers' style (empty: none)", default="",
                                show_default=False)
    if feedback is not None and feedback.strip():
        note = add_feedback(ws, character, feedback)
        out.print(f"kept feedback #{note.id}: it applies to answers planned from now on",
                  markup=False, highlight=False)
    elif feedback is None and not rerun_older:
        err.print("no feedback given (pass --feedback TEXT, or run in a terminal to be asked)")
    if rerun_older:
        from charforge.generate import generate

        result = generate(ws, character, "answers", model=model, console=err,
                          options={"rerun_older": True})
        _report_run("answers", result)  # type: ignore[arg-type]


def _local_time(timestamp: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def _print_dataset_stats(result: DatasetBuild) -> None:
    """One statistic a line, so it reads at 80 columns and in a pipe."""
    s = result.stats
    dialogues = s.scene_outlines or any(s.dialogues.values()) or not s.qa_records
    lines = [
        *([("scenes imagined", str(s.scene_outlines)),
           ("dialogues", f"{s.dialogues.get('experience', 0)} experiences, "
                         f"{s.dialogues.get('protective', 0)} protective"),
           ("words", f"{s.words} ({s.turns_per_dialogue} turns a dialogue, "
                     f"{s.words_per_turn} words a turn)")] if dialogues else []),
        *([("PersLLM records", ", ".join(f"{k} {v}" for k, v in s.qa_records.items())
            + (f"; stage tokens {' '.join(s.stage_tokens)}" if s.stage_tokens else ""))]
          if s.qa_records else []),
        ("near-duplicates", ", ".join(f"{kind} {part['removed']} removed"
                                      for kind, part in s.dedup.items()) or "none"),
        ("SFT records", f"{s.sft_records} (train {s.train}, test {s.test})"),
        *([("DPO pairs", f"{s.dpo['pairs']} (" + ", ".join(
            f"{k} {v['pairs']}" for k, v in s.dpo["sources"].items() if v["pairs"]) + ")")]
          if s.dpo else []),
        *([("skipped", f"{s.skipped} dialogues (no turn of {s.name})"),
           ("thinking turns", str(s.thinking_turns))] if dialogues else []),
        ("rejected", _per_stage(s.rejected)),
        ("failed", ", ".join(f"{stage} {n}" for stage, n in s.failed.items() if n) or "0"),
    ]
    out.print(f"{s.name} ({s.character})", markup=False, highlight=False)
    indent = max(len(label) for label, _ in lines) + 2
    for label, value in lines:  # wrapped here, under the value column, no padding
        wrapped = textwrap.wrap(value, max(out.width - indent, 20)) or [""]
        out.print(f"{label:<{indent}}{wrapped[0]}", *(" " * indent + more for more in wrapped[1:]),
                  sep="\n", markup=False, highlight=False, soft_wrap=True)
    out.print(f"wrote {_shown_path(result.folder)}", markup=False, highlight=False)


def _per_stage(rejected: dict[str, dict[str, int]]) -> str:
    """'0', or '5 (scenes: invalid 2; experiences: junk 3)'."""
    total = sum(n for reasons in rejected.values() for n in reasons.values())
    parts = [f"{stage}: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
             for stage, reasons in rejected.items() if reasons]
    return f"{total} ({'; '.join(parts)})" if parts else "0"


def _shown_path(path: Path) -> str:
    """`path` relative to the current folder when it lies below it (short enough to read
    in a narrow terminal), else as it is."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for machines")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Per character and stage: tasks by state, records, tokens, and why.

    Shows tasks done, pending, rejected, failed and stale, records and tokens billed, then
    why answers were rejected and why work is stale. --json prints it for scripts."""
    from charforge.status import workspace_status

    rows = workspace_status(_workspace(workspace))
    if as_json:
        print(json.dumps([row.model_dump() for row in rows], ensure_ascii=False, indent=2))
        return
    if not rows:
        out.print("nothing generated yet; run: charforge generate scenes CHARACTER")
        return
    table = Table(box=None, pad_edge=False, show_edge=False, padding=(0, 1))
    table.add_column("character", max_width=14, overflow="ellipsis", no_wrap=True)
    table.add_column("stage", max_width=13, overflow="ellipsis", no_wrap=True)
    for header in ("done", "pend", "rej", "fail", "stale", "records"):
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("tokens in/out", justify="right", no_wrap=True)
    notes = []
    for row in rows:
        pending = f"{row.pending}+{row.running}" if row.running else str(row.pending)
        table.add_row(row.character, row.stage, str(row.done), pending, str(row.rejected),
                      str(row.failed), str(row.stale), str(row.records),
                      f"{_short(row.prompt_tokens)}/{_short(row.completion_tokens)}")
        label = f"{row.character} {row.stage}"
        if row.rejection_reasons:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(row.rejection_reasons.items()))
            notes.append(f"{label}: rejected: {reasons}")
        if row.stale:
            notes.append(f"{label}: stale: {'; '.join(row.stale_reasons)} "
                         f"(--rerun-stale asks again)")
    out.print(table)
    for note in notes:
        out.print(note, markup=False, highlight=False)


def _short(n: int) -> str:
    """1234 -> '1.2k', 5_600_000 -> '5.6M': token counts in a narrow column."""
    for size, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if n >= size:
            return f"{n / size:.1f}{suffix}"
    return str(n)


# -- recipes ---------------------------------------------------------------------------
@app.command()
def recipes(
    name: Annotated[str | None, typer.Argument(help="one recipe, in full (JSON)")] = None,
) -> None:
    """The named recipes (settings for every step, e.g. Character-LLM's scale) and their
    cost."""
    from charforge.recipes import RECIPES, get_recipe

    if name is not None:
        print(get_recipe(name).model_dump_json(indent=2))
        return
    for recipe in RECIPES.values():
        out.print(f"[bold]{recipe.name}[/bold]: {escape(recipe.description)}")
        out.print(f"  cost: {escape(recipe.cost)}", highlight=False)


# -- models ----------------------------------------------------------------------------
@app.command()
def models(
    names: Annotated[list[str] | None, typer.Argument(
        help="the models to show (default: all)", show_default=False)] = None,
    check: Annotated[bool, typer.Option(
        help="check each model: endpoints over HTTP, local models by their files")] = True,
    load: Annotated[bool, typer.Option(
        "--load", help="also load each local model and ask it for one token (slow)")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """List the configured models and check that each can be reached.

    Endpoints are asked for their model list; local models are checked by their files
    (config and weights, or a GGUF file, and the adapter) without loading them, unless
    --load."""
    from charforge.llm.registry import check_models

    if load and not check:
        raise CharforgeError("--load checks the models: drop --no-check")
    ws = _optional_workspace(workspace)
    doing = "loading and checking models…" if load else "checking models…"
    with err.status(doing) if check else nullcontext():
        results = check_models(ws.config if ws else None, names=names, check=check, load=load)
    table = Table("name", "backend", "where", "status")
    for result in results:
        status = ("not checked" if result.ok is None else
                  f"[green]ok[/green] {escape(result.detail)}" if result.ok else
                  f"[red]failed[/red] {escape(result.detail)}")
        label = f"{result.name} (default)" if result.default else result.name
        table.add_row(escape(label), escape(result.backend), escape(result.where), status)
    out.print(table)
    if any(result.ok is False for result in results):
        raise typer.Exit(1)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="what to ask")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="model name")] = None,
    character: Annotated[str | None, typer.Option("--character", "-c",
                                                  help="answer as this character")] = None,
    system: Annotated[str | None, typer.Option(help="system message (without --character)")] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="longest answer, in tokens")] = (
        ASK_SAMPLING.max_tokens),
    temperature: Annotated[float, typer.Option(min=0.0, max=2.0, help="sampling temperature "
                                               "(0 = greedy)")] = ASK_SAMPLING.temperature,
    seed: Annotated[int | None, typer.Option(help="sampling seed, for repeatable answers")] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Ask a model one question (optionally in character) and print the answer."""
    from charforge.llm.registry import load_chat_model
    from charforge.roleplay import ask as ask_model
    from charforge.roleplay import ask_sampling

    ws = _workspace(workspace) if character else _optional_workspace(workspace)
    who = ws.load_character(character) if character and ws else None
    chat_model = load_chat_model(model, config=ws.config if ws else None)
    sampling = ask_sampling(in_character=who is not None, temperature=temperature,
                            max_tokens=max_tokens, seed=seed)
    with err.status(f"asking {chat_model.name}…"):
        completion = ask_model(question, chat_model, character=who, system=system,
                               sampling=sampling)
    print(completion.text)
    if completion.truncated:
        err.print(
            f"warning: the answer was cut at --max-tokens {max_tokens} (finish_reason=length)"
        )


@app.command()
def demo(
    workspace: Annotated[Path, typer.Option("--workspace", "-w",
                                            help="folder for the demo workspace")] = Path(
        "demo-workspace"
    ),
    questions: Annotated[int, typer.Option(min=1, help="interview questions to ask")] = 2,
    max_tokens: Annotated[int, typer.Option(min=1, help="longest answer, in tokens")] = 120,
    generation: Annotated[bool, typer.Option(
        help="also run a small Experience Reconstruction with the embedded teacher")] = True,
) -> None:
    """The main job on the embedded model.

    Beethoven answers interview questions, then a small Experience Reconstruction runs with
    the same model as teacher."""
    from charforge.demo import run_demo

    run_demo(workspace, questions=questions, max_tokens=max_tokens, generation=generation,
             console=out)


def main() -> None:
    """Console entry point: one-line errors, clean interrupts."""
    try:
        code = app(standalone_mode=False)  # usage errors come here, to print on one line
        if isinstance(code, int) and code:  # typer.Exit(n) inside a command
            sys.exit(code)
    except usage_errors.NoArgsIsHelpError as exc:  # `charforge character`: its help
        exc.show()
        sys.exit(exc.exit_code)
    except usage_errors.UsageError as exc:  # a bad option or argument: one line
        where = f" (see {exc.ctx.command_path} --help)" if exc.ctx else ""
        message = " ".join(exc.format_message().replace("Value error, ", "").split())
        err.print(f"error: {message}{where}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Abort:  # Ctrl-C at a prompt
        err.print("interrupted", markup=False)
        _leave_now(130)
    except SystemExit as exc:
        if exc.code == 130:  # interrupted: what the run got is stored by now
            _leave_now(130)
        raise
    except CharforgeError as exc:
        if os.environ.get("CHARFORGE_DEBUG"):
            raise
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        _leave_now(130)
    except sqlite3.Error as exc:  # the store failed under a command (disk full, locked, ...)
        if os.environ.get("CHARFORGE_DEBUG"):
            raise
        err.print(f"error: the store (charforge.db) failed: {exc}", markup=False,
                  highlight=False, soft_wrap=True)
        sys.exit(1)


def _leave_now(code: int) -> NoReturn:
    """Exit at once, without the interpreter's teardown. An interrupted run has stored
    what it got and handed its leases back; what may be left is a local model's thread
    in native code no stop flag reaches (a grammar compile: seconds), which a normal
    exit waits for."""
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
