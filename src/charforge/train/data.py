"""Dataset records -> token ids and labels, for any chat template.

The loss mask is found from the template's own text, never from markers inside it
(SmolLM2's ChatML template has no `{% generation %}` markers, so TRL's
`assistant_only_loss` refuses it): a reply's characters are those that rendering the
conversation up to that reply adds after rendering it up to the reply's generation
prompt. The whole conversation is tokenised once with character offsets, and a token
is learned when it holds a character of a learned span. A template whose earlier turns change
as a conversation grows is refused with one line.

A record becomes one sample per thought of the character: the server never sees
earlier thoughts (`charforge.llm.turns`), so a sample's history has none, and each
reply with a thought ends a sample of its own, learned with its thought. Every reply
is learned exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from charforge.errors import CharforgeError, first_problem
from charforge.jsonl import json_objects
from charforge.llm.turns import has_thought, render_turns, template_turns, without_thoughts
from charforge.render import EOT

IGNORE = -100


class TemplateError(CharforgeError):
    """A chat template charforge cannot find the reply tokens in."""


@dataclass
class Sample:
    input_ids: list[int]
    labels: list[int]
    source: str
    truncated: bool = False

    @property
    def learned(self) -> int:
        return sum(label != IGNORE for label in self.labels)


def conversation_pieces(messages: Sequence[Any]) -> list[tuple[list[dict[str, str]], int]]:
    """The samples of one chat record: (turns, first learned turn). Each reply of the
    character with a thought ends a piece, as does the last reply; a piece's history
    (turns before its first learned one) has its thoughts removed."""
    turns = template_turns(messages, thoughts="all")
    replies = [i for i, turn in enumerate(turns) if turn["role"] == "assistant"]
    if not replies:
        return []
    ends = [i for i in replies if has_thought(turns[i]["content"])]
    if not ends or ends[-1] != replies[-1]:
        ends.append(replies[-1])
    pieces = []
    start = 1 if turns[0]["role"] == "system" else 0
    for end in ends:
        piece = [dict(turn, content=without_thoughts(turn["content"]))
                 if turn["role"] == "assistant" and i != end else dict(turn)
                 for i, turn in enumerate(turns[:end + 1])]
        pieces.append((piece, start))
        start = end + 1
    return pieces


def _checked_prefix(shorter: str, longer: str, template_name: str) -> None:
    if not longer.startswith(shorter):
        raise TemplateError(
            f"the chat template of {template_name} renders earlier turns differently as a "
            "conversation grows, so the reply tokens cannot be found; use a base whose "
            "template keeps earlier turns as they are")


def learned_spans(tokenizer: Any, turns: list[dict[str, str]], start: int, *,
                  loss: Literal["character", "output"],
                  name: str = "the base") -> tuple[str, list[tuple[int, int]]]:
    """The rendered text of `turns` and the character ranges learned from `start` on:
    each reply (its text, end-of-turn marker and whatever the template writes after it
    before the next turn), or with `loss="output"` everything after the turns before
    `start`."""
    full = render_turns(tokenizer, turns, generation_prompt=False)
    if loss == "output":
        if start > 0:
            before = render_turns(tokenizer, turns[:start], generation_prompt=False)
            _checked_prefix(before, full, name)
            return full, [(len(before), len(full))]
        # No system message: the template may add its own default one, which is not
        # the record's to learn; learning starts at the first turn's text.
        first = full.find(turns[0]["content"]) if turns[0]["content"] else -1
        return full, [(max(first, 0), len(full))]
    spans = []
    for k in range(start, len(turns)):
        if turns[k]["role"] != "assistant":
            continue
        opened = render_turns(tokenizer, turns[:k], generation_prompt=True)
        closed = render_turns(tokenizer, turns[:k + 1], generation_prompt=False)
        _checked_prefix(opened, closed, name)
        _checked_prefix(closed, full, name)
        spans.append((len(opened), len(closed)))
    return full, spans


def tokens_with_labels(tokenizer: Any, text: str,
                       spans: Sequence[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """`text` tokenised once; a token is learned when it holds any character of one of
    `spans` (a template whose generation prompt ends in a space, `ASSISTANT: `, has the
    reply's first token start on that space: it is still the reply's)."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    labels = []
    for token, (begin, end) in zip(ids, encoded["offset_mapping"], strict=True):
        inside = any(begin < high and max(end, begin + 1) > low for low, high in spans)
        labels.append(token if inside else IGNORE)
    return ids, labels


def chat_samples(tokenizer: Any, messages: Sequence[Any], *, source: str,
                 loss: Literal["character", "output"] = "character",
                 name: str = "the base") -> list[Sample]:
    samples = []
    for turns, start in conversation_pieces(messages):
        text, spans = learned_spans(tokenizer, turns, start, loss=loss, name=name)
        ids, labels = tokens_with_labels(tokenizer, text, spans)
        samples.append(Sample(ids, labels, source))
    return samples


