"""`charforge train merge`: a LoRA run folded into its base, written as one safetensors
model (`<run>-merged/` beside the run) for engines that cannot load stage tokens beside
an adapter. Beside, not inside: an adapter folder's content is part of the identity of
the work its model does, and a merged copy must not change it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from charforge.errors import CharforgeError
from charforge.files import folder_written_whole
from charforge.train.runs import find_run

MERGED_SUFFIX = "-merged"


def merge_run(workspace: Any, character_name: str, run: str | None = None) -> Path:
    """Fold the run's adapter into its base and save the whole model with the run's
    tokenizer; returns the folder. A full fine-tune is already a whole model."""
    from charforge.llm.local import LocalChatModel, _validated

    character = workspace.load_character(character_name)
    folder, record = find_run(workspace.root, character.slug, run)
    if "adapter" not in record.model:
        raise CharforgeError(f"{record.character}/{record.run} is a full fine-tune: its folder "
                             f"is already a whole model ({folder})")
    entry = {k: v for k, v in record.model.items() if k != "backend"}
    entry["adapter"] = str(folder)
    local = LocalChatModel(_validated(record.run, {**entry, "dtype": "float32",
                                                   "device": "cpu"}), name=record.run)
    local.load()
    merged = local.model.merge_and_unload()
    target = folder.with_name(folder.name + MERGED_SUFFIX)
    with folder_written_whole(target) as staging:
        merged.save_pretrained(str(staging))
        local.tokenizer.save_pretrained(str(staging))
    return target
