"""Reading the interview outputs released with the Character-LLM paper, as `InterviewRecord`s.

A pure reader: files in, records out; no store, no model, no network. Point it at the
released `gen_results/` folder (or at a parent holding it, or at one of its two
subfolders) and it returns every interview it could read and, for each file it could
not, the path and a one-line reason. It never raises on a bad file.

Layout, as released (seven characters, four models each):

- `interview_single/<Name>_<model>_result/<date>.json`: single-turn answers;
- `interview_turns/multiturn_<Name>_<model>_result/<date>.jsonl`: five-turn interviews.

`<model>` is `sft` (the paper's trained Character-LLM), `chatgpt`, `alpaca-7b` or
`vicuna-7b`. The single-turn folders spell Hermione "Hermonie"; the multi-turn folders
spell her right. `canonical_name` undoes the misspelling.

Shapes found in the released files (every file was read; all of them are handled):

- single-turn file: a JSON list of `{topic_id, question, reply}`, one per question, in
  the order of the seed's question file (the same order for all four models);
- `reply` as a list of parts `[{role, action, content}]` (chatgpt and sft, e.g.
  `interview_single/Beethoven_sft_result/2023-00-00-00-00-00.json`; always one part,
  always "(speaking)" in the release) or as one such part, a bare dict (alpaca-7b and
  vicuna-7b, e.g. `interview_single/Beethoven_vicuna-7b_result/2023-00-00-00-00-00.json`).
  A plain string is read as a spoken answer too, though no released file has one;
- multi-turn file: JSON lines (and a final newline) of `{character, model, topic, qid,
  max_turns, finished, content}`, where `topic` is the opening question of the seed's
  multi-turn question file (`qid` its index there) and `content` is a list of
  `{turn_id, turn_role, turn_content}` alternating "interviewer" / "character", e.g.
  `interview_turns/multiturn_Beethoven_sft_result/2023-00-00-00-00-00.jsonl`;
- `turn_content`: a list of parts `[{role, action, content}]`, almost always one part.
  ChatGPT's character turns sometimes hold two or three: several spoken parts by the
  character (joined with a newline here), or the character's words followed by a part
  spoken as the interviewer ("Man"): the model ran on into the other voice. Such a part
  is left out of the answer and counted in `ImportReport.foreign_parts`
  (`interview_turns/multiturn_Beethoven_chatgpt_result/...`, line 4);
- actions: "(speaking)", "(thinking)" (five sft character turns hold only a thought,
  so their answer is empty, e.g. `multiturn_Caesar_sft_result`, line 12) and ChatGPT's
  typo "((speaking)" (`multiturn_Caesar_chatgpt_result`). An action naming "thinking"
  goes to the turn's `thinking`; every other action counts as speech.

The words themselves are kept as released. Alpaca's and Vicuna's single-turn answers
often run on into invented exchanges written inline ("...\\n\\nMan (speaking): ...");
that text is part of what the model said and stays in the answer.

Items pair across models and with charforge's own interviews: a single-turn item is
`questions.item_id(topic_id, question)`; a multi-turn item is the same id of the
opening question, with its topic_id looked up in the seed's multi-turn question file
(`item_id("multi", question)` when that file is absent). Topics (the words, e.g.
"interpersonal relationships") come from the question files in
`../seed_data/questions/` next to `gen_results/`, when present.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charforge.errors import CharforgeError

from .questions import Question, QuestionFileError, item_id, load_questions
from .records import InterviewMode, InterviewRecord, InterviewTurn

RELEASED_MODELS = ("sft", "chatgpt", "alpaca-7b", "vicuna-7b")
SUBFOLDERS: dict[str, InterviewMode] = {"interview_single": "single", "interview_turns": "multi"}
ALIASES = {"Hermonie": "Hermione"}
MAX_FILE_BYTES = 64 * 1024 * 1024
_RESULT_FOLDER = re.compile(r"^(?P<multi>multiturn_)?(?P<name>.+)_(?P<model>[^_]+)_result$")
_SUFFIX: dict[InterviewMode, str] = {"single": ".json", "multi": ".jsonl"}
_QUESTION_FILE: dict[InterviewMode, str] = {
    "single": "generated_agent_interview_{}.json",
    "multi": "generated_agent_interview_for_multiturn_{}.json",
}
_TURN_ROLES = ("interviewer", "character")


class _Shape(ValueError):
    """An entry (or a whole file) that is not in any shape this reader knows."""


@dataclass
class ImportedCharacter:
    """One character's imported interviews, all models and both modes."""

    spellings: tuple[str, ...]  # as the result folders spell it ("Hermonie", "Hermione")
    name: str  # canonical ("Hermione")
    records: list[InterviewRecord]


