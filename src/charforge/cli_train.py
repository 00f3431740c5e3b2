"""`charforge train sft|dpo|merge`: the training commands (a thin shell over
`charforge.train`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from charforge.cli_common import CharacterArg, WorkspaceOption, err, find_workspace, out, shown_path
from charforge.errors import CharforgeError

train_app = typer.Typer(help="Train character agents (SFT, then DPO) and merge adapters.",
                        no_args_is_help=True)

BaseOption = Annotated[str | None, typer.Option(
    "--base", "-b", help="base model: a local model's name, a model folder or a hub id in the "
    "local cache (default: the embedded smollm2)", show_default=False)]
RecipeOption = Annotated[str | None, typer.Option(
    help="named settings: default, character-llm, persllm, demo (charforge recipes)",
    show_default=False)]
ConfigOption = Annotated[Path | None, typer.Option(
    "--config", help="YAML file of training settings (see docs/training.md); flags win",
    show_default=False)]


def _method(lora: bool, full: bool) -> Literal["lora", "full"] | None:
    if lora and full:
        raise CharforgeError("--lora and --full exclude each other: choose one")
    return "lora" if lora else "full" if full else None


def _changes(**given: Any) -> dict[str, Any]:
    return {key: value for key, value in given.items() if value is not None}


@train_app.command("sft")
def sft(
    character: CharacterArg,
    base: BaseOption = None,
    lora: Annotated[bool, typer.Option("--lora", help="train a LoRA adapter")] = False,
    full: Annotated[bool, typer.Option("--full", help="train every weight")] = False,
    recipe: RecipeOption = None,
    config: ConfigOption = None,
    epochs: Annotated[float | None, typer.Option(min=0.01, show_default=False)] = None,
    learning_rate: Annotated[float | None, typer.Option(
        min=0.0, help="for the chosen method", show_default=False)] = None,
    max_length: Annotated[int | None, typer.Option(
        min=16, help="longest sample in tokens (longer ones are cut, and counted)",
        show_default=False)] = None,
    effective_batch: Annotated[int | None, typer.Option(
        min=1, help="samples per optimizer step, all processes", show_default=False)] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, show_default=False)] = None,
    loss: Annotated[str | None, typer.Option(
        help="character: learn only the character's turns; output: every turn after the "
        "system message (Character-LLM)", show_default=False)] = None,
    data_format: Annotated[str | None, typer.Option(
        "--format", help="chat (sft.jsonl) or prompted (Character-LLM's prompted.jsonl)",
        show_default=False)] = None,
    mix: Annotated[Path | None, typer.Option(
        help="general instruction data to mix in: JSONL of chat records or a saved dataset",
        show_default=False)] = None,
    repeat: Annotated[int | None, typer.Option(
        min=1, help="times the character's data is repeated", show_default=False)] = None,
    precision: Annotated[str | None, typer.Option(
        help="auto, bf16 or fp32", show_default=False)] = None,
    gradient_checkpointing: Annotated[bool | None, typer.Option(
        "--gradient-checkpointing/--no-gradient-checkpointing", show_default=False)] = None,
    quantize: Annotated[str | None, typer.Option(
        help="4bit: QLoRA (CUDA and bitsandbytes)", show_default=False)] = None,
    seed: Annotated[int | None, typer.Option(min=0, show_default=False)] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Fine-tune a character agent on its dataset (charforge dataset build).

    An identical run (same data, base and settings) trains nothing; an interrupted one
    resumes from its last checkpoint. The result is a named model: charforge ask -m
    CHARACTER."""
    from charforge.train.sft import train_sft

    method = _method(lora, full)
    changes = _changes(method=method, epochs=epochs, max_length=max_length,
                       effective_batch=effective_batch, max_steps=max_steps, loss=loss,
                       format=data_format, mix=str(mix) if mix else None, repeat=repeat,
                       precision=precision, gradient_checkpointing=gradient_checkpointing,
                       quantize=quantize, seed=seed)
    if learning_rate is not None:
        changes["learning_rate"] = learning_rate
    ws = find_workspace(workspace)
    with _interrupt_hint():
        result = train_sft(ws, character, base=base, recipe=recipe, config_file=config,
                           changes=_learning_rate(changes, recipe, config), console=err)
    report_training(result)


