"""The statistics behind the evaluation report, with numpy and nothing else.

- `mean_and_n`: a mean that never counts a missing score (`None`), with the count of the
  scores it used and, apart, of the missing ones;
- `pair_scores`, `paired_bootstrap`, `win_rate`: two agents compared on the very items
  both were scored on. Items differ far more from each other than two agents' answers to
  one item do, so resampling the pairs together gives a much narrower (and still honest)
  interval for the difference than two separate intervals would;
- `agreement_table`, `krippendorff_alpha`, `agreement`: how far several judges, or one
  judge's samples at a temperature above zero, agree on the same answers.

Every random draw comes from a generator seeded by the caller, so a report is reproducible.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from charforge.evaluate.records import ScoreRow

PairKey = tuple[str, str, str]  # (character, item, dimension)
# Resampled values drawn per block, so that memory stays bounded on large inputs.
_BLOCK_VALUES = 2_000_000


class MeanN(NamedTuple):
    """A mean over the scores given (None when there were none), how many, and how many
    judgments gave no score."""

    mean: float | None
    n: int
    unscored: int


class Interval(BaseModel):
    """A point estimate and its bootstrap percentile interval."""

    model_config = ConfigDict(extra="forbid")

    estimate: float
    low: float
    high: float
    level: float = Field(description="the interval's coverage, e.g. 0.95")
    n: int = Field(description="values (or pairs) the estimate rests on")
    resamples: int

    @property
    def width(self) -> float:
        return self.high - self.low


class Paired(NamedTuple):
    """Two agents' scores on the items both were scored on, in the order of `keys`."""

    keys: list[PairKey]
    a: np.ndarray
    b: np.ndarray


class Agreement(BaseModel):
    """Agreement among the ratings of the same units (answers)."""

    model_config = ConfigDict(extra="forbid")

    alpha: float | None = Field(description="Krippendorff's alpha, interval metric; None "
                                "when undefined (no unit rated twice, or no variation)")
    exact: float | None = Field(description="share of pairs of ratings of one unit that "
                                "are equal")
    within_one: float | None = Field(description="share of pairs of ratings of one unit "
                                     "at most 1 apart")
    units: int = Field(description="units rated at least twice (the only ones counted)")
    ratings: int = Field(description="ratings of those units")


def mean_and_n(scores: Iterable[float | None]) -> MeanN:
    """The mean of the scores that are not None, their count, and the count of Nones."""
    given: list[float] = []
    unscored = 0
    for score in scores:
        if score is None:
            unscored += 1
        else:
            given.append(float(score))
    mean = float(np.mean(given)) if given else None
    return MeanN(mean, len(given), unscored)


def _as_values(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name}: expected a non-empty list of numbers")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: holds a missing or infinite value; drop it first")
    return array


def _resampled_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """The means of `resamples` resamples (with replacement) of `values`."""
    rng = np.random.default_rng(seed)
    n = values.size
    block = max(1, _BLOCK_VALUES // n)
    means = np.empty(resamples)
    for start in range(0, resamples, block):
        rows = min(block, resamples - start)
        means[start:start + rows] = values[rng.integers(0, n, size=(rows, n))].mean(axis=1)
    return means


def bootstrap_mean(values: Sequence[float], *, resamples: int = 10_000, seed: int = 0,
                   level: float = 0.95) -> Interval:
    """The mean of `values` with its percentile bootstrap interval."""
    array = _as_values(values, "values")
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    if not 0 < level < 1:
        raise ValueError("level must lie strictly between 0 and 1")
    means = _resampled_means(array, resamples, seed)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(estimate=float(array.mean()), low=float(low), high=float(high),
                    level=level, n=int(array.size), resamples=resamples)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, resamples: int = 10_000,
                     seed: int = 0, level: float = 0.95) -> Interval:
    """The mean difference a - b over paired items, with a percentile bootstrap interval
    that resamples items, each pair kept together."""
    first, second = _as_values(a, "a"), _as_values(b, "b")
    if first.size != second.size:
        raise ValueError(f"a and b must be paired: {first.size} values against {second.size}")
    return bootstrap_mean(first - second, resamples=resamples, seed=seed, level=level)


