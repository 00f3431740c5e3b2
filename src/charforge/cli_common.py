"""What the `charforge` command's modules share: the two consoles, the workspace and
character arguments, and how a run and a path are reported."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from charforge.runner import RunSummary
    from charforge.workspace import Workspace

out = Console()
err = Console(stderr=True)

WorkspaceOption = Annotated[
    Path | None,
    typer.Option(
        "--workspace", "-w", help="workspace folder (default: $CHARFORGE_WORKSPACE or the "
        "nearest folder with charforge.yaml)", show_default=False
    ),
]


def find_workspace(path: Path | None) -> Workspace:
    from charforge.workspace import Workspace

    return Workspace.find(path)


CharacterArg = Annotated[str, typer.Argument(help="id, short name or full name")]


def report_run(stage: str, result: RunSummary) -> None:
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


def shown_path(path: Path) -> str:
    """`path` relative to the current folder when it lies below it (short enough to read
    in a narrow terminal), else as it is."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


