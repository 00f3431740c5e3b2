"""`charforge dataset build`: write a character's training data and its card.

    <workspace>/datasets/<id>/
      sft.jsonl        chat records (messages + provenance)
      prompted.jsonl   Character-LLM prompted records
      stats.json       the statistics below
      README.md        dataset card with the statistics
      hf/              a `datasets.DatasetDict` (save_to_disk): train [+ test]

Export is deterministic: records come out of the store in a stable order, so
an interrupted-and-resumed generation exports the same bytes as one that ran
straight through. The folder is written aside and swapped in whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from charforge.character import Character
from charforge.dataset.build import (
    SOURCES,
    MetaPreset,
    chat_record,
    examples,
    prompted_record,
)
from charforge.errors import CharforgeError
from charforge.files import folder_written_whole
from charforge.generate.scenes import scene_yield
from charforge.store import Store
from charforge.workspace import Workspace

STAGES = ("scenes", "experiences", "protective")


class DatasetStats(BaseModel):
    """Like the Character-LLM table (scenes, words, turns), plus what was lost."""

    character: str
    name: str
    scene_outlines: int = Field(description="scenes imagined by the teacher")
    dialogues: dict[str, int] = Field(description="dialogues per source")
    words: int
    turns_per_dialogue: float
    words_per_turn: float
    thinking_turns: int
    sft_records: int
    skipped: int = Field(description="dialogues with no turn of the character")
    train: int
    test: int
    rejected: dict[str, dict[str, int]] = Field(description="stage -> reason -> count")
    failed: dict[str, int]
    acceptance: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="stage -> accepted and answered tries, all rounds")
    scenes: dict[str, Any] = Field(
        default_factory=dict, description="scene answers: asked, kept, short answers, "
        "profile paragraphs covered by accepted prompts")


class DatasetBuild(BaseModel):
    folder: Path
    stats: DatasetStats


def _in_test_split(task_id: str, fraction: float) -> bool:
    bucket = int(hashlib.sha256(task_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return bucket < fraction


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)


def _stats(store: Store, character: Character, dialogues: dict[str, int], words: int,
           turns: int, thinking: int, sft: int, skipped: int, test: int) -> DatasetStats:
    counts = {row.stage: row for row in store.stage_counts() if row.character == character.slug}
    total = sum(dialogues.values())
    return DatasetStats(
        character=character.slug, name=character.name,
        scene_outlines=counts["scenes"].records if "scenes" in counts else 0,
        dialogues=dialogues, words=words,
        turns_per_dialogue=round(turns / total, 2) if total else 0.0,
        words_per_turn=round(words / turns, 2) if turns else 0.0,
        thinking_turns=thinking, sft_records=sft, skipped=skipped, train=sft - test, test=test,
        rejected={stage: store.rejection_counts(character.slug, stage) for stage in STAGES},
        failed={stage: counts[stage].failed if stage in counts else 0 for stage in STAGES},
        acceptance={stage: dict(zip(("accepted", "tries"),
                                    store.acceptance(character.slug, stage), strict=True))
                    for stage in STAGES},
        scenes=scene_yield(store, character.slug,
                           len(character.profile_or_knowledge())).as_dict(),
    )


def build_dataset(
    workspace: Workspace,
    character_name: str,
    *,
    preset: MetaPreset = "charforge",
    test_fraction: float = 0.0,
) -> DatasetBuild:
    if not 0.0 <= test_fraction < 1.0:
        raise CharforgeError("--test-fraction must be at least 0 and below 1")
    character = workspace.load_character(character_name)
    store = workspace.store()
    try:
        sft: list[dict[str, Any]] = []
        prompted: list[dict[str, Any]] = []
        dialogues = dict.fromkeys(SOURCES, 0)
        words = turns = thinking = skipped = test = 0
        for example in examples(store, character):
            dialogues[example.source] += 1
            words += example.dialogue.words()
            turns += len(example.dialogue.turns)
            thinking += sum(t.action == "thinking" for t in example.dialogue.turns)
            prompted.append(prompted_record(character, example))
            record = chat_record(character, example, preset=preset)
            if record is None:
                skipped += 1
                continue
            record["split"] = "test" if _in_test_split(example.task_id, test_fraction) else "train"
            test += record["split"] == "test"
            sft.append(record)
        if not sft:
            raise CharforgeError(
                f"no usable dialogues for {character.short_name} yet; run: charforge generate "
                f"experiences {character.slug} (and protective), then charforge status"
            )
        stats = _stats(store, character, dialogues, words, turns, thinking, len(sft), skipped,
                       test)
    finally:
        store.close()
    folder = workspace.root / "datasets" / character.slug
    _write_folder(folder, sft, prompted, stats)
    return DatasetBuild(folder=folder, stats=stats)


async def build_dataset_async(workspace: Workspace, character_name: str, *,
                              preset: MetaPreset = "charforge",
                              test_fraction: float = 0.0) -> DatasetBuild:
    """`build_dataset` in a worker thread, so an event loop stays free."""
    return await asyncio.to_thread(build_dataset, workspace, character_name, preset=preset,
                                   test_fraction=test_fraction)


def _write_folder(folder: Path, sft: list[dict[str, Any]], prompted: list[dict[str, Any]],
                  stats: DatasetStats) -> None:
    from datasets import Dataset, DatasetDict

    with folder_written_whole(folder) as staging:
        (staging / "sft.jsonl").write_text(_jsonl(sft), encoding="utf-8")
        (staging / "prompted.jsonl").write_text(_jsonl(prompted), encoding="utf-8")
        (staging / "stats.json").write_text(stats.model_dump_json(indent=2) + "\n",
                                            encoding="utf-8")
        (staging / "README.md").write_text(dataset_card(stats), encoding="utf-8")
        splits = {}
        for split in ("train", "test"):
            rows = [_arrow_friendly(r) for r in sft if r["split"] == split]
            if rows:
                splits[split] = Dataset.from_list(rows)
        with datasets_quiet():
            DatasetDict(splits).save_to_disk(str(staging / "hf"))


@contextmanager
def datasets_quiet() -> Iterator[None]:
    """The `datasets` library's own tqdm bars off while it writes (callers show their
    own progress), back as they were afterwards."""
    import datasets

    were_off = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not were_off:
            datasets.enable_progress_bars()


def _arrow_friendly(record: dict[str, Any]) -> dict[str, Any]:
    """Every message gets a `name` (None where absent) so Arrow sees one schema."""
    messages = [{"role": m["role"], "content": m["content"], "name": m.get("name")}
                for m in record["messages"]]
    return {**record, "messages": messages}


def dataset_card(stats: DatasetStats) -> str:
    rejected = "; ".join(
        f"{stage}: " + (", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "none")
        for stage, reasons in stats.rejected.items()
    )
    return f"""---
