"""The store's schema as named, append-only migrations.

Never edit a migration that has shipped: add another. Each one is SQL, optionally
followed by a Python step over the rows it touches; both run in the same
transaction, so a store is upgraded whole or not at all, in place, every row kept.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from charforge.tasks import canonical, task_key

INITIAL = """
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
"""

# Task identity split in two (key: what is asked; config: how and of whom), lineage
# as indexed rows, answers and rejections kept per round of retries, try states.
IDENTITY_LINEAGE_HISTORY = """
ALTER TABLE tasks ADD COLUMN key TEXT;
ALTER TABLE tasks ADD COLUMN config TEXT;
ALTER TABLE tasks ADD COLUMN models TEXT;
ALTER TABLE tasks ADD COLUMN prompt_fp TEXT;
ALTER TABLE tasks ADD COLUMN output_fp TEXT;
ALTER TABLE tasks ADD COLUMN round INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN superseded_by TEXT;
CREATE INDEX tasks_key ON tasks (key);
CREATE INDEX tasks_lease ON tasks (character, stage, config, status);
CREATE TABLE lineage (
    task_id TEXT NOT NULL, parent_task TEXT NOT NULL, parent_idx INTEGER NOT NULL,
    PRIMARY KEY (task_id, parent_task, parent_idx)
);
CREATE INDEX lineage_parent ON lineage (parent_task, parent_idx);
ALTER TABLE records ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE runs ADD COLUMN settings TEXT;
ALTER TABLE attempts ADD COLUMN round INTEGER NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN turn INTEGER;
ALTER TABLE attempts ADD COLUMN role TEXT;
ALTER TABLE attempts ADD COLUMN state TEXT NOT NULL DEFAULT 'answered';
UPDATE attempts SET state = CASE WHEN ok THEN 'answered' ELSE 'failed' END;
CREATE INDEX attempts_open ON attempts (run_id, state);
CREATE TABLE completions_by_round (
    task_id TEXT NOT NULL, round INTEGER NOT NULL, turn INTEGER NOT NULL, role TEXT,
    text TEXT NOT NULL, finish_reason TEXT, model TEXT,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    latency_s REAL, created_at REAL NOT NULL,
    PRIMARY KEY (task_id, round, turn)
);
INSERT INTO completions_by_round
    SELECT task_id, 0, turn, NULL, text, finish_reason, model, prompt_tokens,
           completion_tokens, latency_s, created_at FROM completions;
DROP TABLE completions;
ALTER TABLE completions_by_round RENAME TO completions;
CREATE TABLE rejections_by_round (
    task_id TEXT NOT NULL, round INTEGER NOT NULL, reason TEXT NOT NULL,
    detail TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (task_id, round)
);
INSERT INTO rejections_by_round
    SELECT task_id, 0, reason, detail, created_at FROM rejections;
DROP TABLE rejections;
ALTER TABLE rejections_by_round RENAME TO rejections
"""


def _keys_and_lineage(db: sqlite3.Connection) -> None:
    """Give every task of a store written before task keys its key; move the scene
    reference of experiences out of their inputs into lineage rows. Their identity
    columns stay empty: they are stale until asked again (`--rerun-stale`)."""
    rows = db.execute("SELECT id, character, stage, inputs FROM tasks").fetchall()
    for task_id, character, stage, inputs_text in rows:
        inputs = json.loads(inputs_text)
        parents: list[tuple[str, int]] = []
        reference = inputs.pop("scene_ref", None) if isinstance(inputs, dict) else None
        if isinstance(reference, str) and ":" in reference:
            parent, _, index = reference.rpartition(":")
            if index.isdigit():
                parents.append((parent, int(index)))
        db.executemany("INSERT OR IGNORE INTO lineage VALUES (?, ?, ?)",
                       [(task_id, parent, index) for parent, index in parents])
        db.execute("UPDATE tasks SET key=?, inputs=? WHERE id=?",
                   (task_key(character, stage, inputs, parents), canonical(inputs), task_id))


# Review feedback (PersLLM): free-text style notes on a character's answers, in order.
FEEDBACK = """
CREATE TABLE feedback (
    id INTEGER PRIMARY KEY, character TEXT NOT NULL, text TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX feedback_character ON feedback (character, id)
"""

Migration = tuple[str, str, Callable[[sqlite3.Connection], None] | None]

MIGRATIONS: list[Migration] = [
    ("0001_initial", INITIAL, None),
    ("0002_identity_lineage_history", IDENTITY_LINEAGE_HISTORY, _keys_and_lineage),
    ("0003_feedback", FEEDBACK, None),
]


def apply_migrations(db: sqlite3.Connection) -> list[str]:
    """Apply what is missing, inside the caller's transaction; returns their names."""
    db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at REAL)")
    done = {row[0] for row in db.execute("SELECT name FROM migrations")}
    applied = []
    for name, script, step in MIGRATIONS:
        if name in done:
            continue
        for statement in filter(str.strip, script.split(";")):
            db.execute(statement)
        if step is not None:
            step(db)
        db.execute("INSERT INTO migrations VALUES (?, strftime('%s','now'))", (name,))
        applied.append(name)
    return applied
