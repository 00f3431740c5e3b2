"""Balanced presentation orders: every agent in every position equally often, so that a
judge that simply prefers the first answer shown gives every agent the same share."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import pytest

from charforge.evaluate.rotations import (
    balanced_orders,
    first_place_shares,
    pairwise_win_rates,
)

AGENTS = ["trained", "prompted", "chatgpt", "alpaca", "vicuna", "llama"]


def first_shown_wins(order: tuple[str, ...]) -> dict[str, int]:
    """A judge with nothing but position bias: it ranks the answers as they were shown."""
    return {agent: rank for rank, agent in enumerate(order, start=1)}


@pytest.mark.parametrize("n", [2, 3, 4, 5])
@pytest.mark.parametrize("blocks", [1, 2, 3])
def test_position_bias_cancels_out(n: int, blocks: int):
    agents = AGENTS[:n]
    rankings = [first_shown_wins(order) for order in balanced_orders(agents, blocks * n)]
    firsts = first_place_shares(rankings)
    pairwise = pairwise_win_rates(rankings)
    assert firsts == dict.fromkeys(sorted(agents), 1 / n)
    assert pairwise == dict.fromkeys(sorted(agents), 0.5)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("blocks", [1, 2, 3])
def test_every_agent_in_every_position_equally_often(n: int, blocks: int):
    agents = AGENTS[:n]
    orders = balanced_orders(agents, blocks * n)
    assert len(orders) == blocks * n
    for order in orders:
        assert sorted(order) == sorted(agents)
    for position in range(n):
        assert Counter(order[position] for order in orders) == dict.fromkeys(agents, blocks)
    for start in range(0, len(orders), n):  # and already within each block of n
        block = orders[start : start + n]
        assert all(len({order[p] for order in block}) == n for p in range(n))


@pytest.mark.parametrize(("n", "rounds"), [(2, 2), (4, 4), (6, 6), (3, 6), (5, 10), (5, 20)])
def test_who_follows_whom_is_balanced(n: int, rounds: int):
    """Williams' design: every ordered pair of agents stands side by side equally often."""
    agents = AGENTS[:n]
    neighbours = Counter(pair for order in balanced_orders(agents, rounds)
                         for pair in pairwise(order))
    expected = rounds // n if n % 2 == 0 else rounds // (2 * n) * 2
    assert len(neighbours) == n * (n - 1)
    assert set(neighbours.values()) == {expected}


def test_default_is_one_order_per_agent_and_small_cases_are_cyclic():
    assert balanced_orders(["a", "b"]) == [("a", "b"), ("b", "a")]
    assert balanced_orders(["a", "b", "c"]) == [("a", "b", "c"), ("b", "c", "a"),
                                                ("c", "a", "b")]
    assert balanced_orders(["solo"], 3) == [("solo",)] * 3


@pytest.mark.parametrize("rounds", [1, 2, 4, 5, 7, 0, -3])
def test_rounds_must_be_a_positive_multiple(rounds: int):
    with pytest.raises(ValueError, match="multiple of the number of agents"):
        balanced_orders(AGENTS[:3], rounds)


def test_agents_must_be_distinct_and_present():
    with pytest.raises(ValueError, match="distinct"):
        balanced_orders(["a", "b", "a"])
    with pytest.raises(ValueError, match="at least one"):
        balanced_orders([])


def test_shares_of_a_real_preference():
    rankings = [{"a": 1, "b": 2, "c": 3}, {"b": 1, "a": 2, "c": 3},
                {"a": 1, "c": 2, "b": 3}, {"a": 1, "b": 1, "c": 3}]
    assert first_place_shares(rankings) == {"a": 2.5 / 4, "b": 1.5 / 4, "c": 0.0}
    # a wins 2+1+2+1.5 of 8 comparisons, b 1+2+0+1.5, c 0+0+1+0
    assert pairwise_win_rates(rankings) == {"a": 6.5 / 8, "b": 4.5 / 8, "c": 1 / 8}


def test_shares_count_only_the_rankings_an_agent_was_in():
    rankings = [{"a": 1, "b": 2}, {"c": 1, "a": 2}, {"d": 1}, {}]
    assert first_place_shares(rankings) == {"a": 0.5, "b": 0.0, "c": 1.0, "d": 1.0}
    assert pairwise_win_rates(rankings) == {"a": 0.5, "b": 0.0, "c": 1.0}
    assert first_place_shares([]) == {} == pairwise_win_rates([])
