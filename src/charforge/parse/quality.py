"""Content checks and cleaning shared by every answer format.

A small teacher happily emits well-formed junk, so schema-valid is not good: this
module says why a text is not language (`junk_reason`), cleans a turn's words
(`clean_content`), and assembles scenes and dialogues read from either the seed's
text layout (`text.py`) or JSON (`json_answers.py`), with one set of checks and one
set of rejection reasons. Every pattern runs in linear time on long lines.
"""

from __future__ import annotations

import itertools
import re
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from charforge.records import Action, Dialogue, Rejected, Scene, Turn


def truncation_check(finish_reason: str | None) -> None:
    """Reject an answer the teacher stopped at max_tokens: its end is missing."""
    if finish_reason == "length":
        raise Rejected("truncated", "the teacher stopped at max_tokens (finish_reason=length)")


def quote(text: str, limit: int = 40) -> str:
    """A short one-line quote of `text` for a rejection detail."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 3] + "...")


def split_lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def paragraphs(text: str) -> list[str]:
    """The non-blank lines of `text`, each with single spaces."""
    return [flat for flat in (" ".join(line.split()) for line in split_lines(text)) if flat]


def word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


def unbold(text: str) -> str:
    return text.replace("**", "").replace("__", "")


# ---------------------------------------------------------------- content checks

WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
_VOWELS = frozenset("aeiouyAEIOUY")


def _is_non_word(token: str) -> bool:
    """A token no language writes: letters glued to digits, or a Latin word without vowels."""
    core = token.strip(".,;:!?\"'“”‘’()[]-—…")
    letters = [c for c in core if c.isalpha()]
    if not letters:
        return False
    if any(c.isdigit() for c in core):
        return re.fullmatch(r"\d+(st|nd|rd|th|s)", core.lower()) is None  # 19th, 1800s
    ascii_only = all(c.isascii() for c in letters)
    return ascii_only and (len(core) > 30 or (len(letters) >= 3 and not _VOWELS & set(letters)))


def _word_run(words: list[str], run: int = 4) -> str | None:
    """A word said `run` or more times in a row."""
    count = 1
    for previous, word in itertools.pairwise(words):
        count = count + 1 if word == previous else 1
        if count >= run:
            return word
    return None


def _has_phrase_loop(words: list[str], size: int = 5, max_period: int = 150) -> bool:
    """The same `size`-word sequence starting 3 times, one period apart, with the same words
    in between: text said again and again back to back. (Anaphora varies its gaps.)"""
    last_start: dict[tuple[str, ...], int] = {}
    for third in range(len(words) - size + 1):
        gram = tuple(words[third : third + size])
        second = last_start.get(gram)
        last_start[gram] = third
        if second is None or third - second > max_period:
            continue
        first = 2 * second - third
        if first >= 0 and words[first:second] == words[second:third]:
            return True
    return False


def junk_reason(text: str) -> str | None:
    """Why `text` is not language (a short phrase), or None when it reads as text."""
    if not text.strip():
        return "empty"
    chars = [c for c in text if not c.isspace()]
    letters = sum(c.isalpha() for c in chars)
    if letters == 0:
        return "no letters"
    if len(chars) > 20 and letters / len(chars) < 0.5:
        return "too few letters"
    words = WORD.findall(text.lower())
    repeated = _word_run(words)
    if repeated:
        return f"the word {quote(repeated, 20)} repeated 4+ times in a row"
    if len(words) >= 40 and len(set(words)) / len(words) < 0.3:
        return "too few distinct words"
    if _has_phrase_loop(words):
        return "a phrase repeated in a loop"
    tokens = text.split()
    if len(tokens) >= 3 and sum(map(_is_non_word, tokens)) * 2 > len(tokens):
        return "mostly non-words"
    return None


def word_runs(text: str, size: int) -> Counter[tuple[str, ...]]:
    """How often each run of `size` words occurs in `text` (lower case, words only)."""
    words = WORD.findall(text.lower())
    return Counter(tuple(words[i : i + size]) for i in range(len(words) - size + 1))


def shared_run(text: str, reference: str, size: int = 8) -> str | None:
    """A run of `size` words that `text` shares with `reference`, or None."""
    if not reference:
        return None
    theirs = word_runs(reference, size)
    for run in word_runs(text, size):
        if run in theirs:
            return " ".join(run)
    return None


def repeated_run(text: str, size: int = 6, times: int = 3) -> str | None:
    """A run of `size` words said `times` or more times anywhere in `text`."""
    counts = word_runs(text, size)
    run, count = counts.most_common(1)[0] if counts else ((), 0)
    return " ".join(run) if count >= times else None


# The commonest English words, so that a short English profile still knows its language.
COMMON_WORDS = word_set(
    "a about after again against all also am an and any are as at be because been before "
    "being between both but by can could did do does doing down during each even ever every "
    "few for from further had has have having he her here hers herself him himself his how i "
    "if in into is it its itself just know let like made make man many may me might more most "
    "much must my myself never no nor not now of off on once one only or other our ours out "
    "over own said same say see shall she should so some still such than that the their them "
    "themselves then there these they this those though through to too under until up upon us "
    "very was we well were what when where which while who whom why will with would yes yet you "
    "your yours yourself come came go went tell told think thought want wanted look looked "
    "time day days year years life work music good great little old new first last long way "
    "take took give gave find found feel felt seem seemed ask asked friend friends father "
    "mother son brother sister wife house room night morning evening")


def vocabulary(texts: Sequence[str]) -> frozenset[str]:
    """The lower-case words of `texts` (a character's profile), with `COMMON_WORDS`."""
    return frozenset(w for text in texts for w in WORD.findall(text.lower())) | COMMON_WORDS


def known_share(text: str, known: frozenset[str]) -> float:
    """The share of `text`'s words found in `known`: low when an answer drifts into
    another language or into invented words."""
    words = [w for w in WORD.findall(text.lower()) if len(w) > 1]
    return sum(w in known for w in words) / len(words) if words else 1.0


# ---------------------------------------------------------------- content cleaning

_STAR_ACTION = re.compile(r"(?<!\*)\*(?!\s)[^*\n]{1,100}(?<!\s)\*(?!\*)")
_BRACKETED = re.compile(r"[(\[]([^()\[\]\n]{1,100})[)\]]")
_SPACE_BEFORE_PUNCT = re.compile(r" ([.,!?;:])")
_SENTENCE_END = tuple(".!?…:\"”—")
_STAGE_VERBS = word_set(
    "laughs smiles sighs pauses nods chuckles grins whispers shrugs frowns winks gasps leans "
    "looks turns sits stands stares groans scoffs sneers bows gestures"
)
_NOT_STAGE_ING = word_set(
    "during including according regarding concerning following excluding nothing something "
    "anything everything being morning evening king thing spring string"
)
_QUOTE_PAIRS = {'"': '"', "“": "”", "«": "»"}


def _is_stage_direction(match: re.Match[str]) -> bool:
    """"(smiling)" before a sentence, between sentences, or a lone "(laughing)"; not an
    aside inside a sentence such as "strategia (strategy)" or "(b)"."""
    inner = match.group(1).strip()
    if sum(c.isalpha() for c in inner) < 3:
        return False
    before = match.string[: match.start()].rstrip()
    after = match.string[match.end() :].lstrip()
    if not before or (before.endswith(_SENTENCE_END)
                      and (not after or after[0].isupper() or after[0] in "\"“'‘")):
        return True
    words = inner.split()
    if len(words) > 3 or not all(w.isalpha() and w.islower() for w in words):
        return False
    return words[0] in _STAGE_VERBS or (words[0].endswith("ing")
                                        and words[0] not in _NOT_STAGE_ING)


def _drop_stage_directions(line: str, thinking: bool) -> str:
    if thinking and _STAR_ACTION.fullmatch(line):
        return line[1:-1].strip()  # a thought in italics
    kept = _STAR_ACTION.sub(" ", line)
    kept = _BRACKETED.sub(lambda m: " " if _is_stage_direction(m) else m.group(0), kept)
    kept = " ".join(kept.split())
    return kept if kept == line else _SPACE_BEFORE_PUNCT.sub(r"\1", kept)


def unquote(paragraph: str) -> str:
    """`paragraph` without the quotes around it, when it is one quoted whole."""
    closer = _QUOTE_PAIRS.get(paragraph[:1])
    if closer is None or len(paragraph) < 2 or paragraph[-1] != closer:
        return paragraph
    inner = paragraph[1:-1]
    return paragraph if paragraph[0] in inner or closer in inner else inner.strip()


def clean_content(text: str, *, thinking: bool = False) -> str:
    """A turn's words: no markdown bold, stage directions or wrapping quotes, single
    spaces, and each paragraph break kept as one "\\n". In a thinking turn a paragraph
    wholly in *italics* is the thought, not an action."""
    cleaned = (unquote(_drop_stage_directions(p, thinking)) for p in paragraphs(unbold(text)))
    return "\n".join(p for p in cleaned if p)


# ---------------------------------------------------------------- scenes, from either format


class SceneScan(NamedTuple):
    """What a scenes answer held: the scenes kept, and how many blocks were skipped."""

    scenes: list[Scene]
    incomplete: int  # blocks without a location or a background
    junk: int  # blocks whose location or background is not language


_DEFAULT_SCENE_TYPE = "Chat"
SCENE_FIELDS = ("type", "location", "background")

def _clean_field(value: str) -> str:
    return unquote(" ".join(unbold(value).split()).strip(" |;,")).strip()


def _clean_scene_type(value: str) -> str:
    """"Chat (choice in chat, debate, ...)" -> "Chat"."""
    bare = re.split(r"[(\[]", _clean_field(value), maxsplit=1)[0].strip(" .")
    return bare or _clean_field(value).strip("()[] .") or _DEFAULT_SCENE_TYPE


def scene_from_fields(fields: dict[str, str]) -> Scene | None:
    location = _clean_field(fields.get("location", ""))
    background = _clean_field(fields.get("background", ""))
    if not location or not background:
        return None
    scene_type = _clean_scene_type(fields.get("type", ""))
    return Scene(type=scene_type, location=location, background=background)


def scan_scenes(found: list[Scene | None]) -> SceneScan:
    """Count the incomplete scenes (None) and those whose words are not language."""
    complete = [scene for scene in found if scene is not None]
    kept = [scene for scene in complete if len(scene.background.split()) >= 5
            and not junk_reason(scene.location) and not junk_reason(scene.background)]
    return SceneScan(kept, len(found) - len(complete), len(complete) - len(kept))


def accept_scenes(scan: SceneScan, nothing_given: bool, min_scenes: int) -> list[Scene]:
    counts = f"{scan.incomplete} incomplete, {scan.junk} junk"
    if scan.scenes and len(scan.scenes) < min_scenes:
        raise Rejected("too_short", f"{len(scan.scenes)} usable scenes, fewer than "
                       f"{min_scenes} ({counts})")
    if scan.scenes:
        return scan.scenes
    if scan.junk:
        raise Rejected("junk", f"all {scan.junk} complete scenes are junk")
    if nothing_given:
        raise Rejected("empty", "the answer holds no scenes")
    raise Rejected("invalid", f"no scene with a location and a background ({counts})")


# ---------------------------------------------------------------- dialogues, from either format


class MainNames:
    """Who the main character is: its name, its aliases, and their capitalised words."""

    def __init__(self, main_character: str, aliases: Sequence[str]) -> None:
        self.main = main_character
        names = [main_character, *aliases]
        self.full = {" ".join(name.split()).lower() for name in names}
        self.words = {word.lower() for name in names for word in WORD.findall(name)
                      if len(word) >= 3 and word[0].isupper()}

    def is_main(self, name: str) -> bool:
        lowered = name.lower()
        words = WORD.findall(lowered)
        return lowered in self.full or (bool(words) and all(w in self.words for w in words))

    def display(self, name: str) -> str:
        """The main character's own name, else the name (Title case if upper-case)."""
        if self.is_main(name):
            return self.main
        return name.title() if name.isupper() else name


RawTurn = tuple[str, Action, str]  # speaker and content as written


def action_of(word: str) -> Action:
    return "thinking" if word.lower() == "thinking" else "speaking"


@dataclass(frozen=True)
class DialogueRules:
    """What a dialogue needs to be accepted. The defaults read any well-formed dialogue
    (the seed's own data included); the generating stages ask for more."""

    min_turns: int = 2
    min_speakers: int = 1
    min_median_words: int = 0
    require_background: bool = True
    main_speaks: bool = False  # not only thinks: the others hear the character


def _is_bare_name(words: str) -> bool:
    """A turn that is only a name or two ("Aristotle", "Karl Holz."): a small teacher's
    placeholder, not a line."""
    tokens = words.strip(" .!?,;:").split()
    return 0 < len(tokens) <= 3 and all(t[:1].isupper() for t in tokens)


def build_dialogue(background: str, raw_turns: list[RawTurn], names: MainNames,
                   rules: DialogueRules) -> Dialogue:
    """Shared by text and JSON: names, who may think, cleaning, checks, merging."""
    if rules.require_background and not background:
        raise Rejected("no_background", "no background paragraph before the first turn")
    problem = junk_reason(background) if background else None
    if problem:
        raise Rejected("junk", f"the background is not language: {problem}")
    kept: list[Turn] = []
    others_thinking = junk = 0
    for speaker, action, content in raw_turns:
        name, words = names.display(speaker), clean_content(content, thinking=action == "thinking")
        if action == "thinking" and name != names.main:
            others_thinking += 1
        elif junk_reason(words) or (rules.min_median_words and _is_bare_name(words)):
            junk += 1
        else:
            kept.append(Turn(speaker=name, action=action, content=words))
    if junk * 2 > len(raw_turns) - others_thinking:
        raise Rejected("junk", f"{junk} of {len(raw_turns) - others_thinking} turns are junk")
    turns = _merge_same_speaker(kept)
    _require_turns(turns, names.main, rules)
    loop = repeated_run("\n".join(t.content for t in turns)) if rules.min_median_words else None
    if loop:
        raise Rejected("junk", f"the dialogue repeats itself: {quote(loop)} 3+ times")
    return Dialogue(background=background, turns=turns, dropped_turns=others_thinking + junk)


def _merge_same_speaker(turns: list[Turn]) -> list[Turn]:
    merged: list[Turn] = []
    for turn in turns:
        if merged and (merged[-1].speaker, merged[-1].action) == (turn.speaker, turn.action):
            merged[-1] = Turn(speaker=turn.speaker, action=turn.action,
                              content=f"{merged[-1].content}\n{turn.content}")
        else:
            merged.append(turn)
    return merged


def _require_turns(turns: list[Turn], main_character: str, rules: DialogueRules) -> None:
    if not any(turn.speaker == main_character for turn in turns):
        who = ", ".join(quote(n, 20) for n, _ in Counter(t.speaker for t in turns).most_common(3))
        raise Rejected("invalid", f"the main character {quote(main_character)} never speaks "
                       f"or thinks (speakers: {who or 'none'})")
    if rules.main_speaks and not any(turn.speaker == main_character and
                                     turn.action == "speaking" for turn in turns):
        raise Rejected("invalid", f"the main character {quote(main_character)} only thinks "
                       "and never speaks")
    if len(turns) < rules.min_turns:
        raise Rejected("too_short", f"{len(turns)} usable turns, fewer than {rules.min_turns}")
    speakers = {turn.speaker for turn in turns}
    if len(speakers) < rules.min_speakers:
        raise Rejected("one_speaker", f"{len(speakers)} speaker(s), fewer than "
                       f"{rules.min_speakers}: nobody answers")
    median = statistics.median(len(turn.content.split()) for turn in turns)
    if median < rules.min_median_words:
        raise Rejected("too_short", f"a median turn of {median:g} words, fewer than "
                       f"{rules.min_median_words}")
