"""PersLLM records -> training items: the latest answer to each question and each
stylized instruction, near-duplicate questions removed (cosine of MiniLM embeddings,
across stages and sources), a split by source passage with no test question close to
a train question, and the SFT chat records (meta prompt, stage token, question).

Retrieved passages and the analysis guided the teacher only: the prompt of a record
holds the meta prompt, the stage token and the question, so the agent must carry the
knowledge itself (`charforge.render.question_messages`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from charforge.character import Character
from charforge.dataset.dedup import DedupResult, SplitResult, grouped_split, near_duplicates
from charforge.render import MetaPreset, question_messages, reply_text
from charforge.store import Store

# PersLLM's near-duplicate threshold, and the most a test question may resemble any
# train question (paraphrases of one passage usually score well below 0.95).
DEDUP_THRESHOLD = 0.95
MAX_TRAIN_TEST_SIMILARITY = 0.85


@dataclass(frozen=True)
class QAItem:
    """One question and the character's answer, as the dataset uses it."""

    character: str
    source: Literal["answer", "stylized"]
    task_id: str
    question: str
    response: str
    pattern: str
    stage: str | None
    stage_token: str | None
    group: str  # what the split keeps together: the source passage, or the instruction
    question_ref: tuple[str, int] | None
    analysis: str | None = None


@dataclass(frozen=True)
class QAPrepared:
    """The items kept after dedup, their question embeddings (rows as items), their side
    of the split, and what dedup removed."""

    items: list[QAItem]
    vectors: np.ndarray
    test: list[bool]
    removed: int
    removed_examples: list[dict[str, Any]]
    split: SplitResult | None


def qa_items(store: Store, character: Character) -> list[QAItem]:
    """The latest accepted answer to each question (a question answered again, after new
    feedback or with an analysis, counts once), then each stylized instruction's."""
    groups = answer_groups(store, character)
    latest: dict[tuple[str, int], QAItem] = {}
    for record in store.records(character.slug, "answer"):
        data = record.data
        task, idx = data.get("question_ref") or (record.task_id, record.idx)
        ref = (str(task), int(idx))
        latest[ref] = QAItem(
            character=character.slug, source="answer", task_id=record.task_id,
            question=data["question"], response=data["response"], pattern=data["pattern"],
            stage=data.get("stage"), stage_token=data.get("stage_token"),
            group=groups.get(ref, f"question:{ref[0]}"), question_ref=ref,
            analysis=data.get("analysis"))
    items = list(latest.values())
    stylized: dict[tuple[Any, Any, str], QAItem] = {}  # the latest answer per instruction
    for record in store.records(character.slug, "stylized"):
        data = record.data
        stylized[(data.get("index"), data.get("stage"), data["instruction"])] = QAItem(
            character=character.slug, source="stylized", task_id=record.task_id,
            question=data["instruction"], response=data["response"], pattern="instruction",
            stage=data.get("stage"), stage_token=data.get("stage_token"),
            group=f"instruction:{data.get('index')}", question_ref=None)
    return [*items, *stylized.values()]


def answer_groups(store: Store, character: Character) -> dict[tuple[str, int], str]:
    """Each question's source passage ("knowledge:3"), the unit a split keeps whole."""
    groups = {}
    for record in store.records(character.slug, "question"):
        source = record.data.get("source") or {}
        groups[(record.task_id, record.idx)] = f"{source.get('kind')}:{source.get('index')}"
    return groups


def embed_questions(items: Sequence[QAItem]) -> np.ndarray:
    from charforge.retrieval import default_embedder

    if not items:
        return np.zeros((0, 384), dtype=np.float32)
    return default_embedder().encode([item.question for item in items])


def prepare_qa(store: Store, character: Character, *, threshold: float | None,
               test_fraction: float, seed: int) -> QAPrepared:
    """Dedup (greedy, in store order; None: none) and the leakage-free split of a
    character's items."""
    items = qa_items(store, character)
    vectors = embed_questions(items)
    dedup = (near_duplicates(vectors, threshold) if items and threshold is not None
             else DedupResult(kept=list(range(len(items))), removed=[]))
    examples = [{"removed": items[r.index].question, "kept": items[r.duplicate_of].question,
                 "similarity": round(r.similarity, 4)} for r in dedup.removed[:5]]
    kept = [items[i] for i in dedup.kept]
    kept_vectors = vectors[dedup.kept] if items else vectors
    split = None
    test = [False] * len(kept)
    if kept and test_fraction > 0:
        split = grouped_split([item.group for item in kept], test_fraction, seed=seed,
                              vectors=kept_vectors, max_similarity=MAX_TRAIN_TEST_SIMILARITY)
        test = split.test
    return QAPrepared(items=kept, vectors=kept_vectors, test=test, removed=len(dedup.removed),
                      removed_examples=examples, split=split)


def qa_record(character: Character, item: QAItem, *, split: str, preset: MetaPreset,
              with_analysis: bool) -> dict[str, Any]:
    """The SFT chat record of one item: [system (stage token first), user, assistant]."""
    messages = question_messages(character, item.question, pattern=item.pattern,
                                 stage_token=item.stage_token, preset=preset)
    analysis = item.analysis if with_analysis else None
    messages.append({"role": "assistant", "content": reply_text(item.response, analysis)})
    return {"messages": messages, "character": item.character, "source": item.source,
            "task_id": item.task_id, "split": split, "pattern": item.pattern,
            "stage": item.stage}
