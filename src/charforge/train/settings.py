"""`TrainSettings`: every setting of a training run, described once. A recipe holds one
(`charforge.recipes`), a YAML file given with `--config` changes some, the command's
flags change some more; the result is saved with the run and is part of its identity.

Pydantic only: importing this module loads no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from charforge.errors import CharforgeError, first_problem


class TrainSettings(BaseModel):
    """How a character agent is trained (SFT, and DPO where it applies)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["lora", "full"] = Field(
        default="lora", description="LoRA adapter on a frozen base, or every weight")
    loss: Literal["character", "output"] = Field(
        default="character", description="character: only the character's turns (speech and "
        "thoughts) are learned; output: every turn after the system message, other speakers "
        "too (Character-LLM's way)")
    format: Literal["chat", "prompted"] = Field(
        default="chat", description="chat: sft.jsonl through the base's chat template; "
        "prompted: Character-LLM's prompted.jsonl (prompt, then the whole scene as text)")
    epochs: float = Field(default=3.0, gt=0, description="passes over the data")
    lora_learning_rate: float = Field(default=2e-4, gt=0, lt=1, description="learning rate "
                                      "of a LoRA run")
    full_learning_rate: float = Field(default=2e-5, gt=0, lt=1, description="learning rate "
                                      "of a full fine-tune")
    scheduler: Literal["cosine", "linear", "constant"] = Field(
        default="cosine", description="learning-rate schedule after warmup")
    warmup_ratio: float = Field(default=0.04, ge=0, lt=1,
                                description="warmup, as a share of the steps")
    warmup_steps: int = Field(default=0, ge=0, description="warmup in steps (wins over "
                              "warmup_ratio when above 0)")
    weight_decay: float = Field(default=0.0, ge=0, lt=1)
    max_length: int = Field(default=2048, ge=16, description="longest sample in tokens; "
                            "longer ones are cut (and counted)")
    effective_batch: int = Field(default=16, ge=1, description="samples per optimizer step, "
                                 "over every process")
    micro_batch_tokens: int | None = Field(
        default=None, ge=16, description="tokens one process computes at once (samples side "
        "by side without padding); default: one sample, or max_length with flash attention")
    packing: bool = Field(default=True, description="samples side by side without padding "
                          "(each sees only itself); off: padded batches")
    lora_r: int = Field(default=16, ge=1, le=1024)
    lora_alpha: int = Field(default=32, ge=1)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    lora_target_modules: str | list[str] = Field(
        default="all-linear", description="modules LoRA adapts: all-linear or a list of names")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        default="auto", description="auto: bf16 autocast (fp32 weights) where the CPU or GPU "
        "supports it, else fp32")
    quantize: Literal["none", "4bit"] = Field(
        default="none", description="4bit: QLoRA (needs CUDA and bitsandbytes)")
    gradient_checkpointing: bool = Field(default=False,
                                         description="recompute activations: less memory, "
                                         "~30% slower")
    repeat: int = Field(default=1, ge=1, le=100, description="times the character's data is "
                        "repeated in the mix (PersLLM: 5)")
    mix: str | None = Field(default=None, description="general instruction data mixed in: a "
                            "JSONL file of chat records (messages) or a saved datasets folder")
    eval_steps: int | None = Field(default=None, ge=1, description="evaluate on the test split "
                                   "every N steps (default: at each epoch's end)")
    save_steps: int = Field(default=50, ge=1, description="checkpoint every N steps")
    max_steps: int | None = Field(default=None, ge=1, description="stop after N steps "
                                  "(default: the epochs decide)")
    logging_steps: int = Field(default=1, ge=1)
    seed: int = Field(default=0, ge=0)
    dpo_beta: float = Field(default=0.1, gt=0, description="DPO: how far the policy may move "
                            "from the reference")
    dpo_learning_rate: float = Field(default=5e-6, gt=0, lt=1, description="DPO's learning "
                                     "rate (either method); far below SFT's")

    @model_validator(mode="after")
    def _lora_only(self) -> TrainSettings:
        if self.quantize == "4bit" and self.method != "lora":
            raise ValueError("quantize 4bit (QLoRA) trains a LoRA adapter: use method lora")
        return self

    @property
    def learning_rate(self) -> float:
        return self.lora_learning_rate if self.method == "lora" else self.full_learning_rate



def resolve_settings(recipe_settings: TrainSettings, config_file: str | Path | None = None,
                     changes: dict[str, Any] | None = None) -> TrainSettings:
    """The recipe's settings, then a YAML file's (`--config`), then the flags' (`changes`,
    None values ignored); a bad value is one line naming the setting."""
    merged = recipe_settings.model_dump()
    if config_file is not None:
        path = Path(config_file).expanduser()
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CharforgeError(f"--config {path}: {first}") from None
        if not isinstance(loaded, dict):
            raise CharforgeError(f"--config {path}: expected settings as a mapping "
                                 "(name: value), one per line")
        merged.update(loaded)
    merged.update({key: value for key, value in (changes or {}).items() if value is not None})
    try:
        return TrainSettings.model_validate(merged)
    except ValidationError as exc:
        where, what = first_problem(exc)
        source = f" (in {config_file})" if config_file else ""
        raise CharforgeError(f"training setting {where or ''}{source}: {what}".replace(
            "setting : ", "settings: ")) from None
