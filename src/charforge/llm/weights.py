"""Cheap identities of model files: what changes when the weights change.

A task's id must change when a local model's weights or adapter change, but
hashing 14 GB at every start is out of the question. So:

- a file up to `FULL_HASH_BYTES` (adapters, configs, tokenizers, small models
  such as the embedded SmolLM2) is hashed whole;
- a larger file is known by its size, its first and last MiB, and 32 blocks of
  64 KiB spread evenly over it (about 4 MiB read whatever the size): a fine-tune
  rewrites nearly every block, and a different checkpoint has a different header
  (safetensors and GGUF both start with their tensor table);
- a folder inside a Hugging Face cache snapshot is known by the snapshot's commit id.

Results are memoised per process by (path, size, mtime), so a file is read at
most once per process.

`check_model_files` and `check_adapter_files` say whether a path looks like a model
(config and weights, or a GGUF header) from the files alone, so `charforge models`
answers without importing torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

FULL_HASH_BYTES = 512 * 1024 * 1024
_EDGE = 1024 * 1024
_BLOCK = 64 * 1024
_BLOCKS = 32
_SKIPPED_NAMES = {".DS_Store"}
_memo: dict[tuple[str, int, int], str] = {}


def file_identity(path: str | Path) -> str:
    """A content hash of the file (whole, or sampled when it is large)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _memo:
        return _memo[key]
    digest = hashlib.sha256(f"size:{stat.st_size};".encode())
    with path.open("rb") as file:
        if stat.st_size <= FULL_HASH_BYTES:
            for chunk in iter(lambda: file.read(4 * 1024 * 1024), b""):
                digest.update(chunk)
        else:
            digest.update(b"sampled;")
            offsets = [0, stat.st_size - _EDGE]
            step = stat.st_size // (_BLOCKS + 1)
            for offset in [*offsets, *(step * i for i in range(1, _BLOCKS + 1))]:
                file.seek(offset)
                digest.update(file.read(_EDGE if offset in offsets else _BLOCK))
    _memo[key] = digest.hexdigest()[:32]
    return _memo[key]


def snapshot_id(folder: Path) -> str | None:
    """The commit id of a Hugging Face cache snapshot folder
    (`.../models--org--name/snapshots/<commit>/`), else None."""
    resolved = folder.resolve()
    if resolved.parent.name == "snapshots" and resolved.parent.parent.name.startswith("models--"):
        return f"{resolved.parent.parent.name}@{resolved.name}"
    return None


def folder_identity(folder: str | Path) -> dict[str, Any]:
    """{relative file name: identity} for every file under `folder` (hidden ones
    skipped), or the snapshot id of a Hugging Face cache folder."""
    folder = Path(folder)
    snapshot = snapshot_id(folder)
    if snapshot is not None:
        return {"snapshot": snapshot}
    found: dict[str, Any] = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name in _SKIPPED_NAMES:
                continue
            path = Path(root) / name
            found[path.relative_to(folder).as_posix()] = file_identity(path)
    return found


def path_identity(path: str | Path) -> dict[str, Any]:
    """The identity of a model file or folder."""
    path = Path(path)
    if path.is_file():
        return {"file": path.name, "content": file_identity(path)}
    return {"folder": folder_identity(path)}


# -- does a path look like a model? (read from the files, nothing loaded) ------------
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
GGUF_MAGIC = b"GGUF"


class NotAModelError(ValueError):
    """A path that does not hold a loadable model (or adapter); the message says why."""


def _size(paths: list[Path]) -> str:
    total = sum(p.stat().st_size for p in paths)
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if total >= scale:
            return f"{total / scale:.1f} {unit}"
    return f"{total} B"


def check_gguf_file(path: Path) -> str:
    """'GGUF file, 105.5 MB', or NotAModelError when the file lacks the GGUF magic."""
    if not path.is_file():
        raise NotAModelError(f"{path} does not exist")
    with path.open("rb") as file:
        if file.read(4) != GGUF_MAGIC:
            raise NotAModelError(f"{path} is not a GGUF file (no GGUF header)")
    return f"GGUF file, {_size([path])}"


def _weight_files(folder: Path) -> list[Path]:
    """The weights a from_pretrained load would read: a single file, or every shard an
    index names (a missing shard raises NotAModelError)."""
    for name in _WEIGHT_INDEXES:
        index = folder / name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (ValueError, KeyError, TypeError, AttributeError):
                raise NotAModelError(f"{index} is not a weights index") from None
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise NotAModelError(f"{folder}: weight shard {missing[0]} is missing "
                                     f"({len(missing)} of {len(shards)})")
            return [folder / s for s in shards]
    return [folder / name for name in _WEIGHT_FILES if (folder / name).is_file()]


def check_model_files(path: str | Path, gguf_file: str | None = None) -> str:
    """A short description of the model at `path` (a folder with config.json and its
    weights, a folder holding `gguf_file`, or a .gguf file), read from the files alone.
    Raises NotAModelError naming what is missing."""
    path = Path(path).expanduser()
    if not path.exists():
        raise NotAModelError(f"{path} does not exist")
    if path.is_file():
        if path.suffix != ".gguf":
            raise NotAModelError(f"{path} is a file but not a .gguf model")
        return check_gguf_file(path)
    if gguf_file:
        return check_gguf_file(path / gguf_file)
    if not (path / "config.json").is_file():
        raise NotAModelError(f"{path} has no config.json (not a transformers model folder)")
    weights = _weight_files(path)
    if not weights:
        raise NotAModelError(f"{path} has config.json but no weights "
                             f"({' or '.join(_WEIGHT_FILES)})")
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise NotAModelError(f"{path} has no tokenizer ({', '.join(_TOKENIZER_FILES)})")
    if not _has_chat_template(path):
        raise NotAModelError(f"{path} has no chat template (chat_template.jinja, or "
                             "chat_template in tokenizer_config.json)")
    files = f"{len(weights)} weight files" if len(weights) > 1 else weights[0].name
    return f"config.json + {files}, {_size(weights)}, tokenizer with a chat template"


def _has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and bool(config.get("chat_template"))


def check_adapter_files(path: str | Path) -> str:
    """'adapter_model.safetensors, 1.2 MB' for a PEFT adapter folder, or NotAModelError."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise NotAModelError(f"adapter {path} is not a folder")
    if not (path / "adapter_config.json").is_file():
        raise NotAModelError(f"adapter {path} has no adapter_config.json")
    weights = [path / name for name in _ADAPTER_WEIGHTS if (path / name).is_file()]
    if not weights:
        raise NotAModelError(f"adapter {path} has no {' or '.join(_ADAPTER_WEIGHTS)}")
    return f"adapter {weights[0].name}, {_size(weights)}"
