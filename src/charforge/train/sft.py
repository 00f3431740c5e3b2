"""`charforge train sft`: supervised fine-tuning of a character agent with TRL's
`SFTTrainer`, on the dataset `charforge dataset build` wrote.

charforge tokenises the records itself (`charforge.train.data`: the loss mask for any
chat template, one sample per thought), and hands TRL token ids and labels. TRL and
the Trainer do the rest: padding-free batches (each sample sees only itself; TRL
passes `use_cache=False`), LoRA through PEFT (stage tokens trained with
`trainable_token_indices`), bf16 autocast, checkpoints and resume, and many processes
under `accelerate launch`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from charforge.character import STAGE_TOKENS, Character
from charforge.errors import CharforgeError
from charforge.llm.vocab import grow_vocabulary
from charforge.train.base import (
    Base,
    check_four_bit,
    expose_head_bias,
    load_model,
    load_tokenizer,
    resolve_base,
    training_dtype,
    varlen_attention,
)
from charforge.train.data import (
    ChatRow,
    PromptedRow,
    Sample,
    TokenStats,
    chat_samples,
    fit,
    prompted_sample,
    read_jsonl,
    read_mix,
)
from charforge.train.runs import (
    CHECKPOINTS,
    LOG_FILE,
    RUN_FILE,
    RunRecord,
    content_hash,
    now,
    read_run,
    run_folder,
    run_identity,
)
from charforge.train.settings import TrainSettings, resolve_settings

# What each kind of run learns from: the settings in its identity. Left out: how a run
# reports and checkpoints (logging, save and eval steps), how it spends memory
# (gradient checkpointing, micro-batch tokens: the same steps either way), and the
# other kind's settings.
IDENTITY_SETTINGS = {
    "sft": ("method", "loss", "format", "epochs", "lora_learning_rate", "full_learning_rate",
            "scheduler", "warmup_ratio", "warmup_steps", "weight_decay", "max_length",
            "effective_batch", "packing", "lora_r", "lora_alpha", "lora_dropout",
            "lora_target_modules", "precision", "quantize", "repeat", "mix", "max_steps",
            "seed"),
    "dpo": ("method", "epochs", "dpo_learning_rate", "dpo_beta", "scheduler", "warmup_ratio",
            "warmup_steps", "weight_decay", "max_length", "effective_batch", "precision",
            "quantize", "max_steps", "seed"),
}


@dataclass
class TrainResult:
    folder: Path
    record: RunRecord
    trained: bool  # False: the identical run was already there

    @property
    def model_name(self) -> str:
        return f"{self.record.character}/{self.record.run}"


@dataclass
class RunPlan:
    """Everything a run is decided by, before any weight is loaded."""

    kind: str
    character: Character
    recipe: str
    settings: TrainSettings
    base: Base
    data_files: list[Path]
    run: str
    folder: Path
    parent: str | None = None

    @property
    def finished(self) -> RunRecord | None:
        return read_run(self.folder)


def plan_run(workspace: Any, character_name: str, kind: str, *, base: str | None,
             recipe: str | None, config_file: str | Path | None,
             changes: dict[str, Any] | None,
             data_files: Callable[[TrainSettings], Sequence[str]],
             parent: tuple[str, Path] | None = None) -> RunPlan:
    """Settings (recipe, file, flags), base, data (the files `data_files` names for the
    settings) and the run's identity and folder."""
    from charforge.recipes import get_recipe

    character = workspace.load_character(character_name)
    chosen = get_recipe(recipe)
    settings = resolve_settings(chosen.training, config_file, changes)
    dataset = workspace.datasets_dir / character.slug
    files = [dataset / name for name in data_files(settings)]
    missing = [f for f in files if not f.is_file()]
    if missing:
        flag = " --dpo" if missing[0].name == "dpo.jsonl" else ""
        raise CharforgeError(f"no {missing[0].name} for {character.short_name} in {dataset}; "
                             f"run: charforge dataset build {character.slug}{flag}")
    mix = [Path(settings.mix).expanduser()] if settings.mix and kind == "sft" else []
    if mix and not mix[0].exists():
        raise CharforgeError(f"--mix {settings.mix}: no such file or folder")
    if settings.quantize == "4bit":
        check_four_bit()
    the_base = resolve_base(workspace, base)
    learned = {k: v for k, v in settings.model_dump().items() if k in IDENTITY_SETTINGS[kind]}
    learned["precision"] = "bf16" if training_dtype(settings)[1] else "fp32"  # as resolved
    if kind != "sft":
        learned.pop("mix", None)
    identity = run_identity(kind=kind, character=character.slug, base=the_base.identity,
                            settings=learned, data=content_hash(*files, *mix),
                            parent=parent[0] if parent else None)
    run = f"{kind}-{identity}"
    return RunPlan(kind=kind, character=character, recipe=chosen.name, settings=settings,
                   base=the_base, data_files=files, run=run,
                   folder=run_folder(workspace.root, character.slug, run),
                   parent=parent[0] if parent else None)


