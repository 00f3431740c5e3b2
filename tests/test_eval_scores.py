"""Judges' answers -> scores and rankings: every way a score is written, every number that
must not be taken for one, and random text that must never raise or read out of range."""

from __future__ import annotations

import random

import pytest

from charforge.evaluate.scores import ScoreRead, read_ranking, read_score

REASONING = ("The character recalls the Vienna years well. In 1824 he wrote 9 symphonies and "
             "he lived 56 years; the answer gets 2 of those facts right.")

# (answer, low, high, expected score, the problem's start)
SCORES = [
    # the score alone on the last line, as Character-LLM's judges are told to write it
    (f"{REASONING}\n\n5", 1, 7, 5, ""),
    (f"{REASONING}\n\n5\n\n5\n", 1, 7, 5, ""),
    # labelled, fractions, words between label and number, markdown
    ("Score: 5/7", 1, 7, 5, ""),
    ("All in all I would say 5 out of 7.", 1, 7, 5, ""),
    ("Rating - 6", 1, 7, 6, ""),
    ("**Score**: 4", 1, 7, 4, ""),
    ("__Rating__ = 3", 1, 7, 3, ""),
    ("I would give this answer a score of 6.", 1, 7, 6, ""),
    ("I'd rate it 2, the facts are wrong.", 1, 7, 2, ""),
    ("Score:7", 1, 7, 7, ""),
    ("score 0", 0, 5, 0, ""),
    # the reasoning's numbers are never the score
    (f"{REASONING} Score: 5", 1, 7, 5, ""),
    (f"{REASONING}\nThe answer is good.", 1, 7, None, "no score"),
    ("", 1, 7, None, "no score"),
    ("I cannot judge this interview.", 1, 7, None, "no score"),
    # out of range, and the wrong scale
    ("Score: 9", 1, 7, None, "out of range: 9"),
    ("Score: 0", 1, 7, None, "out of range: 0"),
    ("Score: -3", 1, 7, None, "out of range: -3"),
    (f"{REASONING}\n1824", 1, 7, None, "out of range: 1824"),
    ("Score: 8/10", 1, 7, None, "wrong scale: 8/10"),
    ("Score: 123456789012345678901234567890", 1, 7, None, "out of range"),
    # a first thought revised: the final marker wins, else the last labelled score
    ("I first thought 3, but the dates are right. Final score: 5", 1, 7, 5, ""),
    ("Score: 3 at first sight.\nHaving read it again: Score: 6", 1, 7, 6, ""),
    ("Overall rating: 4\n\nScore: 6 for style alone", 1, 7, 4, ""),
    ("Final score: 5\n\n5", 1, 7, 5, ""),
    ("Score: 2\n\n6", 1, 7, 2, ""),
    # the scale restated is not a score
    ("On a scale of 1 to 7, I give 6", 1, 7, 6, ""),
    ("The rubric (1-7) asks for facts; the answer has few.", 1, 7, None, "no score"),
    ("Rated from 1 to 7, this is a clear answer.", 1, 7, None, "no score"),
    ("Factual Correctness (1-7): 5", 1, 7, 5, ""),
    ("Score (1-7): 4", 1, 7, 4, ""),
    ("Score (out of 7): 3", 1, 7, 3, ""),
    ("I give it a 6 (out of 7).", 1, 7, 6, ""),
    ("Knowledge accuracy on a 0-5 scale: 4", 0, 5, 4, ""),
    ("On a 0-5 scale, 4 facts of 5 are right.", 0, 5, None, "no score"),
    ("Knowledge accuracy (0-5): 4", 0, 5, 4, ""),
    # disagreeing finals, ranges and fractions are refused
    ("Final score: 3\n...\nFinal score: 5", 1, 7, None, "ambiguous: 3 and 5"),
    ("Final score: 3. Overall rating: 4. Final verdict: 5", 1, 7, None,
     "ambiguous: 3, 4 and 5"),
    ("Final score: 5\nOverall rating: 5.0", 1, 7, 5, ""),
    ("Score: 4-5", 1, 7, None, "a range, not a score: 4-5"),
    ("Score: 5 or 6", 1, 7, None, "a range, not a score: 5-6"),
    ("Score: 5.5", 1, 7, None, "not an integer: 5.5"),
    ("Score: 5.0", 1, 7, 5, ""),
    ("Final score: **5.00**.", 1, 7, 5, ""),
    # number words
    ("Score: five", 1, 7, 5, ""),
    ("I give it a Six.", 1, 7, 6, ""),
    ("Score: ten", 1, 7, None, "out of range: ten"),
    ("Score: one of the best answers I have read.", 1, 7, None, "no score"),
    # a list or a line break after the score is not part of it
    ("Score: 5\n- 3 dates are wrong", 1, 7, 5, ""),
]


@pytest.mark.parametrize(("text", "low", "high", "score", "problem"), SCORES)
def test_read_score(text: str, low: int, high: int, score: int | None, problem: str):
    read = read_score(text, low, high)
    assert read.score == score
    assert read.problem.startswith(problem)
    assert (read.problem == "") == (score is not None)


