"""`charforge export vllm|ollama`: a trained character for the engines users already run
(a thin shell over `charforge.export`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from charforge.cli_common import CharacterArg, WorkspaceOption, err, find_workspace, out, shown_path

export_app = typer.Typer(help="Export trained characters for vLLM or Ollama: the files and "
                              "the command that serves them.", no_args_is_help=True)

StageOption = Annotated[str | None, typer.Option(
    help="the time stage, by label or token (<TIME-I>): its token opens the system prompt",
    show_default=False)]
LocationOption = Annotated[str, typer.Option(help="where the character is, in the system "
                                                  "prompt")]
StatusOption = Annotated[str, typer.Option(help="what is happening, in the system prompt")]
PromptedOption = Annotated[bool, typer.Option(
    "--prompted", help="no trained run: the base model under the character's roleplay "
    "system prompt")]
BaseOption = Annotated[str | None, typer.Option(
    "--base", "-b", help="with --prompted: the base model (default: the embedded smollm2)",
    show_default=False)]
OutOption = Annotated[Path | None, typer.Option(
    "--out", "-o", help="folder for the files (default: exports/CHARACTER/ENGINE in the "
    "workspace)", show_default=False)]


def _notes(notes: list[str]) -> None:
    for note in notes:
        err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)


@export_app.command("vllm")
def vllm(
    characters: Annotated[list[str], typer.Argument(
        help="one or more characters (id, short name or full name) on one base")],
    run: Annotated[list[str] | None, typer.Option(
        help="the run (default: each character's latest); CHARACTER/RUN with several",
        show_default=False)] = None,
    stage: StageOption = None,
    location: LocationOption = "",
    status: StatusOption = "",
    prompted: PromptedOption = False,
    base: BaseOption = None,
    host: Annotated[str, typer.Option(help="the address vLLM listens on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    output: OutOption = None,
    workspace: WorkspaceOption = None,
) -> None:
    """The `vllm serve` command for trained characters, and the files it needs.

    Serves LoRA adapters on their shared base, or the merged model where an adapter added
    stage tokens (charforge train merge first). Writes the chat template, the system
    prompt, serve.sh and client.py (the OpenAI client call) into the output folder, and
    prints the command."""
    from charforge.export import export_vllm

    ws = find_workspace(workspace)
    result = export_vllm(ws, characters, out=output, runs=run or (), stage=stage,
                         location=location, status=status, prompted=prompted, base=base,
                         host=host, port=port)
    _notes(result.notes)
    out.print(result.command, markup=False, highlight=False, soft_wrap=True)
    err.print(f"files: {shown_path(result.folder)} (serve.sh, client.py, system prompt, chat "
              "template)", markup=False, highlight=False, soft_wrap=True)


@export_app.command("ollama")
def ollama(
    character: CharacterArg,
    run: Annotated[str | None, typer.Option(
        help="the run (default: the character's latest)", show_default=False)] = None,
    stage: StageOption = None,
    location: LocationOption = "",
    status: StatusOption = "",
    prompted: PromptedOption = False,
    base: BaseOption = None,
    output: OutOption = None,
    workspace: WorkspaceOption = None,
) -> None:
    """An Ollama Modelfile for a trained character, and the command that creates it.

    FROM its base with its ADAPTER, or FROM the merged model where the adapter added
    stage tokens (charforge train merge first). Prints the Modelfile's path and the
    command that creates the model."""
    from charforge.export import export_ollama

    ws = find_workspace(workspace)
    result = export_ollama(ws, character, out=output, run=run, stage=stage,
                           location=location, status=status, prompted=prompted, base=base)
    _notes(result.notes)
    out.print(f"Modelfile: {shown_path(result.modelfile)}", markup=False, highlight=False,
              soft_wrap=True)
    out.print(result.command, markup=False, highlight=False, soft_wrap=True)