def prompted_sample(tokenizer: Any, prompt: str, output: str, *, source: str,
                    speaker: str | None = None) -> Sample:
    """A Character-LLM prompted record: the prompt, then the scene as text, then the
    end-of-sequence token. The whole scene is learned, or with `speaker` only that
    speaker's turns (`Name (action): ...<|eot|>`)."""
    text = prompt + output
    if speaker is None:
        spans = [(len(prompt), len(text))]
    else:
        spans, offset = [], len(prompt)
        for block in output.split(EOT):
            stripped = block.lstrip("\n")
            begin = offset + len(block) - len(stripped)
            if stripped.startswith(f"{speaker} ("):
                spans.append((begin, offset + len(block) + len(EOT)))
            offset += len(block) + len(EOT)
    ids, labels = tokens_with_labels(tokenizer, text, spans)
    eos = tokenizer.eos_token_id
    if eos is not None:  # learned when the scene's last words are learned
        ids.append(eos)
        labels.append(eos if spans and spans[-1][1] >= len(text.rstrip()) else IGNORE)
    return Sample(ids, labels, source)


# -- reading a dataset folder ----------------------------------------------------------
@dataclass
class TokenStats:
    """What tokenising the data gave: the report's data part."""

    records: int = 0
    samples: int = 0
    tokens: int = 0
    learned_tokens: int = 0
    truncated: int = 0
    dropped: int = 0  # samples with nothing left to learn (after truncation)
    lengths: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.lengths)
        def at(q: float) -> int:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0
        return {"records": self.records, "samples": self.samples, "tokens": self.tokens,
                "learned_tokens": self.learned_tokens, "truncated": self.truncated,
                "dropped": self.dropped,
                "length": {"mean": round(self.tokens / self.samples, 1) if self.samples else 0,
                           "median": at(0.5), "p90": at(0.9), "max": ordered[-1] if ordered
                           else 0}}


def fit(samples: Iterable[Sample], max_length: int, stats: TokenStats) -> list[Sample]:
    """Cut samples to `max_length` tokens (counted), dropping those left with nothing to
    learn."""
    kept = []
    for sample in samples:
        if len(sample.input_ids) > max_length:
            sample = Sample(sample.input_ids[:max_length], sample.labels[:max_length],
                            sample.source, truncated=True)
            stats.truncated += 1
        if not sample.learned:
            stats.dropped += 1
            continue
        stats.samples += 1
        stats.tokens += len(sample.input_ids)
        stats.learned_tokens += sample.learned
        stats.lengths.append(len(sample.input_ids))
        kept.append(sample)
    return kept


def read_jsonl(path: Path, *, shape: RowShape | None = None) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file, each checked against `shape` when given; a bad
    line is one error naming the file, the line and the field."""
    rows = []
    for number, row in json_objects(path):
        if shape is not None:
            _check_row(row, shape, f"{path}:{number}")
        rows.append(row)
    return rows


class Message(BaseModel):
    """A chat message as a record holds it."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant"]
    content: str
    name: str | None = None


class ChatRow(BaseModel):
    model_config = ConfigDict(extra="allow")

    messages: list[Message] = Field(min_length=1)


class PromptedRow(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt: str
    output: str


class PairRow(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt: list[Message] = Field(min_length=1)
    chosen: list[Message] = Field(min_length=1)
    rejected: list[Message] = Field(min_length=1)


RowShape = type[ChatRow] | type[PromptedRow] | type[PairRow]


def _check_row(row: dict[str, Any], shape: RowShape, where: str) -> None:
    try:
        shape.model_validate(row)
    except ValidationError as exc:
        field, problem = first_problem(exc)
        raise CharforgeError(f"{where}: {field or 'record'}: {problem}") from None


def read_mix(path: str | Path) -> list[dict[str, Any]]:
    """General instruction data: a JSONL file of chat records (`messages`), or a folder
    saved by `datasets` (its `train` split when it has splits)."""
    path = Path(path).expanduser()
    if path.is_file():
        rows = read_jsonl(path)
    elif path.is_dir():
        from datasets import DatasetDict, load_from_disk

        try:
            loaded = load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as exc:
            raise CharforgeError(f"--mix {path}: not a saved dataset ({exc})") from None
        if isinstance(loaded, DatasetDict):
            if "train" not in loaded:
                raise CharforgeError(f"--mix {path}: no train split")
            loaded = loaded["train"]
        rows = [dict(row) for row in loaded]
    else:
        raise CharforgeError(f"--mix {path}: no such file or folder")
    for number, row in enumerate(rows, 1):
        _check_row(row, ChatRow, f"--mix {path}: record {number}")
        if not any(m["role"] == "assistant" for m in row["messages"]):
            raise CharforgeError(f"--mix {path}: record {number} has no assistant turn")
    return rows
