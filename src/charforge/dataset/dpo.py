"""Preference (DPO) pairs mined from the store, in TRL's conversational format:
`{"prompt": [system, user], "chosen": [assistant], "rejected": [assistant]}`.

The chosen side is a character's accepted answer; the rejected side comes from:
- `other_character`: another character's answer to a similar question (ranked by the
  questions' cosine, the k nearest skipped, as PersLLM does: the nearest may answer
  nearly the same question well);
- `other_stage`: the same character's answer from another time stage, only where the
  prompt carries the stage token (without it the pair teaches nothing);
- `base_model`: the base model's own answer to the question (`generate base-answers`);
- `rejected_content`: the teacher's answers rejected for what they say (out of
  character, a false premise accepted), never those rejected for format (truncated,
  junk): those would teach length or noise, not persona.

A pair never has chosen == rejected, and never crosses the train/test split: both
answers come from the same side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from charforge.character import Character
from charforge.dataset.personified import QAItem, QAPrepared
from charforge.render import MetaPreset, question_messages

PairSource = Literal["other_character", "other_stage", "base_model", "rejected_content"]
PAIR_SOURCES: tuple[PairSource, ...] = ("other_character", "other_stage", "base_model",
                                        "rejected_content")
SKIP_NEAREST = 2


class SourceStats(BaseModel):
    pairs: int = 0
    chosen_words: float = 0.0
    rejected_words: float = 0.0


@dataclass
class RejectedPool:
    """Answers of other characters (and their split) to draw the rejected side from."""

    items: list[QAItem] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 384), dtype=np.float32))
    test: list[bool] = field(default_factory=list)
    _sides: dict[bool, np.ndarray] = field(default_factory=dict)

    def side(self, in_test: bool) -> np.ndarray:
        """Positions of the items on one side of the split."""
        if in_test not in self._sides:
            self._sides[in_test] = np.flatnonzero(np.array(self.test, dtype=bool) == in_test)
        return self._sides[in_test]

    @classmethod
    def of(cls, prepared: Sequence[QAPrepared]) -> RejectedPool:
        items, vectors, test = [], [], []
        for part in prepared:
            for item, vector, in_test in zip(part.items, part.vectors, part.test, strict=True):
                if item.source == "answer":
                    items.append(item)
                    vectors.append(vector)
                    test.append(in_test)
        if not items:
            return cls()
        return cls(items, np.stack(vectors).astype(np.float32), test)


def _same(first: str, second: str) -> bool:
    return " ".join(first.lower().split()) == " ".join(second.lower().split())


def _words(text: str) -> int:
    return len(text.split())


def mine_pairs(character: Character, own: QAPrepared, others: RejectedPool,
               base_answers: Mapping[tuple[str, int], str],
               rejected_answers: Mapping[tuple[str, int], Sequence[str]], *,
               preset: MetaPreset = "charforge",
               skip_nearest: int = SKIP_NEAREST) -> tuple[list[dict[str, Any]],
                                                          dict[str, SourceStats]]:
    """Every pair the sources give for the character's answers, and per-source counts
    and mean lengths (chosen and rejected words)."""
    pairs: list[dict[str, Any]] = []
    stats = {source: SourceStats() for source in PAIR_SOURCES}
    totals = {source: [0, 0] for source in PAIR_SOURCES}

    def add(item: QAItem, in_test: bool, rejected: str, source: PairSource) -> None:
        if not rejected.strip() or _same(item.response, rejected):
            return
        pairs.append({
            "prompt": question_messages(character, item.question, pattern=item.pattern,
                                        stage_token=item.stage_token, preset=preset),
            "chosen": [{"role": "assistant", "content": item.response}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "source": source, "character": item.character, "task_id": item.task_id,
            "split": "test" if in_test else "train",
        })
        stats[source].pairs += 1
        totals[source][0] += _words(item.response)
        totals[source][1] += _words(rejected)

    answers = [(i, item) for i, item in enumerate(own.items) if item.source == "answer"]
    staged = _StageSides(own)
    for position, item in answers:
        in_test = own.test[position]
        vector = own.vectors[position]
        other = _other_character(others, vector, in_test, item, skip_nearest)
        if other is not None:
            add(item, in_test, other, "other_character")
        if item.stage_token:
            other_stage = _other_stage(own, staged, vector, in_test, item)
            if other_stage is not None:
                add(item, in_test, other_stage, "other_stage")
        if item.question_ref is not None:
            base = base_answers.get(item.question_ref)
            if base:
                add(item, in_test, base, "base_model")
            for text in rejected_answers.get(item.question_ref, ()):
                add(item, in_test, text, "rejected_content")
    for source, (chosen, rejected) in totals.items():
        count = stats[source].pairs
        if count:
            stats[source].chosen_words = round(chosen / count, 1)
            stats[source].rejected_words = round(rejected / count, 1)
    return pairs, stats


def _other_character(pool: RejectedPool, vector: np.ndarray, in_test: bool, item: QAItem,
                     skip_nearest: int) -> str | None:
    """The answer of another character to the (k+1)-th most similar question on the same
    side of the split (its first that differs from the chosen answer)."""
    side = pool.side(in_test)
    if len(side) <= skip_nearest:
        return None
    scores = pool.vectors[side] @ vector
    wanted = min(len(side), skip_nearest + 16)  # a few spares for equal answers
    while True:
        top = np.argpartition(-scores, wanted - 1)[:wanted]
        ranked = top[np.lexsort((top, -scores[top]))]  # best first, ties by position
        for index in ranked[skip_nearest:]:
            candidate = pool.items[side[index]]
            if not _same(candidate.response, item.response):
                return candidate.response
        if wanted == len(side):
            return None
        wanted = len(side)


def _other_stage(own: QAPrepared, staged: _StageSides, vector: np.ndarray, in_test: bool,
                 item: QAItem) -> str | None:
    """The character's answer, from another stage, to the most similar question on the
    same side of the split."""
    eligible = staged.eligible(item.stage, in_test)
    if not eligible.any():
        return None
    scores = np.where(eligible, own.vectors @ vector, -np.inf)
    for index in np.argsort(-scores, kind="stable"):
        if not eligible[index]:
            break
        if not _same(own.items[index].response, item.response):
            return own.items[index].response
    return None


class _StageSides:
    """Which of a character's items may give an `other_stage` answer: computed once, as
    arrays, per (stage, side of the split)."""

    def __init__(self, own: QAPrepared) -> None:
        self.stage = np.array([str(item.stage) for item in own.items], dtype=object)
        self.base = np.array([item.source == "answer" and bool(item.stage_token)
                              for item in own.items], dtype=bool)
        self.test = np.array(own.test, dtype=bool)
        self._cache: dict[tuple[str, bool], np.ndarray] = {}

    def eligible(self, stage: str | None, in_test: bool) -> np.ndarray:
        key = (str(stage), in_test)
        if key not in self._cache:
            self._cache[key] = self.base & (self.stage != key[0]) & (self.test == in_test)
        return self._cache[key]
