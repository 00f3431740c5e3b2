"""What a training run shows and keeps while it runs: a rich progress bar with the loss
and tokens/s, every log line in training_log.jsonl, and a stop at the first loss that
is not finite (the Trainer's own logs filter those out).

`CharforgeTrainerMixin` goes in front of a TRL trainer class: it counts the real
(non-padding) tokens each step computes and checks the loss on every process.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback

from charforge.errors import CharforgeError


class NonFiniteLoss(CharforgeError):
    """The loss became nan or inf: the run stops, its last checkpoint kept."""


class TrainingInterrupted(CharforgeError):
    """Ctrl-C while training: what the next run resumes from, in one line."""

    exit_code = 130


def last_checkpoint(folder: str | Path, *, clear_partial: bool = False) -> str | None:
    """The newest complete checkpoint in `folder` (None: none yet). The Trainer writes
    trainer_state.json last, so a checkpoint without a readable one was cut short (a kill
    while saving); `clear_partial` removes those, so the resumed run can save there."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = sorted((int(m.group(1)), path) for path in folder.iterdir()
                   if path.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", path.name)))
    for _, path in reversed(found):
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
            return str(path)
        except (OSError, ValueError):
            if clear_partial:
                shutil.rmtree(path, ignore_errors=True)
    return None


def interrupted_words(folder: str, step: int) -> str:
    last = last_checkpoint(folder)
    if last is None:
        return (f"interrupted at step {step}, before the first checkpoint: the same command "
                "starts the run again")
    return (f"interrupted at step {step}: the same command resumes from "
            f"{Path(last).name} ({last})")


class CharforgeTrainerMixin:
    """Real tokens counted, non-finite losses stopped (on every process at once)."""

    real_tokens: int = 0

    def training_step(self, model: Any, inputs: dict[str, Any], *args: Any,
                      **kwargs: Any) -> Any:
        import torch

        if "attention_mask" in inputs:
            self.real_tokens += int(inputs["attention_mask"].sum())
        else:
            self.real_tokens += int(inputs["input_ids"].numel())
        loss = super().training_step(model, inputs, *args, **kwargs)  # type: ignore[misc]
        finite = torch.isfinite(loss.detach()).all().to(torch.int64).reshape(1)
        finite = self.accelerator.gather(finite.to(self.args.device))  # type: ignore[attr-defined]
        if not bool(finite.all()):
            state = self.state  # type: ignore[attr-defined]
            raise NonFiniteLoss(
                f"training stopped at step {state.global_step + 1}: the loss is "
                f"{float(loss):.4g}; {_last_checkpoint_words(self.args.output_dir)}; lower "  # type: ignore[attr-defined]
                "the learning rate or check the data, then train again")
        return loss


def _last_checkpoint_words(folder: str) -> str:
    last = last_checkpoint(folder)
    return f"the last good checkpoint is kept: {last}" if last else "no checkpoint was saved yet"


class RunLog(TrainerCallback):
    """Every log line of the run, one JSON object each, in `path` (main process)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        with self.path.open("a", encoding="utf-8") as file:
            file.write(json.dumps({"step": state.global_step, "time": round(time.time(), 3),
                                   **logs}) + "\n")


@contextmanager
def libraries_quiet() -> Iterator[None]:
    """transformers', TRL's and PEFT's warnings off (checkpoint rotation, a padding-free
    batch of one sample, which is charforge's choice without flash attention, their own
    deprecations), as they were after."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    trl_logger = logging.getLogger("trl")
    trl_level = trl_logger.level
    hf_logging.set_verbosity_error()
    trl_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        trl_logger.setLevel(trl_level)


def trim_log(path: Path, step: int) -> None:
    """Drop the log lines after `step` (a run resuming from that step's checkpoint)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
            if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(kept), encoding="utf-8")


class RichProgress(TrainerCallback):
    """A progress bar: step, loss, eval loss and real tokens/s (main process only)."""

    def __init__(self, trainer_ref: list[Any], console: Console | None = None,
                 label: str = "training") -> None:
        self.trainer_ref = trainer_ref  # the trainer is built after its callbacks
        self.console = console or Console(stderr=True)
        self.label = label
        self.progress: Progress | None = None
        self.task: Any = None
        self.started = 0.0
        self.tokens_at_start = 0
        self.loss: float | None = None
        self.eval_loss: float | None = None

    def _tokens(self) -> int:
        trainer = self.trainer_ref[0] if self.trainer_ref else None
        return getattr(trainer, "real_tokens", 0)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                                                                      "{task.total} steps"),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=self.console, transient=False)
        self.progress.start()
        self.task = self.progress.add_task(self.label, total=state.max_steps,
                                           completed=state.global_step, info="")
        self.started, self.tokens_at_start = time.perf_counter(), self._tokens()

    def tokens_per_second(self, world_size: int = 1) -> float:
        elapsed = time.perf_counter() - self.started
        return (self._tokens() - self.tokens_at_start) * world_size / elapsed if elapsed else 0.0

    def _refresh(self, args: Any, state: Any) -> None:
        if self.progress is None:
            return
        parts = []
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.eval_loss is not None:
            parts.append(f"eval {self.eval_loss:.4f}")
        parts.append(f"{self.tokens_per_second(args.world_size):.0f} tok/s")
        self.progress.update(self.task, completed=state.global_step, info=" · ".join(parts))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._refresh(args, state)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        logs = logs or {}
        if "loss" in logs:
            self.loss = float(logs["loss"])
        if "eval_loss" in logs:
            self.eval_loss = float(logs["eval_loss"])
        self._refresh(args, state)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.stop()

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