@dataclass
class ImportReport:
    """What `read_results` read, in a fixed order, and what it could not read."""

    interviews: list[tuple[str, InterviewRecord]] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)
    foreign_parts: int = 0  # interviewer's words inside a character turn, left out

    def characters(self) -> list[ImportedCharacter]:
        """The interviews grouped by character (canonical name), in the report's order."""
        grouped: dict[str, ImportedCharacter] = {}
        for name, record in self.interviews:
            folder = Path(record.source).parent.name
            spelled = _parse_folder(folder)[0] if _RESULT_FOLDER.match(folder) else name
            character = grouped.setdefault(name, ImportedCharacter((), name, []))
            if spelled not in character.spellings:
                character.spellings = (*character.spellings, spelled)
            character.records.append(record)
        return list(grouped.values())


# ------------------------------------------------------------------ names


def canonical_name(folder_name: str) -> str:
    """The character's right name, from a result folder's name or its character part:
    "Hermonie_sft_result" and "Hermonie" give "Hermione"."""
    try:
        spelled = _parse_folder(folder_name)[0]
    except _Shape:
        spelled = folder_name
    return ALIASES.get(spelled, spelled)


def match_character(name: str, characters: Iterable[tuple[str, str, str]]) -> str | None:
    """The slug of the workspace character that `name` (e.g. "Beethoven") refers to, among
    (slug, name, short_name) triples; None when none does, or when two equally do.

    Case-insensitive, tried in order: the short name, full name or slug; the last word of
    the full name ("Ludwig van Beethoven"); its first word ("Martin Luther King Jr.")."""
    wanted = canonical_name(name).casefold().strip()
    known = [(slug, full.split(), short) for slug, full, short in characters]
    tiers = (
        lambda slug, words, short: {short, " ".join(words), slug},
        lambda slug, words, short: set(words[-1:]),
        lambda slug, words, short: set(words[:1]),
    )
    for keys in tiers:
        found = {slug for slug, words, short in known
                 if wanted in {key.casefold() for key in keys(slug, words, short)}}
        if found:
            return found.pop() if len(found) == 1 else None
    return None


def _parse_folder(folder_name: str) -> tuple[str, str, InterviewMode]:
    """(character as spelled, model, mode) of `<Name>_<model>_result` or
    `multiturn_<Name>_<model>_result`; raises `_Shape` for any other name."""
    found = _RESULT_FOLDER.match(folder_name)
    if found is None:
        raise _Shape(f"folder {folder_name!r} is not named <Name>_<model>_result")
    return found["name"], found["model"], "multi" if found["multi"] else "single"


# ------------------------------------------------------------------ folders