def _learning_rate(changes: dict[str, Any], recipe: str | None,
                   config: Path | None) -> dict[str, Any]:
    """`--learning-rate` sets the rate of the method the run ends up with."""
    rate = changes.pop("learning_rate", None)
    if rate is None:
        return changes
    if rate <= 0:
        raise CharforgeError("--learning-rate must be above 0")
    from charforge.recipes import get_recipe
    from charforge.train.settings import resolve_settings

    method = resolve_settings(get_recipe(recipe).training, config, changes).method
    return {**changes, f"{method}_learning_rate": rate}


class _interrupt_hint:
    """Ctrl-C before training began (the trainer itself reports an interrupted run: see
    charforge.train.progress.TrainingInterrupted)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> bool:
        if kind is KeyboardInterrupt:  # before training began (loading, tokenising)
            err.print("interrupted before training began: nothing to resume; the same "
                      "command starts again", markup=False)
            raise typer.Exit(130)
        return False


def report_training(result: Any) -> None:
    record = result.record
    name = result.model_name
    if not result.trained:
        out.print(f"already trained: {name} (same data, base and settings): nothing to do; "
                  f"{shown_path(result.folder)}", highlight=False, markup=False)
        return
    metrics, data = record.metrics, record.data
    losses = f"train loss {metrics.get('train_loss')}"
    if "eval_loss_before" in metrics:
        losses += f", eval loss {metrics['eval_loss_before']} -> {metrics.get('eval_loss')}"
    elif "eval_loss" in metrics:
        losses += f", eval loss {metrics['eval_loss']}"
    resumed = f" (resumed from {metrics['resumed_from']})" if metrics.get("resumed_from") else ""
    out.print(f"trained {name} in {metrics.get('seconds')} s{resumed}: {metrics.get('steps')} "
              f"steps, {losses}; {metrics.get('tokens_per_s')} tokens/s", highlight=False,
              markup=False)
    out.print(f"data: {data.get('samples')} samples, {data.get('tokens')} tokens "
              f"({data.get('learned_tokens')} learned); {data.get('truncated')} cut at "
              f"{record.settings.get('max_length')} tokens", highlight=False, markup=False)
    out.print(f"model: {shown_path(result.folder)}; ask it: charforge ask -m {name} -c "
              f"{record.character} \"...\"", highlight=False, markup=False)


@train_app.command("merge")
def merge(
    character: CharacterArg,
    run: Annotated[str | None, typer.Option(
        help="the run (default: the character's latest)", show_default=False)] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Fold a LoRA run into its base and write one safetensors model (for engines that
    cannot load an adapter with added tokens)."""
    from charforge.train.merge import merge_run

    ws = find_workspace(workspace)
    with err.status("merging…"):
        folder = merge_run(ws, character, run)
    out.print(f"merged model: {shown_path(folder)}", highlight=False, markup=False)


@train_app.command("dpo")
def dpo(
    character: CharacterArg,
    sft: Annotated[str | None, typer.Option(
        "--sft", help="the SFT run to start from (default: the character's latest)",
        show_default=False)] = None,
    recipe: RecipeOption = None,
    config: ConfigOption = None,
    epochs: Annotated[float | None, typer.Option(min=0.01, show_default=False)] = None,
    learning_rate: Annotated[float | None, typer.Option(
        min=0.0, help="DPO's learning rate (default 5e-6)", show_default=False)] = None,
    beta: Annotated[float | None, typer.Option(
        min=0.0, help="how far the policy may move from the reference (the SFT model)",
        show_default=False)] = None,
    effective_batch: Annotated[int | None, typer.Option(
        min=1, help="pairs per optimizer step, all processes", show_default=False)] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, show_default=False)] = None,
    precision: Annotated[str | None, typer.Option(
        help="auto, bf16 or fp32", show_default=False)] = None,
    seed: Annotated[int | None, typer.Option(min=0, show_default=False)] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Preference-tune a trained agent on its DPO pairs (charforge dataset build --dpo).

    Starts from an SFT run, which is also the frozen reference."""
    from charforge.train.dpo import train_dpo

    changes = _changes(epochs=epochs, dpo_beta=beta, effective_batch=effective_batch,
                       max_steps=max_steps, precision=precision, seed=seed)
    if learning_rate is not None:
        if learning_rate <= 0:
            raise CharforgeError("--learning-rate must be above 0")
        changes["dpo_learning_rate"] = learning_rate
    ws = find_workspace(workspace)
    with _interrupt_hint():
        result = train_dpo(ws, character, sft_run=sft, recipe=recipe, config_file=config,
                           changes=changes, console=err)
    report_training(result)
