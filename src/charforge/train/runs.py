"""Training runs on disk: `<workspace>/models/<character>/<run>/`.

    adapter_model.safetensors + adapter_config.json   (LoRA; or model.safetensors, full)
    tokenizer files                                   (stage tokens added when used)
    README.md                                         the model card
    run.json                                          what `RunRecord` holds; written last
    training_log.jsonl                                every logged step
    checkpoints/                                      while training (removed at the end)

A run's name is its kind and its identity: a hash of the data's content, the base's
weights, the settings and (DPO) the SFT run it starts from. The same run again finds
run.json and trains nothing. Every finished run is a named local model
(`<character>/<run>`, and `<character>` for the latest), which `ask`, `models`,
serving and evaluation use like any other.

Pydantic and the standard library only: listing runs loads no torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from charforge.errors import CharforgeError

RUN_FILE = "run.json"
LOG_FILE = "training_log.jsonl"
CHECKPOINTS = "checkpoints"
# Part of every run's identity: bump when a change here trains differently.
TRAIN_VERSION = 1


class RunRecord(BaseModel):
    """What run.json says about a finished run."""

    kind: Literal["sft", "dpo"]
    run: str
    character: str
    base: dict[str, Any] = Field(description="name, source and identity of the base")
    parent: str | None = Field(default=None, description="DPO: the SFT run it starts from")
    recipe: str
    settings: dict[str, Any]
    dataset: dict[str, Any] = Field(description="folder and content hash of the data")
    data: dict[str, Any] = Field(description="samples, tokens, truncation, the mix")
    metrics: dict[str, Any] = Field(default_factory=dict, description="losses, speed, steps")
    model: dict[str, Any] = Field(description="the local model entry this run registers")
    started: str
    finished: str


def run_identity(**parts: Any) -> str:
    payload = json.dumps({"version": TRAIN_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def content_hash(*paths: Path) -> str:
    """The content of data files (and folders, file by file), as one hash."""
    from charforge.llm.weights import path_identity

    digest = hashlib.sha256()
    for path in paths:
        digest.update(json.dumps(path_identity(path), sort_keys=True).encode())
    return digest.hexdigest()[:16]


def models_dir(root: Path) -> Path:
    return Path(root) / "models"


def run_folder(root: Path, character: str, run: str) -> Path:
    return models_dir(root) / character / run


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class UnreadableRun(CharforgeError):
    """A run.json that cannot be read: the run is neither finished nor to be redone."""


def read_run(folder: Path) -> RunRecord | None:
    """The finished run in `folder`; None when it has no run.json (still training, or
    interrupted). An unreadable run.json is an error: training again would overwrite the
    adapter beside it."""
    path = folder / RUN_FILE
    if not path.is_file():
        return None
    try:
        return RunRecord.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        raise UnreadableRun(f"{path} is unreadable; restore it, or remove {folder} to train "
                            "that run again") from None


def finished_runs(root: Path, character: str | None = None) -> list[tuple[Path, RunRecord]]:
    """Every finished run (of `character`) whose run.json reads, oldest first."""
    base = models_dir(root)
    folders = sorted(base.glob(f"{character or '*'}/*/{RUN_FILE}")) if base.is_dir() else []
    runs = []
    for path in folders:
        with contextlib.suppress(UnreadableRun):  # listing goes on; training it says so
            record = read_run(path.parent)
            if record is not None:
                runs.append((path.parent, record))
    return sorted(runs, key=lambda pair: (pair[1].finished, pair[1].run))


def find_run(root: Path, character: str, run: str | None = None,
             kind: str | None = None) -> tuple[Path, RunRecord]:
    """A character's finished run by name (`sft-…`, or `<character>/sft-…`), else its
    latest (of `kind`); a one-line error naming the runs there are."""
    runs = [(folder, record) for folder, record in finished_runs(root, character)
            if kind is None or record.kind == kind]
    if run is not None:
        owner, _, wanted = run.rpartition("/")
        for folder, record in runs:
            if record.run == wanted and owner in ("", character):
                return folder, record
        known = ", ".join(record.run for _, record in runs) or "none"
        raise CharforgeError(f"no finished run {run!r} of {character}; runs: {known}")
    if not runs:
        what = f"{kind.upper()} run" if kind else "trained run"
        raise CharforgeError(f"no {what} for {character}: run charforge train sft {character} "
                             "first")
    return runs[-1]


def trained_model_entries(root: Path) -> dict[str, dict[str, Any]]:
    """`<character>/<run>` for every finished run, and `<character>` for each
    character's latest: local model entries (base plus adapter, or a full model)."""
    entries: dict[str, dict[str, Any]] = {}
    for folder, record in finished_runs(root):
        if not record.model.get("backend"):
            continue  # the prompted format: not a chat model (see sft._model_entry)
        entry = dict(record.model)
        if "adapter" in entry:
            entry["adapter"] = str(folder)
        else:
            entry["path"] = str(folder)
        entries[f"{record.character}/{record.run}"] = entry
        entries[record.character] = entry  # later runs replace earlier ones
    return entries
