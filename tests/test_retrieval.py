"""Retrieval for PersLLM answers: build a character, open its passage index, ask, and check
what a prompt would receive: whole passages, within the word budget, the question's source
first, nothing from a later stage, and an index that is embedded once."""

from __future__ import annotations

import re
import subprocess
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from charforge.character import Character, Passage, Stage
from charforge.errors import CharforgeError
from charforge.retrieval import (
    MiniLMEmbedder,
    PassageIndex,
    PassageRef,
    Query,
    RetrievalBudget,
    Retrieved,
    chunk_text,
    default_embedder,
)

pytestmark = pytest.mark.integration  # the real all-MiniLM-L6-v2, loaded once for the module

REPO = Path(__file__).resolve().parents[1]
EVERYTHING = RetrievalBudget(knowledge_words=10**9, style_words=10**9)

# -- Grete Voss, a made-up astronomer: two stages, long and short passages ---------------
CHILDHOOD = (  # early, > 400 words; the boat rescue is only in its last 70 words
    "Margarethe Voss was born in the weaving town of Hallbeck, where the river turned the "
    "wheels of eleven mills and the streets smelled of wet wool and indigo. Her father was a "
    "dyer who came home every evening with blue hands, and he let her stir the vats of madder "
    "and woad while he explained why one mordant made a colour fast and another let it bleed. "
    "Her mother kept the accounts of three households and taught Grete arithmetic with a jar of "
    "buttons, sorting them into rows of ten and asking her to find the pattern before supper. "
    "The town school had one room and one schoolmaster, Herr Albrecht, a thin man who believed "
    "that girls should learn to read scripture and sew a straight hem and nothing more. Grete "
    "read scripture, sewed badly, and borrowed his geometry primer from the cupboard without "
    "asking; when he caught her copying the proofs of Euclid by candlelight he was so "
    "surprised that he forgot to punish her and lent her the second volume instead. She sang "
    "in the parish choir on Sundays, mostly to sit near the organ and watch the bellows boy "
    "count the strokes, and she kept a notebook of the hours at which the church bell "
    "disagreed with the sundial on the town hall. In the long winters the looms fell silent "
    "when the river froze, and the whole family sat around one stove while her grandmother "
    "told stories of the years of famine and the soldiers who had once been quartered in the "
    "dye house. Grete remembered those evenings as warm and crowded and full of argument, for "
    "her brothers teased her about her notebooks and she answered them with sums they could "
    "not do. When she was twelve a travelling pedlar sold her a cracked lens for two eggs, "
    "and she spent a month grinding its edge smooth on a whetstone so that she could look at "
    "the grain of leaves, the threads of her father's cloth and the eye of a fly. The "
    "schoolmaster told her parents that she had a mind like a man's and that it would bring "
    "her nothing but trouble, and her mother replied that trouble had never yet stopped a "
    "woman of Hallbeck. "
    "In the autumn of her fourteenth year, visiting an aunt on the coast, she stood on the "
    "harbour wall in a gale and watched a fishing boat capsize beyond the breakwater. She ran "
    "to wake the lifeboat crew, held the lantern while they launched, and saw all three "
    "fishermen pulled from the sea alive; she called it the bravest night of her youth."
)
CLOCKMAKER = (  # early, short
    "At fifteen Grete was apprenticed to Jakob Mertens, the clockmaker of Hallbeck, who needed "
    "a patient pair of hands more than he minded whose they were. She learned to cut brass "
    "wheels, to file the teeth of an escapement and to regulate a pendulum against the noon "
    "gun, and she discovered that a clock is a small model of the heavens, its gears standing "
    "for the turning of the sky. Mertens paid her in tools rather than coins, and by the end "
    "of her apprenticeship she owned a lathe and a set of fine files."
)
COMET = (  # late
    "On a clear night in March, from the little observatory she had built on the roof of her "
    "house in the capital, Grete noticed a faint smudge of light near the constellation of the "
    "Lynx that had not been there the evening before. She followed it for eleven nights, "
    "measuring its position against the fixed stars with a micrometer of her own making, and "
    "worked out that it was a comet moving on a long ellipse towards the sun. She wrote to the "
    "Royal Academy with her measurements, and the astronomers there confirmed the discovery a "
    "fortnight later. The comet was named after her, the first to carry a woman's name in "
    "that country, and the newspapers printed her portrait beside a drawing of its tail."
)
LATER_YEARS = (  # late, > 400 words; the bees are only in its last 60 words
    "In her later years Grete Voss lived in the capital and gave public lectures on astronomy "
    "at the Mechanics' Institute every Thursday evening. The hall held three hundred people, "
    "and it was usually full: clerks, seamstresses, printers' apprentices and a few curious "
    "gentlemen who came to see whether a woman could really explain the motions of the "
    "planets. She could, and she did it without notes, drawing ellipses on a great slate and "
    "setting a brass orrery turning on the table so that everyone could see why Mars seemed "
    "to walk backwards among the stars for a few weeks each year. After every lecture she "
    "stayed to answer questions until the caretaker put out the lamps. With the money from "
    "the lectures and from her book on the comet she founded a school for girls in the old "
    "customs house by the river, where forty pupils learned mathematics, natural philosophy, "
    "drawing and French. She insisted that every pupil learn to use a telescope and keep an "
    "observing journal, and she read the journals herself each Sunday, writing comments in "
    "the margins in green ink. Some parents complained that the school taught their daughters "
    "ideas above their station, and a newspaper called it a nursery of discontent; Grete "
    "pinned the article to the school door and underlined the word nursery. On the first clear "
    "night of every term she took the older pupils up to the roof to find the planets and the "
    "brightest double stars by name. She corresponded "
    "with astronomers in Paris, Vienna and Edinburgh, exchanging measurements of variable "
    "stars and arguing about the distances of the nebulae, and she kept copies of every letter "
    "in bound volumes that filled a whole wall of her study. Younger astronomers sent her "
    "their calculations to check, and she returned them with the errors circled and a short "
    "note saying where the method had gone astray. Her eyesight began to fail in her sixties, "
    "and she gave up observing at the eyepiece, but she went on computing orbits from other "
    "people's observations, working at a standing desk by the window with a lamp on either "
    "side. Visitors found her patient with ignorance and impatient with vanity, and she never "
    "learned to accept a compliment without changing the subject to the weather. "
    "She also kept six hives of bees in the walled garden behind the school, wearing a veil "
    "and gloves of her own design, and every August she harvested the honey with her pupils "
    "and sold the jars at the autumn fair to buy paper and ink."
)
HABITS = (  # unstaged
    "Grete drank strong black tea without sugar at every hour of the day, walked for an hour "
    "before dawn in all weathers, and distrusted flattery. She kept her hair cut short so it "
    "would not catch in the gears of her instruments."
)
DISPUTE = (  # late
    "When a professor at the Royal Academy accused her of copying her orbit of the comet from "
    "a German almanac, Grete demanded a public hearing. She brought her observing journals, "
    "her micrometer and the dated letters she had sent to the Academy, and in front of the "
    "assembled fellows she recomputed the orbit on the blackboard from her own raw figures. "
    "The professor withdrew the charge and the Academy printed an apology, though it still "
    "refused to elect her a fellow."
)
MUSIC = (  # early
    "The choirmaster of Hallbeck taught Grete to play the violin in exchange for help with "
    "the parish accounts. She practised scales in the dye house where the noise of the vats "
    "covered her mistakes, and she liked music best when she could count it: the ratios of "
    "the intervals, the beats of the bar, the way a string halved sounds an octave higher."
)
STYLE = [
    Passage(stage="early", text=(
        "Dearest Anna, you will not believe what I saw tonight! The moon came up over the mill "
        "pond as red as a coal and I ran all the way to the bridge to see it better, and I "
        "am sure, quite sure, that I could make out the mountains on its face. Write soon!")),
    Passage(stage="late", text=(
        "Ladies and gentlemen, let us consider the problem with some care. The planet does not "
        "in fact reverse its course; it is our own earth, overtaking it on the inner track, "
        "that makes it appear to do so. I shall demonstrate this with the orrery, and I ask "
        "you to keep your eyes on the brass ball that stands for Mars.")),
    Passage(text=(
        "Tuesday. Cloud all night. Reground the small mirror. Tea. Letter from Edinburgh, "
        "figures wrong again. Answered.")),
    Passage(stage="late", text=(
        "I have been told, sir, that my sex unfits me for the labour of calculation. I invite "
        "you to inspect these columns of figures and to point out the line at which my sex "
        "entered them. Until you can, I shall continue to regard the objection as unproved.")),
]


