"""The workspace's SQLite store: every task, try, answer, record and verdict.

One database per workspace (`charforge.db`, WAL). Nothing else in charforge
writes SQL; its read-only queries live in `store_reads.py` (a mixin of `Store`). The
schema lives in `migrations.py`, task types in `tasks.py`.

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

from charforge.errors import StoreError
from charforge.files import process_alive
from charforge.llm.base import Completion, FailedTry, Usage
from charforge.migrations import apply_migrations
from charforge.records import Feedback
from charforge.store_reads import StoreReads
from charforge.tasks import (
    PlanCounts,
    RecordRef,
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


class Store(StoreReads):
    """The one object that reads and writes the database (its queries: `StoreReads`)."""

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

    def add_feedback(self, character: str, text: str) -> Feedback:
        """Keep a reviewer's note; it applies to the answers planned after it."""
        now = time.time()
        with self._write() as db:
            cursor = db.execute("INSERT INTO feedback (character, text, created_at) "
                                "VALUES (?, ?, ?)", (character, text, now))
        return Feedback(id=int(cursor.lastrowid or 0), character=character, text=text,
                        created_at=now)
