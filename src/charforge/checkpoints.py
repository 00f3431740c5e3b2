"""Recovering a model released as a weight difference: target = base + delta, tensor by
tensor (what FastChat's `apply_delta` does for Character-LLM's nine 7B agents, which are
published as differences against Llama 1).

Streamed: the base and delta weight files are opened lazily (safetensors' `safe_open`;
PyTorch `.bin` shards through `torch.load(weights_only=True, mmap=True)`, never a full
unpickler), one tensor of each is read at a time, and the sums wait in memory only until
their output shard is written. Peak memory is one output shard (`max_shard_bytes`) plus
one base and one delta tensor in float32, not a model, let alone two.

Every name and shape is checked from the files' headers before a byte is written; the
output is staged beside its folder and swapped in whole (`charforge.files`).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from charforge.errors import CharforgeError
from charforge.files import folder_written_whole

if TYPE_CHECKING:
    import torch

DEFAULT_MAX_SHARD_BYTES = 2_000_000_000
"""Largest output shard: 2 GB, as Hugging Face writes them (a bigger tensor gets a shard
of its own)."""

CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja",
    "chat_template.json",
)
VOCABULARY_TENSORS = ("embed_tokens.weight", "lm_head.weight")
"""Tensors whose rows are the vocabulary: the delta's may have more (tokens the character
model added); the base is then added into its leading rows (FastChat's rule)."""
SKIPPED_BUFFERS = ("rotary_emb.inv_freq",)
"""Buffers older Llama conversions saved beside the weights; transformers recomputes them
and loading ignores them, so they are skipped on either side."""

ProgressCallback = Callable[[int, int, str], None]
"""Called after each tensor with (tensors done, tensors in all, the tensor's name)."""


class CheckpointError(CharforgeError):
    """A base, delta or output folder that `checkpoint recover` cannot use."""


class TensorMismatchError(CheckpointError):
    """The base and the delta disagree on a tensor: one lacks it, or its shapes differ."""


class OutputExistsError(CheckpointError):
    """The output folder exists and is not empty (replace it with --force)."""


class RecoverSummary(BaseModel):
    """What a recovery wrote."""

    output: Path
    tensors: int
    parameters: int
    dtypes: list[str]
    """The output's dtypes (the delta's), e.g. ["float16"]."""
    shards: int
    bytes_written: int
    """Bytes of tensor data in the output's weight files."""
    vocabulary: tuple[int, int] | None = None
    """(base rows, output rows) when the delta added tokens, else None."""
    skipped: list[str] = []
    """Buffers skipped (see SKIPPED_BUFFERS)."""
    copied: list[str] = []
    """Configuration and tokenizer files copied from the delta folder."""
    notes: list[str] = []
    peak_tensors_held: int
    """Most output tensors held in memory at once (those of one shard)."""
    peak_bytes_held: int
    """Most bytes of output tensors held in memory at once."""
    seconds: float


@dataclass(frozen=True)
class _Entry:
    file: Path
    shape: tuple[int, ...]
    dtype: torch.dtype


class _Weights:
    """One model folder's weight files: every tensor's shape and dtype from the headers,
    and each tensor read only when asked for."""

    def __init__(self, folder: Path, role: str) -> None:
        self.folder = folder
        self.role = role
        self.entries: dict[str, _Entry] = {}
        self._handles: dict[Path, Any] = {}
        for file in _weight_files(folder, role):
            for name, tensor in self._described(file):
                if name in self.entries:
                    raise CheckpointError(f"{name} is in two weight files of the {role} "
                                          f"({self.entries[name].file.name}, {file.name})")
                self.entries[name] = _Entry(file, tuple(tensor[0]), tensor[1])

    def _handle(self, file: Path) -> Any:
        if file not in self._handles:
            self._handles[file] = (_open_safetensors(file) if file.suffix == ".safetensors"
                                   else _open_bin(file))
        return self._handles[file]

    def _described(self, file: Path) -> Iterator[tuple[str, tuple[list[int], torch.dtype]]]:
        handle = self._handle(file)
        if file.suffix == ".safetensors":
            for name in handle.keys():  # noqa: SIM118 (a safe_open handle, not a dict)
                piece = handle.get_slice(name)
                yield name, (piece.get_shape(), _safetensors_dtype(piece.get_dtype(), file))
        else:
            for name, tensor in handle.items():
                yield name, (list(tensor.shape), tensor.dtype)

    def tensor(self, name: str) -> torch.Tensor:
        """The tensor `name`, read now (a safetensors copy, or a view of a mapped .bin)."""
        from safetensors import SafetensorError

        entry = self.entries[name]
        handle = self._handle(entry.file)
        if entry.file.suffix != ".safetensors":
            return handle[name]
        try:
            return handle.get_tensor(name)
        except SafetensorError as exc:
            raise CheckpointError(f"{entry.file}: tensor {name} cannot be read: "
                                  f"{_one_line(exc)}") from None

    def close(self) -> None:
        self._handles.clear()


def _weight_files(folder: Path, role: str) -> list[Path]:
    """The weight files of a model folder in the Hugging Face layout (an index and its
    shards, or one file); safetensors preferred to .bin."""
    if not folder.is_dir():
        raise CheckpointError(f"the {role} folder {folder} was not found")
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
                names = list(dict.fromkeys(weight_map.values()))
            except (ValueError, KeyError, TypeError, AttributeError):
                raise CheckpointError(f"{index} is not a weight index (no weight_map)") \
                    from None
            files = [folder / name for name in names]
            for file in files:
                if not file.is_file():
                    raise CheckpointError(f"{index} names {file.name}, which is missing: "
                                          "download the whole folder")
            return files
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (folder / single).is_file():
            return [folder / single]
    shards = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if shards:
        return shards
    raise CheckpointError(f"no weights found in the {role} folder {folder}: expected "
                          "model.safetensors, pytorch_model.bin, or their shards")


def _open_safetensors(file: Path) -> Any:
    from safetensors import SafetensorError, safe_open

    try:
        return safe_open(str(file), framework="pt", device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{file} cannot be read as safetensors: "
                              f"{_one_line(exc)}") from None


def _open_bin(file: Path) -> dict[str, torch.Tensor]:
    """A .bin shard's tensors, mapped from the file (pages are read when touched). Only
    plain tensors are unpickled (weights_only): a file holding other objects is refused."""
    import pickle

    import torch

    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{file} holds Python objects besides tensors; charforge reads "
                              "only plain tensors from .bin files (convert it to "
                              "safetensors)") from None
    except (RuntimeError, OSError, EOFError) as exc:
        raise CheckpointError(f"{file} cannot be read as a PyTorch weight file (a zip-format "
                              f"torch.save is needed): {_one_line(exc)}") from None
    if not isinstance(state, dict) or not all(
            isinstance(key, str) and isinstance(value, torch.Tensor)
            for key, value in state.items()):
        raise CheckpointError(f"{file} is not a state dict (names to tensors)")
    return state


