"""The evaluation statistics: means that skip missing scores, the paired bootstrap and win
rate, pairing score rows by item, and judge agreement on small hand-computed tables."""

from __future__ import annotations

import numpy as np
import pytest

from charforge.evaluate.records import ScoreRow
from charforge.evaluate.stats import (
    agreement,
    agreement_table,
    bootstrap_mean,
    krippendorff_alpha,
    mean_and_n,
    pair_scores,
    paired_bootstrap,
    win_rate,
)

RESAMPLES = 2000


def row(agent: str, item: str, score: float | None, *, judge: str = "j1", sample: int = 0,
        dimension: str = "values", character: str = "ada") -> ScoreRow:
    return ScoreRow(character=character, agent=agent, item=item, dimension=dimension,
                    judge=judge, sample=sample, score=score)


def test_mean_skips_missing_scores_and_counts_them_apart():
    assert mean_and_n([4, None, 6, None, 5]) == (5.0, 3, 2)
    assert mean_and_n([None, None]) == (None, 0, 2)
    assert mean_and_n([]) == (None, 0, 0)


def test_bootstrap_is_deterministic_for_a_seed_and_varies_with_it():
    rng = np.random.default_rng(7)
    a, b = rng.normal(5, 1, 40), rng.normal(4.5, 1, 40)
    first = paired_bootstrap(a, b, resamples=RESAMPLES, seed=3)
    assert first == paired_bootstrap(a, b, resamples=RESAMPLES, seed=3)
    assert first != paired_bootstrap(a, b, resamples=RESAMPLES, seed=4)
    assert first.estimate == pytest.approx(float(np.mean(a - b)))
    assert first.low < first.estimate < first.high
    assert (first.n, first.level, first.resamples) == (40, 0.95, RESAMPLES)


def test_paired_interval_covers_the_true_difference():
    rng = np.random.default_rng(11)
    item_effect = rng.normal(4, 1.5, 60)
    a = item_effect + 0.5 + rng.normal(0, 0.3, 60)  # a is truly 0.5 above b
    b = item_effect + rng.normal(0, 0.3, 60)
    interval = paired_bootstrap(a, b, resamples=RESAMPLES, seed=0)
    assert interval.low < 0.5 < interval.high
    assert interval.low > 0  # and the difference is clearly there


def test_paired_interval_is_narrower_than_separate_ones_when_items_differ_a_lot():
    rng = np.random.default_rng(5)
    item_effect = rng.uniform(1, 7, 30)  # items spread over the whole scale
    a = item_effect + 0.3 + rng.normal(0, 0.1, 30)
    b = item_effect + rng.normal(0, 0.1, 30)
    paired = paired_bootstrap(a, b, resamples=RESAMPLES)
    alone_a = bootstrap_mean(a, resamples=RESAMPLES, seed=1)
    alone_b = bootstrap_mean(b, resamples=RESAMPLES, seed=2)
    assert paired.width < min(alone_a.width, alone_b.width) / 5
    # The naive interval of the difference from separate ones would not even exclude zero.
    naive_low = alone_a.estimate - alone_b.estimate - np.hypot(alone_a.width, alone_b.width) / 2
    assert naive_low < 0 < paired.low


def test_a_single_pair_gives_a_point_interval():
    interval = paired_bootstrap([5], [3], resamples=100)
    assert (interval.estimate, interval.low, interval.high) == (2.0, 2.0, 2.0)


@pytest.mark.parametrize(("a", "b", "message"), [
    ([1, 2], [1], "paired"),
    ([], [], "non-empty"),
    ([1, float("nan")], [1, 2], "missing"),
])
def test_bootstrap_refuses_bad_input(a, b, message):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(a, b, resamples=10)


def test_win_rate_counts_ties_as_half():
    assert win_rate([3, 4, 5, 6], [2, 4, 6, 1]) == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert win_rate([1, 1], [2, 2]) == 0.0


