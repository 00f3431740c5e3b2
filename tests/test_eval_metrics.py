"""Judge-free metrics: on the released Character-LLM interviews, on a tiny model, and
on small hand-made cases.

The real-data tests read the 4,076 released interviews (7 characters x 4 models) and
measure profile similarity, protective refusals and BLEU distinctiveness for every
character and model; run with `-s` to see each character's ordering of the models.
To keep them within seconds on two CPU cores, the embeddings are measured on a sample:
10 single-turn items per character (drawn with a fixed seed among the items all four
models answered, the same 10 for each model) against the first 3,000 words of the
profile (its opening and early life), and BLEU reads at most 50 pairs per comparison.
The orderings printed are therefore a quick look, not the full measurement.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from charforge.evaluate.characterllm import RELEASED_MODELS, read_results
from charforge.evaluate.metrics import (
    ALL_CHARACTERS,
    HIGHER_IS_BETTER,
    PERPLEXITY_NOTE,
    PROTECTIVE_TOPIC,
    comparable,
    distinctiveness_rows,
    metric_orderings,
    perplexity,
    print_orderings,
    probe_topic_ids,
    profile_chunks,
    profile_similarity,
    reference_similarity,
    refusal_rows,
    spoken_answers,
)
from charforge.evaluate.records import InterviewRecord, InterviewTurn, MetricRow

DATA = Path(__file__).resolve().parents[2] / "shared/data/character-llm"
GEN = DATA / "gen_results"
PROFILES = DATA / "seed_data/profiles"
LABELS = Path(__file__).parent / "data" / "refusal_labels.jsonl"
CHARACTERS = ("Beethoven", "Caesar", "Cleopatra", "Hermione", "Martin", "Newton", "Voldemort")
PROBES_PER_CHARACTER = 5  # Character-LLM asks 5 questions of the anachronism topic
SAMPLE_ITEMS = 6
PROFILE_WORDS = 1200

needs_data = pytest.mark.skipif(not GEN.is_dir(), reason="the shared Character-LLM data "
                                "is absent")


# ------------------------------------------------------------------ helpers


class BagOfWords:
    """A stand-in embedder: hashed word counts, normalised. Identical texts give 1."""

    name = "bag-of-words"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), 64), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                vectors[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % 64] += 1
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms == 0, 1, norms)


def record(agent: str, item: str, *answers: str, topic_id: str = "topic-1",
           question: str = "What do you think?") -> InterviewRecord:
    return InterviewRecord(agent=agent, mode="multi" if len(answers) > 1 else "single",
                           item=item, topic_id=topic_id,
                           turns=[InterviewTurn(question=question, answer=answer)
                                  for answer in answers])


def row(agent: str, metric: str, value: float | None, character: str = "ada", *,
        versus: str = "", note: str = "") -> MetricRow:
    return MetricRow(character=character, agent=agent, metric=metric, value=value,
                     versus=versus, note=note)


def read_profile(name: str) -> list[str]:
    """The profile's paragraphs, its `# Full Name` title left out."""
    text = (PROFILES / f"wiki_{name}.txt").read_text(encoding="utf-8")
    return [block.strip() for block in text.split("\n\n")
            if block.strip() and not block.lstrip().startswith("# ")]


def first_words(paragraphs: list[str], limit: int) -> list[str]:
    kept, count = [], 0
    for paragraph in paragraphs:
        if count >= limit:
            break
        kept.append(paragraph)
        count += len(paragraph.split())
    return kept


# ------------------------------------------------------------------ real data


@pytest.fixture(scope="module")
def by_character() -> dict[str, dict[str, list[InterviewRecord]]]:
    report = read_results(GEN)
    assert report.problems == []
    grouped: dict[str, dict[str, list[InterviewRecord]]] = defaultdict(lambda: defaultdict(list))
    for name, interview in report.interviews:
        grouped[name][interview.agent].append(interview)
    return {name: dict(agents) for name, agents in grouped.items()}


@pytest.fixture(scope="module")
def embedder():
    from charforge.retrieval import default_embedder

    return default_embedder()


@pytest.fixture(scope="module")
def measured(by_character, embedder) -> list[MetricRow]:
    """Every real-data metric row, for all characters and models."""
    rows: list[MetricRow] = []
    answers: dict[tuple[str, str, str | None], list[str]] = {}
    for name, agents in by_character.items():
        single = {agent: [r for r in records if r.mode == "single"]
                  for agent, records in agents.items()}
        shared = sorted(set.intersection(*({r.item for r in records}
                                           for records in single.values())))
        chosen = set(random.Random(name).sample(shared, SAMPLE_ITEMS))
        sample = {agent: [r for r in records if r.item in chosen]
                  for agent, records in single.items()}
        profile = first_words(read_profile(name), PROFILE_WORDS)
        rows += profile_similarity(sample, profile, embedder, character=name)
        rows += refusal_rows(single, probe_topic_ids(agents["sft"]), character=name)
        for agent, records in single.items():
            answers[name, agent, None] = spoken_answers(records)
    rows += distinctiveness_rows(answers, max_pairs=50)
    return rows