def _safetensors_dtype(code: str, file: Path) -> torch.dtype:
    import torch

    dtypes = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
              "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32,
              "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
    if code not in dtypes:
        raise CheckpointError(f"{file} holds tensors of dtype {code}, which recover does not "
                              "support")
    return dtypes[code]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _skipped(name: str) -> bool:
    return name.endswith(SKIPPED_BUFFERS)


def _vocabulary_grows(name: str, base: tuple[int, ...], delta: tuple[int, ...]) -> bool:
    return (name.endswith(VOCABULARY_TENSORS) and len(base) == len(delta) >= 1
            and base[0] < delta[0] and base[1:] == delta[1:])


def _shape(shape: tuple[int, ...]) -> str:
    return f"[{', '.join(map(str, shape))}]"


def _check_pairs(base: _Weights, delta: _Weights) -> tuple[list[str], tuple[int, int] | None]:
    """Raise `TensorMismatchError` unless every tensor of each side has a partner of the
    same shape on the other (the vocabulary rule aside). Returns the skipped buffers and
    (base rows, delta rows) when the delta's vocabulary is larger."""
    skipped = sorted(name for name in {*base.entries, *delta.entries} if _skipped(name))
    for one, other in ((base, delta), (delta, base)):
        missing = [name for name in one.entries
                   if name not in other.entries and not _skipped(name)]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise TensorMismatchError(
                f"tensor {missing[0]}{more} is in the {one.role} ({one.folder}) but not in "
                f"the {other.role} ({other.folder}): is the base the model the delta was "
                "made against?")
    vocabulary = None
    for name, entry in delta.entries.items():
        if _skipped(name):
            continue
        theirs = base.entries[name]
        for side, dtype in (("delta", entry.dtype), ("base", theirs.dtype)):
            if not dtype.is_floating_point:
                raise TensorMismatchError(f"tensor {name} of the {side} is "
                                          f"{str(dtype).removeprefix('torch.')}, not a "
                                          "floating-point weight")
        if theirs.shape == entry.shape:
            continue
        if _vocabulary_grows(name, theirs.shape, entry.shape):
            vocabulary = (theirs.shape[0], entry.shape[0])
            continue
        raise TensorMismatchError(
            f"tensor {name} has shape {_shape(theirs.shape)} in the base but "
            f"{_shape(entry.shape)} in the delta; only {' and '.join(VOCABULARY_TENSORS)} may "
            "differ, by the delta having more rows (added tokens)")
    return skipped, vocabulary


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def _nbytes(entry: _Entry) -> int:
    return _numel(entry.shape) * entry.dtype.itemsize