def grete() -> Character:
    return Character(
        name="Margarethe Voss", short_name="Grete",
        knowledge=[
            Passage(text=CHILDHOOD, stage="early"), Passage(text=CLOCKMAKER, stage="early"),
            Passage(text=COMET, stage="late"), Passage(text=LATER_YEARS, stage="late"),
            Passage(text=HABITS), Passage(text=DISPUTE, stage="late"),
            Passage(text=MUSIC, stage="early"),
        ],
        style=STYLE,
        stages=[Stage(label="early", token="<TIME-I>"), Stage(label="late", token="<TIME-II>")],
    )


QUESTIONS = [
    "Did you ever see a fishing boat capsize in a storm, and were the fishermen saved?",
    "What did your father do for a living?",
    "How did you learn arithmetic as a child?",
    "Tell me about your schoolmaster.",
    "What was it like to be apprenticed to a clockmaker?",
    "How did you discover the comet?",
    "Why was the comet named after you?",
    "What did you teach at your school for girls?",
    "Do you keep bees?",
    "How did you answer the accusation that you copied your orbit?",
    "Do you play any musical instrument?",
    "What do you like to drink?",
    "Why does Mars seem to move backwards?",
    "What did you see through your first lens?",
    "Who did you write letters to?",
    "What happened when your eyesight failed?",
    "What do you think of flattery?",
    "Did the Royal Academy ever elect you a fellow?",
    "What are your winters at home like?",
    "How do you make a dye colour fast?",
    "What do you think of people who say women cannot calculate?",
    "What did you see when the moon rose over the mill pond?",
]


