"""Distinctiveness BLEU on crafted answers: a persona that repeats its own phrasing
scores high within itself and low against a persona that writes differently."""

from __future__ import annotations

from itertools import permutations
from statistics import fmean

import pytest
from sacrebleu import sentence_bleu

from charforge.dataset.distinct import distinctiveness

TOPICS = ["the harbour", "my brother", "the old mill", "a letter", "the winter", "my garden",
          "the market", "a storm", "the church bells", "the river", "a stranger", "the school"]


def alice(topic: str) -> str:
    return (f"Oh, my dear friend, the sea has always called to me, and today I keep "
            f"thinking about {topic}, as the waves roll in and the gulls cry overhead.")


def alice_old(topic: str) -> str:
    return (f"Decades have passed; my knees ache and my eyes are dim, yet {topic} "
            f"returns in dreams, quieter now, like a candle behind frosted glass.")


def bob(topic: str) -> str:
    return (f"Gears, pistons and steam: that is what matters in my workshop. Whenever "
            f"{topic} comes up, I sketch another engine on greasy paper.")


def test_a_persona_repeating_its_phrasing_is_closer_to_itself_than_to_another():
    result = distinctiveness({("alice", None): [alice(t) for t in TOPICS],
                              ("bob", None): [bob(t) for t in TOPICS]})
    a, b = result.personas["alice"], result.personas["bob"]
    assert a.intra is not None and a.inter is not None
    assert a.intra > 5 * a.inter
    assert b.intra > 5 * b.inter
    assert a.inter == b.inter  # the pairs between two personas are scored once, both ways
    assert (a.stage, b.stage) == (None, None)  # one stage each
    assert result.average_intra == pytest.approx((a.intra + b.intra) / 2, abs=0.01)
    assert result.intra_to_inter == pytest.approx(result.average_intra / result.average_inter,
                                                  rel=0.01)
    assert result.intra_to_inter > 5


def test_two_stages_written_differently_score_below_intra():
    result = distinctiveness({("alice", "young"): [alice(t) for t in TOPICS],
                              ("alice", "old"): [alice_old(t) for t in TOPICS]})
    persona = result.personas["alice"]
    assert persona.stages == 2 and persona.answers == 2 * len(TOPICS)
    assert persona.stage is not None and persona.intra is not None
    assert persona.stage < persona.intra / 3
    assert persona.inter is None and result.average_inter is None
    assert result.intra_to_inter is None


def test_figures_are_the_mean_of_sentence_bleu_over_every_pair_when_few():
    answers = [alice(t) for t in TOPICS[:3]] + [bob(TOPICS[0])]
    result = distinctiveness({("alice", None): answers})
    expected = fmean(sentence_bleu(a, [b]).score for a, b in permutations(answers, 2))
    assert result.personas["alice"].intra == round(expected, 2)
    assert result.personas["alice"].pairs.intra == 12  # ordered pairs of 4


def test_nothing_to_compare_gives_none_not_an_error():
    empty = distinctiveness({})
    assert empty.personas == {}
    assert (empty.average_intra, empty.average_stage, empty.average_inter,
            empty.intra_to_inter) == (None, None, None, None)
    assert empty.pairs.model_dump() == {"intra": 0, "stage": 0, "inter": 0}

    alone = distinctiveness({("alice", None): [alice("the sea")], ("bob", None): []})
    assert alone.personas["alice"].model_dump(include={"intra", "stage", "inter"}) == {
        "intra": None, "stage": None, "inter": None}
    assert alone.personas["bob"].answers == 0

    # One answer per stage: nothing within a stage, one pair each way across the two
    # (BLEU is not symmetric: the shorter answer pays a brevity penalty as hypothesis).
    young, old = alice("a"), alice("the long and winding road up to the lighthouse")
    assert sentence_bleu(young, [old]).score != sentence_bleu(old, [young]).score
    staged = distinctiveness({("alice", "I"): [young], ("alice", "II"): [old]})
    assert staged.personas["alice"].intra is None
    assert staged.personas["alice"].stage == round(
        fmean([sentence_bleu(young, [old]).score, sentence_bleu(old, [young]).score]), 2)
    assert staged.personas["alice"].pairs.stage == 2


def many(make, count: int) -> list[str]:
    return [make(f"{TOPICS[i % len(TOPICS)]} number {i}") for i in range(count)]


def test_pairs_are_capped_and_seeded():
    answers = {("alice", "young"): many(alice, 40), ("alice", "old"): many(alice_old, 40),
               ("bob", None): many(bob, 40)}
    result = distinctiveness(answers, max_pairs=25, seed=3)
    alice_pairs, bob_pairs = result.personas["alice"].pairs, result.personas["bob"].pairs
    assert (alice_pairs.intra, alice_pairs.stage, alice_pairs.inter) == (50, 25, 25)
    assert (bob_pairs.intra, bob_pairs.stage, bob_pairs.inter) == (25, 0, 25)
    assert result.pairs.model_dump() == {"intra": 75, "stage": 25, "inter": 25}
    assert (result.max_pairs, result.seed) == (25, 3)

    assert distinctiveness(answers, max_pairs=25, seed=3) == result
    others = [distinctiveness(answers, max_pairs=25, seed=s) for s in (4, 5)]
    assert any(o.personas != result.personas for o in others)


def test_max_pairs_and_seed_are_checked():
    with pytest.raises(ValueError, match="max_pairs"):
        distinctiveness({("a", None): ["x", "y"]}, max_pairs=0)
    with pytest.raises(ValueError, match="seed"):
        distinctiveness({("a", None): ["x", "y"]}, seed=-1)
