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
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from charforge.character import STAGE_TOKENS, Character
from charforge.dataset.build import (
    SOURCES,
    Example,
    MetaPreset,
    chat_record,
    examples,
    prompted_record,
)
from charforge.dataset.dedup import (
    DedupResult,
    SplitResult,
    dialogue_duplicates,
    grouped_split,
)
from charforge.dataset.dpo import RejectedPool, mine_pairs
from charforge.dataset.personified import (
    DEDUP_THRESHOLD,
    MAX_TRAIN_TEST_SIMILARITY,
    QAItem,
    QAPrepared,
    prepare_qa,
    qa_items,
    qa_record,
)
from charforge.errors import CharforgeError
from charforge.files import folder_written_whole
from charforge.generate.scenes import scene_yield
from charforge.parse.persona import response_of
from charforge.records import CONTENT_REASONS
from charforge.store import Store
from charforge.workspace import Workspace

STAGES = ("scenes", "experiences", "protective")
PERSONIFIED_STAGES = ("questions", "answers", "stylized", "base-answers")
# Experience dialogues this alike (Jaccard of their word 5-grams) are near-duplicates.
DIALOGUE_THRESHOLD = 0.5


class DatasetStats(BaseModel):
    """Like the Character-LLM table (scenes, words, turns), plus what was lost, the PersLLM
    records, what dedup removed, the split and the preference pairs."""

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
    qa_records: dict[str, int] = Field(
        default_factory=dict, description="PersLLM records kept: answers per pattern, stylized")
    stage_tokens: list[str] = Field(default_factory=list,
                                    description="stage tokens the records carry")
    dedup: dict[str, Any] = Field(default_factory=dict,
                                  description="near-duplicates removed: questions, dialogues")
    split: dict[str, Any] = Field(default_factory=dict, description="how train and test were "
                                  "split, and the closest train/test question pair")
    dpo: dict[str, Any] | None = Field(default=None, description="preference pairs per source, "
                                       "with chosen and rejected lengths")
    distinctiveness: dict[str, Any] | None = Field(
        default=None, description="BLEU of answers within a persona, between its stages and "
        "between personas (lower: more distinct)")


class DatasetBuild(BaseModel):
    folder: Path
    stats: DatasetStats


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)


def _stage_counts(store: Store, character: Character) -> dict[str, Any]:
    counts = {row.stage: row for row in store.stage_counts() if row.character == character.slug}
    stages = [*STAGES, *(stage for stage in PERSONIFIED_STAGES if stage in counts)]
    return {
        "scene_outlines": counts["scenes"].records if "scenes" in counts else 0,
        "rejected": {stage: store.rejection_counts(character.slug, stage) for stage in stages},
        "failed": {stage: counts[stage].failed if stage in counts else 0 for stage in stages},
        "acceptance": {stage: dict(zip(("accepted", "tries"),
                                       store.acceptance(character.slug, stage), strict=True))
                       for stage in stages},
        "scenes": scene_yield(store, character.slug,
                              len(character.profile_or_knowledge())).as_dict(),
    }


def _dialogue_text(example: Example) -> str:
    return "\n".join([example.dialogue.background,
                      *(turn.content for turn in example.dialogue.turns)])


def _example_group(store: Store, example: Example) -> str:
    """What a split keeps together: an experience's scene prompt (its sibling scenes come
    from one profile window), or the protective scene itself."""
    if example.source == "experience":
        parents = store.parents_of(example.task_id)
        if parents:
            return f"scenes:{parents[0][0]}"
    return f"{example.source}:{example.task_id}"


def check_build_options(test_fraction: float, dedup_threshold: float,
                        dialogue_threshold: float, seed: int = 0) -> None:
    if not 0.0 <= test_fraction < 1.0:
        raise CharforgeError("--test-fraction must be at least 0 and below 1")
    if seed < 0:
        raise CharforgeError(f"--seed must be 0 or more; given {seed}")
    if not 0.0 < dedup_threshold <= 1.0:
        raise CharforgeError(f"--dedup-threshold must be above 0 and at most 1 (a cosine); "
                             f"given {dedup_threshold}")
    if not 0.0 < dialogue_threshold <= 1.0:
        raise CharforgeError(f"--dialogue-threshold must be above 0 and at most 1 (a "
                             f"Jaccard overlap); given {dialogue_threshold}")