def read_results(folder: str | Path, questions: str | Path | None = None) -> ImportReport:
    """Every interview under a Character-LLM `gen_results` folder (or a parent holding
    it, or its `interview_single` / `interview_turns` folder alone), ordered by character,
    mode (single first), model, file and position in the file. `questions` is the seed's
    question folder (default: `seed_data/questions` beside `gen_results`), for topics.
    Raises `CharforgeError` only when `folder` holds no results folder at all."""
    root, subfolders = _locate(Path(folder).expanduser())
    topics = _Topics(Path(questions) if questions is not None
                     else root.parent / "seed_data" / "questions")
    report = ImportReport()
    found: list[tuple[str, InterviewRecord]] = []
    for sub in subfolders:
        for path in sorted((root / sub).iterdir()):
            if path.name.startswith("."):
                continue
            found += _read_result_folder(path, root, SUBFOLDERS[sub], topics, report)
    order = {mode: index for index, mode in enumerate(SUBFOLDERS.values())}
    found.sort(key=lambda pair: (pair[0], order[pair[1].mode], pair[1].agent, pair[1].source))
    report.interviews = found
    report.problems += topics.problems
    return report


def _locate(folder: Path) -> tuple[Path, list[str]]:
    """(the gen_results folder, the subfolders of it to read)."""
    expected = ("expected Character-LLM's gen_results folder, holding interview_single/ "
                "or interview_turns/")
    if not folder.is_dir():
        raise CharforgeError(f"no folder {folder}: {expected}")
    for base in (folder, folder / "gen_results"):
        present = [sub for sub in SUBFOLDERS if (base / sub).is_dir()]
        if present:
            return base, present
    if folder.name in SUBFOLDERS:
        return folder.parent, [folder.name]
    raise CharforgeError(f"{folder} holds no interview results: {expected}")


def _read_result_folder(path: Path, root: Path, mode: InterviewMode, topics: _Topics,
                        report: ImportReport) -> list[tuple[str, InterviewRecord]]:
    try:
        if not path.is_dir():
            raise _Shape(f"not a result folder: expected {_SUFFIX[mode]} files in folders")
        spelled, model, folder_mode = _parse_folder(path.name)
        if folder_mode != mode:
            raise _Shape(f"not a {mode}-turn result folder (<Name>_<model>_result)")
    except _Shape as problem:
        report.problems.append((path, str(problem)))
        return []
    name = canonical_name(spelled)
    found: list[tuple[str, InterviewRecord]] = []
    for file in sorted(path.iterdir()):
        if file.name.startswith("."):
            continue
        context = _Context(name, model, mode, file.relative_to(root).as_posix(), topics)
        try:
            records, problem = _read_file(file, context, report)
        except _Shape as unread:
            report.problems.append((file, str(unread)))
            continue
        found += [(name, record) for record in records]
        if problem:
            report.problems.append((file, problem))
    return found


# ------------------------------------------------------------------ files


@dataclass
class _Context:
    """Where a file's records come from."""

    character: str
    model: str
    mode: InterviewMode
    source: str
    topics: _Topics

    def record(self, item: str, topic_id: str, topic: str,
               turns: list[InterviewTurn]) -> InterviewRecord:
        return InterviewRecord(agent=self.model, model=self.model, mode=self.mode, item=item,
                               topic_id=topic_id, topic=topic, turns=turns,
                               source=self.source)


def _read_file(path: Path, context: _Context,
               report: ImportReport) -> tuple[list[InterviewRecord], str]:
    """(records, "" or a one-line note of the entries left out); `_Shape` when nothing
    in the file could be read."""
    if path.suffix != _SUFFIX[context.mode] or not path.is_file():
        raise _Shape(f"not a {_SUFFIX[context.mode]} file")
    entries = _load_entries(path, context.mode)
    records: list[InterviewRecord] = []
    bad: list[str] = []
    items: dict[str, int] = {}
    for number, entry in enumerate(entries, start=1):
        try:
            if isinstance(entry, _Unparsed):
                raise _Shape(f"invalid JSON ({entry.reason})")
            record, foreign = (_single_record if context.mode == "single"
                               else _multi_record)(entry, context)
        except _Shape as problem:
            bad.append(f"entry {number}: {problem}")
            continue
        report.foreign_parts += foreign
        seen = items[record.item] = items.get(record.item, 0) + 1
        if seen > 1:  # the same question twice in one file: keep both, apart
            record = record.model_copy(update={"item": f"{record.item}#{seen}"})
        records.append(record)
    if not records:
        raise _Shape(bad[0] if len(bad) == 1 else
                     f"none of its {len(entries)} entries could be read; "
                     f"{bad[0] if bad else 'it holds no entries'}")
    note = f"{len(bad)} of {len(entries)} entries left out; {bad[0]}" if bad else ""
    return records, note


