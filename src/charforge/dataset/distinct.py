"""Distinctiveness BLEU of a dataset's answers (PersLLM, Table 2, computed on data).

BLEU between two answers of one persona and stage (intra), between answers of two
stages of one persona (stage), and between a persona and each other persona,
averaged (inter). Lower means more distinct; PersLLM found intra about 9 times
inter on its agents' answers. A dataset whose personas do not separate here will
not teach a model to separate them either.

Every figure is the mean of sacrebleu's `sentence_bleu(a, [b])` (tokenizer "13a",
exponential smoothing, effective order) over seeded random ordered pairs of two
different answers, at most `max_pairs` pairs per comparison, so the cost does not
grow with the dataset.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from itertools import combinations
from statistics import fmean

import numpy as np
from pydantic import BaseModel, Field
from sacrebleu.metrics import BLEU

StageKey = tuple[str, str | None]


class PairCounts(BaseModel):
    """How many answer pairs each figure averages."""

    intra: int = 0
    stage: int = 0
    inter: int = 0


class PersonaDistinctiveness(BaseModel):
    """One persona's BLEU figures (0-100, 2 decimals); None where no pair exists."""

    intra: float | None = Field(description="mean over its stages, pairs within a stage")
    stage: float | None = Field(description="mean over pairs of its stages; None with < 2")
    inter: float | None = Field(description="mean over the other personas; None alone")
    answers: int
    stages: int
    pairs: PairCounts


class Distinctiveness(BaseModel):
    """Distinctiveness BLEU per persona and averaged over personas (lower = more distinct)."""

    personas: dict[str, PersonaDistinctiveness]
    average_intra: float | None
    average_stage: float | None
    average_inter: float | None
    intra_to_inter: float | None = Field(description="average_intra / average_inter")
    pairs: PairCounts = Field(description="pairs scored in all (inter pairs scored once "
                                          "for both personas)")
    max_pairs: int
    seed: int


class _Scorer:
    """Mean sentence BLEU over seeded pairs; one sacrebleu metric object reused."""

    def __init__(self, seed: int, max_pairs: int) -> None:
        self.metric = BLEU(tokenize="13a", smooth_method="exp", effective_order=True)
        self.seed, self.max_pairs = seed, max_pairs

    def _codes(self, total: int, key: str) -> np.ndarray:
        """Up to max_pairs distinct pair numbers in [0, total), seeded by `key` so one
        comparison's sample does not depend on which others are made."""
        if total <= self.max_pairs:
            return np.arange(total)
        rng = np.random.default_rng([self.seed, zlib.crc32(key.encode())])
        return np.sort(rng.choice(total, size=self.max_pairs, replace=False))

    def _mean(self, pairs: list[tuple[str, str]]) -> float | None:
        if not pairs:
            return None
        return fmean(self.metric.sentence_score(a, [b]).score for a, b in pairs)

    def within(self, answers: Sequence[str], key: str) -> tuple[float | None, int]:
        """Ordered pairs (a, b) of two different answers of one group."""
        size = len(answers)
        codes = self._codes(size * (size - 1), key)
        pairs = []
        for code in codes.tolist():
            first, rest = divmod(code, size - 1)
            second = rest + (rest >= first)
            pairs.append((answers[first], answers[second]))
        return self._mean(pairs), len(pairs)

    def across(self, left: Sequence[str], right: Sequence[str],
               key: str) -> tuple[float | None, int]:
        """Pairs with one answer from each group, either one as the hypothesis."""
        cross = len(left) * len(right)
        codes = self._codes(2 * cross, key)
        pairs = []
        for code in codes.tolist():
            flipped, rest = divmod(code, cross)
            i, j = divmod(rest, len(right))
            pairs.append((right[j], left[i]) if flipped else (left[i], right[j]))
        return self._mean(pairs), len(pairs)


def _stage_order(label: str | None) -> tuple[bool, str]:
    return label is not None, label or ""


def _average(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return fmean(present) if present else None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def distinctiveness(answers: Mapping[StageKey, Sequence[str]], *, seed: int = 0,
                    max_pairs: int = 200) -> Distinctiveness:
    """Intra, stage and inter BLEU per persona of `answers` ((persona, stage label or
    None) -> answer texts), and their averages over personas.

    intra: mean over the persona's stages of the mean BLEU of pairs within the stage;
    stage: mean over pairs of its stages of the mean BLEU of pairs across them;
    inter: mean over the other personas of the mean BLEU of pairs across the two
    (all stages pooled). Figures with no pair are None, never an error. The same
    answers, seed and max_pairs give the same figures.
    """
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be at least 1, not {max_pairs}")
    if seed < 0:
        raise ValueError(f"seed must be 0 or more, not {seed}")
    scorer = _Scorer(seed, max_pairs)
    by_persona: dict[str, dict[str | None, list[str]]] = {}
    for (persona, stage), texts in answers.items():
        by_persona.setdefault(persona, {}).setdefault(stage, []).extend(texts)
    names = sorted(by_persona)
    stages = {name: {label: by_persona[name][label]
                     for label in sorted(by_persona[name], key=_stage_order)
                     if by_persona[name][label]}
              for name in names}
    pooled = {name: [text for texts in stages[name].values() for text in texts]
              for name in names}

    inter_pairs: dict[tuple[str, str], tuple[float | None, int]] = {}
    for first, second in combinations(names, 2):
        inter_pairs[first, second] = scorer.across(pooled[first], pooled[second],
                                                   f"inter\0{first}\0{second}")

    personas: dict[str, PersonaDistinctiveness] = {}
    raw: dict[str, tuple[float | None, float | None, float | None]] = {}
    for name in names:
        intra_scores = [scorer.within(texts, f"intra\0{name}\0{label!r}")
                        for label, texts in stages[name].items()]
        stage_scores = [scorer.across(stages[name][a], stages[name][b],
                                      f"stage\0{name}\0{a!r}\0{b!r}")
                        for a, b in combinations(stages[name], 2)]
        inter_scores = [inter_pairs[(name, other) if name < other else (other, name)]
                        for other in names if other != name]
        intra = _average([score for score, _ in intra_scores])
        stage = _average([score for score, _ in stage_scores])
        inter = _average([score for score, _ in inter_scores])
        raw[name] = (intra, stage, inter)
        personas[name] = PersonaDistinctiveness(
            intra=_rounded(intra), stage=_rounded(stage), inter=_rounded(inter),
            answers=len(pooled[name]), stages=len(stages[name]),
            pairs=PairCounts(intra=sum(count for _, count in intra_scores),
                             stage=sum(count for _, count in stage_scores),
                             inter=sum(count for _, count in inter_scores)))

    average_intra = _average([raw[name][0] for name in names])
    average_stage = _average([raw[name][1] for name in names])
    average_inter = _average([raw[name][2] for name in names])
    ratio = (average_intra / average_inter
             if average_intra is not None and average_inter else None)
    return Distinctiveness(
        personas=personas, average_intra=_rounded(average_intra),
        average_stage=_rounded(average_stage), average_inter=_rounded(average_inter),
        intra_to_inter=_rounded(ratio),
        pairs=PairCounts(intra=sum(p.pairs.intra for p in personas.values()),
                         stage=sum(p.pairs.stage for p in personas.values()),
                         inter=sum(count for _, count in inter_pairs.values())),
        max_pairs=max_pairs, seed=seed)
