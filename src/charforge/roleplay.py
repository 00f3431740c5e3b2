"""Putting a question to a character played by any chat model.

In character, the system message holds the opening of the profile and the passages
of the profile and knowledge that bear most on the question (BM25 over runs of whole
sentences), within `ASK_PROFILE_WORDS`, plus, for a PersLLM character, a few lines of
how they speak: a 135M model gets a short prompt, and what it holds is on topic.
`ask_sampling()` (`ASK_SAMPLING`, plus a stop at the first blank line in character) is
the one set of sampling defaults of `charforge ask` and the demo.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from charforge.aio import run_sync
from charforge.character import Character, paragraphs_within
from charforge.llm.base import ChatMessage, ChatModel, Completion, Sampling
from charforge.prompts import render_prompt
from charforge.textstats import words

# The defaults of `charforge ask` and the demo, measured with bench/ask_quality.py on
# the embedded SmolLM2-135M (whose built-in entry adds a repetition penalty).
ASK_SAMPLING = Sampling(temperature=0.2, max_tokens=256)
# In character an answer is one spoken paragraph: SmolLM2-135M otherwise goes on for
# paragraphs (bench, 12 questions at max_tokens 160: 11 answers cut, median 134 words;
# with the stop: none cut, median 61 words).
IN_CHARACTER_STOP = ("\n\n",)
ASK_PROFILE_WORDS = 200  # words of profile and knowledge in the system message
ASK_STYLE_SAMPLES = 3  # lines of speech (PersLLM style passages) in the system message
CHUNK_WORDS = 60  # retrieval unit: consecutive sentences of at most this many words
STYLE_SAMPLE_WORDS = 50

_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+")
_ENDS = (".", "!", "?", "…", ":", '"', "”", "'", "’", ")")
_SUFFIXES = ("nesses", "ness", "ments", "ment", "ances", "ance", "ences", "ence", "ians", "ian",
             "ings", "ing", "ers", "er", "ed", "ies", "es", "als", "al", "ly", "s", "e")
_STOPWORDS = frozenset({
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "been", "before", "being", "but", "by", "can", "could", "did", "do", "does", "doing",
    "during", "for", "from", "had", "has", "have", "having", "he", "her", "hers", "him", "his",
    "how", "i", "if", "in", "into", "is", "it", "its", "just", "me", "more", "most", "my", "no",
    "nor", "not", "of", "on", "once", "only", "or", "other", "our", "out", "over", "own",
    "please", "same", "she", "should", "so", "some", "such", "tell", "than", "that", "the",
    "their", "them", "then", "there", "these", "they", "this", "those", "through", "to", "too",
    "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which",
    "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "yourself",
    "describe", "discuss", "talk", "think"
})


def ask_sampling(*, in_character: bool = True, **changes: Any) -> Sampling:
    """`ASK_SAMPLING`, stopping at the end of the first paragraph when `in_character`,
    with `changes` applied (None values ignored), validated."""
    base = ASK_SAMPLING.but(stop=IN_CHARACTER_STOP) if in_character else ASK_SAMPLING
    return base.but(**changes)


# -- retrieval -------------------------------------------------------------------------
def _terms(text: str) -> list[str]:
    """Content words, each with one common suffix cut (a crude stemmer: "deafness" and
    "deaf", "musician" and "music", "performers" and "performance" meet)."""
    terms = []
    for word in words(text):
        word = word.removesuffix("'s")
        if word in _STOPWORDS or len(word) < 2:
            continue
        terms.append(_stem(word))
    return terms


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            if suffix == "s" and word.endswith("ss"):
                break
            return word[: -len(suffix)]
    return word


def chunks(text: str, max_words: int = CHUNK_WORDS) -> list[str]:
    """`text` as runs of whole sentences of at most `max_words` words each (a longer
    sentence is a chunk of its own)."""
    out: list[str] = []
    current: list[str] = []
    used = 0
    lines = text.strip().splitlines()
    # A short line without a full stop before more text is a heading: not a memory.
    kept = [line for n, line in enumerate(lines)
            if n == len(lines) - 1 or len(line.split()) > 12 or line.rstrip().endswith(_ENDS)]
    for sentence in _SENTENCE_END.split(" ".join(kept)):
        size = len(sentence.split())
        if current and used + size > max_words:
            out.append(" ".join(current))
            current, used = [], 0
        if sentence:
            current.append(sentence)
            used += size
    if current:
        out.append(" ".join(current))
    return out


def bm25_scores(query: str, documents: Sequence[str], *, k1: float = 1.2,
                b: float = 0.75) -> list[float]:
    """Okapi BM25 score of each document for `query` (0 when no term is shared)."""
    docs = [Counter(_terms(doc)) for doc in documents]
    if not docs:
        return []
    lengths = [sum(doc.values()) for doc in docs]
    average = sum(lengths) / len(docs) or 1.0
    frequency = Counter(term for doc in docs for term in doc)
    scores = []
    for doc, length in zip(docs, lengths, strict=True):
        score = 0.0
        for term in set(_terms(query)):
            tf = doc.get(term, 0)
            if not tf:
                continue
            idf = math.log(1 + (len(docs) - frequency[term] + 0.5) / (frequency[term] + 0.5))
            score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / average))
        scores.append(score)
    return scores


def relevant_passages(character: Character, question: str, *,
                      max_words: int = ASK_PROFILE_WORDS) -> list[str]:
    """What the character knows that bears most on `question`, within `max_words`:
    the opening of the profile (who they are; the first knowledge passage when there
    is no profile), then the best-scoring chunks of the profile and the knowledge
    passages, in their original order."""
    texts = [*character.profile, *(passage.text for passage in character.knowledge)]
    pieces = [piece for text in texts for piece in chunks(text)]
    if not pieces or max_words <= 0:
        return []
    chosen = {0}
    used = len(pieces[0].split())
    scores = bm25_scores(question, pieces)
    for index in sorted(range(len(pieces)), key=lambda i: -scores[i]):
        size = len(pieces[index].split())
        if scores[index] <= 0 or used + size > max_words:
            continue
        chosen.add(index)
        used += size
    if used > max_words:  # the opening alone is too long: cut it at a word boundary
        return [" ".join(pieces[0].split()[:max_words])]
    return [pieces[i] for i in sorted(chosen)]


def style_samples(character: Character, question: str, *,
                  count: int = ASK_STYLE_SAMPLES) -> list[str]:
    """Up to `count` of the character's speech-style passages, the ones closest to
    `question` first (then the first ones), each cut to a few dozen words."""
    if count <= 0 or not character.style:
        return []
    texts = [passage.text for passage in character.style]
    scores = bm25_scores(question, texts)
    order = sorted(range(len(texts)), key=lambda i: (-scores[i], i))[:count]
    return [" ".join(texts[i].split()[:STYLE_SAMPLE_WORDS]) for i in order]


# -- messages --------------------------------------------------------------------------
def roleplay_system_prompt(
    character: Character,
    *,
    question: str | None = None,
    location: str | None = None,
    status: str | None = None,
    max_profile_words: int = ASK_PROFILE_WORDS,
    max_style_samples: int = ASK_STYLE_SAMPLES,
) -> str:
    """The character's system message. With a `question`, the profile and knowledge
    passages that bear on it and speech samples close to it; without, the opening
    profile paragraphs and the first speech samples."""
    if question is None:
        profile = paragraphs_within(character.profile, 0, max_profile_words)
    else:
        profile = relevant_passages(character, question, max_words=max_profile_words)
    return render_prompt(
        "roleplay_system",
        character=character,
        profile=profile,
        style=style_samples(character, question or "", count=max_style_samples),
        location=location,
        status=status,
    )


def question_messages(
    character: Character, question: str, *, max_profile_words: int = ASK_PROFILE_WORDS,
    max_style_samples: int = ASK_STYLE_SAMPLES,
) -> list[ChatMessage]:
    """The system message for `question` and the question itself."""
    system = roleplay_system_prompt(character, question=question,
                                    max_profile_words=max_profile_words,
                                    max_style_samples=max_style_samples)
    return [ChatMessage(role="system", content=system), ChatMessage(role="user", content=question)]


def ask_messages(question: str, *, character: Character | None = None,
                 system: str | None = None) -> list[ChatMessage]:
    """The messages of one question: in character, or with an optional system message."""
    if character is not None:
        return question_messages(character, question)
    messages = [ChatMessage(role="user", content=question)]
    if system:
        messages.insert(0, ChatMessage(role="system", content=system))
    return messages


async def ask_async(question: str, model: ChatModel, *, character: Character | None = None,
                    system: str | None = None, sampling: Sampling | None = None) -> Completion:
    """One answer from `model` (closed afterwards), in character when one is given;
    sampled with `ask_sampling(...)` unless `sampling` says otherwise."""
    sampling = sampling or ask_sampling(in_character=character is not None)
    async with model:
        return await model.chat(ask_messages(question, character=character, system=system),
                                sampling)


def ask(question: str, model: ChatModel, **kwargs: Any) -> Completion:
    """The sync form of `ask_async`."""
    return run_sync(ask_async(question, model, **kwargs), sync_name="ask",
                    async_name="ask_async")