def words(text: str) -> int:
    return len(text.split())


def side_words(character: Character, found: Retrieved) -> tuple[int, int]:
    knowledge, style = found.texts(character)
    return sum(map(words, knowledge)), sum(map(words, style))


def greedy(ranking: Sequence[int], sizes: Sequence[int], limit: int) -> tuple[int, ...]:
    """The budget rule, written plainly: best first, take what still fits, skip the rest."""
    taken, used = [], 0
    for index in ranking:
        if used + sizes[index] <= limit:
            taken.append(index)
            used += sizes[index]
    return tuple(taken)


class CountingEmbedder:
    """Another embedder's vectors, counting the calls (one batch per search_many)."""

    def __init__(self, inner: MiniLMEmbedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: list[int] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        return self.inner.encode(texts)


class WordHashEmbedder:
    """A tiny exact embedder (hashed bag of words): equal texts get bit-equal vectors."""

    name = "test-word-hash"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), 64), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                vectors[row, zlib.crc32(word.encode()) % 64] += 1.0
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms == 0, 1.0, norms)


class SignEmbedder:
    """Four signs from a text's hash, halved: unit vectors whose cosines (-1, -1/2, 0, 1/2,
    1) are exact in any summation order, so the test's ranking and the index's agree
    bit for bit, ties included."""

    name = "test-signs"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        bits = [zlib.crc32(text.encode()) for text in texts]
        return np.array([[0.5 if code >> k & 1 else -0.5 for k in range(4)] for code in bits],
                        dtype=np.float32).reshape(len(texts), 4)


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("retrieval-cache")


@pytest.fixture(scope="module")
def index(minilm: MiniLMEmbedder, cache: Path) -> PassageIndex:
    return PassageIndex.open(grete(), cache, embedder=minilm)


