"""What PersLLM's stages share: which time stages a run covers, how a stage is stated
to the teacher ("Now it is ..."), which passages a stage may use, and the retrieval
index over the character's knowledge and style."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charforge.character import Character, Stage
from charforge.errors import CharforgeError
from charforge.generate.base import LanguageCheck
from charforge.llm.embedded import cache_dir
from charforge.parse.persona import touches
from charforge.parse.quality import quote
from charforge.records import Rejected

if TYPE_CHECKING:  # numpy and the embedding model load only when a stage retrieves
    from charforge.retrieval import PassageIndex, PassageRef, Retrieved
    from charforge.retrieval import Side as PassageKind


def run_stages(character: Character, label: str | None) -> list[Stage | None]:
    """The time stages a run covers: the one named, else every stage of the character
    (None: a character without stages). An unknown label is a one-line error."""
    if label is not None:
        try:
            return [character.stage(label)]
        except KeyError as error:
            raise CharforgeError(str(error.args[0])) from None
    return list(character.stages) or [None]


def stage_now(character: Character, stage: Stage | None) -> str:
    """How the teacher is told which time it is: the stage's description, else its label."""
    if stage is None:
        return ""
    return stage.description or f"the {stage.label} period of {character.short_name}'s life"


def in_stage(passage_stage: str | None, stage: Stage | None) -> bool:
    """A passage serves a stage when it is unstaged or of that stage."""
    return stage is None or passage_stage is None or passage_stage == stage.label


def passages_of(character: Character, kind: PassageKind) -> list[tuple[str, str | None]]:
    """(text, stage label) of each passage of a kind, in the order refs index them."""
    passages = character.knowledge_passages() if kind == "knowledge" else character.style
    return [(passage.text, passage.stage) for passage in passages]


class PersonifiedStage(LanguageCheck):
    """A PersLLM stage: knows the character's stages and its retrieval index."""

    def check_topic(self, response: str, asked: str, inputs: Mapping[str, Any]) -> None:
        """An answer shares some content word with what was asked or with the passage
        retrieved first (the question's own, or the best match); one that shares none
        answers something else ("off_topic"). All 1,500 retrieved words would be too
        easy to touch by chance."""
        first = self.passage_texts(inputs)["knowledge"][:1]
        grounds = "\n".join([asked, *first])
        if not touches(response, grounds, (self.character.name, self.character.short_name)):
            raise Rejected("off_topic", f"the response touches neither the question nor its "
                           f"passage: {quote(response)}")

    def stage_of(self, label: str | None) -> Stage | None:
        if label is None:
            return None
        try:
            return self.character.stage(label)
        except KeyError:
            return None

    def token_of(self, label: str | None) -> str | None:
        stage = self.stage_of(label)
        return stage.token if stage else None

    @cached_property
    def index(self) -> PassageIndex:
        """The retrieval index, built once per set of passages (cached on disk)."""
        from charforge.retrieval import PassageIndex

        folder = (self.context.cache_folder or cache_dir()) / "retrieval"
        return PassageIndex.open(self.character, Path(folder))

    def retrieve(self, queries: list[tuple[str, str | None, PassageRef | None]],
                 knowledge_words: int, style_words: int) -> list[Retrieved]:
        """The passages for each (query, stage label, source passage), best first within
        the word budgets."""
        from charforge.retrieval import RetrievalBudget

        budget = RetrievalBudget(knowledge_words=knowledge_words, style_words=style_words)
        return self.index.search_many(queries, budget=budget) if queries else []

    def source_ref(self, source: Mapping[str, Any] | None, passage: str | None = None,
                   stage: str | None = None) -> PassageRef | None:
        """The passage a question came from, as it is in the character now: at its stored
        index when the text there is still `passage`, else wherever that text moved to
        (the character was edited); None when it is gone or no longer of `stage`."""
        from charforge.retrieval import PassageRef

        if not source:
            return None
        kind, index = source.get("kind"), int(source.get("index", -1))
        if kind not in ("knowledge", "style"):
            return None
        texts = [text for text, _ in self.passages[kind]]
        if passage is not None and not (0 <= index < len(texts) and texts[index] == passage):
            index = texts.index(passage) if passage in texts else -1
        if not 0 <= index < len(texts):
            return None
        label = self.passages[kind][index][1]
        if stage is not None and label is not None and label != stage:
            return None
        return PassageRef(kind=kind, index=index)

    @cached_property
    def passages(self) -> dict[str, list[tuple[str, str | None]]]:
        """(text, stage label) of the character's passages, per kind, as refs index them."""
        return {kind: passages_of(self.character, kind) for kind in ("knowledge", "style")}

    def passage_texts(self, inputs: Mapping[str, Any]) -> dict[str, list[str]]:
        """The retrieved passages a task's inputs name, as texts for its prompt (the ids
        are of the passages the task's `passages` key was built from)."""
        return {kind: [self.passages[kind][i][0] for i in inputs.get(kind, [])
                       if 0 <= i < len(self.passages[kind])]
                for kind in ("knowledge", "style")}
