"""Tasks as they cross module borders: what is planned (`TaskSpec`, under one
`TaskConfig`), what a stage runs (`TaskRow`), what was kept (`StoredTurn`,
`StoredRecord`), and what a run writes (`TryStarted`, `TurnAnswered`, `TaskFinished`,
`TaskFailed`).

A task has two hashes. Its *key* says what is asked (character, stage, inputs, parent
records); its *config* says how and of whom (each model's fingerprint, the fingerprint
of every template rendered, the output schema, the sampling settings). Its id hashes
both, and the task's own output schema.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import BaseModel

from charforge.llm.base import Completion, FailedTry, Sampling

RecordRef = tuple[str, int]  # (task id, record index)


def canonical(value: Any) -> str:
    """Canonical JSON: what ids are hashed from and what the store keeps."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def ordered_json(value: Any) -> str:
    """Compact JSON with keys in their given order: how a task's parameters are kept, as
    a JSON schema's property order is the order a model writes them in."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def task_key(character: str, stage: str, inputs: dict[str, Any],
             parents: Sequence[tuple[str, int]]) -> str:
    """The logical work item: which character, which stage, from what. Two tasks with
    one key are the same work asked in two ways (another model, prompt or setting)."""
    payload = canonical(["key", character, stage, inputs, sorted([t, i] for t, i in parents)])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]



def _hash(*parts: Any) -> str:
    return hashlib.sha256(canonical(list(parts)).encode("utf-8")).hexdigest()[:32]


class ModelRef(BaseModel):
    """A model as a task knows it: the name it was asked by, and its fingerprint."""

    model_config = {"frozen": True}

    name: str
    fp: str


class TaskConfig(BaseModel):
    """How every task of one plan is asked: the same for all of them."""

    model_config = {"frozen": True}

    models: dict[str, ModelRef]
    prompt_fp: str
    output_fp: str
    sampling: Sampling
    mode: str
    template: str = ""
    template_version: int = 0

    @cached_property
    def fingerprint(self) -> str:
        return _hash("config", {r: m.fp for r, m in self.models.items()}, self.prompt_fp,
                     self.output_fp, self.sampling.model_dump(mode="json"), self.mode)

    @property
    def model_names(self) -> str:
        names = [m.name for m in self.models.values()]
        return names[0] if len(names) == 1 else ",".join(
            f"{role}={m.name}" for role, m in self.models.items())


@dataclass(frozen=True)
class TaskSpec:
    """A unit of work before it is stored."""

    character: str
    stage: str
    inputs: dict[str, Any]
    config: TaskConfig
    parents: tuple[RecordRef, ...] = ()
    response_format: dict[str, Any] | None = None

    @cached_property
    def key(self) -> str:
        return task_key(self.character, self.stage, self.inputs, self.parents)

    @cached_property
    def id(self) -> str:
        return _hash("task", self.key, self.config.fingerprint, self.response_format)

    @property
    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"sampling": self.config.sampling.model_dump(mode="json"),
                                  "mode": self.config.mode}
        if self.response_format is not None:
            params["response_format"] = self.response_format
        return params

    def as_row(self) -> TaskRow:
        """The task as it will look once stored (for dry runs)."""
        return TaskRow(id=self.id, key=self.key, character=self.character, stage=self.stage,
                       config=self.config.fingerprint, params=self.params, inputs=self.inputs,
                       parents=self.parents, status="pending", attempts=0, round=0)


@dataclass(frozen=True)
class TaskRow:
    """A stored task as a stage sees it when running it."""

    id: str
    key: str
    character: str
    stage: str
    config: str | None
    params: dict[str, Any]
    inputs: dict[str, Any]
    parents: tuple[RecordRef, ...]
    status: str
    attempts: int
    round: int

    @cached_property
    def sampling(self) -> Sampling:
        """Validated once per task (a session asks for it at every request)."""
        stored = self.params.get("sampling")
        if stored is None:  # a task planned before Sampling existed
            stored = {k: self.params[k] for k in ("temperature", "top_p", "max_tokens")
                      if k in self.params}
        return Sampling.model_validate(stored)

    @property
    def mode(self) -> str:
        return str(self.params.get("mode", "text"))

    @property
    def response_format(self) -> dict[str, Any] | None:
        return self.params.get("response_format")


@dataclass(frozen=True)
class StoredTurn:
    turn: int
    role: str | None
    completion: Completion


@dataclass(frozen=True)
class StoredRecord:
    task_id: str
    idx: int
    kind: str
    data: dict[str, Any]
    inputs: dict[str, Any]
    version: int = 1


@dataclass
class PlanCounts:
    """What planning found: tasks added, already known, replaced before they started,
    and stale (the same work done under another config; queued when `rerun_stale`)."""

    planned: int = 0
    added: int = 0
    known: int = 0
    replaced: int = 0
    stale: int = 0
    stale_queued: int = 0


# -- what a run writes -----------------------------------------------------------------
@dataclass(frozen=True)
class TryStarted:
    """A request is about to be sent (so a kill leaves it on record as abandoned)."""

    task: TaskRow
    turn: int
    role: str


@dataclass(frozen=True)
class TurnAnswered:
    """An answer arrived: kept at once, whatever happens to the task after."""

    task: TaskRow
    turn: int
    role: str
    completion: Completion


@dataclass(frozen=True)
class TaskFinished:
    """A task's records or rejection and its final state, with the answers not kept
    yet (written under the same lease check). Records are JSON text already, so a record
    that cannot be serialised fails its own task, never a batch."""

    task: TaskRow
    records: Sequence[tuple[str, str, int]] = ()  # (kind, JSON data, schema version)
    rejection: tuple[str, str] | None = None
    answers: Sequence[TurnAnswered] = ()

    @classmethod
    def of(cls, task: TaskRow, *, records: Sequence[tuple[str, dict[str, Any]]] = (),
           version: int = 1, rejection: tuple[str, str] | None = None,
           answers: Sequence[TurnAnswered] = ()) -> TaskFinished:
        encoded = [(kind, canonical(data), version) for kind, data in records]
        return cls(task, encoded, rejection, answers)


@dataclass(frozen=True)
class TaskFailed:
    """A task that failed for good in this run, its failed tries, and the answers it
    got before failing (kept: a retry replays them)."""

    task: TaskRow
    error: str
    tries: Sequence[FailedTry] = field(default_factory=tuple)
    answers: Sequence[TurnAnswered] = ()


WriteOp = TryStarted | TurnAnswered | TaskFinished | TaskFailed