# -- what a query returns -------------------------------------------------------------
def test_a_question_about_the_end_of_a_long_passage_finds_that_passage(index: PassageIndex):
    character = grete()
    assert words(CHILDHOOD) > 400 and words(LATER_YEARS) > 400
    assert len(chunk_text(CHILDHOOD, 160, 40)) > 1
    assert "capsize" not in " ".join(CHILDHOOD.split()[:300])  # only the end tells the story
    assert "bees" not in " ".join(LATER_YEARS.split()[:300])
    boat = index.search(QUESTIONS[0], budget=EVERYTHING)
    assert boat.knowledge[0] == 0
    bees = index.search("Do you keep bees and harvest honey?", budget=EVERYTHING)
    assert bees.knowledge[0] == 3
    knowledge, _style = boat.texts(character)
    assert knowledge[0] == CHILDHOOD  # the whole passage, not the chunk that matched


def test_passages_rank_by_their_best_chunk(index: PassageIndex, minilm: MiniLMEmbedder):
    passages = grete().knowledge_passages()
    owner = [i for i, p in enumerate(passages) for _ in chunk_text(p.text, 160, 40)]
    vectors = minilm.encode([c for p in passages for c in chunk_text(p.text, 160, 40)])
    found = index.search_many([(q, None, None) for q in QUESTIONS], budget=EVERYTHING)
    for question, query, result in zip(QUESTIONS, minilm.encode(QUESTIONS), found, strict=True):
        cosines = vectors @ query
        best = [max(c for c, i in zip(cosines, owner, strict=True) if i == p)
                for p in range(len(passages))]
        expected = tuple(sorted(range(len(passages)), key=lambda i: (-best[i], i)))
        assert result.knowledge == expected, question


def test_no_passage_is_returned_twice(index: PassageIndex):
    asked = [(q, stage, None) for q in QUESTIONS for stage in (None, "early", "late")]
    asked += [(q, None, PassageRef("knowledge", 4)) for q in QUESTIONS]
    for found in index.search_many(asked, budget=EVERYTHING):
        assert len(set(found.knowledge)) == len(found.knowledge)
        assert len(set(found.style)) == len(found.style)
    for found in index.search_many(asked[-len(QUESTIONS):], budget=RetrievalBudget()):
        assert found.knowledge.count(4) == 1 and found.knowledge[0] == 4