def build_dataset(
    workspace: Workspace,
    character_name: str,
    *,
    preset: MetaPreset = "charforge",
    test_fraction: float = 0.0,
    dedup_threshold: float = DEDUP_THRESHOLD,
    dialogue_threshold: float = DIALOGUE_THRESHOLD,
    with_analysis: bool = False,
    dpo: bool = False,
    seed: int = 0,
    dedup: bool = True,
) -> DatasetBuild:
    """Every kind of record of a character -> SFT chat records (both kinds in one
    dataset), prompted records, optional DPO pairs, statistics and a card. No record in
    the store changes; the folder is replaced whole, only when everything succeeded.
    `dedup=False` keeps near-duplicates (with no test split, that is the dataset an
    earlier release built)."""
    check_build_options(test_fraction, dedup_threshold, dialogue_threshold, seed)
    question_threshold = dedup_threshold if dedup else None
    dialogue_cut = dialogue_threshold if dedup else None
    character = workspace.load_character(character_name)
    store = workspace.store()
    try:
        if dpo:  # before any embedding: a build that cannot give pairs says so at once
            _check_dpo_sources(workspace, store, character)
        er = _experience_records(store, character, preset=preset,
                                 test_fraction=test_fraction, threshold=dialogue_cut,
                                 seed=seed)
        qa = (prepare_qa(store, character, threshold=question_threshold,
                         test_fraction=test_fraction, seed=seed)
              if _has_any(store, character.slug, ("answer", "stylized")) else None)
        if not er.sft and not (qa and qa.items):
            raise CharforgeError(
                f"no usable records for {character.short_name} yet; run: charforge generate "
                f"experiences {character.slug} (and protective), or charforge generate "
                f"questions then answers {character.slug}; then charforge status"
            )
        qa_rows = [qa_record(character, item, split="test" if in_test else "train",
                             preset=preset, with_analysis=with_analysis)
                   for item, in_test in zip(qa.items, qa.test, strict=True)] if qa else []
        pairs: list[dict[str, Any]] = []
        dpo_stats: dict[str, Any] | None = None
        if dpo:  # other characters' answers, prepared (embedded, split) as their datasets are
            others = _other_personas(workspace, store, character, question_threshold,
                                     test_fraction, seed)
            pairs, dpo_stats = _dpo_pairs(store, character, qa, others, preset)
        other_answers = ([item for other in _other_characters(workspace, store, character)
                          for item in qa_items(store, other)] if qa and qa.items else [])
        sft = [*er.sft, *qa_rows]
        test = sum(row["split"] == "test" for row in sft)
        stats = DatasetStats(
            character=character.slug, name=character.name, dialogues=er.dialogues,
            words=er.words, turns_per_dialogue=er.turns_per_dialogue,
            words_per_turn=er.words_per_turn, thinking_turns=er.thinking,
            sft_records=len(sft), skipped=er.skipped, train=len(sft) - test, test=test,
            qa_records=_qa_counts(qa), stage_tokens=_tokens(qa),
            dedup={"dialogues": er.dedup, **({"questions": _qa_dedup(qa, question_threshold)}
                                            if qa else {})},
            split=_split_stats(er, qa, test_fraction, seed), dpo=dpo_stats,
            distinctiveness=_distinctiveness(qa, other_answers),
            **_stage_counts(store, character),
        )
    finally:
        store.close()
    folder = workspace.root / "datasets" / character.slug
    _write_folder(folder, sft, er.prompted, stats, pairs if dpo else None)
    return DatasetBuild(folder=folder, stats=stats)


def _has_any(store: Store, slug: str, kinds: tuple[str, ...]) -> bool:
    return any(next(iter(store.records(slug, kind, page=1)), None) is not None
               for kind in kinds)


@dataclass
class _ExperienceRecords:
    sft: list[dict[str, Any]] = field(default_factory=list)
    prompted: list[dict[str, Any]] = field(default_factory=list)
    dialogues: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOURCES, 0))
    words: int = 0
    turns: int = 0
    thinking: int = 0
    skipped: int = 0
    dedup: dict[str, Any] = field(default_factory=dict)
    split: SplitResult | None = None

    @property
    def turns_per_dialogue(self) -> float:
        total = sum(self.dialogues.values())
        return round(self.turns / total, 2) if total else 0.0

    @property
    def words_per_turn(self) -> float:
        return round(self.words / self.turns, 2) if self.turns else 0.0