def sft_files(settings: TrainSettings) -> list[str]:
    """sft.jsonl (records and their split), and prompted.jsonl in the prompted format."""
    return ["sft.jsonl", *(["prompted.jsonl"] if settings.format == "prompted" else [])]


def uses_stage_tokens(rows: Sequence[dict[str, Any]]) -> bool:
    """Whether any record's system message opens with a stage token (`render.stage_marked`)."""
    for row in rows:
        messages = row.get("messages") or row.get("prompt") or []
        first = messages[0] if isinstance(messages, list) and messages else {}
        if (first.get("role") == "system"
                and first.get("content", "").split("\n", 1)[0] in STAGE_TOKENS):
            return True
    return False


def sft_samples(plan: RunPlan, tokenizer: Any,
                chat_rows: list[dict[str, Any]] | None = None,
                ) -> tuple[list[Sample], list[Sample], TokenStats, dict[str, Any]]:
    """Train and eval samples of the plan's data (repeated, mixed, cut to max_length),
    the train statistics and what was mixed in."""
    settings, character = plan.settings, plan.character
    rows = chat_rows if chat_rows is not None else read_jsonl(plan.data_files[0],
                                                              shape=ChatRow)
    splits = {row.get("task_id"): row.get("split", "train") for row in rows}
    if settings.format == "prompted":
        rows = read_jsonl(plan.data_files[-1], shape=PromptedRow)
        speaker = None if settings.loss == "output" else character.short_name

        def samples_of(row: dict[str, Any]) -> list[Sample]:
            return [prompted_sample(tokenizer, row["prompt"], row["output"],
                                    source=row.get("source", "?"), speaker=speaker)]

        def split_of(row: dict[str, Any]) -> str:
            return splits.get(row.get("task_id"), "train")
    else:
        def samples_of(row: dict[str, Any]) -> list[Sample]:
            return chat_samples(tokenizer, row["messages"], source=row.get("source", "?"),
                                loss=settings.loss, name=plan.base.name)

        def split_of(row: dict[str, Any]) -> str:
            return row.get("split", "train")
    train_rows = [row for row in rows if split_of(row) != "test"]
    test_rows = [row for row in rows if split_of(row) == "test"]
    stats = TokenStats(records=len(train_rows))
    own = [sample for row in train_rows for sample in samples_of(row)]
    train = fit(own * settings.repeat, settings.max_length, stats)
    if not train_rows and test_rows:
        raise CharforgeError(f"every record in {plan.data_files[-1]} is in the test split; "
                             f"rebuild with a smaller --test-fraction: charforge dataset build "
                             f"{character.slug}")
    if not train and stats.dropped:
        raise CharforgeError(
            f"every sample of {character.short_name} lost what it teaches when cut to "
            f"max_length {settings.max_length} tokens ({stats.dropped} dropped); raise "
            "--max-length")
    if not train:
        raise CharforgeError(
            f"{character.short_name} never speaks in {plan.data_files[-1]}: no turn of the "
            "character to learn from; generate experiences or answers, then charforge "
            f"dataset build {character.slug}")
    mix_info: dict[str, Any] = {"repeat": settings.repeat, "character_samples": len(train)}
    if settings.mix:
        mixed = [s for row in read_mix(settings.mix)
                 for s in chat_samples(tokenizer, row["messages"], source="mix",
                                       name=plan.base.name)]
        before = len(train)
        train += fit(mixed, settings.max_length, stats)
        mix_info.update(file=str(settings.mix), mix_samples=len(train) - before)
    eval_stats = TokenStats(records=len(test_rows))
    test = fit([s for row in test_rows for s in samples_of(row)], settings.max_length,
               eval_stats)
    return train, test, stats, {**mix_info, "eval": eval_stats.summary()}


