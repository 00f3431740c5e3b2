"""Scores and rankings read out of judges' answers, without ever guessing.

A judge is asked to reason first and to give its score at the end, so its answer holds
numbers of every kind: years, counts, the scale restated, a first impression it then
revises. `read_score` reads the one number that is the score, or returns `score=None`
with a short `problem` ("no score", "out of range: 9", "ambiguous: 3 and 5", ...) that the
report counts, the same way a rejected teacher answer is kept as data.

Default mode, strongest evidence first:

1. a number after an explicit final marker ("Final score: 5", "Overall rating - 6");
   when several such markers disagree the answer is ambiguous;
2. else the last number given as a score: after "score", "rating", "grade", "rated",
   "I give/rate/would give it", after a restated scale ("Accuracy (1-7): 5"), or
   written as a fraction of the scale's top ("5/7", "5 out of 7");
3. else a number alone on the last non-empty line.

The scale itself ("1-7", "from 1 to 7", "(out of 7)") is never read as a score. A number
with a fraction part reads only when the fraction is zero ("5.0"); number words one to
ten read as numbers.

`last_line=True` is Character-LLM's convention: its judge prompts ask for the score
alone on the last line, so only that line is read, the same way ("5", "Score: 5", "**5**",
"5/7.", "My score is 5").

`read_ranking` reads a best-first order of labelled answers ("B > A > C", a numbered list,
"Ranking: B, A, C") into label -> rank, only when every label appears exactly once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_WORD_VALUE = {word: value for value, word in enumerate(_WORDS, start=1)}
_MAX_DIGITS = 9  # longer digit runs are never scores; this also keeps int() cheap

# A number: digits (a sign and a fraction allowed, so that they can be refused), or a
# word when only punctuation, a line end or "/7" follows it ("one of them" is prose).
_NUMBER = (
    r"(?P<num>(?<![\w.])-?\d+(?:\.\d+)?(?![\w.]\d)(?!\w)"
    r"|\b(?:" + "|".join(_WORDS) + r")\b(?=[ \t]*(?:$|\n|[.,;!)\]/]|out\s+of\b)))"
)
# What may follow a number: the scale's top ("/7", "out of 7"), or a range's other end
# ("4-5", "4 or 5").
_AFTER = (r"(?:[ \t]*(?:/|out\s+of\b)[ \t]*(?P<den>\d+))?"
          r"(?:[ \t]*(?:-|–|—|to\b|or\b)[ \t]*(?P<upper>\d+))?")
_NUMBER_AT = re.compile(r"\s*" + _NUMBER + _AFTER, re.IGNORECASE)
_FRACTION = re.compile(_NUMBER + r"[ \t]*(?:/|out\s+of\b)[ \t]*(?P<den>\d+)(?P<upper>)",
                       re.IGNORECASE)

_SCALE_MARK = "\u00a7"  # stands in for a masked scale; no judge's number contains it
_FINAL = r"(?:final|overall|total)\s+(?:score|rating|grade|mark|verdict|answer)"
_LABEL = re.compile(
    rf"\b(?:(?P<final>{_FINAL})|scored?|ratings?|rated|grade|"
    r"i(?:'d|'ll|\s+would|\s+will|\s+can)?\s+(?:give|rate|assign|award|score))\b"
    rf"|\({_SCALE_MARK}\)(?=\s*[:=\-–—])|{_SCALE_MARK}\s+scale(?=\s*[:=])",
    re.IGNORECASE,
)
# What may stand between a label and its number: "Score (1-7): 5", "I would give this
# answer a score of 6", "my rating is - 4".
_FILLER = re.compile(
    rf"\s*(?:[:=–—>|]|-(?!\d)|\({_SCALE_MARK}\)|{_SCALE_MARK}(?=\s*[:=])|"
    r"(?:is|of|was|be|would|will|should|as|a|an|it|this|that|the|these|them|him|her|"
    r"answer|response|reply|performance|score|rating|grade|final|overall|my|me|"
    r"here|given)\b)",
    re.IGNORECASE,
)
_MAX_FILLER = 16  # a label's number is a few words away at most
_BARE = re.compile(r"[\s(\[]*" + _NUMBER + _AFTER + r"[\s.!)\]]*", re.IGNORECASE)
_MARKDOWN = re.compile(r"[*_`#]+")
_RANKING_MARKDOWN = re.compile(r"[*`]+")  # labels may hold "_" or "#"


@dataclass(frozen=True)
class ScoreRead:
    """What was read from one answer: the score, or None and why not."""

    score: int | None
    problem: str = ""


@dataclass(frozen=True)
class _Candidate:
    strength: int  # 3: after a final marker, 2: given as a score, 1: alone on the last line
    at: int
    raw: str
    read: ScoreRead


def _plain(text: str, low: int, high: int) -> str:
    """`text` without markdown emphasis and with every statement of the scale masked."""
    plain = _MARKDOWN.sub("", text)
    scale = rf"(?<![\w.]){low}\s*(?:-|–|—|to|through)\s*{high}(?![\w.]\d)(?!\w)"
    plain = re.sub(rf"\(\s*(?:from\s+)?{scale}\s*\)", f"({_SCALE_MARK})", plain,
                   flags=re.IGNORECASE)
    plain = re.sub(rf"\(\s*out\s+of\s+{high}\s*\)", f"({_SCALE_MARK})", plain,
                   flags=re.IGNORECASE)
    return re.sub(scale, _SCALE_MARK, plain, flags=re.IGNORECASE)


def _judge(match: re.Match[str], low: int, high: int) -> ScoreRead:
    """The reading of one matched number: a score in range, or why it is not one."""
    num, den, upper = match.group("num"), match.group("den"), match.group("upper")
    if upper:
        return ScoreRead(None, f"a range, not a score: {_short(num)}-{_short(upper)}")
    if den is not None and (den.lstrip("0") or "0") != str(high):
        return ScoreRead(None, f"wrong scale: {_short(num)}/{_short(den)}")
    value = _value(num)
    if value is None:
        return ScoreRead(None, f"not an integer: {_short(num)}")
    if not low <= value <= high:
        return ScoreRead(None, f"out of range: {_short(num)}")
    return ScoreRead(value)


def _value(num: str) -> int | None:
    """The integer a number token stands for, or None when it has a fraction part."""
    word = _WORD_VALUE.get(num.lower())
    if word is not None:
        return word
    whole, _, fraction = num.partition(".")
    if fraction.strip("0"):
        return None
    negative = whole.startswith("-")
    digits = whole.lstrip("-").lstrip("0") or "0"
    value = 10**_MAX_DIGITS if len(digits) > _MAX_DIGITS else int(digits)
    return -value if negative else value


def _short(raw: str) -> str:
    return raw if len(raw) <= 12 else raw[:12] + "..."


def _number_after(text: str, start: int) -> re.Match[str] | None:
    """The number that follows a label ending at `start`, past the allowed filler."""
    at = start
    for _ in range(_MAX_FILLER):
        filler = _FILLER.match(text, at)
        if filler is None:
            break
        at = filler.end()
    return _NUMBER_AT.match(text, at)


def _candidates(plain: str, low: int, high: int) -> list[_Candidate]:
    """Every number in `plain` given as a score, with how strongly it was given."""
    found: list[_Candidate] = []
    for label in _LABEL.finditer(plain):
        number = _number_after(plain, label.end())
        if number is not None:
            strength = 3 if label.group("final") else 2
            found.append(_Candidate(strength, number.start("num"), number.group("num"),
                                    _judge(number, low, high)))
    for fraction in _FRACTION.finditer(plain):
        if (fraction.group("den").lstrip("0") or "0") == str(high):
            found.append(_Candidate(2, fraction.start("num"), fraction.group("num"),
                                    _judge(fraction, low, high)))
    lines = [line for line in plain.splitlines() if line.strip()]
    bare = _BARE.fullmatch(lines[-1]) if lines else None
    if bare is not None:
        found.append(_Candidate(1, len(plain), bare.group("num"), _judge(bare, low, high)))
    return found


def _choose(found: list[_Candidate]) -> ScoreRead:
    """The reading the strongest evidence gives; never a pick between disagreeing finals."""
    if not found:
        return ScoreRead(None, "no score")
    strongest = max(candidate.strength for candidate in found)
    tier = sorted((c for c in found if c.strength == strongest), key=lambda c: c.at)
    if strongest == 3:
        seen: dict[object, str] = {}
        for candidate in tier:
            key = candidate.read.score if candidate.read.score is not None else candidate.raw
            seen.setdefault(key, _short(candidate.raw))
        if len(seen) > 1:
            shown = list(seen.values())
            return ScoreRead(None, f"ambiguous: {', '.join(shown[:-1])} and {shown[-1]}")
    return tier[-1].read


def read_score(text: str, low: int, high: int, *, last_line: bool = False) -> ScoreRead:
    """The integer score in `low..high` that a judge's answer gives, or None and why.

    The default reads the whole answer as the module's docstring describes;
    `last_line=True` reads only its last non-empty line (Character-LLM's judges are told
    to end with the score alone), and nothing above it."""
    if low > high:
        raise ValueError(f"the scale's low end {low} is above its high end {high}")
    plain = _plain(text, low, high)
    if not last_line:
        return _choose(_candidates(plain, low, high))
    lines = [line for line in plain.splitlines() if line.strip()]
    if not lines:
        return ScoreRead(None, "no score")
    read = _choose(_candidates(lines[-1], low, high))
    if read.problem == "no score":
        return ScoreRead(None, "no score on the last line")
    return read


_PREFIX = r"(?i:(?:answer|response|agent|model|assistant|candidate)\s*)?"


def _label_token(labels: list[str], *, capture: bool = False) -> str:
    """A pattern for one label as judges write it: "B", "[B]", "(B)", "Answer B"."""
    names = "|".join(re.escape(label) for label in sorted(labels, key=len, reverse=True))
    group = "(?P<label>" if capture else "(?:"
    return rf"(?<!\w){_PREFIX}[\[(]?{group}{names})[\])]?(?!\w)"


@dataclass(frozen=True)
class _Order:
    at: int
    labels: list[str]
    numbered_in_sequence: bool = True  # a numbered list's numbers run 1, 2, 3, ...


def _orders(plain: str, labels: list[str]) -> list[_Order]:
    """Every ranking-shaped passage in `plain`, in the order they start."""
    token = _label_token(labels)
    captured = re.compile(_label_token(labels, capture=True))
    found: list[_Order] = []
    chain = re.compile(rf"{token}(?:[ \t]*(?:-?>+|≻)[ \t]*{token})+")
    listed = re.compile(rf"(?i:\brank(?:ing|ed)?)[ \t]*[:\-–—][ \t]*"
                        rf"({token}(?:[ \t]*[,;][ \t]*{token})+)")
    for match in (*chain.finditer(plain), *listed.finditer(plain)):
        names = [part.group("label") for part in captured.finditer(match.group(0))]
        found.append(_Order(match.start(), names))
    item = re.compile(r"^[ \t]*#?(?i:rank[ \t]*)?(\d{1,2})(?i:st|nd|rd|th)?(?i:[ \t]+place)?"
                      rf"[ \t]*[.):\-–][ \t]*{_label_token(labels, capture=True)}"
                      r"[ \t]*(?:$|[-–—:(,.])", re.MULTILINE)
    block: list[tuple[int, int, str]] = []  # (where, stated rank, label)
    for match in item.finditer(plain):
        if int(match.group(1)) == 1 and block:
            found.append(_numbered(block))
            block = []
        block.append((match.start(), int(match.group(1)), match.group("label")))
    if block:
        found.append(_numbered(block))
    return sorted(found, key=lambda order: order.at)


def _numbered(block: list[tuple[int, int, str]]) -> _Order:
    """One numbered list as an order, noting whether its numbers ran 1, 2, 3, ..."""
    in_sequence = [rank for _, rank, _ in block] == list(range(1, len(block) + 1))
    return _Order(block[0][0], [label for _, _, label in block], in_sequence)


def read_ranking(text: str, labels: list[str]) -> dict[str, int] | None:
    """Label -> rank (1 best) from a judge's best-first order of labelled answers, or None.

    Reads "B > A > C", "Ranking: B, A, C" and numbered lists ("1. B", "2nd: A"); labels
    are matched as given (case counts). The last passage that names every label, or
    names one twice, decides: it must name each label exactly once, else None. Passages
    naming only some labels ("A > C on style") are comparisons and are passed over. Ties
    are not read."""
    if not labels or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct and not empty: {labels!r}")
    plain = _RANKING_MARKDOWN.sub("", text)
    for order in reversed(_orders(plain, labels)):
        repeats = len(order.labels) != len(set(order.labels))
        if not repeats and len(order.labels) < len(labels) and order.numbered_in_sequence:
            continue  # a partial comparison, not the ranking
        if repeats or not order.numbered_in_sequence or len(order.labels) != len(labels):
            return None
        return {label: rank for rank, label in enumerate(order.labels, start=1)}
    return None