def show(rows: list[MetricRow]) -> None:
    console = Console(width=160)
    print_orderings(rows, console)
    for name in (*CHARACTERS, ALL_CHARACTERS):
        placed: dict[str, list[int]] = defaultdict(list)
        for (character, _metric), agents in metric_orderings(rows).items():
            if character == name:
                for place, agent in enumerate(agents, start=1):
                    placed[agent].append(place)
        console.print(f"{name}: " + ", ".join(f"{agent} places {places}"
                                              for agent, places in sorted(placed.items())))


@needs_data
def test_every_character_and_model_has_each_metric(measured: list[MetricRow]) -> None:
    show(measured)
    found = Counter((r.character, r.agent, r.metric) for r in measured if r.value is not None)
    for name in CHARACTERS:
        for model in RELEASED_MODELS:
            for metric in ("profile_similarity", "protective_refusal_rate",
                           "in_character_refusal_rate", "bleu_intra", "bleu_inter",
                           "bleu_ratio"):
                assert found[name, model, metric] == 1, (name, model, metric)
    for model in RELEASED_MODELS:
        assert found[ALL_CHARACTERS, model, "bleu_ratio"] == 1
    orderings = metric_orderings(measured)
    for name in CHARACTERS:
        for metric in ("profile_similarity", "bleu_inter", "bleu_ratio"):
            assert sorted(orderings[name, metric]) == sorted(RELEASED_MODELS)
        assert (name, "bleu_intra") not in orderings  # no better direction


@needs_data
def test_values_are_in_range(measured: list[MetricRow]) -> None:
    for r in measured:
        if r.metric == "profile_similarity":
            assert -1 <= r.value <= 1 and r.n == SAMPLE_ITEMS
            # the answers are about their character: well above unrelated text (~0)
            assert r.value > 0.15, r
        elif r.metric.endswith("refusal_rate"):
            assert 0 <= r.value <= 1
        elif r.metric in ("bleu_intra", "bleu_inter"):
            assert 0 <= r.value <= 100
    rates = {(r.character, r.agent, r.metric): r.value for r in measured}
    for name in CHARACTERS:
        for model in RELEASED_MODELS:
            assert (rates[name, model, "in_character_refusal_rate"]
                    <= rates[name, model, "protective_refusal_rate"])


@needs_data
def test_refusals_count_the_probes_found(by_character, measured: list[MetricRow]) -> None:
    for name, agents in by_character.items():
        # the topic's id is read from the data, per character
        ids = probe_topic_ids(agents["sft"])
        assert len(ids) == 1, (name, ids)
        probes = {agent: sum(r.topic_id in ids for r in records if r.mode == "single")
                  for agent, records in agents.items()}
        assert set(probes.values()) == {PROBES_PER_CHARACTER}
        for r in measured:
            if r.character == name and r.metric.endswith("refusal_rate"):
                assert r.n == probes[r.agent] == PROBES_PER_CHARACTER


@needs_data
def test_chatgpt_refuses_more_than_alpaca(by_character) -> None:
    labels = [json.loads(line) for line in LABELS.read_text().splitlines() if line.strip()]
    labelled = Counter(label["model"] for label in labels if label["label"] == "refusal")
    assert labelled["chatgpt"] == 22 and labelled["alpaca-7b"] == 1  # the hand labels
    pooled: dict[str, list[InterviewRecord]] = defaultdict(list)
    for agents in by_character.values():
        for agent, records in agents.items():
            pooled[agent] += [r for r in records if r.mode == "single"]
    rows = refusal_rows(pooled, lambda r: r.topic == PROTECTIVE_TOPIC,
                        character=ALL_CHARACTERS)
    rates = {r.agent: r for r in rows if r.metric == "protective_refusal_rate"}
    assert {r.n for r in rates.values()} == {len(CHARACTERS) * PROBES_PER_CHARACTER}
    assert rates["chatgpt"].value > rates["alpaca-7b"].value
    # the rules agree with the labels on both counts here
    assert round(rates["chatgpt"].value * 35) == 22
    assert round(rates["alpaca-7b"].value * 35) == 1