def _experience_records(store: Store, character: Character, *, preset: MetaPreset,
                        test_fraction: float, threshold: float | None,
                        seed: int) -> _ExperienceRecords:
    """Experience and protective dialogues: near-duplicates removed (word 5-gram Jaccard),
    split by scene, rendered in both formats."""
    found = list(examples(store, character))
    dedup = (dialogue_duplicates([_dialogue_text(e) for e in found], threshold)
             if threshold is not None else DedupResult(kept=list(range(len(found))),
                                                       removed=[]))
    kept = [found[i] for i in dedup.kept]
    result = _ExperienceRecords(dedup={"threshold": threshold, "removed": len(dedup.removed),
                                       "examples": [{"removed": found[r.index].task_id,
                                                     "kept": found[r.duplicate_of].task_id,
                                                     "similarity": round(r.similarity, 4)}
                                                    for r in dedup.removed[:5]]})
    records = []
    for example in kept:
        result.dialogues[example.source] += 1
        result.words += example.dialogue.words()
        result.turns += len(example.dialogue.turns)
        result.thinking += sum(t.action == "thinking" for t in example.dialogue.turns)
        result.prompted.append(prompted_record(character, example))
        record = chat_record(character, example, preset=preset)
        if record is None:
            result.skipped += 1
            continue
        records.append((example, record))
    test = [False] * len(records)
    if records and test_fraction > 0:
        result.split = grouped_split([_example_group(store, e) for e, _ in records],
                                     test_fraction, seed=seed)
        test = result.split.test
    for (_, record), in_test in zip(records, test, strict=True):
        record["split"] = "test" if in_test else "train"
        result.sft.append(record)
    return result


def _other_personas(workspace: Workspace, store: Store, character: Character,
                    threshold: float | None, test_fraction: float,
                    seed: int) -> list[QAPrepared]:
    """The other characters' answers, prepared (dedup, split) exactly as their own
    datasets are: the other side of preference pairs and of the BLEU comparison."""
    return [prepare_qa(store, other, threshold=threshold, test_fraction=test_fraction,
                       seed=seed) for other in _other_characters(workspace, store, character)]


def _other_characters(workspace: Workspace, store: Store,
                      character: Character) -> list[Character]:
    """The workspace's other characters that have answers."""
    return [other for other in workspace.characters()
            if other.slug != character.slug and _has_any(store, other.slug, ("answer",))]


def _check_dpo_sources(workspace: Workspace, store: Store, character: Character) -> None:
    """Refuse --dpo when no source of rejected answers exists at all (other characters'
    answers, answers of two stages, base-model answers, answers rejected for content)."""
    slug = character.slug
    if not _has_any(store, slug, ("answer",)):
        raise CharforgeError(f"--dpo needs answers of {character.short_name}: run charforge "
                             f"generate questions, then answers {slug}")
    stages = {record.data.get("stage") for record in store.records(slug, "answer")}
    if (len(stages - {None}) >= 2 or _has_any(store, slug, ("base_answer",))
            or store.rejected_answers(slug, "answers", CONTENT_REASONS)
            or _other_characters(workspace, store, character)):
        return
    raise CharforgeError(
        f"no DPO pairs for {character.short_name}: no other character has answers, no answers "
        f"span two stages, no base-model answers (charforge generate base-answers {slug} -m "
        "BASE) and no answers rejected for content; add one of them")