def test_the_budget_is_filled_best_first_skipping_what_does_not_fit(index: PassageIndex):
    character = grete()
    knowledge_sizes = [words(p.text) for p in character.knowledge_passages()]
    style_sizes = [words(p.text) for p in character.style]
    asked = [(question, None, None) for question in QUESTIONS]
    rankings = index.search_many(asked, budget=EVERYTHING)
    for limit in (0, 40, 100, 250, 500, 900, 1500):
        budget = RetrievalBudget(knowledge_words=limit, style_words=limit // 3)
        for ranking, found in zip(rankings, index.search_many(asked, budget=budget), strict=True):
            knowledge_used, style_used = side_words(character, found)
            assert knowledge_used <= limit and style_used <= limit // 3
            assert found.knowledge == greedy(ranking.knowledge, knowledge_sizes, limit)
            assert found.style == greedy(ranking.style, style_sizes, limit // 3)

    # The boat story ranks first but is 430 words: with 300 it is skipped, others fill in.
    found = index.search(QUESTIONS[0], budget=RetrievalBudget(knowledge_words=300))
    assert 0 not in found.knowledge and found.knowledge
    assert side_words(character, found)[0] <= 300
    # PersLLM's budget by default.
    assert RetrievalBudget() == RetrievalBudget(knowledge_words=1500, style_words=500)
    with pytest.raises(ValueError):
        RetrievalBudget(knowledge_words=-1)


def test_the_source_passage_is_always_first(index: PassageIndex):
    character = grete()
    small = RetrievalBudget(knowledge_words=200, style_words=60)
    asked = ("What is the weather like?", QUESTIONS[5], QUESTIONS[8])
    without_source = index.search_many([(q, None, None) for q in asked], budget=small)
    for position in range(len(character.knowledge_passages())):
        source = PassageRef("knowledge", position)
        with_source = index.search_many([(q, None, source) for q in asked], budget=small)
        for found, plain in zip(with_source, without_source, strict=True):
            assert found.knowledge[0] == position
            assert len(set(found.knowledge)) == len(found.knowledge)
            knowledge_used, _ = side_words(character, found)
            if words(character.knowledge_passages()[position].text) > 200:
                assert found.knowledge == (position,)  # alone over budget: nothing else
            else:
                assert knowledge_used <= 200
            # The other side is untouched by a knowledge source.
            assert found.style == plain.style

    by_style = index.search_many(
        [("Tell me about the comet.", None, PassageRef("style", position))
         for position in range(len(character.style))], budget=RetrievalBudget(style_words=10))
    for position, found in enumerate(by_style):
        assert found.style == (position,)  # every style passage is over 10 words
    with pytest.raises(ValueError, match="out of range"):
        index.search("anything", source=PassageRef("style", 4))
    with pytest.raises(ValueError):
        PassageRef("lore", 0)  # type: ignore[arg-type]


def test_an_early_answer_never_sees_late_passages(index: PassageIndex):
    character = grete()
    knowledge = character.knowledge_passages()
    seen_stages: set[str | None] = set()
    results = index.search_many([(q, "early", None) for q in QUESTIONS], budget=EVERYTHING)
    results += index.search_many([(q, "early", PassageRef("knowledge", 1)) for q in QUESTIONS])
    results += index.search_many([(q, "early", None) for q in QUESTIONS],
                                 budget=RetrievalBudget(knowledge_words=300, style_words=40))
    for found in results:
        stages = {knowledge[i].stage for i in found.knowledge}
        stages |= {character.style[i].stage for i in found.style}
        assert "late" not in stages
        seen_stages |= stages
    assert seen_stages == {"early", None}
    # Everything is eligible in the big-budget early searches: exactly the early and unstaged.
    assert set(results[0].knowledge) == {0, 1, 4, 6} and set(results[0].style) == {0, 2}

    for found in index.search_many([(q, "late", None) for q in QUESTIONS]):
        assert not {knowledge[i].stage for i in found.knowledge} & {"early"}
    unrestricted = index.search_many([(q, None, None) for q in QUESTIONS])
    assert {knowledge[i].stage for r in unrestricted for i in r.knowledge} == {"early", "late",
                                                                                None}

    with pytest.raises(ValueError, match="stage 'late'"):  # a caller bug, said plainly
        index.search(QUESTIONS[5], stage="early", source=PassageRef("knowledge", 2))
    with pytest.raises(ValueError, match="unknown stage"):
        index.search(QUESTIONS[5], stage="middle")
    # An unstaged source suits every stage.
    assert index.search(QUESTIONS[5], stage="early",
                        source=PassageRef("knowledge", 4)).knowledge[0] == 4


def test_search_many_is_one_batch_and_agrees_with_search(minilm: MiniLMEmbedder, cache: Path):
    counting = CountingEmbedder(minilm)
    index = PassageIndex.open(grete(), cache, embedder=counting)
    assert not index.built and counting.calls == []  # the module's index, from the cache
    queries = [Query(q, stage, source) for q, stage, source in zip(
        QUESTIONS[:9], ["early", "late", None] * 3, [None, None, PassageRef("style", 2)] * 3,
        strict=True)]
    batched = index.search_many(queries)
    assert counting.calls == [len(queries)]
    assert batched == [index.search(q.text, stage=q.stage, source=q.source) for q in queries]
    calls = len(counting.calls)
    assert index.search_many([]) == [] and len(counting.calls) == calls  # none: no encode


def test_ties_go_to_the_earlier_passage(tmp_path: Path):
    same = "the lighthouse keeper trimmed the lamp at dusk"
    character = Character(
        name="Twin Texts", short_name="Twins",
        knowledge=[Passage(text="an unrelated line about bread"), Passage(text=same),
                   Passage(text="another line about cheese"), Passage(text=same),
                   Passage(text=same)],
        style=[Passage(text=same), Passage(text=same)])
    index = PassageIndex.open(character, tmp_path, embedder=WordHashEmbedder())
    for _ in range(3):
        found = index.search("lighthouse lamp at dusk", budget=EVERYTHING)
        assert found.knowledge[:3] == (1, 3, 4)
        assert found.style == (0, 1)
    # The budget takes the earlier twin when only one fits.
    found = index.search("lighthouse lamp", budget=RetrievalBudget(knowledge_words=8,
                                                                   style_words=8))
    assert found.knowledge == (1,) and found.style == (0,)


def test_a_large_character_is_ranked_exactly(tmp_path: Path):
    """Hundreds of passages a side, many tied: every result equals the rule applied by hand
    (best chunk, best first, ties by order, greedy budget, source first, stage filter)."""
    rng = np.random.default_rng(7)
    vocabulary = [f"w{number}" for number in range(40)]

    def passages(count: int) -> list[Passage]:
        return [Passage(text=" ".join(rng.choice(vocabulary, size=rng.integers(3, 30))),
                        stage=("early", "late", None)[number % 3]) for number in range(count)]

    character = Character(name="Many Passages", short_name="Many", knowledge=passages(300),
                          style=passages(150),
                          stages=[Stage(label="early", token="<TIME-I>"),
                                  Stage(label="late", token="<TIME-II>")])
    embedder = SignEmbedder()
    index = PassageIndex.open(character, tmp_path, embedder=embedder, chunk_words=8,
                              overlap_words=2)
    sides = {"knowledge": character.knowledge_passages(), "style": character.style}

    def expected(question: str, stage: str | None, source: PassageRef | None,
                 budget: RetrievalBudget) -> Retrieved:
        query = embedder.encode([question])[0]
        picked = {}
        for kind, limit in (("knowledge", budget.knowledge_words),
                            ("style", budget.style_words)):
            found = sides[kind]
            best = [float((embedder.encode(chunk_text(p.text, 8, 2)) @ query).max())
                    for p in found]
            ranking = sorted((i for i, p in enumerate(found) if stage is None
                              or p.stage in (None, stage)), key=lambda i: (-best[i], i))
            sizes = [words(p.text) for p in found]
            if source is None or source.kind != kind:
                picked[kind] = greedy(ranking, sizes, limit)
            elif sizes[source.index] > limit:
                picked[kind] = (source.index,)
            else:
                rest = [i for i in ranking if i != source.index]
                picked[kind] = (source.index,
                                *greedy(rest, sizes, limit - sizes[source.index]))
        return Retrieved(knowledge=picked["knowledge"], style=picked["style"])

    for number in range(12):
        question = " ".join(rng.choice(vocabulary, size=5))
        stage = (None, "early", "late")[number % 3]
        position = 3 * number + {"early": 0, "late": 1, None: 2}[stage]  # a visible one
        source = (None, PassageRef("knowledge", position),
                  PassageRef("style", position))[number % 4 % 3]
        for budget in (EVERYTHING, RetrievalBudget(), RetrievalBudget(knowledge_words=60,
                                                                      style_words=20)):
            assert index.search(question, stage=stage, source=source,
                                budget=budget) == expected(question, stage, source, budget)


def test_profile_paragraphs_are_retrievable_for_a_character_llm_import(
        minilm: MiniLMEmbedder, tmp_path: Path):
    holmes = Character(name="Sherlock Holmes", short_name="Holmes", profile=[
        "Sherlock Holmes is a consulting detective who lives at 221B Baker Street in London, "
        "sharing rooms with his friend Dr John Watson.",
        "Holmes plays the violin, often late at night, improvising melancholy airs when a case "
        "will not come right; he owns a Stradivarius bought for a few shillings.",
        "He is a master of disguise and has passed as a clergyman, a groom and an old sailor.",
    ])
    index = PassageIndex.open(holmes, tmp_path, embedder=minilm)
    found = index.search("Do you play a musical instrument?")
    assert found.knowledge[0] == 1 and found.style == ()
    knowledge, style = found.texts(holmes)
    assert knowledge[0] == holmes.profile[1] and style == []
    source = index.search("Where do you live?", source=PassageRef("knowledge", 2))
    assert source.knowledge[0] == 2


def test_a_character_without_passages_is_a_one_line_error(tmp_path: Path):
    with pytest.raises(CharforgeError) as excinfo:
        PassageIndex.open(Character(name="Nobody At All", short_name="Nobody"), tmp_path,
                          embedder=WordHashEmbedder())
    message = str(excinfo.value)
    assert "Nobody has no knowledge or style passages to retrieve from" in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []


# -- the cache ------------------------------------------------------------------------
def test_a_second_open_embeds_nothing(index: PassageIndex, minilm: MiniLMEmbedder,
                                      cache: Path):
    character = grete()
    first = index  # the module's index, built in `cache` by the first test that used it
    assert first.built
    assert first.chunks_embedded == first.chunk_count > len(character.knowledge_passages()) + 4
    encoded = minilm.texts_encoded

    second = PassageIndex.open(character, cache, embedder=minilm)
    assert not second.built and second.chunks_embedded == 0
    assert minilm.texts_encoded == encoded
    assert second.path == first.path and second.chunk_count == first.chunk_count
    assert second.search(QUESTIONS[5]) == first.search(QUESTIONS[5])
    assert all(p.suffix == ".npz" for p in cache.iterdir())  # no temporary left behind
    assert first.path.name.startswith("grete-") and first.path.suffix == ".npz"
    assert default_embedder() is default_embedder()


def test_a_changed_passage_or_setting_rebuilds(index: PassageIndex, minilm: MiniLMEmbedder,
                                               cache: Path):
    character = grete()
    edited = character.model_copy(deep=True)
    edited.knowledge[4] = Passage(text=HABITS.replace("black tea", "green tea"))
    before = minilm.texts_encoded
    second = PassageIndex.open(edited, cache, embedder=minilm)
    assert second.built and second.chunks_embedded == second.chunk_count
    assert minilm.texts_encoded == before + second.chunk_count
    assert second.path != index.path and index.path.is_file()  # the old file may stay
    assert not PassageIndex.open(character, cache, embedder=minilm).built

    # The rest of the key, with the quick exact embedder.
    hashed = PassageIndex.open(character, cache, embedder=WordHashEmbedder())
    assert hashed.built and hashed.path not in (index.path, second.path)
    restaged = character.model_copy(deep=True)
    restaged.style[2] = Passage(text=STYLE[2].text, stage="early")
    third = PassageIndex.open(restaged, cache, embedder=WordHashEmbedder())
    assert third.built and third.path != hashed.path
    rechunked = PassageIndex.open(character, cache, embedder=WordHashEmbedder(),
                                  chunk_words=120, overlap_words=20)
    assert rechunked.built and rechunked.chunk_count > hashed.chunk_count
    assert not PassageIndex.open(character, cache, embedder=WordHashEmbedder()).built
    with pytest.raises(ValueError, match="overlap_words"):
        PassageIndex.open(character, cache, embedder=minilm, chunk_words=40, overlap_words=40)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_cache_file_is_rebuilt(tmp_path: Path, damage: str):
    character = grete()
    first = PassageIndex.open(character, tmp_path, embedder=WordHashEmbedder())
    expected = first.search(QUESTIONS[5])
    content = first.path.read_bytes()
    first.path.write_bytes({"truncated": content[: len(content) // 2],
                            "garbage": b"\x93NUMPY not really" * 50, "empty": b""}[damage])

    again = PassageIndex.open(character, tmp_path, embedder=WordHashEmbedder())
    assert again.built and again.search(QUESTIONS[5]) == expected
    assert not PassageIndex.open(character, tmp_path, embedder=WordHashEmbedder()).built


# -- the bench ------------------------------------------------------------------------
def test_the_retrieval_bench_prints_its_figures():
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "retrieval.py"), "--passages", "40",
         "--batches", "1", "--singles", "4"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-2000:])
    out = result.stdout
    for pattern in (r"40 passages", r"build: [\d.]+ s, \d+ chunks, [\d.]+ chunks/s",
                    r"load from cache: [\d.]+ s", r"search_many, batches of 64: [\d.]+ queries/s",
                    r"search\(\), one at a time: [\d.]+ queries/s", r"peak RSS: [\d.]+ MiB",
                    r"index arrays: [\d.]+ MiB", r"target >= 64 queries/s"):
        assert re.search(pattern, out), (pattern, out)