LAST_LINES = [
    ("5", 5, ""),
    ("Score: 5", 5, ""),
    ("**5**", 5, ""),
    ("5/7", 5, ""),
    ("5 out of 7", 5, ""),
    ("5.", 5, ""),
    ("My score is 6", 6, ""),
    ("  7  \n\n  ", 7, ""),
    ("9", None, "out of range: 9"),
    ("The answer is weak on dates.", None, "no score on the last line"),
    ("In 1824 he wrote 9 symphonies", None, "no score on the last line"),
]


@pytest.mark.parametrize(("last", "score", "problem"), LAST_LINES)
def test_read_score_last_line(last: str, score: int | None, problem: str):
    text = f"Score: 3 for memorization.\n{REASONING}\n{last}"
    assert read_score(text, 1, 7, last_line=True) == ScoreRead(score, problem)


def test_last_line_reads_nothing_above_it():
    assert read_score("Final score: 4\n", 1, 7, last_line=True) == ScoreRead(4)
    assert read_score("Final score: 4\nThanks.", 1, 7, last_line=True).score is None
    assert read_score(" \n\n", 1, 7, last_line=True) == ScoreRead(None, "no score")


def test_a_bad_scale_is_a_caller_error():
    with pytest.raises(ValueError, match="above"):
        read_score("Score: 5", 7, 1)


LABELS = ["A", "B", "C"]
RANKINGS = [
    ("B > A > C", {"B": 1, "A": 2, "C": 3}),
    ("Ranking: B>C>A", {"B": 1, "C": 2, "A": 3}),
    ("**Answer B** > Answer A > [C]", {"B": 1, "A": 2, "C": 3}),
    ("B -> C -> A", {"B": 1, "C": 2, "A": 3}),
    ("1. B\n2. A\n3. C", {"B": 1, "A": 2, "C": 3}),
    ("1st: C\n2nd: A\n3rd: B", {"C": 1, "A": 2, "B": 3}),
    ("#1: A\n#2: C\n#3: B", {"A": 1, "C": 2, "B": 3}),
    ("1) Response B - most accurate\n   it names the year.\n2) Response A: fine\n"
     "3) Response C (weakest)", {"B": 1, "A": 2, "C": 3}),
    ("Final ranking: C, A, B", {"C": 1, "A": 2, "B": 3}),
    # comparisons in the reasoning are passed over; the last full ranking decides
    ("A > C on style, but B knows the dates.\nRanking: B > A > C\nStill, A > C.",
     {"B": 1, "A": 2, "C": 3}),
    ("1. A - clear\n2. B - vague\n3. C - wrong\nSo overall: C > B > A",
     {"C": 1, "B": 2, "A": 3}),
    ("1. A clear structure helps.\n2. B\nRanking: C > B > A", {"C": 1, "B": 2, "A": 3}),
    # anything short of every label exactly once is None
    ("B > A", None),
    ("B > A > B", None),
    ("B > A > B > C", None),
    ("1. B\n3. A\n2. C", None),
    ("1. B\n2. A\n3. B", None),
    ("B = A > C", None),
    ("A, B and C are all good answers.", None),
    ("A tale of two answers; B is better.", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "ranks"), RANKINGS)
def test_read_ranking(text: str, ranks: dict[str, int] | None):
    assert read_ranking(text, LABELS) == ranks


def test_read_ranking_longer_labels():
    labels = ["agent_1", "agent_2", "agent_10"]
    assert read_ranking("agent_10 > agent_1 > agent_2", labels) == {
        "agent_10": 1, "agent_1": 2, "agent_2": 3}
    assert read_ranking("agent_1 > agent_2", labels) is None


def test_read_ranking_needs_distinct_labels():
    with pytest.raises(ValueError, match="distinct"):
        read_ranking("A > A", ["A", "A"])


FRAGMENTS = ["Score", "score:", "Final score", "Overall rating", "Rating -", "I give",
             "I'd rate it", "(1-7)", "1 to 7", "out of 7", "/7", "/10", "**", "__", "#",
             "five", "one", "ten", "5.5", "5.0", "-3", "0", "1", "4", "7", "9", "1824",
             "123456789012345", " or ", " - ", ":", ".", ",", "(", ")", "\n", "\n\n",
             "A", "B", "C", ">", "1.", "2.", "Ranking:", "Answer", "§", "—", "é", "\t"]


def test_random_text_never_raises_and_stays_in_range():
    rng = random.Random(20240607)
    for _ in range(3000):
        parts = [rng.choice(FRAGMENTS) if rng.random() < 0.8 else
                 "".join(chr(rng.randrange(32, 0x250)) for _ in range(rng.randrange(1, 8)))
                 for _ in range(rng.randrange(0, 25))]
        text = " ".join(parts) if rng.random() < 0.5 else "".join(parts)
        low, high = rng.choice([(1, 7), (0, 5), (1, 10)])
        for last_line in (False, True):
            read = read_score(text, low, high, last_line=last_line)
            if read.score is None:
                assert read.problem
            else:
                assert low <= read.score <= high and read.problem == ""
        ranks = read_ranking(text, LABELS)
        assert ranks is None or sorted(ranks.values()) == [1, 2, 3]
