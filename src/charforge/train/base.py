"""The base model a run trains: found by model name, folder or hub id (never downloaded),
and loaded for training (tokenizer and weights apart: see `load_model`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charforge.errors import CharforgeError
from charforge.llm.registry import DEFAULT_MODEL

if TYPE_CHECKING:
    from charforge.train.settings import TrainSettings
    from charforge.workspace import Workspace


class BaseNotFoundError(CharforgeError):
    """The base model is nowhere charforge looks."""


@dataclass(frozen=True)
class Base:
    """A base model: what the command named, where its weights are, their identity, and
    the options a trained agent inherits (a model entry's path, GGUF file, repetition
    penalty and JSON string policy)."""

    name: str
    source: str  # what from_pretrained reads
    load_options: dict[str, Any] = field(default_factory=dict)  # gguf_file, local_files_only
    identity: dict[str, Any] = field(default_factory=dict)
    entry_options: dict[str, Any] = field(default_factory=dict)  # for the registered agent


def resolve_base(workspace: Workspace | None, name: str | None) -> Base:
    """`name` as a base: a local model named in charforge.yaml (or the embedded
    `smollm2`, the default), a model folder or .gguf file, or a hub id already in the
    local Hugging Face cache."""
    from charforge.llm.local import LocalConfig, _resolve_source, local_identity
    from charforge.llm.registry import ModelsConfig

    name = name or DEFAULT_MODEL
    config = workspace.config if workspace is not None else ModelsConfig()
    entries = config.entries()
    if name in entries:
        entry = entries[name]
        if entry.backend != "local":
            raise CharforgeError(f"--base {name}: a {entry.backend} endpoint has no weights to "
                                 "train; name a local model, a model folder or a hub id")
        if entry.options().get("adapter"):
            raise CharforgeError(f"--base {name}: an adapter on another model; train from "
                                 "its base, or merge it first (charforge train merge)")
        options = {k: v for k, v in entry.options().items()
                   if k in ("path", "gguf_file", "repetition_penalty", "json_strings")}
        local = LocalConfig.model_validate(options)
        try:
            source, extra = _resolve_source(local)
        except CharforgeError as exc:
            raise BaseNotFoundError(f"--base {name}: {exc}") from None
        return Base(name=name, source=source, load_options=extra,
                    identity=local_identity(LocalConfig(path=local.path,
                                                        gguf_file=local.gguf_file)),
                    entry_options=options)
    path = Path(name).expanduser()
    if path.exists():
        local = LocalConfig(path=str(path.resolve()))
        source, extra = _resolve_source(local)
        _check_folder(path)
        return Base(name=name, source=source, load_options=extra,
                    identity=local_identity(local), entry_options={"path": str(path.resolve())})
    from huggingface_hub import constants, try_to_load_from_cache

    try:
        hit = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a hub id at all (./folder, a/b/c, ...)
        hit = None
    if isinstance(hit, str):
        local = LocalConfig(path=name)
        return Base(name=name, source=name, load_options={"local_files_only": True},
                    identity=local_identity(local), entry_options={"path": name})
    where = workspace.config_path if workspace is not None else "charforge.yaml"
    raise BaseNotFoundError(
        f"base model {name!r} not found; looked for a model named so in {where} "
        f"({', '.join(sorted(entries))}), a folder {path.resolve()}, and {name} in the "
        f"Hugging Face cache {constants.HF_HUB_CACHE} (charforge never downloads)")


def _check_folder(path: Path) -> None:
    from charforge.llm.weights import NotAModelError, check_model_files

    try:
        check_model_files(path)
    except NotAModelError as exc:
        raise BaseNotFoundError(f"--base {path}: {exc}") from None


def training_dtype(settings: TrainSettings) -> tuple[Any, bool]:
    """(weight dtype, bf16 autocast?): weights stay fp32 (the master copy); bf16 autocast
    where the GPU or CPU supports it (`precision: auto`)."""
    import torch

    if settings.precision == "fp32":
        return torch.float32, False
    if torch.cuda.is_available():
        supported = torch.cuda.is_bf16_supported()
    else:
        supported = "AVX512" in torch.backends.cpu.get_cpu_capability()
    if settings.precision == "bf16" and not supported:
        raise CharforgeError("--precision bf16: this machine has no bf16 support (a GPU "
                             "from Ampere on, or an AVX-512 CPU); use --precision fp32")
    return torch.float32, supported


def load_tokenizer(base: Base) -> Any:
    """`base`'s tokenizer; it must have a chat template and offsets (a fast tokenizer)."""
    from transformers import AutoTokenizer

    from charforge.llm.local import quiet_progress_bars

    try:
        with quiet_progress_bars():
            tokenizer = AutoTokenizer.from_pretrained(base.source, **base.load_options)
    except OSError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BaseNotFoundError(f"--base {base.name}: cannot load {base.source}: {first}") from None
    if tokenizer.chat_template is None:
        raise CharforgeError(f"--base {base.name}: its tokenizer has no chat template; "
                             "charforge trains chat agents (use an instruct model)")
    if not getattr(tokenizer, "is_fast", False):
        raise CharforgeError(f"--base {base.name}: needs a fast tokenizer (tokenizer.json) to "
                             "find the reply tokens")
    return tokenizer


def varlen_attention() -> bool:
    """Whether samples packed side by side can be kept apart by variable-length kernels
    (flash attention on a CUDA GPU) rather than a dense block-diagonal mask."""
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


def load_model(base: Base, settings: TrainSettings) -> Any:
    """`base`'s weights for training: fp32 (the master copy), or 4-bit with `quantize`.
    Load after the Trainer's arguments exist, so that under `accelerate launch` with
    ZeRO-3 or FSDP each process loads only its shard."""
    from transformers import AutoModelForCausalLM

    from charforge.llm.local import quiet_progress_bars

    extra: dict[str, Any] = dict(base.load_options)
    if settings.quantize == "4bit":
        extra["quantization_config"] = _four_bit()
    if varlen_attention():  # packed samples apart without a dense mask
        extra["attn_implementation"] = "flash_attention_2"
    dtype, _ = training_dtype(settings)
    try:
        with quiet_progress_bars():
            return AutoModelForCausalLM.from_pretrained(base.source, dtype=dtype, **extra)
    except OSError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BaseNotFoundError(f"--base {base.name}: cannot load {base.source}: {first}") from None


def load_for_training(base: Base, settings: TrainSettings) -> tuple[Any, Any]:
    """(model, tokenizer) of `base` (see `load_model`, `load_tokenizer`)."""
    tokenizer = load_tokenizer(base)
    return load_model(base, settings), tokenizer


def check_four_bit() -> None:
    """QLoRA's needs (a CUDA GPU, bitsandbytes), checked before anything is loaded."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise CharforgeError("--quantize 4bit (QLoRA) needs a CUDA GPU; this machine has none")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise CharforgeError("--quantize 4bit (QLoRA) needs bitsandbytes: pip install "
                             "bitsandbytes")


def _four_bit() -> Any:
    import torch
    from transformers import BitsAndBytesConfig

    check_four_bit()

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_compute_dtype=torch.bfloat16,
                              bnb_4bit_use_double_quant=True)


def expose_head_bias(model: Any) -> None:
    """PEFT wraps a tied output embedding in a `TrainableTokensWrapper` (stage tokens on a
    base like SmolLM2) that shows the merged `weight` but no `bias`; TRL's fused loss reads
    `lm_head.bias` and fails. Such a head has no bias: say so on the wrapper."""
    head = model.get_output_embeddings()
    if head is not None and not hasattr(head, "bias"):
        head.bias = None
