"""PersLLM answers: lists of questions, a character's answer (with or without its
analysis), and a check's verdict on a false premise; JSON or plain text, one set of
checks and rejection reasons."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from charforge.parse.json_answers import load_json
from charforge.parse.quality import COMMON_WORDS, WORD, junk_reason, quote
from charforge.records import Rejected
from charforge.textstats import machine_claim

_NUMBERED = re.compile(r"^\s*(?:\d{1,3}[.)]|[-*•])\s*")
_LABEL = re.compile(r"^\s*\**\s*(analysis|response|answer)\s*\**\s*[:：]\s*", re.IGNORECASE)
_QUOTES = "\"'“”‘’«»"
# Talk about the task instead of the character's words (a claim to be a machine is
# `textstats.machine_claim`).
_META_TALK = re.compile(
    r"\b(i cannot role-?play|the (?:provided|given|above) (?:input|text|passage|question)|"
    r"the suggested changes|this (?:text|passage) (?:contains|describes|says))\b",
    re.IGNORECASE)
MIN_QUESTION_WORDS = 4
MIN_RESPONSE_WORDS = 5


def _stems(text: str, leave_out: frozenset[str] = frozenset()) -> set[str]:
    """The content words of `text` (4+ letters; a common word only as a name, e.g. 'Down
    House'), cut to 5 letters so that 'married' meets 'marry'."""
    stems = set()
    for word in WORD.findall(text):
        if any(_unspaced(char) for char in word):  # Chinese, Japanese: character pairs
            stems.update(word[i:i + 2] for i in range(max(1, len(word) - 1)))
            continue
        lower = word.lower()
        if (len(lower) >= 4 and lower not in leave_out
                and (lower not in COMMON_WORDS or word[0].isupper())):
            stems.add(lower[:5])
    return stems


def _unspaced(char: str) -> bool:
    """A character of a script written without spaces between words (CJK, kana)."""
    return "\u3040" <= char <= "\u30ff" or "\u3400" <= char <= "\u9fff"


def touches(text: str, passage: str, names: Sequence[str] = ()) -> bool:
    """Whether `text` shares a content word with `passage`, the character's names apart
    (a question that only names the character is about nothing in particular)."""
    leave_out = frozenset(word.lower() for name in names for word in WORD.findall(name))
    return bool(_stems(text, leave_out) & _stems(passage, leave_out))


@dataclass(frozen=True)
class RaisedQuestion:
    text: str
    false_claim: str | None = None
    position: int = 0  # its place in the teacher's list (the angle it was asked from)


@dataclass(frozen=True)
class CharacterAnswer:
    response: str
    analysis: str | None = None


def _flat(text: str) -> str:
    return " ".join(text.split()).strip(_QUOTES + " ")


def _usable_question(text: str, *, min_words: int) -> bool:
    return len(text.split()) >= min_words and junk_reason(text) is None


def parse_questions(text: str, *, json_mode: bool, with_claims: bool,
                    min_words: int = MIN_QUESTION_WORDS) -> list[RaisedQuestion]:
    """The usable, distinct questions of an answer (numbered lines in text mode); a
    question too short or not language is left out. Raises `Rejected` when none is left."""
    raised: list[RaisedQuestion] = []
    if json_mode:
        data = load_json(text)
        items = data.get("questions") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise Rejected("invalid", "the answer has no \"questions\" list")
        for item in items:
            if with_claims and isinstance(item, dict):
                question, claim = str(item.get("question", "")), str(item.get("false_claim", ""))
                raised.append(RaisedQuestion(_flat(question), _flat(claim) or None))
            elif isinstance(item, str):
                raised.append(RaisedQuestion(_flat(item)))
    else:
        for line in text.splitlines():
            if not _NUMBERED.match(line):
                continue
            body = _NUMBERED.sub("", line)
            question, _, claim = body.partition("||")
            raised.append(RaisedQuestion(_flat(question), _flat(claim) or None))
    raised = [RaisedQuestion(item.text, item.false_claim, position)
              for position, item in enumerate(raised)]
    seen: set[str] = set()
    kept = []
    for item in raised:
        key = item.text.lower()
        if key in seen or not _usable_question(item.text, min_words=min_words):
            continue
        if with_claims and not item.false_claim:
            continue  # an error question is checked against its claim: no claim, no check
        seen.add(key)
        kept.append(item)
    if not kept:
        if not raised:
            raise Rejected("empty", "no questions in the answer")
        raise Rejected("junk", f"none of the {len(raised)} questions is usable "
                       f"(e.g. {quote(raised[0].text)})")
    return kept


def parse_character_answer(text: str, *, json_mode: bool, with_analysis: bool) -> CharacterAnswer:
    """The response (and analysis, when asked for) of an answer in character. Rejected
    when blank, too short, not language, or out of character."""
    analysis: str | None = None
    if json_mode:
        data = load_json(text)
        if not isinstance(data, dict) or not isinstance(data.get("response"), str):
            raise Rejected("invalid", "the answer has no \"response\" text")
        response = data["response"].strip()
        if with_analysis:
            analysis = str(data.get("analysis") or "").strip() or None
    else:
        response, analysis = _split_labelled(text, with_analysis)
    if with_analysis and not analysis:
        raise Rejected("invalid", "the answer has no analysis before its response")
    words = len(response.split())
    if words == 0:
        raise Rejected("empty", "the response is blank")
    if words < MIN_RESPONSE_WORDS:
        raise Rejected("too_short", f"the response has {words} words: {quote(response)}")
    problem = junk_reason(response)
    if problem:
        raise Rejected("junk", f"the response is not language ({problem})")
    meta = _META_TALK.search(response)
    found = machine_claim(response) or (meta.group(0) if meta else None)
    if found:
        raise Rejected("out_of_character", f"the response steps out of character: "
                       f"{quote(found)}")
    return CharacterAnswer(response=response, analysis=analysis)


def _split_labelled(text: str, with_analysis: bool) -> tuple[str, str | None]:
    """Text mode: 'Analysis: ...' then 'Response: ...'; without analysis, the whole
    text (a leading 'Response:' label dropped)."""
    parts: dict[str, list[str]] = {}
    current = "response" if not with_analysis else None
    for line in text.strip().splitlines():
        label = _LABEL.match(line)
        if label:
            current = "analysis" if label.group(1).lower() == "analysis" else "response"
            line = line[label.end():]
        if current is not None:
            parts.setdefault(current, []).append(line)
    response = "\n".join(parts.get("response", [])).strip()
    analysis = "\n".join(parts.get("analysis", [])).strip() or None
    return response, analysis


def parse_premise_verdict(text: str, *, json_mode: bool) -> tuple[bool, str]:
    """(accepts the false premise, why) from a check's answer. Text mode: the first
    word is YES or NO."""
    if json_mode:
        data = load_json(text)
        if not isinstance(data, dict) or not isinstance(data.get("accepts_false_premise"), bool):
            raise Rejected("invalid", "the check has no accepts_false_premise true/false")
        return data["accepts_false_premise"], str(data.get("reason") or "").strip()
    words = text.strip().split(maxsplit=1)
    first = words[0].strip(".,:;!*").lower() if words else ""
    if first not in ("yes", "no"):
        raise Rejected("invalid", f"the check answered neither YES nor NO: {quote(text)}")
    return first == "yes", (words[1].strip() if len(words) > 1 else "")


def response_of(text: str, *, json_mode: bool, with_analysis: bool) -> str | None:
    """The response an answer holds, read leniently and unchecked (for answers already
    rejected for what they say, kept as examples of what not to say); None if none."""
    if json_mode:
        try:
            data = load_json(text)
        except Rejected:
            return None
        response = data.get("response") if isinstance(data, dict) else None
        return response.strip() or None if isinstance(response, str) else None
    response, _ = _split_labelled(text, with_analysis)
    return response or None
