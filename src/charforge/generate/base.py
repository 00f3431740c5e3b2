"""What the teacher stages share: the language check (every stage), the example-copy
check, the Experience Reconstruction dialogue stages' parsing and content rules, and the
decoding hints a local grammar reads."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache, cached_property
from typing import Any, ClassVar, Literal

from pydantic import BaseModel

from charforge import parse
from charforge.llm.base import Sampling
from charforge.parse.quality import (
    COMMON_WORDS,
    WORD,
    DialogueRules,
    MainNames,
    known_share,
    shared_run,
    vocabulary,
    word_set,
)
from charforge.parse.schemas import DialogueAnswer, TurnAnswer, narrowed
from charforge.records import Rejected
from charforge.stages import TaskStage
from charforge.tasks import TaskRow

# A copied example shows up as a long shared run of words.
COPY_RUN_WORDS = 8


# An answer whose words are mostly unknown to the profile's language is not usable
# (SmolLM2's answers against Beethoven's profile: fluent English 0.65-0.81 of words known,
# its pseudo-German 0.29).
MIN_KNOWN_SHARE = 0.4
# Profiles shorter than this say too little about their language to judge by.
MIN_PROFILE_WORDS = 150


class LanguageCheck(TaskStage):
    """A stage whose answers must be in the language of the character's own texts: one
    written mostly in words foreign to them is rejected ("junk")."""

    @cached_property
    def known_words(self) -> frozenset[str] | None:
        texts = [*self.character.profile_or_knowledge(),
                 *(passage.text for passage in self.character.style)]
        if sum(len(text.split()) for text in texts) < MIN_PROFILE_WORDS:
            return None
        return vocabulary(texts)

    @cached_property
    def english(self) -> bool:
        """Whether the character's texts are English (a quarter or more of their words
        among the commonest English ones): the openings a local grammar puts at the start
        of a background or a turn are English words, given to English characters only."""
        words = [w for text in self.character.profile_or_knowledge()
                 for w in WORD.findall(text.lower())]
        return bool(words) and sum(w in COMMON_WORDS for w in words) / len(words) >= 0.25

    def check_language(self, text: str) -> None:
        known = self.known_words
        share = known_share(text, known) if known else 1.0
        if share < MIN_KNOWN_SHARE:
            raise Rejected("junk", f"only {share:.0%} of its words are in the language of "
                           "the character's profile")


class ExampleStage(LanguageCheck):
    """A stage whose prompt shows an example answer: an answer that copies it is
    rejected ("copied")."""

    example_template: ClassVar[str] = ""

    @classmethod
    def template_names(cls) -> list[str]:
        return [*super().template_names(), cls.example_template]

    def check_copy(self, task: TaskRow, text: str) -> None:
        example = self.render(self.example_template, task)
        run = shared_run(text, example, COPY_RUN_WORDS)
        if run:
            raise Rejected("copied", f"copies the prompt's example: {run!r}")


class DialogueStage(ExampleStage):
    """Experiences and protective scenes: the answer is one dialogue."""

    Output = DialogueAnswer
    example_template = "example_dialogue"
    # What a reader would accept: 3+ turns from 2+ speakers, lines of real length.
    rules: ClassVar[DialogueRules] = DialogueRules(min_turns=3, min_speakers=2,
                                                   min_median_words=8, main_speaks=True)
    # How a local grammar holds a small teacher to the prompt's lengths: every turn at
    # least the median a reader asks for (so no short turn drags it down), at most a few
    # sentences, and few enough turns that the JSON closes well before max_tokens.
    hints: ClassVar[dict[str, Any]] = {
        "words": {"background": [10, 40], "content": [8, 50]},
        "items": {"turns": [4, 6]},
    }

    def derived(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Values computed from a task's inputs for its prompt: `people`, the others
        in the scene (an empty list: anybody may speak)."""
        return {"people": []}

    def render(self, template: str, task: TaskRow, **values: Any) -> str:
        return super().render(template, task, **{**self.derived(task.inputs), **values})

    def output_model(self, inputs: Mapping[str, Any]) -> type[BaseModel] | None:
        people = self.derived(inputs)["people"]
        return dialogue_model((inputs["short_name"], *people)) if people else self.Output

    def decoding_hints(self, inputs: Mapping[str, Any]) -> dict[str, Any] | None:
        """The stage's lengths, how the background opens (`background_lead`), and who
        says what turn by turn (`turn_sequence`)."""
        sequence = self.turn_sequence(inputs)
        if not self.english:  # who speaks, in what mode, stays; the English openings go
            return {**self.hints, "sequence": {"turns": [
                {k: v for k, v in turn.items() if k != "content"} | (
                    {"content": {"question": True}} if turn.get("content", {}).get("question")
                    else {}) for turn in sequence]}}
        return {**self.hints, "leads": {"background": self.background_lead(inputs)},
                "sequence": {"turns": sequence}}

    def background_lead(self, inputs: Mapping[str, Any]) -> str | list[str]:
        """The background's first words (or a choice of them): the character's name
        and where ("Beethoven is in"), so that it sets the scene around the character
        (SmolLM2 otherwise opens with "The story begins with a brief introduction", or
        with a potted biography after "Beethoven is"). English after the name matters:
        after a German name alone SmolLM2 goes on in (pseudo-)German."""
        return f"{inputs['short_name']} is in"

    def turn_sequence(self, inputs: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Who speaks in each turn, for a local grammar: left to itself a small teacher
        lets its character only think, or the others talk among themselves. Here
        another person opens, the character thinks, then answers, and from there the
        two alternate, the character speaking every other turn."""
        main = inputs["short_name"]
        people = self.derived(inputs)["people"]
        other: Any = list(people) if people else {"name_except": main_name_words(inputs)}
        said = {"lead": SPOKEN_OPENINGS}
        return [{"speaker": other, "action": "speaking", "content": said},
                {"speaker": main, "action": "thinking", "content": {"lead": THOUGHT_OPENINGS}},
                {"speaker": main, "action": "speaking", "content": said},
                {"speaker": other, "action": "speaking", "content": said},
                {"speaker": main, "action": "speaking", "content": said},
                {"speaker": other, "action": "speaking", "content": said}]

    def dialogue_from(self, task: TaskRow, text: str) -> dict[str, Any]:
        read = parse.parse_dialogue_json if task.mode == "json" else parse.parse_dialogue_text
        rules = self.rules
        dialogue = read(text, main_character=task.inputs["short_name"],
                        aliases=[task.inputs["name"]], min_turns=rules.min_turns,
                        min_speakers=rules.min_speakers,
                        min_median_words=rules.min_median_words,
                        main_speaks=rules.main_speaks)
        words = "\n".join([dialogue.background, *(turn.content for turn in dialogue.turns)])
        self.check_copy(task, words)
        self.check_language(words)
        # A reader drops a dialogue whose background or any turn is in another language,
        # even when the rest carries the whole above the threshold (SmolLM2 drifts into
        # pseudo-German for one turn, then back).
        for part in (dialogue.background, *(turn.content for turn in dialogue.turns)):
            self.check_language(part)
        return dialogue.model_dump()


# How a turn may open, for a local grammar: what a person says to another, in the first
# or second person. Left free, SmolLM2 narrates ("He keeps himself busy until he can
# talk to anyone") instead of speaking.
SPOKEN_OPENINGS = ["I", "You", "We", "My", "Your", "Yes,", "No,", "Why", "What", "How",
                   "Please", "Tell me,", "Do you", "Have you", "Is it", "Listen,", "Ah,",
                   "Oh,", "Well,", "Sir,", "Madam,", "Thank you,"]
THOUGHT_OPENINGS = ["I", "My", "Why", "What", "How", "If I", "Perhaps"]


def main_name_words(inputs: Mapping[str, Any]) -> list[str]:
    """The capitalised words of the character's names ("Ludwig", "Beethoven"): what
    another speaker's name must not be."""
    names = (inputs["short_name"], inputs["name"])
    return sorted({word for name in names for word in re.findall(r"[^\W\d_]+", name)
                   if word[:1].isupper()})


@cache
def dialogue_model(speakers: tuple[str, ...]) -> type[BaseModel]:
    """The dialogue output model with `speaker` limited to `speakers`."""
    turn = narrowed(TurnAnswer, "TurnAnswerNamed", speaker=Literal[speakers])
    return narrowed(DialogueAnswer, "DialogueAnswerNamed", turns=list[turn])


_LETTER = "a-z\u00C0-\u024F'’-"
_NAME = re.compile(rf"\b([A-Z][{_LETTER}]+(?: (?:van |von |de |da )?[A-Z][{_LETTER}]+)?)")
_NOT_NAMES = word_set(
    "The A An He She They His Her Their It Its This That These Those There Here When While "
    "After Before During In On At Of For From With By To And But Or As Then Now Later Once "
    "One Two Three Some Many Several Both All Each Every Another Other Sir Madam Mr Mrs Miss "
    "Dr Lord Lady King Queen Prince Princess Count Countess Duke Emperor Empress God "
    "January February March April May June July August September October November "
    "December Monday Tuesday Wednesday Thursday Friday Saturday Sunday Morning Evening "
    "Night Day Spring Summer Autumn Winter Scene Chat Debate Discussion Speech Lesson "
    "Quarrel Rehearsal Negotiation Background Location Type")
_PLACE_WORDS = word_set("in at to from near into across through around outside inside "
                        "toward towards via")


def people_in(text: str, main_character: str, aliases: tuple[str, ...] = (),
              limit: int = 3) -> list[str]:
    """Up to `limit` names of people other than the main character that `text`
    mentions (capitalised words, not at a sentence start unless they recur)."""
    names = MainNames(main_character, list(aliases))
    found: dict[str, int] = {}
    for match in _NAME.finditer(text):
        name = match.group(1)
        name = re.sub(r"['’]s?$", "", name)  # "Haydn's study": Haydn
        first = name.split()[0]
        before = text[: match.start()].rstrip()
        sentence_start = not before or before[-1] in ".!?:;\"“"
        place = before.rsplit(" ", 1)[-1].lower() in _PLACE_WORDS
        if place or first in _NOT_NAMES or names.is_main(name) or any(
                names.is_main(word) for word in name.split()):
            continue
        found[name] = found.get(name, 0) + (1 if not sentence_start else 0)
    ranked = [name for name, count in found.items() if count > 0]
    return ranked[:limit]


def teacher_sampling(max_tokens: int) -> Sampling:
    """The teacher's defaults: some variety (T=0.7), the stage's answer length."""
    return Sampling(temperature=0.7, top_p=1.0, max_tokens=max_tokens)
