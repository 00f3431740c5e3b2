"""The `charforge` command: a thin shell over the Python API.

Each command parses its arguments and calls one API function. Errors a user
caused (`CharforgeError`) are printed here, once, on one line; a traceback
only with CHARFORGE_DEBUG=1. Heavy libraries load inside the commands that
need them, so `charforge --help` answers at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from charforge.errors import CharforgeError

if TYPE_CHECKING:
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
    characters = _workspace(workspace).characters()
    if not characters:
        out.print("no characters yet; run: charforge character import FILE")
        return
    table = Table("id", "name", "profile", "knowledge", "style", "stages", "source")
    for c in characters:
        table.add_row(
            c.slug, c.name, f"{len(c.profile)} ¶", str(len(c.knowledge)), str(len(c.style)),
            ", ".join(s.label for s in c.stages) or "-", str(c.metadata.get("source_format", "-")),
        )
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
class StageName(StrEnum):
    scenes = "scenes"
    experiences = "experiences"
    protective = "protective"


# Options that only one stage understands (their defaults live in the stage classes).
STAGE_OPTIONS = {
    "prompts": "scenes", "scenes_per_prompt": "scenes", "context_words": "scenes",
    "min_words": "experiences", "count": "protective",
}
CharacterArg = Annotated[str, typer.Argument(help="id, short name or full name")]


@app.command("generate")
def generate_command(
    stage: Annotated[StageName, typer.Argument(
        help="scenes (profile -> scene outlines), experiences (scene -> dialogue with "
        "thoughts) or protective (the character shows ignorance of what it cannot know)")],
    character: CharacterArg,
    prompts: Annotated[int | None, typer.Option(
        min=1, help="scenes: prompts to send (default 20)")] = None,
    scenes_per_prompt: Annotated[int | None, typer.Option(
        min=1, max=50, help="scenes: scenes asked per prompt (default 5)")] = None,
    context_words: Annotated[int | None, typer.Option(
        min=20, help="scenes: profile words per prompt (default 300)")] = None,
    min_words: Annotated[int | None, typer.Option(
        min=50, help="experiences: words asked for per scene (default 600)")] = None,
    count: Annotated[int | None, typer.Option(
        min=1, help="protective: scenes to ask for (default 50)")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="teacher model name")] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=4096, help="requests in flight")] = 16,
    limit: Annotated[int | None, typer.Option(min=1, help="run at most N tasks now")] = None,
    retry_failed: Annotated[bool, typer.Option(help="queue failed tasks again")] = False,
    retry_rejected: Annotated[bool, typer.Option(help="queue rejected answers again")] = False,
    dry_run: Annotated[bool, typer.Option(
        help="print the first prompt and the task count")] = False,
    fmt: Annotated[str, typer.Option("--format", help="teacher output: auto (json where the "
                                     "endpoint supports it), text or json")] = "auto",
    temperature: Annotated[float, typer.Option(
        min=0.0, max=2.0, help="sampling temperature")] = 0.7,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="longest answer, in tokens")] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Experience Reconstruction: run one stage for one character through the teacher.
    Every call is stored; interrupt at will and run the same command to resume."""
    from charforge.generate import DryRun, generate

    given = {"prompts": prompts, "scenes_per_prompt": scenes_per_prompt,
             "context_words": context_words, "min_words": min_words, "count": count}
    options = {name: value for name, value in given.items() if value is not None}
    for name in options:
        if STAGE_OPTIONS[name] != stage.value:
            flag = "--" + name.replace("_", "-")
            raise CharforgeError(f"{flag} applies to the {STAGE_OPTIONS[name]} stage only")
    if retry_failed and retry_rejected:
        raise CharforgeError("pass --retry-failed or --retry-rejected, not both")
    retry = "failed" if retry_failed else "rejected" if retry_rejected else None
    result = generate(
        _workspace(workspace), character, stage.value, model=model, concurrency=concurrency,
        limit=limit, retry=retry, dry_run=dry_run, output_format=fmt,
        sampling={"temperature": temperature, "max_tokens": max_tokens}, options=options,
        console=err,
    )
    if isinstance(result, DryRun):
        out.print(f"{result.tasks} task(s) to run for {stage.value}")
        for message in result.first_messages or []:
            out.rule(message.role)
            out.print(message.content, markup=False, highlight=False)
        return
    _report_run(stage.value, result)


