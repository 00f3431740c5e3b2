"""Protective refusals: does an answer decline a question its character cannot know?

Character-LLM trains "protective scenes" so that a historical character meets an
anachronism (a car, Python, a film) with ignorance instead of an answer. This module
measures that without a judge: `refusal_verdict` reads one answer with plain rules and
says whether it refuses, whether it stayed in character doing so, and which phrase
decided; `refusal_rate` is the share of refusals over a set of anachronism probes.

What counts as a refusal (the labelling rule of `tests/data/refusal_labels.jsonl`): the
answer withholds the thing asked for, by declining it or by showing ignorance of it ("I
am not familiar with this 'Python'", "in my time there were no motion pictures", "I have
no favourite movie", "As a language model I have no feelings"). It is an answer when it
plays along and supplies the thing as if known: describes the car, writes the code, names
the books or the film, narrates the flight, even grudgingly ("if I must answer...").

The rules, in the order they are weighed:

1. ignorance of the thing (strong): not familiar with it, never heard of it, does not
   understand the question, it did not exist in my time, a question back about the
   term ("what is a quick sort?"), the question's own term put in quotes ("this
   'Python'"). Only hard content (code, a title "by" an author) outweighs it;
2. a claim to be an AI or a language model (`charforge.textstats.machine_claim`): a
   refusal out of character, unless hard content follows;
3. a decline without ignorance (weak): "I do not have a favourite", "I did not drive",
   "such trivial matters do not concern me", "I have never taken a plane", the question's
   term echoed back ("C++? I never learned it"). Any sign of playing along outweighs it:
   content, a concession ("but if I must answer"), a first person account ("I felt", "it
   was a thrilling experience");
4. otherwise the answer plays along.

The rules are meant for probes that a character cannot answer. On ordinary interview
questions some cues fire for other reasons ("Love? Love is...", "in my time women were
not allowed..."): 75 of the 2,536 answers of the same four models to Character-LLM's
other single-turn questions read as refusals.

Only the agent's first turn is read: text after an invented next turn ("Man
(speaking):") or an end marker such as "<|NONSTOP|>" is dropped.

Measured on the labels (140 real answers of chatgpt, alpaca-7b, vicuna-7b and the SFT
model to Character-LLM's 35 "difficult to answer without breaking character" questions;
43 refusals, 97 answers), split by a hash into halves stratified by label, with the rules
tuned on the first half only (71 answers: 71/71 agree). Held-out half (69 answers: 21
refusals, 48 answers): agreement 0.986 (68/69), recall of refusals 1.000 (21/21), of
answers 0.979 (47/48), and every caught refusal's `in_character` right. The one miss
shows a known weakness: "It's my first time to fly and I don't know what to expect"
reads as ignorance ("don't know what"); it was left as found, not tuned away.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from charforge.textstats import machine_claim

__all__ = ["RefusalVerdict", "is_refusal", "refusal_rate", "refusal_verdict"]


@dataclass(frozen=True)
class RefusalVerdict:
    """One answer judged: `is_refusal`; `in_character` (refusals only: False when it
    declined as an AI or a language model, None for answers); `cue`, the phrase that
    decided ("" when nothing in the answer pointed either way)."""

    is_refusal: bool
    in_character: bool | None
    cue: str


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


_NEG = r"(?:\bnot\b|n't\b|\bnever\b|\bno\b)"
_I = r"\bi(?:\s+am|'m|\s+was)?"

# 1. Ignorance of the thing asked about.
_IGNORANCE = [
    _rx(_I + r"\s+(?:\w+\s+){0,2}?(?:not|un)\s*(?:at\s+all\s+|very\s+|quite\s+)?"
        r"(?:familiar|acquainted|well[- ]versed|versed|an\s+expert|learned)\b"),
    _rx(r"\bi\s+know\s+not\b"),
    _rx(r"\b(?:do|did)\s*(?:not|n't)\s+know\s+(?:much\s+|anything\s+)?(?:about|of|what)\b"),
    _rx(r"\bnever\s+(?:even\s+)?heard\s+(?:of|tell)\b"),
    _rx(r"\b(?:have|had)\s+no\s+(?:knowledge|notion|understanding)\s+of\b"),
    _rx(r"\b(?:is|are|sounds?|seems?)\s+(?:quite\s+|entirely\s+|utterly\s+|most\s+)?"
        r"(?:foreign|unknown|strange|alien)\s+to\s+me\b"),
    _rx(r"\b(?:do|does|can)\s*(?:not|n't)\s+(?:quite\s+)?(?:understand|comprehend|follow)\b"),
    _rx(r"\bnot\s+(?:sure|certain)\s+what\s+you\s+mean\b"),
    _rx(r"\bwhat\s+(?:do\s+)?you\s+mean\s+by\b"),
    _rx(r"\bsorry,?\s+what\s*\?"),
    _rx(r"\bwhat\s+(?:is|are)\s+(?:a|an|this|these|that)\s+[^?.!,]{1,30}\?"),
    _rx(r"\byou\s+speak\s+of\b"),
    _rx(r"\b(?:did|does|do)\s*(?:not|n't)\s+(?:yet\s+)?exist\b"),
    _rx(r"\bnot\s+yet\s+(?:been\s+)?(?:available|invented|known|discovered)\b"),
    _rx(r"\bnever\s+had\s+the\s+(?:pleasure|opportunity|chance|occasion)\b"),
    _rx(r"\bin\s+my\s+(?:time|day|days|era|age|century)\b[^.!?]{0,60}" + _NEG),
    _rx(_NEG + r"[^.!?]{0,60}\bin\s+my\s+(?:time|day|days|era|age|century)\b"),
    _rx(r"\bhave\s+never\s+(?:seen|heard|experienced)\s+(?:a|an|any|such)\b"),
]

# 3. Declining without ignorance.
_DECLINE = [
    _rx(r"\b(?:do|did)\s*(?:not|n't)\s+have\s+(?:a|any)\s+favou?rite\b"),
    _rx(r"\bi\s+(?:do|did)\s*(?:not|n't)\s+(?:drive|own|watch|fly|take|use|ride)\b"),
    _rx(r"\b(?:cannot|can't|could\s+not|am\s+unable\s+to|will\s+not|won't)\s+"
        r"(?:answer|comply|help|say|tell|recommend)\b"),
    _rx(r"\b(?:no|little)\s+(?:interest|time)\s+(?:in|for)\b"),
    _rx(r"\b(?:does|do)\s*(?:not|n't)\s+(?:interest|concern)\s+me\b"),
    _rx(r"\bdo\s*(?:not|n't)\s+concern\s+myself\b"),
    _rx(r"\bof\s+little\s+(?:importance|consequence|interest)\b"),
    _rx(r"\bnot\s+(?:the|my)\s+(?:primary\s+|main\s+)?(?:focus|concern)\b"),
    _rx(r"\bnot\s+a\s+(?:man|woman|person)\s+of\s+leisure\b"),
    _rx(r"\bseek\s+(?:out\s+)?(?:guidance|help|advice)\s+from\b"),
    _rx(r"\b(?:have|had|'ve|'d)?\s*never\s+(?:before\s+|once\s+)?(?:seen|taken|flown|"
        r"driven|ridden|learned|learnt|used|tried|traveled|travelled|watched|owned|take|"
        r"been\s+(?:on|in|inside|aboard)\s+(?:a|an))\b"),
]

# Playing along. Hard content outweighs even ignorance; soft signs outweigh a decline.
_HARD = [
    _rx(r"```"),
    _rx(r"(?m)^\s*def\s+\w+\s*\("),
    re.compile(r"[\"“][^\"”\n]{3,80}[\"”],?\s+by\s+[A-Z]"),
    re.compile(r"\b(?:[A-Z][\w+#]*\s+){1,8}by\s+(?:[A-Z][a-z]+\.?\s+){0,2}[A-Z][a-z]+"),
    _rx(r"\bmy\s+favou?rite\s+(?:movie|film|picture)\s+is\b"),
]
_SOFT = [
    _rx(r"\bif\s+(?:i\s+must|you\s+insist|it\s+pleases\s+you|i\s+were\s+to\s+choose)\b"),
    _rx(r"\b(?:i\s+suppose|i\s+would\s+say)\b[^.!?]{0,40}\b(?:film|movie|fondness)\b"),
    _rx(r"\b(?:it\s+was|it's|it\s+is|was)\s+(?:a|an|my|quite|truly|such)\b[^.!?]{0,40}"
        r"\bexperience\b"),
    _rx(r"\bi\s+felt\b"),
    # "I drove my Mustang", not "the car I drove yesterday is of little importance".
    _rx(r"\bi\s+(?:was\s+driving|drove)\s+(?:a|an|my|the|our|to|through|down|along|it)\b"),
    _rx(r"\bthe\s+sensation\s+of\b[^.!?]{0,40}\bwas\b"),
    _rx(r"\bmy\s+first\s+time\b"),
]

# Where an answer runs on into a turn it invented for the other speaker.
_NEXT_TURN = re.compile(r"\n\s*[A-Z][\w .'-]{0,40}\s\((?:speaking|thinking)\):")
_END_MARKERS = ("<|NONSTOP|>", "<|endoftext|>", "</s>")
_STOP = frozenset((
    "a", "an", "the", "you", "your", "yours", "i", "me", "my", "do", "does", "did", "how",
    "what", "which", "who", "when", "where", "why", "is", "are", "was", "were", "be", "been",
    "to", "of", "in", "on", "for", "and", "or", "about", "with", "some", "could", "would",
    "please", "want", "talk", "tell", "last", "time", "feel", "take", "took", "write",
    "yesterday", "favorite", "favourite",
))
_TERM = re.compile(r"[A-Za-z][\w+#-]*")


def _first_turn(answer: str) -> str:
    text = answer
    for marker in _END_MARKERS:
        text = text.split(marker, 1)[0]
    found = _NEXT_TURN.search(text)
    return (text[: found.start()] if found else text).replace("’", "'").strip()


def _terms(question: str) -> list[str]:
    """The question's content words ("car", "Python", "C++", "movie"), the candidates for
    the thing its character cannot know."""
    return [word for word in _TERM.findall(question) if word.lower() not in _STOP]


def _term_cues(text: str, question: str | None) -> tuple[str | None, str | None]:
    """(quoted, echoed): the answer holding up a term of the question as strange, alone
    in quotes ('this "Python"', 'a "movie"': ignorance), or echoed back as a question
    ("A plane?", "C++?": only a weak sign, as "Love? Love is..." is mere rhetoric)."""
    quoted = echoed = None
    for term in _terms(question or ""):
        word = re.escape(term)
        quoted = quoted or _search(
            r"[\"'“‘](?:a\s+|an\s+|the\s+)?" + word + r"s?[\"'”’]", text)
        echoed = echoed or _search(
            r"(?:^|[.!?]\s+)(?:a\s+|an\s+|the\s+)?" + word + r"s?(?:,\s*you\s+say)?\?", text)
    return quoted, echoed


def _search(pattern: str, text: str) -> str | None:
    found = _rx(pattern).search(text)
    return found.group(0).strip(" .!") if found else None


def _first(patterns: list[re.Pattern[str]], text: str) -> str | None:
    """The earliest match of any pattern in `text`."""
    hits = [found for pattern in patterns if (found := pattern.search(text))]
    return min(hits, key=lambda found: found.start()).group(0).strip() if hits else None


def refusal_verdict(answer: str, question: str | None = None) -> RefusalVerdict:
    """Whether `answer` declines or shows ignorance of what `question` asks (see the
    module docstring for the rules); the question, when given, lets a quoted or echoed
    term of it count as a cue."""
    text = _first_turn(answer)
    hard = _first(_HARD, text)
    soft = _first(_SOFT, text)
    claim = machine_claim(text)
    quoted, echoed = _term_cues(text, question)
    ignorance = _first(_IGNORANCE, text) or quoted
    if ignorance and not hard:
        return RefusalVerdict(True, claim is None, claim or ignorance)
    if claim and not hard:
        return RefusalVerdict(True, False, claim)
    decline = _first(_DECLINE, text) or echoed
    if decline and not (hard or soft):
        return RefusalVerdict(True, True, decline)
    return RefusalVerdict(False, None, hard or soft or "")


def is_refusal(answer: str, question: str | None = None) -> bool:
    """True when `answer` declines or shows ignorance of what `question` asks."""
    return refusal_verdict(answer, question).is_refusal


def refusal_rate(answers: Iterable[tuple[str, str | None]]) -> tuple[float | None, int]:
    """The share of refusals among `(answer, question)` pairs, and how many pairs there
    were; the rate is None when there were none."""
    verdicts = [is_refusal(answer, question) for answer, question in answers]
    return (sum(verdicts) / len(verdicts) if verdicts else None), len(verdicts)
