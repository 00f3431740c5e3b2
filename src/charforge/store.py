"""The workspace's SQLite store: every task, try, answer, record and verdict.

One database per workspace (`charforge.db`, WAL). Nothing else in charforge
writes SQL. The schema lives in `migrations.py`, task types in `tasks.py`.

A task's id hashes what is asked (its key) and how (its config): changed work
gets a new id, the same work is done once. A planned task whose key is known
under another config replaces it when the old one never started, and is
otherwise reported *stale* and queued only when asked (`rerun_stale`); the old
one is *superseded* once its replacement is done, and kept, like every rejected
answer, as history (and as negatives for DPO).

Task states: pending -> leased (run id, expiry) -> done | failed | rejected. A run
leases only tasks of its own config. Answers are committed as they arrive, each
under the task's lease; a task's records, rejection and final state are written
in one transaction with its last answer. A new run takes back the leases of runs
whose process is gone, and marks their requests in flight as abandoned.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from charforge.errors import StoreError
from charforge.files import process_alive
from charforge.llm.base import Completion, FailedTry, Usage
from charforge.migrations import apply_migrations
from charforge.records import Feedback
from charforge.tasks import (
    PlanCounts,
    RecordRef,
    StoredRecord,
    StoredTurn,
    TaskFailed,
    TaskFinished,
    TaskRow,
    TaskSpec,
    TryStarted,
    TurnAnswered,
    WriteOp,
    canonical,
    ordered_json,
)

DB_NAME = "charforge.db"
TaskStatus = Literal["pending", "leased", "done", "failed", "rejected"]
STATUSES: tuple[TaskStatus, ...] = ("pending", "leased", "done", "failed", "rejected")


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


_WHILE_LEASED = ("WHERE EXISTS (SELECT 1 FROM tasks WHERE id=? AND status='leased' "
                 "AND lease_run=?)")
_TASK_COLUMNS = ("id, key, character, stage, config, params, inputs, status, attempts, round")


def _store_error(path: Path, exc: sqlite3.Error) -> StoreError:
    text = str(exc)
    if path.is_dir():
        return StoreError(f"{path} is a folder, not charforge's store; move it aside")
    if "not a database" in text or "malformed" in text:
        return StoreError(f"{path} is not a readable charforge store ({text}); move it aside "
                          "and run again to start a new one")
    if "readonly" in text or "read-only" in text:
        return StoreError(f"{path} is read-only; charforge writes every answer to its store "
                          "(check the permissions of the file and its folder)")
    return StoreError(f"{path}: cannot open the store ({text})")


class Store:
    """The one object that reads and writes the database."""

    def __init__(self, path: str | Path, *, synchronous: Literal["NORMAL", "FULL"] = "NORMAL"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from None
        try:
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL survives process crashes; FULL also survives power loss.
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            with self._write() as db:
                apply_migrations(db)
        except sqlite3.Error as exc:
            self._db.close()
            raise _store_error(self.path, exc) from None

    @classmethod
    def for_workspace(cls, root: str | Path) -> Store:
        return cls(Path(root) / DB_NAME)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions ----------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: read-then-write transactions never fail half way. Reads on
        this connection are always finished (fetched) before a write begins."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException as exc:
            self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and "readonly" in str(exc):
                raise _store_error(self.path, exc) from None
            raise
        self._db.execute("COMMIT")

    def _all(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._db.execute(query, params).fetchall()

    def applied_migrations(self) -> list[str]:
        return [row[0] for row in self._all("SELECT name FROM migrations ORDER BY name")]

    def integrity_check(self) -> str:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0]

    # -- runs and leases ---------------------------------------------------------------
    def begin_run(self, command: str, settings: dict[str, Any] | None = None) -> str:
        """Open a run; `settings` (what it ran with, never secrets) is kept with it."""
        run_id = uuid.uuid4().hex[:16]
        with self._write() as db:
            db.execute(
                "INSERT INTO runs (id, pid, host, command, started_at, settings) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, os.getpid(), socket.gethostname(), command, time.time(),
                 None if settings is None else canonical(settings)),
            )
        return run_id

    def run_settings(self, run_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT settings FROM runs WHERE id=?", (run_id,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def end_run(self, run_id: str) -> int:
        """Close a run: its unfinished leases go back to pending, its requests still in
        flight are abandoned. Returns how many leases went back."""
        with self._write() as db:
            released = db.execute(
                "UPDATE tasks SET status='pending', lease_run=NULL, lease_expires=NULL, "
                "updated_at=? WHERE status='leased' AND lease_run=?",
                (time.time(), run_id),
            ).rowcount
            self._abandon_tries(db, run_id)
            db.execute("UPDATE runs SET ended_at=? WHERE id=?", (time.time(), run_id))
        return released

    @staticmethod
    def _abandon_tries(db: sqlite3.Connection, run_id: str) -> None:
        db.execute("UPDATE attempts SET state='abandoned', ok=0, error=COALESCE(error, "
                   "'abandoned: the run stopped while this request was in flight') "
                   "WHERE run_id=? AND state='in_flight'", (run_id,))

    def reclaim_leases(self) -> int:
        """Take back leases of runs whose process is gone (or whose lease expired)."""
        host = socket.gethostname()
        now = time.time()
        rows = self._all(
            "SELECT DISTINCT r.id, r.pid, r.host FROM runs r WHERE r.ended_at IS NULL")
        dead = [run_id for run_id, pid, run_host in rows
                if run_host == host and not process_alive(pid)]
        with self._write() as db:
            count = 0
            for run_id in dead:
                count += db.execute(
                    "UPDATE tasks SET status='pending', lease_run=NULL, lease_expires=NULL "
                    "WHERE status='leased' AND lease_run=?", (run_id,)).rowcount
                self._abandon_tries(db, run_id)
                db.execute("UPDATE runs SET ended_at=COALESCE(ended_at, ?) WHERE id=?",
                           (now, run_id))
            count += db.execute(
                "UPDATE tasks SET status='pending', lease_run=NULL, lease_expires=NULL "
                "WHERE status='leased' AND lease_expires < ?", (now,)).rowcount
        return count

    # -- planning ----------------------------------------------------------------------
    def plan(self, specs: Iterable[TaskSpec], *, rerun_stale: bool = False,
             batch: int = 500) -> PlanCounts:
        """Store the tasks of a plan, streaming (never all in memory): new ones are added;
        a known key under another config is replaced when it has nothing to keep (never
        asked, rejected or failed), else counted stale and queued only with
        `rerun_stale`."""
        counts = PlanCounts()
        chunk: list[TaskSpec] = []
        for spec in specs:
            chunk.append(spec)
            if len(chunk) >= batch:
                self._plan_chunk(chunk, rerun_stale, counts)
                chunk = []
        if chunk:
            self._plan_chunk(chunk, rerun_stale, counts)
        return counts

    def _plan_chunk(self, chunk: list[TaskSpec], rerun_stale: bool, counts: PlanCounts) -> None:
        counts.planned += len(chunk)
        now = time.time()
        marks = ",".join("?" * len(chunk))
        with self._write() as db:
            known = {row[0] for row in db.execute(
                f"SELECT id FROM tasks WHERE id IN ({marks})", [s.id for s in chunk])}
            same_key: dict[str, list[tuple[str, str]]] = {}
            for key, task_id, status in db.execute(
                    f"SELECT key, id, status FROM tasks WHERE key IN ({marks}) "
                    "AND superseded_by IS NULL", [s.key for s in chunk]):
                same_key.setdefault(key, []).append((task_id, status))
            fresh: list[TaskSpec] = []
            for spec in chunk:
                if spec.id in known:
                    counts.known += 1
                    continue
                others = [(i, s) for i, s in same_key.get(spec.key, ()) if i != spec.id]
                # Work worth keeping (done) or under way (leased) makes the new config
                # stale; a task never asked, rejected or failed is replaced at once (its
                # answers and reasons stay in the history).
                started = [i for i, s in others if s in ("done", "leased")]
                for other, _ in others:
                    if other not in started:
                        db.execute("UPDATE tasks SET superseded_by=? WHERE id=?",
                                   (spec.id, other))
                        counts.replaced += 1
                if started:
                    counts.stale += 1
                    if not rerun_stale:
                        continue
                    counts.stale_queued += 1
                fresh.append(spec)
                known.add(spec.id)
            db.executemany(
                "INSERT OR IGNORE INTO tasks (id, key, config, character, stage, template, "
                "template_version, model, models, prompt_fp, output_fp, params, inputs, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(s.id, s.key, s.config.fingerprint, s.character, s.stage, s.config.template,
                  s.config.template_version, s.config.model_names,
                  canonical({r: m.model_dump() for r, m in s.config.models.items()}),
                  s.config.prompt_fp, s.config.output_fp, ordered_json(s.params),
                  canonical(s.inputs), now, now) for s in fresh])
            db.executemany("INSERT OR IGNORE INTO lineage VALUES (?, ?, ?)",
                           [(s.id, t, i) for s in fresh for t, i in s.parents])
        counts.added += len(fresh)

    def task_status(self, task_id: str) -> str | None:
        row = self._db.execute("SELECT status FROM tasks WHERE id=?", (task_id,)).fetchone()
        return row[0] if row else None

    def key_started(self, key: str, except_id: str) -> bool:
        """Whether the work `key` was already asked under another config (stale)."""
        return self._db.execute(
            "SELECT 1 FROM tasks WHERE key=? AND id!=? AND superseded_by IS NULL "
            "AND status!='pending' LIMIT 1", (key, except_id)).fetchone() is not None

    def count(self, character: str, stage: str, status: TaskStatus, *,
              config: str | None = None) -> int:
        query = ("SELECT COUNT(*) FROM tasks WHERE character=? AND stage=? AND status=? "
                 "AND superseded_by IS NULL")
        params: list[Any] = [character, stage, status]
        if config is not None:
            query += " AND config=?"
            params.append(config)
        return self._db.execute(query, params).fetchone()[0]

    def reset(self, character: str, stage: str, status: Literal["failed", "rejected"], *,
              config: str | None = None) -> int:
        """Put failed (or rejected) tasks back in the queue. A rejected task starts a new
        round (its rejected answers are kept, never asked again as they were); a failed
        one keeps its round, so the answers it got before failing are replayed."""
        bump = ", round=round+1" if status == "rejected" else ""
        query = (f"UPDATE tasks SET status='pending', error=NULL{bump}, updated_at=? "
                 "WHERE character=? AND stage=? AND status=? AND superseded_by IS NULL")
        params: list[Any] = [time.time(), character, stage, status]
        if config is not None:
            query += " AND config=?"
            params.append(config)
        with self._write() as db:
            return db.execute(query, params).rowcount

    # -- running -----------------------------------------------------------------------
    def lease(self, run_id: str, character: str, stage: str, limit: int, *,
              config: str | None = None, lease_s: float = 3600.0) -> list[TaskRow]:
        """Lease up to `limit` pending tasks (of one config, when given), oldest first."""
        query = (f"SELECT {_TASK_COLUMNS} FROM tasks WHERE character=? AND stage=? "
                 "AND status='pending' AND superseded_by IS NULL")
        params: list[Any] = [character, stage]
        if config is not None:
            query += " AND config=?"
            params.append(config)
        with self._write() as db:
            rows = db.execute(query + " ORDER BY rowid LIMIT ?", [*params, limit]).fetchall()
            now = time.time()
            db.executemany(
                "UPDATE tasks SET status='leased', lease_run=?, lease_expires=?, updated_at=? "
                "WHERE id=?", [(run_id, now + lease_s, now, row[0]) for row in rows])
            parents = self._parents(db, [row[0] for row in rows])
        return [TaskRow(id=r[0], key=r[1] or "", character=r[2], stage=r[3], config=r[4],
                        params=json.loads(r[5]), inputs=json.loads(r[6]),
                        parents=parents.get(r[0], ()), status="leased", attempts=r[8],
                        round=r[9]) for r in rows]

    @staticmethod
    def _parents(db: sqlite3.Connection, task_ids: list[str]) -> dict[str, tuple[RecordRef, ...]]:
        found: dict[str, list[RecordRef]] = {}
        for start in range(0, len(task_ids), 500):
            part = task_ids[start:start + 500]
            for task_id, parent, idx in db.execute(
                    f"SELECT task_id, parent_task, parent_idx FROM lineage WHERE task_id IN "
                    f"({','.join('?' * len(part))}) ORDER BY parent_task, parent_idx", part):
                found.setdefault(task_id, []).append((parent, idx))
        return {task_id: tuple(refs) for task_id, refs in found.items()}

    def stored_turns(self, tasks: Sequence[TaskRow]) -> dict[str, list[StoredTurn]]:
        """The answers already kept for each task's current round, by turn."""
        found: dict[str, list[StoredTurn]] = {}
        if not tasks:
            return found
        rounds = {t.id: t.round for t in tasks}
        marks = ",".join("?" * len(tasks))
        for task_id, rnd, turn, role, text, finish, model, prompt, completion, latency in self._all(
                "SELECT task_id, round, turn, role, text, finish_reason, model, prompt_tokens, "
                f"completion_tokens, latency_s FROM completions WHERE task_id IN ({marks}) "
                "ORDER BY task_id, turn", list(rounds)):
            if rnd != rounds[task_id]:
                continue
            found.setdefault(task_id, []).append(StoredTurn(turn, role, Completion(
                text=text, finish_reason=finish or "stop", model=model or "",
                usage=Usage(prompt_tokens=prompt, completion_tokens=completion),
                latency_s=latency or 0.0)))
        return found

    def write(self, run_id: str, ops: Sequence[WriteOp]) -> list[bool]:
        """Apply `ops` in order in one transaction. Each is written only while this run
        holds its task's lease; returns, per op, whether it was."""
        now = time.time()
        with self._write() as db:
            return [self._apply(db, run_id, op, now) for op in ops]

    def _apply(self, db: sqlite3.Connection, run_id: str, op: WriteOp, now: float) -> bool:
        task = op.task
        if isinstance(op, TaskFinished):
            return self._finish(db, run_id, op, now)
        if isinstance(op, TaskFailed):
            held = db.execute(
                "UPDATE tasks SET status='failed', attempts=attempts+1, error=?, lease_run=NULL, "
                "lease_expires=NULL, updated_at=? WHERE id=? AND status='leased' "
                "AND lease_run=?", (op.error, now, task.id, run_id)).rowcount
            if held:
                for answer in op.answers:
                    self._answer(db, run_id, answer, now)
                self._failed_tries(db, run_id, task, None, None, op.tries, now)
            return bool(held)
        if isinstance(op, TryStarted):
            return db.execute(
                "INSERT INTO attempts (task_id, run_id, ok, round, turn, role, state, "
                f"created_at) SELECT ?, ?, 0, ?, ?, ?, 'in_flight', ? {_WHILE_LEASED}",
                (task.id, run_id, task.round, op.turn, op.role, now, task.id, run_id)
            ).rowcount == 1
        return self._answer(db, run_id, op, now, check_lease=True)

    def _answer(self, db: sqlite3.Connection, run_id: str, op: TurnAnswered, now: float, *,
                check_lease: bool = False) -> bool:
        """Keep one answer and mark its try answered (its failed tries recorded too)."""
        task, c = op.task, op.completion
        values = (task.id, task.round, op.turn, op.role, c.text, c.finish_reason, c.model,
                  c.usage.prompt_tokens, c.usage.completion_tokens, c.latency_s, now)
        if check_lease:
            kept = db.execute("INSERT OR IGNORE INTO completions SELECT ?, ?, ?, ?, ?, ?, ?, "
                              f"?, ?, ?, ? {_WHILE_LEASED}", (*values, task.id, run_id)).rowcount
        else:
            kept = db.execute("INSERT OR IGNORE INTO completions VALUES "
                              "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values).rowcount
        if not kept:
            return False
        if c.failed_tries:
            self._failed_tries(db, run_id, task, op.turn, op.role, c.failed_tries, now)
        answered = (1, c.latency_s, c.model, c.usage.prompt_tokens, c.usage.completion_tokens)
        updated = db.execute(
            "UPDATE attempts SET state='answered', ok=?, latency_s=?, model=?, prompt_tokens=?, "
            "completion_tokens=?, created_at=? WHERE task_id=? AND run_id=? AND round=? AND "
            "turn=? AND state='in_flight'",
            (*answered, now, task.id, run_id, task.round, op.turn)).rowcount
        if not updated:
            db.execute(
                "INSERT INTO attempts (ok, latency_s, model, prompt_tokens, completion_tokens, "
                "task_id, run_id, round, turn, role, state, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'answered', ?)",
                (*answered, task.id, run_id, task.round, op.turn, op.role, now))
        return True

    @staticmethod
    def _failed_tries(db: sqlite3.Connection, run_id: str, task: TaskRow, turn: int | None,
                      role: str | None, tries: Sequence[FailedTry], now: float) -> None:
        db.executemany(
            "INSERT INTO attempts (task_id, run_id, ok, error, latency_s, prompt_tokens, "
            "completion_tokens, round, turn, role, state, created_at) "
            "VALUES (?, ?, 0, ?, ?, ?, ?, ?, ?, ?, 'failed', ?)",
            [(task.id, run_id, t.error, t.latency_s, t.prompt_tokens, t.completion_tokens,
              task.round, turn, role, now) for t in tries])

    def _finish(self, db: sqlite3.Connection, run_id: str, op: TaskFinished, now: float) -> bool:
        task = op.task
        status = "rejected" if op.rejection else "done"
        held = db.execute(
            "UPDATE tasks SET status=?, attempts=attempts+1, error=NULL, lease_run=NULL, "
            "lease_expires=NULL, updated_at=? WHERE id=? AND status='leased' AND lease_run=?",
            (status, now, task.id, run_id)).rowcount
        if not held:
            return False
        for answer in op.answers:
            self._answer(db, run_id, answer, now)
        if op.records:
            db.executemany(
                "INSERT INTO records (task_id, idx, character, kind, data, version) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(task.id, idx, task.character, kind, data, version)
                 for idx, (kind, data, version) in enumerate(op.records)])
        if op.rejection:
            db.execute("INSERT OR REPLACE INTO rejections VALUES (?, ?, ?, ?, ?)",
                       (task.id, task.round, op.rejection[0], op.rejection[1], now))
        elif task.key:  # the same work under an older config is now history
            db.execute("UPDATE tasks SET superseded_by=? WHERE key=? AND id!=? "
                       "AND superseded_by IS NULL", (task.id, task.key, task.id))
        return True

    # -- reading results -----------------------------------------------------------------
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

    def add_feedback(self, character: str, text: str) -> Feedback:
        """Keep a reviewer's note; it applies to the answers planned after it."""
        now = time.time()
        with self._write() as db:
            cursor = db.execute("INSERT INTO feedback (character, text, created_at) "
                                "VALUES (?, ?, ?)", (character, text, now))
        return Feedback(id=int(cursor.lastrowid or 0), character=character, text=text,
                        created_at=now)

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
