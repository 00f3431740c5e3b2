"""Balanced orders for showing several agents' answers to a ranking judge, and the shares
of wins read from its rankings.

Judges favour answers by where they are shown (most often the first). PersLLM's ranking
judge therefore sees the same answers several times, in rotations chosen so that every
agent stands in every position equally often; any preference for a position then lands
on every agent alike and cancels out of the shares.

`balanced_orders` builds those rotations as a Latin square: n orders for n agents, each
agent once in each position. The square's first row follows Williams' construction
(0, 1, n-1, 2, n-2, ...) and each further row adds 1 to every entry, modulo n. For even
n this also balances who follows whom: over the n orders every agent comes directly
after every other agent exactly once. For odd n a single square cannot do that, so
every second square is shown mirrored (each order reversed); over 2n orders each agent
then follows every other exactly twice. For 2 and 3 agents the square is the plain
cyclic one.

`first_place_shares` and `pairwise_win_rates` turn rankings (agent -> rank, 1 best) into
one figure per agent, computed exactly with fractions and converted to float once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from itertools import combinations


def _williams_row(n: int) -> list[int]:
    """The first row of Williams' square: 0, 1, n-1, 2, n-2, ..."""
    row = [0]
    for step in range(1, n):
        row.append((step + 1) // 2 if step % 2 else n - step // 2)
    return row


def balanced_orders(agents: Sequence[str], rounds: int | None = None) -> list[tuple[str, ...]]:
    """`rounds` orders (default: one per agent) in which to show the agents' answers.

    Every block of n consecutive orders puts each agent in each position exactly once;
    `rounds` must therefore be a positive multiple of n. For odd n, blocks alternate
    between the square and its mirror image (see the module's docstring)."""
    names = tuple(agents)
    n = len(names)
    if n == 0:
        raise ValueError("balanced_orders needs at least one agent")
    if len(set(names)) != n:
        raise ValueError(f"agents must be distinct: {list(names)!r}")
    wanted = n if rounds is None else rounds
    if wanted <= 0 or wanted % n:
        raise ValueError(f"rounds must be a positive multiple of the number of agents "
                         f"({n}) so that every agent is shown in every position equally "
                         f"often; got {rounds}")
    first = _williams_row(n)
    square = [tuple(names[(entry + shift) % n] for entry in first) for shift in range(n)]
    mirror = [order[::-1] for order in square]
    orders: list[tuple[str, ...]] = []
    for block in range(wanted // n):
        orders.extend(mirror if n % 2 and block % 2 else square)
    return orders


def _as_floats(shares: Mapping[str, Fraction]) -> dict[str, float]:
    return {agent: float(share) for agent, share in sorted(shares.items())}


def first_place_shares(rankings: Iterable[Mapping[str, int]]) -> dict[str, float]:
    """Agent -> share of the rankings it was in where it came first.

    Agents tied for first split that ranking's win equally. An agent appears in the
    result once it appears in any ranking; empty rankings are skipped."""
    wins: dict[str, Fraction] = {}
    seen: dict[str, int] = {}
    for ranking in rankings:
        if not ranking:
            continue
        best = min(ranking.values())
        firsts = [agent for agent, rank in ranking.items() if rank == best]
        for agent in ranking:
            seen[agent] = seen.get(agent, 0) + 1
            wins.setdefault(agent, Fraction(0))
        for agent in firsts:
            wins[agent] += Fraction(1, len(firsts))
    return _as_floats({agent: wins[agent] / seen[agent] for agent in seen})


def pairwise_win_rates(rankings: Iterable[Mapping[str, int]]) -> dict[str, float]:
    """Agent -> share of its pairwise comparisons won (a tie counts half).

    Every ranking compares each pair of the agents it holds: the lower rank wins. An
    agent that was never compared with another is left out."""
    won: dict[str, Fraction] = {}
    played: dict[str, int] = {}
    for ranking in rankings:
        for first, second in combinations(sorted(ranking), 2):
            for agent in (first, second):
                played[agent] = played.get(agent, 0) + 1
                won.setdefault(agent, Fraction(0))
            if ranking[first] == ranking[second]:
                won[first] += Fraction(1, 2)
                won[second] += Fraction(1, 2)
            else:
                won[first if ranking[first] < ranking[second] else second] += 1
    return _as_floats({agent: won[agent] / played[agent] for agent in played})
