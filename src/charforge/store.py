"""The workspace's SQLite store: every teacher task, attempt, answer and verdict.

One database per workspace (`charforge.db`, WAL). A task's id is a hash of
what changes its output, so the same work is planned once and done once:
finishing a task writes its completion, its records or rejection, its
attempts and its new state in one transaction, guarded by the task's lease.
Nothing else in charforge writes SQL.

Task states: pending -> leased (run id, expiry) -> done | failed | rejected.
A new run takes back the leases of runs whose process is gone.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from charforge.llm.base import Completion

DB_NAME = "charforge.db"
TaskStatus = Literal["pending", "leased", "done", "failed", "rejected"]
STATUSES: tuple[TaskStatus, ...] = ("pending", "leased", "done", "failed", "rejected")

# Named, append-only migrations. Never edit one that has shipped: add another.
MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_initial",
        """
        CREATE TABLE runs (
            id TEXT PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL,
            command TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL
        );
        CREATE TABLE tasks (
            id TEXT PRIMARY KEY,
            character TEXT NOT NULL, stage TEXT NOT NULL,
            template TEXT NOT NULL, template_version INTEGER NOT NULL,
            model TEXT NOT NULL, params TEXT NOT NULL, inputs TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',
            lease_run TEXT, lease_expires REAL,
            attempts INTEGER NOT NULL DEFAULT 0, error TEXT,
            created_at REAL NOT NULL, updated_at REAL NOT NULL
        );
        CREATE INDEX tasks_queue ON tasks (character, stage, status);
        CREATE TABLE attempts (
            id INTEGER PRIMARY KEY, task_id TEXT NOT NULL, run_id TEXT NOT NULL,
            ok INTEGER NOT NULL, error TEXT, latency_s REAL, model TEXT,
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL
        );
        CREATE INDEX attempts_task ON attempts (task_id);
        CREATE TABLE completions (
            task_id TEXT NOT NULL, turn INTEGER NOT NULL,
            text TEXT NOT NULL, finish_reason TEXT, model TEXT,
            prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
            latency_s REAL, created_at REAL NOT NULL,
            PRIMARY KEY (task_id, turn)
        );
        CREATE TABLE records (
            task_id TEXT NOT NULL, idx INTEGER NOT NULL,
            character TEXT NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL,
            PRIMARY KEY (task_id, idx)
        );
        CREATE INDEX records_kind ON records (character, kind);
        CREATE TABLE rejections (
            task_id TEXT PRIMARY KEY, reason TEXT NOT NULL, detail TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        """,
    ),
]


class TaskSpec(BaseModel):
    """A unit of teacher work before it is stored. Its id hashes everything
    that changes the output, and nothing that does not (such as concurrency)."""

    character: str
    stage: str
    template: str
    template_version: int
    model: str
    params: dict[str, Any] = Field(description="sampling settings and output mode")
    inputs: dict[str, Any] = Field(description="canonical inputs of the prompt")

    @property
    def id(self) -> str:
        payload = json.dumps(
            [self.character, self.stage, self.template, self.template_version, self.model,
             self.params, self.inputs],
            sort_keys=True, ensure_ascii=False, separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]

    def as_row(self) -> TaskRow:
        """The task as it will look once stored (for dry runs)."""
        return TaskRow(
            id=self.id, character=self.character, stage=self.stage, template=self.template,
            template_version=self.template_version, model=self.model, params=self.params,
            inputs=self.inputs, status="pending", attempts=0,
        )


@dataclass(frozen=True)
class TaskRow:
    """A stored task as a stage sees it when running it."""

    id: str
    character: str
    stage: str
    template: str
    template_version: int
    model: str
    params: dict[str, Any]
    inputs: dict[str, Any]
    status: str
    attempts: int


@dataclass(frozen=True)
class AttemptLog:
    ok: bool
    latency_s: float
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""


@dataclass(frozen=True)
class FinishedTask:
    """A task's results, ready to write; records are already JSON text, so a
    record that cannot be serialised fails its own task, never a batch."""

    task: TaskRow
    completions: Sequence[Completion]
    attempts: Sequence[AttemptLog]
    records: Sequence[tuple[str, str]] = ()
    rejection: tuple[str, str] | None = None

    @classmethod
    def of(
        cls,
        task: TaskRow,
        *,
        completions: Sequence[Completion],
        attempts: Sequence[AttemptLog],
        records: Sequence[tuple[str, dict[str, Any]]] = (),
        rejection: tuple[str, str] | None = None,
    ) -> FinishedTask:
        encoded = [(kind, _dumps(data)) for kind, data in records]
        return cls(task, completions, attempts, encoded, rejection)


@dataclass(frozen=True)
class StoredRecord:
    task_id: str
    idx: int
    kind: str
    data: dict[str, Any]
    inputs: dict[str, Any]


class StageCounts(BaseModel):
    character: str
    stage: str
    pending: int = 0
    leased: int = 0
    done: int = 0
    failed: int = 0
    rejected: int = 0
    records: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


_TASK_COLUMNS = (
    "id, character, stage, template, template_version, model, params, inputs, status, attempts"
)


def _task_row(row: Sequence[Any]) -> TaskRow:
    return TaskRow(
        id=row[0], character=row[1], stage=row[2], template=row[3], template_version=row[4],
        model=row[5], params=json.loads(row[6]), inputs=json.loads(row[7]), status=row[8],
        attempts=row[9],
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Store:
    """The one object that reads and writes the database."""

    def __init__(self, path: str | Path, *, synchronous: Literal["NORMAL", "FULL"] = "NORMAL"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL survives process crashes; FULL also survives power loss.
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._migrate()

    @classmethod
    def for_workspace(cls, root: str | Path) -> Store:
        return cls(Path(root) / DB_NAME)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions and migrations ---------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: read-then-write transactions never fail half way."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at REAL)"
            )
            done = {row[0] for row in db.execute("SELECT name FROM migrations")}
            for name, script in MIGRATIONS:
                if name in done:
                    continue
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
                db.execute("INSERT INTO migrations VALUES (?, ?)", (name, time.time()))

    def applied_migrations(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT name FROM migrations ORDER BY name")]

    def integrity_check(self) -> str:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0]

    # -- runs and leases -----------------------------------------------------------
    def begin_run(self, command: str) -> str:
        run_id = uuid.uuid4().hex[:16]
        with self._write() as db:
            db.execute(
                "INSERT INTO runs (id, pid, host, command, started_at) VALUES (?, ?, ?, ?, ?)",
                (run_id, os.getpid(), socket.gethostname(), command, time.time()),
            )
        return run_id

    def end_run(self, run_id: str) -> int:
        """Close a run: its unfinished leases go back to pending. Returns how many."""
        with self._write() as db:
            released = db.execute(
                "UPDATE tasks SET status='pending', lease_run=NULL, lease_expires=NULL, "
                "updated_at=? WHERE status='leased' AND lease_run=?",
                (time.time(), run_id),
            ).rowcount
            db.execute("UPDATE runs SET ended_at=? WHERE id=?", (time.time(), run_id))
        return released

    def reclaim_leases(self) -> int:
        """Take back leases of runs whose process is gone (or whose lease expired)."""
        host = socket.gethostname()
        now = time.time()
        dead: list[str] = []
        rows = self._db.execute(
            "SELECT DISTINCT r.id, r.pid, r.host FROM tasks t JOIN runs r ON r.id = t.lease_run "
            "WHERE t.status='leased'"
        ).fetchall()
        for run_id, pid, run_host in rows:
            if run_host == host and not _pid_alive(pid):
                dead.append(run_id)
        with self._write() as db:
            count = 0
            for run_id in dead:
                count += db.execute(
                    "UPDATE tasks SET status='pending', lease_run=NULL, lease_expires=NULL "
                    "WHERE status='leased' AND lease_run=?",
                    (run_id,),
                ).rowcount
                db.execute("UPDATE runs SET ended_at=COALESCE(ended_at, ?) WHERE id=?",
                           (now, run_id))
            count += db.execute(
                "UPDATE tasks SET status='pending', lease_run=NULL, lease_expires=NULL "
                "WHERE status='leased' AND lease_expires < ?",
                (now,),
            ).rowcount
        return count

    # -- planning --------------------------------------------------------------------
    def add_tasks(self, specs: Iterable[TaskSpec], *, batch: int = 1000) -> int:
        """Store new tasks (known ids are ignored); streams, never holds them all."""
        added = 0
        chunk: list[tuple[Any, ...]] = []

        def flush() -> int:
            with self._write() as db:
                before = db.total_changes
                db.executemany(
                    "INSERT OR IGNORE INTO tasks (id, character, stage, template, "
                    "template_version, model, params, inputs, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    chunk,
                )
                return db.total_changes - before

        now = time.time()
        for spec in specs:
            chunk.append((spec.id, spec.character, spec.stage, spec.template,
                          spec.template_version, spec.model, _dumps(spec.params),
                          _dumps(spec.inputs), now, now))
            if len(chunk) >= batch:
                added += flush()
                chunk = []
        if chunk:
            added += flush()
        return added

    def task_status(self, task_id: str) -> str | None:
        row = self._db.execute("SELECT status FROM tasks WHERE id=?", (task_id,)).fetchone()
        return row[0] if row else None

    def count(self, character: str, stage: str, status: TaskStatus) -> int:
        return self._db.execute(
            "SELECT COUNT(*) FROM tasks WHERE character=? AND stage=? AND status=?",
            (character, stage, status),
        ).fetchone()[0]

    def reset(self, character: str, stage: str, status: Literal["failed", "rejected"]) -> int:
        """Put failed (or rejected) tasks back in the queue; a rejection is forgotten."""
        with self._write() as db:
            if status == "rejected":
                db.execute(
                    "DELETE FROM rejections WHERE task_id IN (SELECT id FROM tasks WHERE "
                    "character=? AND stage=? AND status='rejected')",
                    (character, stage),
                )
                db.execute(
                    "DELETE FROM completions WHERE task_id IN (SELECT id FROM tasks WHERE "
                    "character=? AND stage=? AND status='rejected')",
                    (character, stage),
                )
            return db.execute(
                "UPDATE tasks SET status='pending', error=NULL, updated_at=? "
                "WHERE character=? AND stage=? AND status=?",
                (time.time(), character, stage, status),
            ).rowcount

    # -- running ---------------------------------------------------------------------
    def lease(
        self, run_id: str, character: str, stage: str, limit: int, *, lease_s: float = 3600.0
    ) -> list[TaskRow]:
        """Lease up to `limit` pending tasks, oldest first."""
        with self._write() as db:
            rows = db.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE character=? AND stage=? "
                "AND status='pending' ORDER BY rowid LIMIT ?",
                (character, stage, limit),
            ).fetchall()
            db.executemany(
                "UPDATE tasks SET status='leased', lease_run=?, lease_expires=?, updated_at=? "
                "WHERE id=?",
                [(run_id, time.time() + lease_s, time.time(), row[0]) for row in rows],
            )
        return [_task_row(row) for row in rows]

    def finish(self, run_id: str, finished: Sequence[FinishedTask]) -> list[bool]:
        """Write finished tasks in one transaction: for each, its completions, its
        records or rejection, its tries and its state, all or nothing. Returns, per
        task, whether this run still held its lease (when not, nothing of it is written)."""
        now = time.time()
        with self._write() as db:
            return [self._write_finished(db, run_id, item, now) for item in finished]

    def _write_finished(
        self, db: sqlite3.Connection, run_id: str, item: FinishedTask, now: float
    ) -> bool:
        task = item.task
        status = "rejected" if item.rejection else "done"
        held = db.execute(
            "UPDATE tasks SET status=?, attempts=attempts+?, error=NULL, lease_run=NULL, "
            "lease_expires=NULL, updated_at=? WHERE id=? AND status='leased' AND lease_run=?",
            (status, len(item.attempts), now, task.id, run_id),
        ).rowcount
        if not held:
            return False
        db.executemany(
            "INSERT INTO completions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(task.id, turn, c.text, c.finish_reason, c.model, c.usage.prompt_tokens,
              c.usage.completion_tokens, c.latency_s, now)
             for turn, c in enumerate(item.completions)],
        )
        db.executemany(
            "INSERT INTO records VALUES (?, ?, ?, ?, ?)",
            [(task.id, idx, task.character, kind, data)
             for idx, (kind, data) in enumerate(item.records)],
        )
        if item.rejection:
            db.execute("INSERT INTO rejections VALUES (?, ?, ?, ?)",
                       (task.id, item.rejection[0], item.rejection[1], now))
        self._insert_attempts(db, task.id, run_id, item.attempts, now)
        return True

    def fail(self, task: TaskRow, run_id: str, error: str, attempts: Sequence[AttemptLog]) -> bool:
        """Record a task that failed for good in this run (retry with reset)."""
        now = time.time()
        with self._write() as db:
            held = db.execute(
                "UPDATE tasks SET status='failed', attempts=attempts+?, error=?, lease_run=NULL, "
                "lease_expires=NULL, updated_at=? WHERE id=? AND status='leased' AND lease_run=?",
                (len(attempts), error, now, task.id, run_id),
            ).rowcount
            if held:
                self._insert_attempts(db, task.id, run_id, attempts, now)
        return bool(held)

    @staticmethod
    def _insert_attempts(
        db: sqlite3.Connection, task_id: str, run_id: str, attempts: Sequence[AttemptLog],
        now: float,
    ) -> None:
        db.executemany(
            "INSERT INTO attempts (task_id, run_id, ok, error, latency_s, model, prompt_tokens, "
            "completion_tokens, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(task_id, run_id, int(a.ok), a.error, a.latency_s, a.model, a.prompt_tokens,
              a.completion_tokens, now) for a in attempts],
        )

    # -- reading results -------------------------------------------------------------
    def records(self, character: str, kind: str) -> Iterator[StoredRecord]:
        """Records in a stable order (task insertion order, then index), with the
        inputs of the task that produced them."""
        cursor = self._db.execute(
            "SELECT r.task_id, r.idx, r.kind, r.data, t.inputs FROM records r "
            "JOIN tasks t ON t.id = r.task_id WHERE r.character=? AND r.kind=? "
            "ORDER BY t.rowid, r.idx",
            (character, kind),
        )
        for task_id, idx, kind_, data, inputs in cursor:
            yield StoredRecord(task_id, idx, kind_, json.loads(data), json.loads(inputs))

    def rejection_counts(self, character: str, stage: str | None = None) -> dict[str, int]:
        query = (
            "SELECT j.reason, COUNT(*) FROM rejections j JOIN tasks t ON t.id = j.task_id "
            "WHERE t.character=?" + (" AND t.stage=?" if stage else "") + " GROUP BY j.reason"
        )
        params = (character, stage) if stage else (character,)
        return dict(self._db.execute(query, params).fetchall())

    def rejections(self, character: str, stage: str) -> list[tuple[str, str, str]]:
        """(task id, reason, detail) of each rejected task of a stage."""
        return self._db.execute(
            "SELECT j.task_id, j.reason, j.detail FROM rejections j JOIN tasks t ON "
            "t.id = j.task_id WHERE t.character=? AND t.stage=? ORDER BY t.rowid",
            (character, stage),
        ).fetchall()

    def completions_of(self, task_id: str) -> list[tuple[int, str]]:
        return self._db.execute(
            "SELECT turn, text FROM completions WHERE task_id=? ORDER BY turn", (task_id,)
        ).fetchall()

    def stage_counts(self) -> list[StageCounts]:
        """Per character and stage: tasks by state, records, tokens used."""
        counts: dict[tuple[str, str], StageCounts] = {}
        for character, stage, status, n in self._db.execute(
            "SELECT character, stage, status, COUNT(*) FROM tasks GROUP BY character, stage, status"
        ):
            entry = counts.setdefault((character, stage), StageCounts(character=character,
                                                                       stage=stage))
            setattr(entry, status, n)
        for character, stage, n in self._db.execute(
            "SELECT t.character, t.stage, COUNT(*) FROM records r JOIN tasks t ON t.id=r.task_id "
            "GROUP BY t.character, t.stage"
        ):
            counts[(character, stage)].records = n
        for character, stage, prompt, completion in self._db.execute(
            "SELECT t.character, t.stage, SUM(a.prompt_tokens), SUM(a.completion_tokens) "
            "FROM attempts a JOIN tasks t ON t.id = a.task_id GROUP BY t.character, t.stage"
        ):
            counts[(character, stage)].prompt_tokens = prompt or 0
            counts[(character, stage)].completion_tokens = completion or 0
        return [counts[key] for key in sorted(counts)]