def batch_shape(settings: TrainSettings, stats: TokenStats, world_size: int,
                varlen: bool | None = None) -> tuple[int, int]:
    """(samples per process per micro-batch, accumulation steps), so that every optimizer
    step takes exactly `effective_batch` samples over all processes: the same steps on 1
    GPU or 8. Micro-batches hold about `micro_batch_tokens` real tokens; by default one
    sample each, unless the attention keeps packed samples apart without a dense mask
    (`varlen`: flash attention on a GPU), then up to `max_length` tokens. Without it,
    samples side by side cost a block-diagonal mask over the whole micro-batch, and one
    sample a micro-batch is fastest (bench/train.py)."""
    if settings.effective_batch % world_size:
        raise CharforgeError(f"effective_batch {settings.effective_batch} does not divide "
                             f"among {world_size} processes; choose a multiple of "
                             f"{world_size}")
    if varlen is None:
        varlen = varlen_attention()
    share = settings.effective_batch // world_size
    budget = settings.micro_batch_tokens or (settings.max_length if varlen else None)
    if budget is None:
        return 1, share
    mean = stats.tokens / stats.samples if stats.samples else settings.max_length
    fits = max(1, int(budget // max(mean, 1)))
    micro = max(d for d in range(1, share + 1) if share % d == 0 and d <= fits)
    return micro, share // micro


def as_dataset(samples: Sequence[Sample]) -> Any:
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": [s.input_ids for s in samples],
                              "labels": [s.labels for s in samples]})


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def trainer_arguments(plan: RunPlan, micro: int, accumulation: int, has_eval: bool, *,
                      learning_rate: float | None = None, **extra: Any) -> dict[str, Any]:
    """The Trainer arguments both SFT and DPO take from the settings (`learning_rate`:
    another than the method's)."""
    import torch

    settings = plan.settings
    _, bf16 = training_dtype(settings)
    warmup: float = settings.warmup_steps or settings.warmup_ratio
    eval_strategy = "no" if not has_eval else ("steps" if settings.eval_steps else "epoch")
    scheduler = ("constant_with_warmup" if settings.scheduler == "constant"
                 else settings.scheduler)
    return dict(
        output_dir=str(plan.folder / CHECKPOINTS),
        num_train_epochs=settings.epochs, max_steps=settings.max_steps or -1,
        per_device_train_batch_size=micro, per_device_eval_batch_size=micro,
        gradient_accumulation_steps=accumulation,
        learning_rate=learning_rate or settings.learning_rate, lr_scheduler_type=scheduler,
        warmup_steps=warmup, weight_decay=settings.weight_decay,
        logging_steps=settings.logging_steps, logging_nan_inf_filter=False,
        save_strategy="steps", save_steps=settings.save_steps, save_total_limit=2,
        eval_strategy=eval_strategy, eval_steps=settings.eval_steps,
        bf16=bf16, use_cpu=not torch.cuda.is_available(),
        activation_checkpointing=settings.gradient_checkpointing,
        seed=settings.seed, data_seed=settings.seed,
        report_to=[], disable_tqdm=True, dataloader_num_workers=0,
        **extra)


def lora_config(settings: TrainSettings, token_ids: list[int]) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha,
                      lora_dropout=settings.lora_dropout, task_type="CAUSAL_LM",
                      target_modules=settings.lora_target_modules,
                      trainable_token_indices=token_ids or None)


