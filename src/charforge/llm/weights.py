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
"""

from __future__ import annotations

import hashlib
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