@dataclass
class _Unparsed:
    """A JSON line that did not parse."""

    reason: str


def _load_entries(path: Path, mode: InterviewMode) -> list[Any]:
    """The file's entries: a JSON list, or one value per non-blank JSON line."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise _Shape(f"larger than {MAX_FILE_BYTES // 2**20} MiB")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise _Shape(f"cannot be read ({type(error).__name__})") from None
    if not text.strip():
        raise _Shape("empty file")
    lines: list[Any] = []
    if mode == "multi":
        lines = [_json_line(line) for line in text.splitlines() if line.strip()]
        if not isinstance(lines[0], _Unparsed):
            return lines
    try:  # a single-turn file, or a .jsonl that is one JSON document
        data = json.loads(text)
    except json.JSONDecodeError as error:
        if any(not isinstance(line, _Unparsed) for line in lines):
            return lines  # JSON lines after all, the first one broken
        raise _Shape(f"invalid JSON: {error.msg} at line {error.lineno}") from None
    if mode == "multi" and isinstance(data, dict):
        return [data]
    if not isinstance(data, list):
        raise _Shape(f"expected a JSON list of interview entries, found {_kind(data)}")
    return data


def _json_line(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        return _Unparsed(error.msg)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string"}.get(type(value),
                                                                    type(value).__name__)


# ------------------------------------------------------------------ entries


def _single_record(entry: Any, context: _Context) -> tuple[InterviewRecord, int]:
    if not isinstance(entry, dict):
        raise _Shape(f"expected an object with topic_id, question and reply, found "
                     f"{_kind(entry)}")
    topic_id, question = entry.get("topic_id"), entry.get("question")
    if not isinstance(topic_id, str | int) or isinstance(topic_id, bool) or topic_id == "":
        raise _Shape("no topic_id")
    if not isinstance(question, str) or not question.strip():
        raise _Shape("no question")
    if "reply" not in entry:
        raise _Shape("no reply")
    answer, thinking, foreign = _split(_parts(entry["reply"]), interviewer=set())
    item = item_id(str(topic_id), question)
    asked = context.topics.single(context.character).get(item)
    turn = InterviewTurn(question=question.strip(), answer=answer, thinking=thinking)
    return context.record(item, str(topic_id), asked.topic if asked else "", [turn]), foreign


def _multi_record(entry: Any, context: _Context) -> tuple[InterviewRecord, int]:
    if not isinstance(entry, dict) or not isinstance(entry.get("content"), list):
        raise _Shape("expected an object with a list of turns under 'content'")
    opening = entry.get("topic")
    if not isinstance(opening, str) or not opening.strip():
        raise _Shape("no opening question under 'topic'")
    said: list[tuple[str, list[tuple[str, str, str]]]] = []
    for number, turn in enumerate(entry["content"], start=1):
        if not isinstance(turn, dict) or turn.get("turn_role") not in _TURN_ROLES:
            raise _Shape(f"turn {number} has no turn_role 'interviewer' or 'character'")
        if "turn_content" not in turn:
            raise _Shape(f"turn {number} has no turn_content")
        said.append((turn["turn_role"], _parts(turn["turn_content"])))
    turns, foreign = _pair_turns(said)
    if not turns:
        raise _Shape("no turns")
    asked = context.topics.multi(context.character).get(item_id("", opening))
    topic_id = asked.topic_id if asked else ""
    item = item_id(topic_id or "multi", opening)
    return context.record(item, topic_id, asked.topic if asked else "", turns), foreign


def _parts(reply: Any) -> list[tuple[str, str, str]]:
    """(role, action, content) of each part of a reply: a list of parts, one part, or
    a plain string (spoken)."""
    if isinstance(reply, str):
        return [("", "(speaking)", reply)]
    if isinstance(reply, dict):
        reply = [reply]
    if not isinstance(reply, list):
        raise _Shape(f"a reply is {_kind(reply)}, not parts or text")
    parts = []
    for part in reply:
        if isinstance(part, str):
            parts.append(("", "(speaking)", part))
            continue
        if not isinstance(part, dict) or not isinstance(part.get("content"), str):
            raise _Shape("a reply part has no text under 'content'")
        role, action = part.get("role", ""), part.get("action", "")
        if not isinstance(role, str) or not isinstance(action, str):
            raise _Shape("a reply part's role or action is not text")
        parts.append((role.strip(), action, part["content"]))
    return parts


def _is_thinking(action: str) -> bool:
    return "thinking" in action.lower()


def _split(parts: list[tuple[str, str, str]], interviewer: set[str]) -> tuple[str, str, int]:
    """(answer, thinking, parts left out as the interviewer's) of one reply."""
    spoken: list[str] = []
    thought: list[str] = []
    foreign = 0
    for role, action, content in parts:
        if role and role in interviewer:
            foreign += 1
        elif content.strip():
            (thought if _is_thinking(action) else spoken).append(content.strip())
    return "\n".join(spoken), "\n".join(thought), foreign


def _pair_turns(said: list[tuple[str, list[tuple[str, str, str]]]]
                ) -> tuple[list[InterviewTurn], int]:
    """Questions (the interviewer's turns) paired with the character's following turn;
    two turns in a row by the same side are joined."""
    interviewer = {role for side, parts in said if side == "interviewer"
                   for role, _, _ in parts} - {""}
    character = {role for side, parts in said if side == "character" and parts
                 for role, _, _ in parts[:1]}
    interviewer -= character
    turns: list[InterviewTurn] = []
    question: str | None = None
    foreign = 0
    for side, parts in said:
        if side == "interviewer":
            asked = "\n".join(content.strip() for _, action, content in parts
                              if content.strip() and not _is_thinking(action))
            question = asked if question is None else f"{question}\n{asked}".strip()
            continue
        answer, thinking, left_out = _split(parts, interviewer)
        foreign += left_out
        if question is None and turns:
            last = turns[-1]
            turns[-1] = last.model_copy(update={
                "answer": "\n".join(text for text in (last.answer, answer) if text),
                "thinking": "\n".join(text for text in (last.thinking, thinking) if text)})
        else:
            turns.append(InterviewTurn(question=question or "", answer=answer,
                                       thinking=thinking))
        question = None
    if question is not None:
        turns.append(InterviewTurn(question=question, answer=""))
    return turns, foreign


# ------------------------------------------------------------------ question sets


class _Topics:
    """The seed's question files, read once per character and mode, for topics."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.problems: list[tuple[Path, str]] = []
        self._cache: dict[tuple[str, InterviewMode], dict[str, Question]] = {}

    def single(self, character: str) -> dict[str, Question]:
        """item -> question."""
        return self._load(character, "single", lambda question: question.item)

    def multi(self, character: str) -> dict[str, Question]:
        """The question's words (as `item_id("", ...)`) -> question."""
        return self._load(character, "multi", lambda question: item_id("", question.question))

    def _load(self, character: str, mode: InterviewMode, key: Any) -> dict[str, Question]:
        if (character, mode) not in self._cache:
            path = self.folder / _QUESTION_FILE[mode].format(character)
            questions: list[Question] = []
            if path.is_file():
                try:
                    questions = load_questions(path)
                except QuestionFileError as error:
                    self.problems.append((path, str(error).removeprefix(f"{path}: ")))
            by_key: dict[str, Question] = {}
            for question in questions:
                by_key.setdefault(key(question), question)
            self._cache[(character, mode)] = by_key
        return self._cache[(character, mode)]
