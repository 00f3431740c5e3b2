"""`charforge converse A B --scene ...`: two characters talk (a thin shell over
`charforge.converse`)."""

from __future__ import annotations

from typing import Annotated

import typer

from charforge.cli_common import WorkspaceOption, err, find_workspace, out, shown_path


def converse_command(
    a: Annotated[str, typer.Argument(metavar="A", help="who opens: id, short name or "
                                                        "full name")],
    b: Annotated[str, typer.Argument(metavar="B", help="who answers: id, short name or "
                                                        "full name")],
    scene: Annotated[str, typer.Option(help="what is happening (both system prompts)")],
    location: Annotated[str, typer.Option(help="where it happens")] = "",
    turns: Annotated[int, typer.Option(help="lines in all, A first")] = 6,
    model: Annotated[str | None, typer.Option(
        help="the model that plays a character without a trained run (default: the "
        "workspace's default model)", show_default=False)] = None,
    max_tokens: Annotated[int | None, typer.Option(
        help="longest line, in tokens [default: 256]", show_default=False)] = None,
    temperature: Annotated[float | None, typer.Option(
        help="0 = greedy [default: 0.7]", show_default=False)] = None,
    seed: Annotated[int | None, typer.Option(
        help="sampling seed (default: one per turn, from the conversation)",
        show_default=False)] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Two characters talk in a scene, A first, each as the server plays it (its latest
    trained run, or prompted). Every line is recorded in the store: run the same command
    again to resume, or with more --turns to go on. The transcript goes to
    conversations/ in the workspace as JSON lines and Markdown."""
    from charforge.converse import converse
    from charforge.errors import CharforgeError

    try:
        ws = find_workspace(workspace)
        result = converse(ws, a, b, scene=scene, location=location, turns=turns, model=model,
                          sampling={"max_tokens": max_tokens, "temperature": temperature,
                                    "seed": seed}, console=out)
    except CharforgeError as exc:  # one line, as the charforge command prints it
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    out.print(f"\n{len(result.turns)} turns ({result.asked} asked now; tokens "
              f"{result.prompt_tokens} in, {result.completion_tokens} out)", highlight=False)
    out.print(f"transcript: {shown_path(result.jsonl)}, {shown_path(result.markdown)}",
              markup=False, highlight=False, soft_wrap=True)
    if result.interrupted:
        err.print("interrupted: run the same command again to resume")
        raise typer.Exit(130)