def _dpo_pairs(store: Store, character: Character, qa: QAPrepared | None,
               others: list[QAPrepared], preset: MetaPreset,
               ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    if qa is None or not any(item.source == "answer" for item in qa.items):
        raise CharforgeError(f"--dpo needs answers of {character.short_name}: run charforge "
                             f"generate questions, then answers {character.slug}")
    base = {tuple(r.data["question_ref"]): r.data["response"]
            for r in store.records(character.slug, "base_answer")}
    rejected: dict[tuple[str, int], list[str]] = {}
    for answer in store.rejected_answers(character.slug, "answers", CONTENT_REASONS):
        # The answer judged is the last turn, or the one before the check that judged it.
        turn = -2 if answer.reason == "accepted_false_premise" else -1
        if len(answer.turns) < -turn:
            continue
        text = response_of(answer.turns[turn], json_mode=answer.params.get("mode") == "json",
                           with_analysis=bool(answer.inputs.get("cot")))
        if text and answer.parents:
            rejected.setdefault(tuple(answer.parents[0]), []).append(text)  # type: ignore[arg-type]
    pairs, per_source = mine_pairs(character, qa, RejectedPool.of(others), base,  # type: ignore[arg-type]
                                   rejected, preset=preset)
    if not pairs:
        raise CharforgeError(
            f"no DPO pairs for {character.short_name}: the sources there are gave no pair on "
            "the same side of the split (too few answers?); add answers, another character's "
            "answers or base-model answers")
    return pairs, {"pairs": len(pairs), "train": sum(p["split"] == "train" for p in pairs),
                   "test": sum(p["split"] == "test" for p in pairs),
                   "sources": {k: v.model_dump() for k, v in per_source.items()}}


def _qa_counts(qa: QAPrepared | None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in qa.items if qa else []:
        key = "stylized" if item.source == "stylized" else item.pattern
        counts[key] = counts.get(key, 0) + 1
    return counts


def _tokens(qa: QAPrepared | None) -> list[str]:
    used = {item.stage_token for item in qa.items if item.stage_token} if qa else set()
    return [token for token in STAGE_TOKENS if token in used]


def _qa_dedup(qa: QAPrepared, threshold: float | None) -> dict[str, Any]:
    return {"threshold": threshold, "removed": qa.removed, "examples": qa.removed_examples}


def _split_stats(er: _ExperienceRecords, qa: QAPrepared | None, test_fraction: float,
                 seed: int) -> dict[str, Any]:
    split: dict[str, Any] = {"test_fraction": test_fraction, "seed": seed,
                             "max_train_test_similarity": MAX_TRAIN_TEST_SIMILARITY}
    if er.split is not None:
        split["dialogues"] = {"achieved_fraction": round(er.split.achieved_fraction, 4)}
    if qa is not None and qa.split is not None:
        closest = qa.split.closest
        split["questions"] = {
            "achieved_fraction": round(qa.split.achieved_fraction, 4),
            "groups_moved_to_train": qa.split.moved_groups,
            "closest": None if closest is None else {
                "train": qa.items[closest.train].question,
                "test": qa.items[closest.test].question,
                "similarity": round(closest.similarity, 4)},
        }
    return split


def _distinctiveness(qa: QAPrepared | None,
                     other_answers: list[QAItem]) -> dict[str, Any] | None:
    """BLEU of the character's answers (as kept) against each other, across its stages
    and against other characters' latest answers."""
    answers: dict[tuple[str, str | None], list[str]] = {}
    for item in [*(qa.items if qa else []), *other_answers]:
        if item.source == "answer":
            answers.setdefault((item.character, item.stage), []).append(item.response)
    if not answers:
        return None
    from charforge.dataset.distinct import distinctiveness  # sacrebleu, only when needed

    return distinctiveness(answers).model_dump()


async def build_dataset_async(workspace: Workspace, character_name: str,
                              **options: Any) -> DatasetBuild:
    """`build_dataset` in a worker thread, so an event loop stays free."""
    return await asyncio.to_thread(build_dataset, workspace, character_name, **options)


def _write_folder(folder: Path, sft: list[dict[str, Any]], prompted: list[dict[str, Any]],
                  stats: DatasetStats, dpo: list[dict[str, Any]] | None = None) -> None:
    from datasets import Dataset, DatasetDict

    with folder_written_whole(folder) as staging:
        (staging / "sft.jsonl").write_text(_jsonl(sft), encoding="utf-8")
        if dpo is not None:
            (staging / "dpo.jsonl").write_text(_jsonl(dpo), encoding="utf-8")
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
    """Every message gets a `name`, every record a `pattern` and a `stage` (None where
    absent), so Arrow sees one schema for both kinds of records."""
    messages = [{"role": m["role"], "content": m["content"], "name": m.get("name")}
                for m in record["messages"]]
    return {"pattern": None, "stage": None, **record, "messages": messages}


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
{_personified_card(stats)}"""


def _personified_card(stats: DatasetStats) -> str:
    """The card's PersLLM part: records, dedup, split, DPO pairs, distinctiveness."""
    lines = []
    if stats.qa_records:
        kinds = ", ".join(f"{kind} {count}" for kind, count in stats.qa_records.items())
        tokens = " ".join(stats.stage_tokens) or "none"
        lines += ["", "## Personified records (PersLLM)", "",
                  f"- Records: {kinds}; stage tokens: {tokens} (first line of the system "
                  "message).",
                  "- Prompts hold the meta prompt, the stage token and the question only; the "
                  "retrieved passages guided the teacher."]
    for kind, part in stats.dedup.items():
        lines.append(f"- Near-duplicate {kind} removed: {part.get('removed', 0)} "
                     f"(threshold {part.get('threshold')}).")
    closest = stats.split.get("questions", {}).get("closest")
    if closest:
        lines.append(f"- Closest train/test questions: cosine {closest['similarity']} "
                     f"(at most {stats.split.get('max_train_test_similarity')} allowed).")
    if stats.dpo:
        sources = ", ".join(f"{k} {v['pairs']} (chosen {v['chosen_words']} words, rejected "
                            f"{v['rejected_words']})" for k, v in stats.dpo["sources"].items()
                            if v["pairs"])
        lines.append(f"- `dpo.jsonl`: {stats.dpo['pairs']} preference pairs "
                     f"(train {stats.dpo['train']}, test {stats.dpo['test']}): {sources}.")
    if stats.distinctiveness:
        d = stats.distinctiveness
        lines.append(f"- Distinctiveness (BLEU of answers; lower is more distinct): within a "
                     f"persona {d.get('average_intra')}, between stages "
                     f"{d.get('average_stage')}, between personas {d.get('average_inter')}.")
    return "\n".join(lines) + ("\n" if lines else "")