pretty_name: "{stats.name}: role-play experiences"
tags: [role-play, character, charforge, character-llm]
---

# {stats.name}: role-play training data

Generated by charforge with Experience Reconstruction (Character-LLM): scenes imagined from
the character's profile, completed into dialogues where {stats.name} thinks and speaks, plus
protective scenes where the character shows ignorance of what it cannot know.

| scenes imagined | experiences | protective | words | turns / dialogue | words / turn |
| --- | --- | --- | --- | --- | --- |
| {stats.scene_outlines} | {stats.dialogues.get("experience", 0)} \
| {stats.dialogues.get("protective", 0)} | {stats.words} | {stats.turns_per_dialogue} \
| {stats.words_per_turn} |

- SFT records: {stats.sft_records} (train {stats.train}, test {stats.test}); dialogues without
  a turn of the character, skipped: {stats.skipped}; thinking turns: {stats.thinking_turns}.
- Teacher answers rejected, by reason: {rejected}.
- Tasks failed (endpoint errors): {", ".join(f"{k} {v}" for k, v in stats.failed.items())}.

## Files

- `sft.jsonl`: `{{"messages": [system, user (with name), assistant, ...], "character", "source",
  "task_id", "split"}}`; the character's thoughts are kept inside `<think>...</think>`.
- `prompted.jsonl`: Character-LLM's prompted format, `{{"prompt", "output", "source"}}`, turns
  ended by `<|eot|>`.
- `hf/`: the SFT records as a `datasets.DatasetDict` (`load_from_disk`).
"""