def train_sft(workspace: Any, character_name: str, *, base: str | None = None,
              recipe: str | None = None, config_file: str | Path | None = None,
              changes: dict[str, Any] | None = None, callbacks: Sequence[Any] = (),
              console: Console | None = None) -> TrainResult:
    """Fine-tune a character agent on its dataset (see the module's text). An identical
    run already finished trains nothing; an interrupted one resumes from its last
    checkpoint."""
    plan = plan_run(workspace, character_name, "sft", base=base, recipe=recipe,
                    config_file=config_file, changes=changes, data_files=sft_files)
    if (done := plan.finished) is not None:
        return TrainResult(plan.folder, done, trained=False)
    started = now()
    tokenizer = load_tokenizer(plan.base)
    token_ids: list[int] = []
    chat_rows = read_jsonl(plan.data_files[0], shape=ChatRow)  # read once
    if uses_stage_tokens(chat_rows):
        from charforge.llm.vocab import add_tokens

        token_ids = add_tokens(tokenizer, list(STAGE_TOKENS))  # before tokenising the data
    train, test, stats, mix = sft_samples(plan, tokenizer, chat_rows)
    micro, accumulation = batch_shape(plan.settings, stats, world_size())
    result = _fit_sft(plan, tokenizer, train, test, token_ids, micro, accumulation,
                      callbacks, console)
    data = {**stats.summary(), "stage_tokens": len(token_ids), "mix": mix,
            "micro_batch": micro, "accumulation": accumulation, "world_size": world_size(),
            "samples_per_step": micro * accumulation * world_size()}
    record = finish_run(plan, tokenizer, result.pop("trainer"), data=data, metrics=result,
                        started=started)
    workspace.reload_config()
    return TrainResult(plan.folder, record, trained=True)


def _fit_sft(plan: RunPlan, tokenizer: Any, train: list[Sample],
             test: list[Sample], token_ids: list[int], micro: int, accumulation: int,
             callbacks: Sequence[Any], console: Console | None) -> dict[str, Any]:
    from trl import SFTConfig, SFTTrainer

    from charforge.train.progress import (
        CharforgeTrainerMixin,
        RichProgress,
        RunLog,
        libraries_quiet,
    )

    class CharforgeSFTTrainer(CharforgeTrainerMixin, SFTTrainer):
        pass

    settings = plan.settings
    plan.folder.mkdir(parents=True, exist_ok=True)
    args = SFTConfig(**trainer_arguments(
        plan, micro, accumulation, bool(test),
        padding_free=settings.packing, packing=False, max_length=None,
        dataset_kwargs={"skip_prepare_dataset": False}))
    model = load_model(plan.base, settings)  # after the arguments: see load_model
    grow_vocabulary(model, len(tokenizer))
    trainer_ref: list[Any] = []
    progress = RichProgress(trainer_ref, console, label=f"SFT {plan.character.short_name}")
    with libraries_quiet():
        trainer = CharforgeSFTTrainer(
            model=model, args=args, train_dataset=as_dataset(train),
            eval_dataset=as_dataset(test) if test else None, processing_class=tokenizer,
            peft_config=lora_config(settings, token_ids) if settings.method == "lora" else None,
            callbacks=[progress, RunLog(plan.folder / LOG_FILE), *callbacks])
    trainer_ref.append(trainer)
    expose_head_bias(trainer.model)
    return run_trainer(trainer, progress, has_eval=bool(test))