def _report_run(stage: str, result: RunSummary) -> None:
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(result.rejection_reasons.items()))
    out.print(
        f"{stage}: {result.done} done, {result.rejected} rejected"
        f"{f' ({reasons})' if reasons else ''}, {result.failed} failed in "
        f"{result.elapsed_s:.1f} s; tokens {result.prompt_tokens} in, "
        f"{result.completion_tokens} out"
    )
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
    preset: Annotated[str, typer.Option(
        help="system prompt: charforge (ours) or character-llm (the released checkpoints' "
        "meta prompt)")] = "charforge",
    test_fraction: Annotated[float, typer.Option(min=0.0, max=0.9,
                                                 help="share of dialogues held out")] = 0.0,
    workspace: WorkspaceOption = None,
) -> None:
    """Experiences + protective scenes -> SFT chat records, prompted records, statistics."""
    from charforge.dataset.export import build_dataset

    if preset not in ("charforge", "character-llm"):
        raise CharforgeError(f"unknown preset {preset!r}; use charforge or character-llm")
    result = build_dataset(_workspace(workspace), character, preset=preset,  # type: ignore[arg-type]
                           test_fraction=test_fraction)
    s = result.stats
    table = Table("character", "scenes imagined", "experiences", "protective", "words",
                  "turns/dialogue", "words/turn", "SFT records", "rejected")
    rejected = sum(n for reasons in s.rejected.values() for n in reasons.values())
    table.add_row(s.name, str(s.scene_outlines), str(s.dialogues.get("experience", 0)),
                  str(s.dialogues.get("protective", 0)), str(s.words), str(s.turns_per_dialogue),
                  str(s.words_per_turn), f"{s.sft_records} ({s.train}/{s.test})", str(rejected))
    out.print(table)
    out.print(f"wrote {result.folder}")


@app.command()
def status(workspace: WorkspaceOption = None) -> None:
    """Per character and stage: pending, done, failed, rejected tasks and tokens used."""
    ws = _workspace(workspace)
    store = ws.store()
    try:
        rows = store.stage_counts()
        table = Table("character", "stage", "pending", "leased", "done", "rejected", "failed",
                      "records", "tokens in", "tokens out", "rejection reasons")
        for row in rows:
            reasons = store.rejection_counts(row.character, row.stage)
            table.add_row(
                row.character, row.stage, str(row.pending), str(row.leased), str(row.done),
                str(row.rejected), str(row.failed), str(row.records), str(row.prompt_tokens),
                str(row.completion_tokens),
                ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "-",
            )
    finally:
        store.close()
    if not rows:
        out.print("nothing generated yet; run: charforge generate scenes CHARACTER")
        return
    out.print(table)


# -- models ----------------------------------------------------------------------------
@app.command()
def models(
    check: Annotated[bool, typer.Option(help="check that each model answers")] = True,
    workspace: WorkspaceOption = None,
) -> None:
    """List the configured models and check that each can be reached."""
    from charforge.llm.registry import check_model, default_model_name, model_specs

    ws = _optional_workspace(workspace)
    specs = model_specs(ws)
    default = default_model_name(ws)
    table = Table("name", "backend", "where", "status")
    failed = 0
    for name, spec in specs.items():
        where = spec.get("base_url") or spec.get("path") or "embedded SmolLM2-135M-Instruct"
        status = "not checked"
        if check:
            try:
                with err.status(f"checking {name}…"):
                    status = f"[green]ok[/green] {check_model(name, spec)}"
            except CharforgeError as exc:
                failed += 1
                status = f"[red]failed[/red] {exc}"
        label = f"{name} (default)" if name == default else name
        table.add_row(label, str(spec.get("backend", "?")), str(where), status)
    out.print(table)
    if failed:
        raise typer.Exit(1)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="what to ask")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="model name")] = None,
    character: Annotated[str | None, typer.Option("--character", "-c",
                                                  help="answer as this character")] = None,
    system: Annotated[str | None, typer.Option(help="system message (without --character)")] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="longest answer, in tokens")] = 256,
    temperature: Annotated[float, typer.Option(min=0.0, max=2.0,
                                               help="sampling temperature (0 = greedy)")] = 0.2,
    seed: Annotated[int | None, typer.Option(help="sampling seed, for repeatable answers")] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Ask a model one question (optionally in character) and print the answer."""
    from charforge.llm.base import ChatMessage
    from charforge.llm.registry import load_chat_model
    from charforge.roleplay import question_messages

    ws = _workspace(workspace) if character else _optional_workspace(workspace)
    if character:
        messages = question_messages(ws.load_character(character), question)
    else:
        messages = [ChatMessage(role="user", content=question)]
        if system:
            messages.insert(0, ChatMessage(role="system", content=system))
    chat_model = load_chat_model(model, workspace=ws)

    async def _ask():
        try:
            return await chat_model.chat(
                messages, temperature=temperature, max_tokens=max_tokens, seed=seed
            )
        finally:
            await chat_model.aclose()

    with err.status(f"asking {chat_model.name}…"):
        completion = asyncio.run(_ask())
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
    """The main job on the embedded model: Beethoven answers interview questions, then a
    small Experience Reconstruction run with the same model as teacher."""
    from charforge.demo import run_demo

    run_demo(workspace, questions=questions, max_tokens=max_tokens, generation=generation,
             console=out)


def main() -> None:
    """Console entry point: one-line errors, clean interrupts."""
    try:
        app()  # standalone: usage errors print themselves and exit 2
    except CharforgeError as exc:
        if os.environ.get("CHARFORGE_DEBUG"):
            raise
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        sys.exit(130)


if __name__ == "__main__":
    main()