def plan_shards(sizes: dict[str, int], max_shard_bytes: int) -> list[list[str]]:
    """Tensor names grouped into shards in order, each at most `max_shard_bytes` unless one
    tensor alone is bigger (it then has a shard of its own)."""
    shards: list[list[str]] = [[]]
    filled = 0
    for name, size in sizes.items():
        if shards[-1] and filled + size > max_shard_bytes:
            shards.append([])
            filled = 0
        shards[-1].append(name)
        filled += size
    return [shard for shard in shards if shard]


def shard_names(count: int) -> list[str]:
    """The Hugging Face file names of `count` safetensors shards."""
    if count == 1:
        return ["model.safetensors"]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def _recovered(name: str, base: _Weights, delta: _Weights) -> torch.Tensor:
    """base + delta for one tensor, summed in (at least) float32, in the delta's dtype. A
    larger delta vocabulary takes the base in its leading rows."""
    import torch

    change = delta.tensor(name)
    total = change.to(torch.promote_types(change.dtype, torch.float32), copy=True)
    del change  # the delta's own copy is not needed beside its float32 one
    original = base.tensor(name)
    if original.shape[0] < total.shape[0]:
        total[: original.shape[0]].add_(original)
    else:
        total.add_(original)
    return total.to(delta.entries[name].dtype)


def _check_output(output: Path, base: Path, delta: Path, *, force: bool) -> None:
    for role, folder in (("base", base), ("delta", delta)):
        if output == folder or folder in output.parents:
            raise CheckpointError(f"the output {output} is inside the {role} folder {folder}: "
                                  "choose a folder outside it")
        if output in folder.parents:
            raise CheckpointError(f"the {role} folder {folder} is inside the output {output}: "
                                  "choose another output folder")
    if output.exists() and not output.is_dir():
        raise CheckpointError(f"the output {output} exists and is not a folder")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise OutputExistsError(f"the output folder {output} exists and is not empty: choose "
                                "another one, or pass --force to replace it")


def _check_free_space(output: Path, needed: int) -> None:
    existing = next(folder for folder in (output, *output.parents) if folder.exists())
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise CheckpointError(f"the output needs {needed / 1e9:.1f} GB but {existing} has "
                              f"{free / 1e9:.1f} GB free")