def win_rate(a: Sequence[float], b: Sequence[float]) -> float:
    """The share of paired items on which a scored above b, a tie counting one half."""
    first, second = _as_values(a, "a"), _as_values(b, "b")
    if first.size != second.size:
        raise ValueError(f"a and b must be paired: {first.size} values against {second.size}")
    return float(np.mean((first > second) + 0.5 * (first == second)))


def _item_means(rows: Iterable[ScoreRow], agent: str) -> dict[PairKey, float]:
    """One agent's mean score per (character, item, dimension), over samples and judges."""
    grouped: dict[PairKey, list[float | None]] = defaultdict(list)
    for row in rows:
        if row.agent == agent:
            grouped[(row.character, row.item, row.dimension)].append(row.score)
    means = {key: mean_and_n(scores).mean for key, scores in grouped.items()}
    return {key: mean for key, mean in means.items() if mean is not None}


def pair_scores(rows: Sequence[ScoreRow], agent_a: str, agent_b: str) -> Paired:
    """Agents a and b paired by (character, item, dimension): each side is the mean of its
    scores of that item over samples and judges; an item either side has no score for is
    left out."""
    first, second = _item_means(rows, agent_a), _item_means(rows, agent_b)
    keys = sorted(first.keys() & second.keys())
    return Paired(keys, np.array([first[k] for k in keys], dtype=float),
                  np.array([second[k] for k in keys], dtype=float))


def agreement_table(rows: Iterable[ScoreRow]) -> list[list[float | None]]:
    """Units x raters, for agreement: a unit is one (character, agent, item, dimension), a
    rater one (judge, sample); a missing score, or a rater who never saw the unit, is None.
    Pass the rows of one dimension (one scale) at a time."""
    units: dict[tuple[str, str, str, str], dict[tuple[str, int], float | None]] = {}
    raters: set[tuple[str, int]] = set()
    for row in rows:
        unit = (row.character, row.agent, row.item, row.dimension)
        units.setdefault(unit, {})[(row.judge, row.sample)] = row.score
        raters.add((row.judge, row.sample))
    order = sorted(raters)
    return [[ratings.get(rater) for rater in order] for _, ratings in sorted(units.items())]


def _pairable(table: Iterable[Sequence[float | None]]) -> list[np.ndarray]:
    """The ratings of each unit rated at least twice, missing ones dropped."""
    units = []
    for row in table:
        values = np.array([float(v) for v in row if v is not None and not math.isnan(v)])
        if values.size >= 2:
            units.append(values)
    return units


def krippendorff_alpha(table: Iterable[Sequence[float | None]]) -> float | None:
    """Krippendorff's alpha with the interval (squared difference) metric over a units x
    raters table (None for a missing rating): 1 - observed / expected disagreement, 1 for
    perfect agreement, 0 for agreement at chance, below 0 for systematic disagreement.
    None when undefined: no unit rated twice, or every rating the same value."""
    units = _pairable(table)
    if not units:
        return None
    pooled = np.concatenate(units)
    if np.ptp(pooled) == 0:
        return None
    n = pooled.size
    # Over ordered pairs within a unit, sum (v_i - v_j)^2 = 2 m * (sum of squared deviations).
    observed = sum(2 * u.size * np.sum((u - u.mean()) ** 2) / (u.size - 1) for u in units) / n
    expected = 2 * np.sum((pooled - pooled.mean()) ** 2) / (n - 1)
    return float(1 - observed / expected)


def agreement(table: Iterable[Sequence[float | None]]) -> Agreement:
    """Alpha, and the shares of pairs of ratings of one unit that are equal and that are at
    most 1 apart (every pair within a unit counts once, so units rated more often weigh
    more)."""
    units = _pairable(table)
    pairs = exact = within = 0
    for values in units:
        upper = np.triu_indices(values.size, k=1)
        gaps = np.abs(values[:, None] - values[None, :])[upper]
        pairs += gaps.size
        exact += int(np.sum(gaps == 0))
        within += int(np.sum(gaps <= 1))
    return Agreement(
        alpha=krippendorff_alpha(units),
        exact=exact / pairs if pairs else None,
        within_one=within / pairs if pairs else None,
        units=len(units), ratings=int(sum(u.size for u in units)))
