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
from contextlib import nullcontext, suppress
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.markup import escape
from rich.table import Table

# typer (0.29 and later) ships its own copy of click; its usage errors are these.
from typer._click import exceptions as usage_errors

from charforge.cli_checkpoint import checkpoint_app
from charforge.cli_common import (
    CharacterArg,
    WorkspaceOption,
    err,
    find_workspace,
    out,
    report_run,
)
from charforge.cli_converse import converse_command
from charforge.cli_data import dataset_build, review
from charforge.cli_eval import eval_app
from charforge.cli_export import export_app
from charforge.cli_run import run_command
from charforge.cli_serve import chat, serve
from charforge.cli_train import train_app
from charforge.errors import CharforgeError
from charforge.roleplay import ASK_SAMPLING  # the `ask` defaults, shared with the demo

if TYPE_CHECKING:
    pass

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
app.add_typer(train_app, name="train")

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
    ws = find_workspace(workspace)
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
    characters = find_workspace(workspace).character_summaries()
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
    character = find_workspace(workspace).load_character(name)
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
    path = find_workspace(workspace).export_character(name, output, fmt=fmt)
    out.print(f"wrote {path}")


# -- generation ------------------------------------------------------------------------
def _stage_names() -> dict[str, str]:
    from charforge.stages import registered_stages

    return {name: name for name, cls in registered_stages().items() if cls.generation}


StageName = StrEnum("StageName", _stage_names())


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
        find_workspace(workspace), character, stage.value, model=model, concurrency=concurrency,
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
    report_run(stage.value, result)


def _stage_option_parameters() -> tuple[dict[str, set[str]], list[inspect.Parameter]]:
    """One `--option` per option name of any registered stage, typed from its `Options`
    field; its help names the stages that take it, with their defaults and bounds."""
    from charforge.stages import registered_stages

    uses: dict[str, list[tuple[str, Any]]] = {}
    for stage_name, cls in registered_stages().items():
        if not cls.generation:
            continue
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


dataset_app.command("build")(dataset_build)
app.command()(review)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for machines")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Per character and stage: tasks by state, records, tokens, and why.

    Shows tasks done, pending, rejected, failed and stale, records and tokens billed, then
    why answers were rejected and why work is stale. --json prints it for scripts."""
    from charforge.status import workspace_status

    rows = workspace_status(find_workspace(workspace))
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

    ws = find_workspace(workspace) if character else _optional_workspace(workspace)
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


app.command("run")(run_command)
app.command()(serve)
app.command()(chat)
app.command("converse")(converse_command)
app.add_typer(export_app, name="export")
app.add_typer(checkpoint_app, name="checkpoint")
app.add_typer(eval_app, name="eval")


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
