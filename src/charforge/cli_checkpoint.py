"""`charforge checkpoint recover`: released checkpoints (a thin shell over
`charforge.checkpoints`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from charforge.cli_common import err, out, shown_path
from charforge.errors import CharforgeError

if TYPE_CHECKING:
    from charforge.checkpoints import RecoverSummary

checkpoint_app = typer.Typer(
    help="Released model checkpoints: recover a character model published as a weight "
    "difference.", no_args_is_help=True)


@checkpoint_app.callback()
def _group() -> None:
    """Keep `recover` a subcommand (a Typer with one command would become that command)."""


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """A user's mistake as one line and its exit code, as `charforge.cli.main` prints it,
    also where this app runs on its own (a traceback only with CHARFORGE_DEBUG=1)."""
    try:
        yield
    except CharforgeError as exc:
        if os.environ.get("CHARFORGE_DEBUG"):
            raise
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted: nothing was written (the output folder is as it was)",
                  markup=False)
        raise typer.Exit(130) from None


@checkpoint_app.command("recover")
def recover(
    base: Annotated[Path, typer.Option(
        "--base", help="the base model's folder (Llama 1 7B in the Hugging Face layout for "
        "Character-LLM)", show_default=False)],
    delta: Annotated[Path, typer.Option(
        "--delta", help="the weight difference's folder (e.g. a download of "
        "fnlp/character-llm-beethoven-7b-wdiff)", show_default=False)],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="folder to write the recovered model into",
        show_default=False)],
    force: Annotated[bool, typer.Option(
        "--force", help="replace the output folder if it exists and is not empty")] = False,
    max_shard_gb: Annotated[float, typer.Option(
        min=0.001, help="largest output weight file, in GB")] = 2.0,
) -> None:
    """Recover a model released as a weight difference: output = base + delta, tensor by
    tensor (as FastChat's apply_delta), streamed: one output shard in memory, never the model.

    The output has the delta's dtype, safetensors shards, and the delta's config and
    tokenizer; it loads with transformers' from_pretrained. See docs/checkpoints.md."""
    with _one_line_errors():
        summary = _recover_with_progress(base, delta, output, force=force,
                                         max_shard_bytes=int(max_shard_gb * 1e9))
    report_recovery(summary)


def _recover_with_progress(base: Path, delta: Path, output: Path, *, force: bool,
                           max_shard_bytes: int) -> RecoverSummary:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from charforge.checkpoints import recover_checkpoint

    columns = (TextColumn("recovering"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.description}"))
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("", total=None)

        def advance(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=name)

        return recover_checkpoint(base, delta, output, progress=advance, force=force,
                                  max_shard_bytes=max_shard_bytes)


def report_recovery(summary: RecoverSummary) -> None:
    vocabulary = (f"; vocabulary {summary.vocabulary[0]} -> {summary.vocabulary[1]} rows"
                  if summary.vocabulary else "")
    out.print(f"recovered {summary.tensors} tensors ({summary.parameters / 1e9:.2f} B "
              f"parameters, {'/'.join(summary.dtypes)}) into {shown_path(summary.output)}: "
              f"{summary.shards} shard(s), {summary.bytes_written / 1e9:.2f} GB in "
              f"{summary.seconds:.1f} s{vocabulary}", markup=False, highlight=False,
              soft_wrap=True)
    for note in summary.notes:
        err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