def _copy_model_files(delta: Path, staging: Path) -> tuple[list[str], list[str]]:
    copied, notes = [], []
    for name in (*CONFIG_FILES, *TOKENIZER_FILES):
        if (delta / name).is_file():
            shutil.copyfile(delta / name, staging / name)
            copied.append(name)
    if not any(name in copied for name in TOKENIZER_FILES):
        notes.append(f"the delta folder {delta} has no tokenizer files: copy the tokenizer "
                     "the character model was trained with into the output")
    return copied, notes


def recover_checkpoint(base: Path, delta: Path, output: Path, *,
                       progress: ProgressCallback | None = None, force: bool = False,
                       max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> RecoverSummary:
    """Write the model `base` + `delta` into `output` (safetensors shards, the delta's
    config and tokenizer), tensor by tensor. The output's dtype is the delta's; each sum
    is taken in float32. Refuses a non-empty `output` unless `force`; nothing is written
    before every tensor's name and shape are checked."""
    import safetensors.torch

    started = time.perf_counter()
    if max_shard_bytes < 1:
        raise CheckpointError("the largest shard must be at least one byte")
    base, delta, output = (Path(folder).expanduser().resolve()
                           for folder in (base, delta, output))
    for role, folder in (("base", base), ("delta", delta)):
        if not folder.is_dir():
            raise CheckpointError(f"the {role} folder {folder} was not found")
    _check_output(output, base, delta, force=force)
    if not (delta / "config.json").is_file():
        raise CheckpointError(f"the delta folder {delta} has no config.json (the output "
                              "needs the character model's config)")
    base_weights, delta_weights = _Weights(base, "base"), _Weights(delta, "delta")
    try:
        skipped, vocabulary = _check_pairs(base_weights, delta_weights)
        sizes = {name: _nbytes(entry) for name, entry in delta_weights.entries.items()
                 if not _skipped(name)}
        _check_free_space(output, sum(sizes.values()))
        shards = plan_shards(sizes, max_shard_bytes)
        files = shard_names(len(shards))
        done = parameters = peak_tensors = peak_bytes = 0
        with folder_written_whole(output) as staging:
            for file, shard in zip(files, shards, strict=True):
                held: dict[str, torch.Tensor] = {}
                held_bytes = 0
                for name in shard:
                    held[name] = _recovered(name, base_weights, delta_weights)
                    parameters += held[name].numel()
                    held_bytes += sizes[name]
                    peak_tensors = max(peak_tensors, len(held))
                    peak_bytes = max(peak_bytes, held_bytes)
                    done += 1
                    if progress is not None:
                        progress(done, len(sizes), name)
                safetensors.torch.save_file(held, staging / file, metadata={"format": "pt"})
                del held
            if len(files) > 1:
                weight_map = {name: file for file, shard in zip(files, shards, strict=True)
                              for name in shard}
                index = {"metadata": {"total_size": sum(sizes.values())},
                         "weight_map": dict(sorted(weight_map.items()))}
                (staging / "model.safetensors.index.json").write_text(
                    json.dumps(index, indent=2) + "\n")
            copied, notes = _copy_model_files(delta, staging)
        if skipped:
            notes.append(f"skipped {len(skipped)} {SKIPPED_BUFFERS[0]} buffer(s), which "
                         "transformers recomputes")
    except OSError as exc:  # the output's disk or permissions (inputs raise CheckpointError)
        raise CheckpointError(f"could not write the output {output}: {_one_line(exc)}") \
            from None
    finally:
        base_weights.close()
        delta_weights.close()
    dtypes = sorted({str(delta_weights.entries[name].dtype).removeprefix("torch.")
                     for name in sizes})
    return RecoverSummary(
        output=output, tensors=len(sizes), parameters=parameters, dtypes=dtypes,
        shards=len(files), bytes_written=sum(sizes.values()), vocabulary=vocabulary,
        skipped=skipped, copied=copied, notes=notes, peak_tensors_held=peak_tensors,
        peak_bytes_held=peak_bytes, seconds=round(time.perf_counter() - started, 2))