def quiet_trainer(trainer: Any) -> None:
    """Our progress bar and log replace the Trainer's printed log dicts."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def run_trainer(trainer: Any, progress: Any, *, has_eval: bool) -> dict[str, Any]:
    """Train (resuming from the last checkpoint), evaluate; the metrics of the run."""
    import time

    from charforge.train.progress import (
        TrainingInterrupted,
        interrupted_words,
        last_checkpoint,
        libraries_quiet,
        trim_log,
    )

    quiet_trainer(trainer)
    checkpoints = Path(trainer.args.output_dir)
    last = last_checkpoint(checkpoints, clear_partial=True)
    metrics: dict[str, Any] = {}
    if last is not None:  # the steps after the checkpoint are trained (and logged) again
        trim_log(checkpoints.parent / LOG_FILE, int(Path(last).name.rsplit("-", 1)[-1]))
    if has_eval and last is None:
        metrics["eval_loss_before"] = round(trainer.evaluate()["eval_loss"], 6)
    began = time.perf_counter()
    try:
        with libraries_quiet():
            output = trainer.train(resume_from_checkpoint=last)
    except KeyboardInterrupt:
        raise TrainingInterrupted(interrupted_words(trainer.args.output_dir,
                                                    trainer.state.global_step)) from None
    finally:
        progress.stop()
    elapsed = time.perf_counter() - began
    metrics.update(train_loss=round(output.training_loss, 6), steps=trainer.state.global_step,
                   resumed_from=Path(last).name if last else None,
                   seconds=round(elapsed, 1),
                   tokens_per_s=round(trainer.real_tokens * trainer.args.world_size
                                      / elapsed, 1) if elapsed else None)
    if has_eval:
        metrics["eval_loss"] = round(trainer.evaluate()["eval_loss"], 6)
    metrics["trainer"] = trainer
    return metrics


def finish_run(plan: RunPlan, tokenizer: Any, trainer: Any, *, data: dict[str, Any],
               metrics: dict[str, Any], started: str) -> RunRecord:
    """Save the adapter (or model) and tokenizer, the card and run.json (last), and drop
    the checkpoints; the main process writes, the others wait for it."""
    model = trainer.model
    sharded = getattr(trainer, "is_fsdp_enabled", False) or getattr(
        trainer, "is_deepspeed_enabled", False)  # only the Trainer gathers the shards
    if hasattr(model, "peft_config") and not sharded:
        # The stage tokens' rows are in the adapter (trainable tokens); the rest of a grown
        # embedding is rebuilt the same way at load (llm/vocab.py), not saved whole.
        if trainer.is_world_process_zero():
            model.save_pretrained(str(plan.folder), save_embedding_layers=False)
    else:
        trainer.save_model(str(plan.folder))
    trainer.accelerator.wait_for_everyone()
    record = RunRecord(
        kind=plan.kind, run=plan.run, character=plan.character.slug,  # type: ignore[arg-type]
        base={"name": plan.base.name, "source": plan.base.source,
              "identity": plan.base.identity},
        parent=plan.parent, recipe=plan.recipe, settings=plan.settings.model_dump(),
        dataset={"files": [str(f) for f in plan.data_files],
                 "content": content_hash(*plan.data_files)},
        data=data, metrics=metrics, model=_model_entry(plan), started=started,
        finished=now())
    if trainer.is_world_process_zero():
        from charforge.train.card import model_card

        (plan.folder / "training_args.bin").unlink(missing_ok=True)  # a pickle; run.json
        tokenizer.save_pretrained(str(plan.folder))
        (plan.folder / "README.md").write_text(model_card(record), encoding="utf-8")
        staging = plan.folder / f".{RUN_FILE}.partial"
        staging.write_text(record.model_dump_json(indent=2) + "\n", encoding="utf-8")
        staging.replace(plan.folder / RUN_FILE)
        shutil.rmtree(plan.folder / CHECKPOINTS, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return record


def _model_entry(plan: RunPlan) -> dict[str, Any]:
    """The local model this run registers: its base plus the adapter, or (full) itself.
    None for the prompted format: it learned Character-LLM's text layout, not chat, and
    a chat template would ask it otherwise than it was taught."""
    if plan.settings.format == "prompted":
        return {}
    entry: dict[str, Any] = {"backend": "local", **plan.base.entry_options}
    if plan.settings.method == "lora":
        entry["adapter"] = str(plan.folder)
    else:
        entry.pop("gguf_file", None)
        entry["path"] = str(plan.folder)
    return entry