def test_pairs_average_samples_and_judges_of_one_item_first():
    rows = [
        row("a", "q1", 4, sample=0), row("a", "q1", 6, sample=1), row("a", "q1", 5, judge="j2"),
        row("b", "q1", 3),
        row("a", "q2", 2), row("b", "q2", None), row("b", "q2", 4, sample=1),
        row("a", "q3", 7), row("b", "q3", None),  # b has no score: q3 is left out
        row("a", "q4", 1),  # only a answered
        row("a", "q1", 1, dimension="memorization"), row("b", "q1", 2, dimension="memorization"),
        row("a", "q1", 3, character="bo"), row("b", "q1", 3, character="bo"),
        row("c", "q1", 7),  # another agent is ignored
    ]
    paired = pair_scores(rows, "a", "b")
    assert paired.keys == [("ada", "q1", "memorization"), ("ada", "q1", "values"),
                           ("ada", "q2", "values"), ("bo", "q1", "values")]
    assert paired.a.tolist() == [1.0, 5.0, 2.0, 3.0]
    assert paired.b.tolist() == [2.0, 3.0, 4.0, 3.0]


def test_alpha_on_a_hand_computed_table():
    # Values 1,2 | 2,3 | 3,3: observed disagreement (2 + 2 + 0) / 6 = 2/3; expected, over
    # all 30 ordered pairs of the six values, 40 / 30 = 4/3; alpha = 1 - (2/3) / (4/3).
    assert krippendorff_alpha([[1, 2], [2, 3], [3, 3]]) == pytest.approx(0.5)


def test_alpha_handles_missing_ratings_and_units_rated_once():
    # The third rater's None and the unit rated once change nothing.
    table = [[1, 2, None], [2, None, 3], [3, 3, None], [7, None, None]]
    assert krippendorff_alpha(table) == pytest.approx(0.5)


def test_perfect_agreement_is_one():
    table = [[1, 1, 1], [4, 4, 4], [7, 7, 7], [2, 2, None]]
    result = agreement(table)
    assert result.alpha == pytest.approx(1.0)
    assert (result.exact, result.within_one, result.units, result.ratings) == (1.0, 1.0, 4, 11)


def test_constant_opposite_ratings_give_negative_alpha():
    # Each unit rated 1 and 7: observed (72 + 72) / 4 = 36; expected 288 / 12 = 24.
    result = agreement([[1, 7], [7, 1]])
    assert result.alpha == pytest.approx(1 - 36 / 24)
    assert (result.exact, result.within_one) == (0.0, 0.0)


def test_a_constant_offset_of_one_is_within_one_but_not_exact():
    table = [[x, x + 1] for x in (1, 2, 3, 4, 5, 6)]
    result = agreement(table)
    assert (result.exact, result.within_one) == (0.0, 1.0)
    assert 0 < result.alpha < 1  # the offset costs some agreement, the ordering is kept


def test_agreement_shares_count_pairs_of_ratings():
    # Unit 1: pairs (4,4) (4,5) (4,5) -> 1 exact, 3 within one; unit 2: (2,6) -> none.
    result = agreement([[4, 4, 5], [2, 6, None]])
    assert result.exact == pytest.approx(1 / 4)
    assert result.within_one == pytest.approx(3 / 4)


def test_alpha_is_undefined_without_repeated_ratings_or_variation():
    assert krippendorff_alpha([[3], [4, None]]) is None
    assert krippendorff_alpha([[5, 5], [5, 5]]) is None
    assert agreement([]).model_dump() == {"alpha": None, "exact": None, "within_one": None,
                                          "units": 0, "ratings": 0}


def test_agreement_table_puts_units_in_rows_and_judge_samples_in_columns():
    rows = [
        row("a", "q1", 4, sample=0), row("a", "q1", 5, sample=1), row("a", "q1", 6, judge="j2"),
        row("b", "q1", None, sample=0), row("b", "q1", 2, sample=1),
    ]
    assert agreement_table(rows) == [[4, 5, 6], [None, 2, None]]  # raters j1/0, j1/1, j2/0
