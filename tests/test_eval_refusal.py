"""The protective-refusal detector against answers labelled by hand.

`tests/data/refusal_labels.jsonl` holds the 140 answers of four models (chatgpt,
alpaca-7b, vicuna-7b, Character-LLM's SFT model) to the 35 questions of Character-LLM's
"difficult to answer without breaking character" topic (5 per character, 7 characters),
each read and labelled "refusal" or "answer" before the detector was written; refusals
also say whether they stayed in character; borderline labels say so in `note`.

The labels are split in two halves by a hash of character, model and question, taken
label by label so both halves hold both classes evenly. The detector's rules were tuned
on the first half only; the second is held out, and the figures asserted are measured
on it. Run with `-s` to see the per-class recall and the confusion counts.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from charforge.evaluate.refusal import RefusalVerdict, is_refusal, refusal_rate, refusal_verdict

LABELS = Path(__file__).parent / "data" / "refusal_labels.jsonl"
CLASSES = ("refusal", "answer")


def load_labels() -> list[dict]:
    with LABELS.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _key(row: dict) -> str:
    text = "|".join((row["character"], row["model"], row["question"]))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(tuning, held_out): within each label, rows in hash order, alternately to each."""
    tuning: list[dict] = []
    held_out: list[dict] = []
    for label in CLASSES:
        ordered = sorted((row for row in rows if row["label"] == label), key=_key)
        tuning += ordered[0::2]
        held_out += ordered[1::2]
    return tuning, held_out


def confusion(rows: list[dict]) -> Counter[tuple[str, str]]:
    """(true label, predicted label) -> count."""
    return Counter(
        (row["label"], "refusal" if is_refusal(row["answer"], row["question"]) else "answer")
        for row in rows)


def report(name: str, counts: Counter[tuple[str, str]]) -> tuple[float, dict[str, float]]:
    total = sum(counts.values())
    agreement = sum(counts[label, label] for label in CLASSES) / total
    recall = {label: counts[label, label] / sum(counts[label, guess] for guess in CLASSES)
              for label in CLASSES}
    print(f"\n{name}: n={total} agreement={agreement:.3f} "
          + " ".join(f"recall[{label}]={recall[label]:.3f}" for label in CLASSES)
          + f" confusion(true, predicted)={dict(sorted(counts.items()))}")
    return agreement, recall


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return load_labels()


def test_labels_are_complete_and_balanced_enough(rows):
    per_class = Counter(row["label"] for row in rows)
    assert set(per_class) == set(CLASSES)
    assert all(per_class[label] >= 30 for label in CLASSES), per_class
    for row in rows:
        assert row["answer"].strip() and row["question"].strip()
        if row["label"] == "refusal":
            assert isinstance(row["in_character"], bool), row
        else:
            assert row["in_character"] is None, row
    assert len({_key(row) for row in rows}) == len(rows), "duplicate rows"


def test_split_is_stratified_and_disjoint(rows):
    tuning, held_out = split(rows)
    assert len(tuning) + len(held_out) == len(rows)
    assert not {_key(row) for row in tuning} & {_key(row) for row in held_out}
    for half in (tuning, held_out):
        per_class = Counter(row["label"] for row in half)
        assert all(per_class[label] >= 15 for label in CLASSES), per_class
    assert split(list(reversed(rows))) == (tuning, held_out), "split depends on file order"


def test_held_out_agreement_and_recall(rows):
    tuning, held_out = split(rows)
    report("tuning half", confusion(tuning))
    counts = confusion(held_out)
    agreement, recall = report("held-out half", counts)
    figures = f"agreement={agreement:.3f} recall={recall} confusion={dict(counts)}"
    assert agreement >= 0.90, figures
    for label in CLASSES:
        assert recall[label] >= 0.85, f"{label}: {figures}"


def test_in_character_of_held_out_refusals(rows):
    _, held_out = split(rows)
    caught = [(row, refusal_verdict(row["answer"], row["question"]))
              for row in held_out if row["label"] == "refusal"]
    wrong = [row["answer"][:80] for row, verdict in caught
             if verdict.is_refusal and verdict.in_character != row["in_character"]]
    assert not wrong, wrong


@pytest.mark.parametrize("answer, question, cue", [
    ("Ah, my good sir, I know not of this 'computer' you speak of.", None, "I know not"),
    ("I am not familiar with this \"Python\" you speak of.", "How do you write Python?",
     "I am not familiar"),
    ("A smartphone? Pray, what is a smartphone?", "Do you own a smartphone?",
     "what is a smartphone?"),
    ("Such a device does not exist in my time.", None, "does not exist"),
    ("I have never heard of a television.", None, "never heard of"),
    ("I'm afraid I don't understand what you mean by that word.", None,
     "don't understand"),
])
def test_clear_in_character_refusals(answer, question, cue):
    verdict = refusal_verdict(answer, question)
    assert verdict == RefusalVerdict(True, True, verdict.cue)
    assert cue.lower() in verdict.cue.lower(), verdict


def test_out_of_character_refusal():
    verdict = refusal_verdict("As an AI language model, I cannot drive a car.")
    assert verdict.is_refusal and verdict.in_character is False
    assert "AI" in verdict.cue


@pytest.mark.parametrize("answer", [
    "My favourite movie is The Godfather, a fine tale of family.",
    "I drove my red sports car along the coast; the engine purred.",
    'I would recommend "Effective C++" by Scott Meyers.',
    "Certainly:\n```python\ndef sort(xs):\n    return sorted(xs)\n```",
    "It was a thrilling experience to look down on the clouds from the plane.",
    "Such trivial things do not concern me, but if I must answer, the film I like best is "
    "an old western.",
])
def test_clear_answers(answer):
    verdict = refusal_verdict(answer)
    assert not verdict.is_refusal, verdict
    assert verdict.in_character is None


def test_quoted_or_echoed_question_term():
    question = "Talk about the car you drove yesterday?"
    assert is_refusal('Pray, enlighten me: a "car"? I have only my horses.', question)
    assert refusal_verdict("A car? We walk, or ride.", question).cue == "A car?"
    assert not is_refusal("A car, a lovely one, red and swift.", question)


def test_invented_next_turn_is_not_read():
    answer = ("The car was splendid and fast.\n\nMan (speaking): Do you know Python?\n\n"
              "Beethoven (speaking): I am not familiar with it.")
    assert not is_refusal(answer)
    assert is_refusal("I know not what you mean.<|NONSTOP|> It was a Ford.")


def test_refusal_rate():
    pairs = [("I know not of such things.", None), ("My favorite movie is Jaws.", None),
             ("I am not familiar with that.", "Do you like jazz?"), ("A Ford.", None)]
    assert refusal_rate(pairs) == (0.5, 4)
    assert refusal_rate(iter(pairs[:1])) == (1.0, 1)
    assert refusal_rate([]) == (None, 0)