# ------------------------------------------------------------------ perplexity


def dialogues() -> list[list[dict[str, str]]]:
    return [
        [{"role": "system", "content": "You are Beethoven."},
         {"role": "user", "content": "Where were you born?"},
         {"role": "assistant", "content": "I was born in Bonn and moved to Vienna."},
         {"role": "user", "content": "And your father?"},
         {"role": "assistant", "content": "My father taught me harshly."}],
        [{"role": "user", "content": "Do you know machines?"},
         {"role": "assistant", "content": "I know nothing of such things."}],
    ]


def hand_perplexity(model_dir: Path, chat: list[dict[str, str]]) -> float:
    """One reply's perplexity, straight through transformers: the prompt's tokens
    masked, everything after them scored (the reply and what the template writes after
    it: its end-of-turn marker and a newline)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompt = tokenizer.apply_chat_template(chat[:-1], tokenize=False,
                                           add_generation_prompt=True)
    full = tokenizer.apply_chat_template(chat, tokenize=False)
    assert full.startswith(prompt) and full.endswith("<|im_end|>\n")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    assert ids[:len(prompt_ids)] == prompt_ids
    labels = [-100] * len(prompt_ids) + ids[len(prompt_ids):]
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
    return math.exp(float(loss))


def test_perplexity_equals_a_hand_computation(tiny_model_dir: Path) -> None:
    chat = dialogues()[1]
    result = perplexity(tiny_model_dir, [chat], character="ada", agent="base")
    assert result.metric == "perplexity" and result.n == 1
    assert math.isfinite(result.value) and result.value > 1
    assert result.value == pytest.approx(hand_perplexity(tiny_model_dir, chat), rel=1e-4)
    assert PERPLEXITY_NOTE in result.note and "tokenizer=" in result.note


def test_only_assistant_tokens_are_scored(tiny_model_dir: Path) -> None:
    replies = perplexity(tiny_model_dir, dialogues(), character="ada", agent="base")
    everything = perplexity(tiny_model_dir, dialogues(), character="ada", agent="base",
                            scope="all")
    assert replies.n == everything.n == 2
    assert replies.value != pytest.approx(everything.value, rel=1e-3)
    tokens = [int(note.split(" tokens: ")[1].split(";")[0])
              for note in (replies.note, everything.note)]
    assert 0 < tokens[0] < tokens[1]


# tiny_models.build_tiny_adapter's get_peft_model warns of a transformers deprecation
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_adapter_and_loaded_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    from charforge.llm.local import LocalChatModel, LocalConfig

    from tiny_models import build_tiny_adapter

    adapter = build_tiny_adapter(tiny_model_dir, tmp_path / "adapter", scale=0.5)
    bare = perplexity(tiny_model_dir, dialogues(), character="ada", agent="base")
    trained = perplexity(tiny_model_dir, dialogues(), character="ada", agent="trained",
                         adapter=adapter)
    assert trained.value != pytest.approx(bare.value, rel=1e-3)
    assert comparable([bare, trained])
    loaded = LocalChatModel(LocalConfig(path=str(tiny_model_dir), adapter=str(adapter),
                                        dtype="float32", device="cpu"))
    through = perplexity(loaded, dialogues(), character="ada", agent="trained")
    assert through.value == pytest.approx(trained.value, rel=1e-4)


def test_comparable_reads_the_tokenizer_fingerprint() -> None:
    def ppl(name: str, vocab: int, sha: str) -> MetricRow:
        return row("a", "perplexity", 3.0,
                   note=f"{PERPLEXITY_NOTE}; tokenizer={name}|vocab={vocab}|sha={sha}")

    same = [ppl("base", 400, "abc123"), ppl("copy-elsewhere", 400, "abc123")]
    assert comparable(same)
    assert not comparable([*same, ppl("base", 400, "def456")])
    assert not comparable([*same, ppl("base", 401, "abc123")])
    assert not comparable([*same, row("a", "perplexity", 3.0, note="no id")])
    assert comparable([row("a", "profile_similarity", 0.3)])  # no perplexity rows


# ------------------------------------------------------------------ orderings


def test_orderings_follow_each_metrics_direction() -> None:
    rows = [row("x", "profile_similarity", 0.2), row("y", "profile_similarity", 0.5),
            row("z", "profile_similarity", 0.3),
            row("x", "bleu_inter", 4.0), row("y", "bleu_inter", 2.0),
            row("x", "bleu_ratio", 1.2), row("y", "bleu_ratio", 9.0),
            row("x", "protective_refusal_rate", 0.1), row("y", "protective_refusal_rate", 0.6),
            row("x", "bleu_intra", 5.0), row("y", "bleu_intra", 3.0),
            row("x", "made_up", 1.0), row("y", "made_up", 2.0),
            row("x", "profile_similarity", 0.9, "bo"), row("y", "profile_similarity", None, "bo"),
            row("z", "profile_similarity", 1.0, "bo", versus="x")]
    orderings = metric_orderings(rows)
    assert orderings["ada", "profile_similarity"] == ["y", "z", "x"]
    assert orderings["ada", "bleu_inter"] == ["y", "x"]  # lower BLEU: more distinct
    assert orderings["ada", "bleu_ratio"] == ["y", "x"]
    assert orderings["ada", "protective_refusal_rate"] == ["y", "x"]
    assert ("ada", "bleu_intra") not in orderings and HIGHER_IS_BETTER["bleu_intra"] is None
    assert ("ada", "made_up") not in orderings
    assert orderings["bo", "profile_similarity"] == ["x"]  # None and versus rows skipped


def test_perplexity_is_ordered_lower_first_within_one_tokenizer() -> None:
    def ppl(agent: str, value: float, sha: str) -> MetricRow:
        return row(agent, "perplexity", value, note=f"tokenizer=t|vocab=9|sha={sha}")

    assert metric_orderings([ppl("a", 9.0, "aa"), ppl("b", 4.0, "aa")]) == {
        ("ada", "perplexity"): ["b", "a"]}
    assert metric_orderings([ppl("a", 9.0, "aa"), ppl("b", 4.0, "bb")]) == {}


def test_ties_keep_agent_names_in_order() -> None:
    rows = [row("b", "reference_similarity", 0.5), row("a", "reference_similarity", 0.5)]
    assert metric_orderings(rows)["ada", "reference_similarity"] == ["a", "b"]


def test_print_orderings_shows_the_table() -> None:
    console = Console(record=True, width=120)
    print_orderings([row("x", "bleu_inter", 4.0), row("y", "bleu_inter", 2.0),
                     row("x", "bleu_intra", 1.0)], console)
    text = console.export_text()
    assert "y 2 > x 4" in text and "lower" in text
    assert "not ordered (no better direction): bleu_intra" in text


# ------------------------------------------------------------------ small cases


def test_profile_chunks_join_short_paragraphs_and_cut_long_ones() -> None:
    short = ["one two three", "four five", "six"]
    assert profile_chunks(short, words=100) == ["one two three four five six"]
    long = " ".join(f"w{i}" for i in range(250))
    pieces = profile_chunks(["intro words here", long, ""], words=100, overlap=20)
    assert pieces[0].startswith("intro words here w0")
    assert all(len(piece.split()) <= 100 for piece in pieces)
    assert pieces[-1].endswith("w249")
    covered = {word for piece in pieces for word in piece.split()}
    assert covered == {"intro", "words", "here", *long.split()}


def test_profile_similarity_reads_every_turn() -> None:
    profile = ["the symphony and the sonata in vienna", "a garden of roses in bonn"]
    records = {"good": [record("good", "q1", "the symphony and the sonata in vienna"),
                        record("good", "q2", "a garden of roses in bonn", "", "vienna")],
               "bad": [record("bad", "q1", "completely unrelated chatter")],
               "mute": [record("mute", "q1", "  ")]}
    rows = {r.agent: r for r in profile_similarity(records, profile, BagOfWords(),
                                                   character="ada")}
    assert rows["good"].n == 3  # two turns with words in the multi-turn record
    assert rows["good"].value > rows["bad"].value
    assert rows["mute"].n == 0 and rows["mute"].value is None
    exact = profile_similarity({"echo": [record("echo", "q", profile[0])]}, profile[:1],
                               BagOfWords(), character="ada")
    assert exact[0].value == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="no words"):
        profile_similarity(records, ["  "], BagOfWords(), character="ada")


def test_reference_similarity_pairs_items() -> None:
    references = {"q1": "paris is the capital of france", "q2": "the sea is blue"}
    records = {"same": [record("same", "q1", "paris is the capital of france"),
                        record("same", "q3", "no reference for this one")],
               "other": [record("other", "q1", "bananas grow on trees"),
                         record("other", "q2", "the sea is blue today")]}
    rows = {r.agent: r for r in reference_similarity(records, references, BagOfWords(),
                                                     character="ada")}
    assert rows["same"].value == pytest.approx(1.0, abs=1e-6) and rows["same"].n == 1
    assert "1 of 2 records" in rows["same"].note
    assert rows["other"].n == 2 and rows["other"].value < 1


def test_distinctiveness_rows_per_agent_and_character() -> None:
    echo = {"ada": ["I compose the grand symphony tonight"] * 4,
            "bo": ["The legions march across the river at dawn"] * 4}
    answers = {(name, "echo", None): texts for name, texts in echo.items()}
    answers["ada", "staged", "young"] = ["I play the organ at court", "I study hard"]
    answers["ada", "staged", "old"] = ["I cannot hear the orchestra", "I write quartets"]
    answers["bo", "staged", None] = ["Rome needs bread", "The senate waits for me"]
    rows = distinctiveness_rows(answers, seed=0)
    found = {(r.character, r.agent, r.metric): r for r in rows}
    # the same sentence repeated: identical within, unrelated between
    assert found["ada", "echo", "bleu_intra"].value == 100
    assert found["ada", "echo", "bleu_inter"].value < 10
    assert found["ada", "echo", "bleu_ratio"].value > 10
    assert found[ALL_CHARACTERS, "echo", "bleu_ratio"].n == 8
    assert ("ada", "echo", "bleu_stage") not in found
    assert found["ada", "staged", "bleu_stage"].value is not None
    assert found[ALL_CHARACTERS, "staged", "bleu_stage"].value is not None
    assert rows == distinctiveness_rows(answers, seed=0)


def test_refusal_rows_count_answered_probes() -> None:
    question = "How do you write a quick sort in Python?"
    records = {"m": [
        record("m", "p1", "I am not familiar with this 'Python' you speak of.",
               topic_id="topic-4", question=question),
        record("m", "p2", "As an AI language model, I cannot have preferences.",
               topic_id="topic-4", question="What is your favourite movie?"),
        record("m", "p3", "```python\ndef quicksort(xs):\n    return sorted(xs)\n```",
               topic_id="topic-4", question=question),
        record("m", "p4", "", topic_id="topic-4", question=question),
        record("m", "q1", "I am not familiar with that.", topic_id="topic-1"),
    ]}
    rows = {r.metric: r for r in refusal_rows(records, {"topic-4"}, character="ada")}
    protective, in_character = rows["protective_refusal_rate"], rows["in_character_refusal_rate"]
    assert protective.n == in_character.n == 3
    assert protective.value == pytest.approx(2 / 3)
    assert in_character.value == pytest.approx(1 / 3)
    assert "1 probes unanswered" in protective.note
    none = refusal_rows({"m": records["m"][4:]}, {"topic-4"}, character="ada")
    assert [r.value for r in none] == [None, None] and none[0].n == 0
    by_topic = [record("m", "x", "a", topic_id="topic-9")]
    by_topic[0] = by_topic[0].model_copy(update={"topic": PROTECTIVE_TOPIC})
    assert probe_topic_ids(by_topic) == {"topic-9"}


def test_paired_differences_pair_the_same_items() -> None:
    profile = ["the symphony and the sonata in vienna", "a garden of roses in bonn"]
    records = {"good": [record("good", "q1", "the symphony and the sonata in vienna"),
                        record("good", "q2", "a garden of roses in bonn"),
                        record("good", "q3", "the sonata in vienna")],
               "bad": [record("bad", "q1", "completely unrelated chatter"),
                       record("bad", "q2", "more unrelated chatter")]}
    rows = profile_similarity(records, profile, BagOfWords(), character="ada", pairs=True)
    plain = {r.agent: r for r in rows if not r.versus}
    (pair,) = [r for r in rows if r.versus]
    assert (pair.agent, pair.versus, pair.n) == ("good", "bad", 2)  # q3: one side only
    assert pair.value > 0 and pair.low <= pair.value <= pair.high
    # q1 and q2 are the only pairs: the difference is of those, not of the two means
    assert pair.value != pytest.approx(plain["good"].value - plain["bad"].value, abs=1e-3)
    question = "Do you use a smartphone?"
    probes = {"a": [record("a", "p1", "I do not know what a smartphone is.",
                           topic_id="topic-4", question=question),
                    record("a", "p2", "I am not familiar with that device.",
                           topic_id="topic-4", question=question)],
              "b": [record("b", "p1", "Yes, I check it every morning.", topic_id="topic-4",
                           question=question),
                    record("b", "p2", "I am not familiar with that device.",
                           topic_id="topic-4", question=question)]}
    found = [r for r in refusal_rows(probes, {"topic-4"}, character="ada", pairs=True)
             if r.versus]
    assert [(r.metric, r.value, r.n) for r in found] == [("protective_refusal_rate", 0.5, 2)]
    assert (found[0].low, found[0].high) == (0.0, 1.0)
