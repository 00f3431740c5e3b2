"""Plain-text figures of generated answers: loops, variety, length, breaking character.

No model and no tokenizer: words are runs of letters, digits and apostrophes, lower
cased, so the figures mean the same whichever model wrote the text.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")

# "I am an AI", "as a language model", "I'm just a virtual assistant", "I am SmolLM"...
# The assistant must be the end of the phrase: Beethoven may be an assistant organist.
_SELF = r"\b(?:i\s+am|i['’]m|as|being)\s+(?:(?:just|only|merely|simply|an?|the)\s+)*"
_MACHINE = (r"(?:(?!not\b|never\b|no\b)\w+[\s-]+){0,2}?"
            r"(?:ai|a\.i\.|artificial\s+intelligence|language\s+model|chat\s?bot|bot|assistant|computer\s+program|machine)\b"
            r"(?![\s-]+(?:organist|conductor|teacher|kapellmeister|director|to|at|in|of)\b)")
_AI_CLAIMS = [
    re.compile(_SELF + _MACHINE, re.IGNORECASE),
    re.compile(r"\b(?:language\s+model|smollm|hugging\s*face|openai|ai\s+assistant)\b",
               re.IGNORECASE),
]


def words(text: str) -> list[str]:
    """The words of `text`, lower case."""
    return [word.replace("’", "'") for word in _WORD.findall(text.lower())]


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def max_ngram_repeats(text: str, n: int = 4) -> int:
    """How often the most frequent run of `n` words occurs in `text` (0 when it has fewer
    than `n` words; 1 when no run repeats). A loop shows as a large count."""
    counts = Counter(ngrams(words(text), n))
    return max(counts.values(), default=0)


def distinct_n(texts: str | Iterable[str], n: int = 2) -> float | None:
    """Distinct `n`-word runs over all runs (Li et al. 2016's distinct-n) of one text, or
    pooled over several; None when there is no run at all."""
    if isinstance(texts, str):
        texts = [texts]
    grams = [gram for text in texts for gram in ngrams(words(text), n)]
    return len(set(grams)) / len(grams) if grams else None


def machine_claim(text: str) -> str | None:
    """The words by which `text` says it is an AI, a language model, an assistant, a bot;
    None when it does not."""
    for pattern in _AI_CLAIMS:
        found = pattern.search(text)
        if found:
            return found.group(0)
    return None


def claims_to_be_a_machine(text: str) -> bool:
    """True when `text` says it is an AI, a language model, an assistant, a bot."""
    return machine_claim(text) is not None


def median_words(texts: Iterable[str]) -> float:
    counts = [len(words(text)) for text in texts]
    return float(statistics.median(counts)) if counts else 0.0


# A capitalised word after a lower-case word or a comma: a name, not a sentence start.
_NAME_MID_SENTENCE = re.compile(r"(?<=[a-z,;] )[A-Z][^\W_]+(?:['’-][^\W_]+)*")
_CAPITALISED = re.compile(r"\b[A-Z][^\W_]+(?:['’-][^\W_]+)*")


def names_used(text: str, source: str, *, besides: str = "") -> set[str]:
    """The proper names of `source` (capitalised words it uses mid-sentence: "Bonn",
    "Neefe") that `text` uses too, less the words of `besides` (e.g. the question, the
    character's own name). A rough figure of how much of `source` an answer draws on."""
    names = set(_NAME_MID_SENTENCE.findall(source)) - set(_CAPITALISED.findall(besides))
    return {word for word in _CAPITALISED.findall(text) if word in names}
