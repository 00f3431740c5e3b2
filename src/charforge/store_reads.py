"""What the store answers: records, lineage, rejections, acceptance, counts, feedback and
tries, read-only queries over the tables `Store` writes. A mixin of `Store`, so every
caller keeps one object; split out to keep writing and reading apart."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from pydantic import BaseModel

from charforge.records import Feedback
from charforge.tasks import RecordRef, StoredRecord


class RejectedAnswer(BaseModel):
    """A teacher's answer that was rejected, with its task's settings and lineage."""

    task_id: str
    round: int
    reason: str
    turns: list[str]  # every answer of that round, in order (repairs, checks included)
    params: dict[str, Any]
    inputs: dict[str, Any]
    parents: list[tuple[str, int]]


class StageCounts(BaseModel):
    character: str
    stage: str
    pending: int = 0
    leased: int = 0
    done: int = 0
    failed: int = 0
    rejected: int = 0
    superseded: int = 0
    records: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class StoreReads:
    """The read-only queries of `Store`, over the connection `Store` opens."""

    _db: sqlite3.Connection

    def _all(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._db.execute(query, params).fetchall()

    def record_kinds(self, character: str) -> list[tuple[str, int, int]]:
        """(kind, records, last row id) of each kind of the character's records: a cheap
        fingerprint of what a stage or a build could read."""
        return [tuple(row) for row in self._all(
            "SELECT kind, COUNT(*), MAX(rowid) FROM records WHERE character=? GROUP BY kind "
            "ORDER BY kind", (character,))]

    def records(self, character: str, kind: str, *, page: int = 500) -> Iterator[StoredRecord]:
        """Current records (not superseded) in a stable order (task insertion order, then
        index), with the inputs of the task that produced them. Read a page at a time,
        each page a finished statement, so a caller may write between pages."""
        after_row, after_idx = 0, -1
        while True:
            rows = self._all(
                "SELECT t.rowid, r.task_id, r.idx, r.kind, r.data, t.inputs, r.version "
                "FROM tasks t CROSS JOIN records r ON r.task_id = t.id "
                "WHERE t.rowid >= ? AND t.character=? AND t.superseded_by IS NULL AND r.kind=? "
                "ORDER BY t.rowid, r.idx LIMIT ?", (after_row, character, kind, page + 1))
            fresh = [r for r in rows if (r[0], r[2]) > (after_row, after_idx)]
            for _, task_id, idx, kind_, data, inputs, version in fresh:
                yield StoredRecord(task_id, idx, kind_, json.loads(data), json.loads(inputs),
                                   version)
            if len(rows) <= page or not fresh:
                return
            after_row, after_idx = fresh[-1][0], fresh[-1][2]

    def task_inputs(self, character: str, stage: str) -> Iterator[tuple[tuple[RecordRef, ...],
                                                                          dict[str, Any]]]:
        """(parent records, inputs) of every current task of a stage, in planning order:
        what a stage may read to keep a choice it made when it first planned a task."""
        rows = self._all(
            "SELECT t.id, t.inputs, l.parent_task, l.parent_idx FROM tasks t LEFT JOIN "
            "lineage l ON l.task_id = t.id WHERE t.character=? AND t.stage=? AND "
            "t.superseded_by IS NULL ORDER BY t.rowid, l.parent_task, l.parent_idx",
            (character, stage))
        current: str | None = None
        inputs: dict[str, Any] = {}
        parents: list[RecordRef] = []
        for task_id, inputs_text, parent, idx in rows:
            if task_id != current:
                if current is not None:
                    yield tuple(parents), inputs
                current, inputs, parents = task_id, json.loads(inputs_text), []
            if parent is not None:
                parents.append((parent, idx))
        if current is not None:
            yield tuple(parents), inputs

    def rejected_answers(self, character: str, stage: str,
                         reasons: Sequence[str]) -> list[RejectedAnswer]:
        """Every answer of a stage rejected for one of `reasons`, in any round (a task
        rejected, then asked again and accepted, keeps its rejected answer here)."""
        marks = ", ".join("?" * len(reasons))
        rows = self._all(
            "SELECT j.task_id, j.round, j.reason, t.params, t.inputs FROM rejections j "
            "JOIN tasks t ON t.id = j.task_id WHERE t.character=? AND t.stage=? AND "
            f"j.reason IN ({marks}) ORDER BY t.rowid, j.round", (character, stage, *reasons))
        found = []
        for task_id, round_, reason, params, inputs in rows:
            turns = [text for (text,) in self._all(
                "SELECT text FROM completions WHERE task_id=? AND round=? ORDER BY turn",
                (task_id, round_))]
            found.append(RejectedAnswer(task_id=task_id, round=round_, reason=reason,
                                        turns=turns, params=json.loads(params),
                                        inputs=json.loads(inputs),
                                        parents=self.parents_of(task_id)))
        return found

    def feedback(self, character: str) -> list[Feedback]:
        """A character's review notes, oldest first."""
        return [Feedback(id=i, character=c, text=t, created_at=at) for i, c, t, at in self._all(
            "SELECT id, character, text, created_at FROM feedback WHERE character=? "
            "ORDER BY id", (character,))]

    def parents_of(self, task_id: str) -> list[RecordRef]:
        return [(t, i) for t, i in self._all(
            "SELECT parent_task, parent_idx FROM lineage WHERE task_id=? "
            "ORDER BY parent_task, parent_idx", (task_id,))]

    def children_of(self, task_id: str, idx: int | None = None) -> list[str]:
        query, params = "SELECT task_id FROM lineage WHERE parent_task=?", [task_id]
        if idx is not None:
            query += " AND parent_idx=?"
            params.append(idx)
        return [row[0] for row in self._all(query + " ORDER BY rowid", params)]

    def rejection_counts(self, character: str, stage: str | None = None) -> dict[str, int]:
        """Reasons of the tasks rejected now (not the history of earlier rounds)."""
        query = ("SELECT j.reason, COUNT(*) FROM rejections j JOIN tasks t ON t.id = j.task_id "
                 "AND j.round = t.round WHERE t.status='rejected' AND t.superseded_by IS NULL "
                 "AND t.character=?" + (" AND t.stage=?" if stage else "") + " GROUP BY j.reason")
        return dict(self._all(query, (character, stage) if stage else (character,)))

    def rejections(self, character: str, stage: str) -> list[tuple[str, str, str]]:
        """(task id, reason, detail) of each task of a stage rejected now."""
        return self._all(
            "SELECT j.task_id, j.reason, j.detail FROM rejections j JOIN tasks t ON "
            "t.id = j.task_id AND j.round = t.round WHERE t.status='rejected' AND "
            "t.superseded_by IS NULL AND t.character=? AND t.stage=? ORDER BY t.rowid",
            (character, stage))

    def acceptance(self, character: str, stage: str, *,
                   run_id: str | None = None) -> tuple[int, int]:
        """(accepted, tries) of a stage over its whole history, or over the rounds one
        run answered: every answered round of every task, retries and superseded work
        included. A task done now is one accepted try; each rejected round is one."""
        answered_in_run = ("AND EXISTS (SELECT 1 FROM attempts a WHERE a.task_id = t.id "
                           "AND a.round = {round} AND a.run_id=? AND a.state='answered')")
        where = "t.character=? AND t.stage=? "
        args: tuple[Any, ...] = (character, stage, *((run_id,) if run_id else ()))
        rejected = self._all(
            "SELECT COUNT(*) FROM rejections j JOIN tasks t ON t.id = j.task_id WHERE "
            + where + (answered_in_run.format(round="j.round") if run_id else ""), args)[0][0]
        done = self._all(
            "SELECT COUNT(*) FROM tasks t WHERE t.status='done' AND "
            + where + (answered_in_run.format(round="t.round") if run_id else ""), args)[0][0]
        return done, done + rejected

    def rejections_in_run(self, run_id: str, character: str,
                          stage: str) -> list[tuple[str, str, str]]:
        """(task id, reason, detail) of the rounds a run rejected."""
        return self._all(
            "SELECT j.task_id, j.reason, j.detail FROM rejections j JOIN tasks t ON "
            "t.id = j.task_id WHERE t.character=? AND t.stage=? AND EXISTS (SELECT 1 FROM "
            "attempts a WHERE a.task_id = j.task_id AND a.round = j.round AND a.run_id=?) "
            "ORDER BY j.created_at", (character, stage, run_id))

    def completions_of(self, task_id: str, *, all_rounds: bool = False) -> list[tuple[int, str]]:
        """(turn, text) of a task's answers in its current round (or every round)."""
        if all_rounds:
            return self._all("SELECT turn, text FROM completions WHERE task_id=? "
                             "ORDER BY round, turn", (task_id,))
        return self._all(
            "SELECT c.turn, c.text FROM completions c JOIN tasks t ON t.id = c.task_id AND "
            "c.round = t.round WHERE c.task_id=? ORDER BY c.turn", (task_id,))

    def stage_counts(self) -> list[StageCounts]:
        """Per character and stage: tasks by state, records, tokens billed (every try)."""
        counts: dict[tuple[str, str], StageCounts] = {}

        def entry(character: str, stage: str) -> StageCounts:
            return counts.setdefault((character, stage),
                                     StageCounts(character=character, stage=stage))

        for character, stage, status, superseded, n in self._all(
                "SELECT character, stage, status, superseded_by IS NOT NULL, COUNT(*) "
                "FROM tasks GROUP BY 1, 2, 3, 4"):
            row = entry(character, stage)
            if superseded:
                row.superseded += n
            else:
                setattr(row, status, getattr(row, status) + n)
        for character, stage, n in self._all(
                "SELECT t.character, t.stage, COUNT(*) FROM records r JOIN tasks t "
                "ON t.id=r.task_id WHERE t.superseded_by IS NULL GROUP BY 1, 2"):
            entry(character, stage).records = n
        for character, stage, prompt, completion in self._all(
                "SELECT t.character, t.stage, SUM(a.prompt_tokens), SUM(a.completion_tokens) "
                "FROM attempts a JOIN tasks t ON t.id = a.task_id GROUP BY 1, 2"):
            entry(character, stage).prompt_tokens = prompt or 0
            entry(character, stage).completion_tokens = completion or 0
        return [counts[key] for key in sorted(counts)]

    def identity_groups(self) -> list[tuple[str, str, dict[str, Any] | None, str | None,
                                            str | None, int]]:
        """(character, stage, models, prompt fp, output fp, tasks) for the current tasks:
        what `charforge status` compares with today's models and prompts."""
        return [(c, s, json.loads(m) if m else None, p, o, n) for c, s, m, p, o, n in self._all(
            "SELECT character, stage, models, prompt_fp, output_fp, COUNT(*) FROM tasks "
            "WHERE superseded_by IS NULL GROUP BY 1, 2, 3, 4, 5")]

    def tries(self, task_id: str) -> list[dict[str, Any]]:
        """Every try of a task (answered, failed, abandoned), oldest first."""
        columns = ("round", "turn", "role", "state", "error", "latency_s", "prompt_tokens",
                   "completion_tokens")
        return [dict(zip(columns, row, strict=True)) for row in self._all(
            f"SELECT {', '.join(columns)} FROM attempts WHERE task_id=? ORDER BY id",
            (task_id,))]
