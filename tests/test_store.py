"""The SQLite store on its own: migrations, leases, exactly-once finishing."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from charforge.llm.base import Completion
from charforge.store import MIGRATIONS, AttemptLog, FinishedTask, Store, TaskSpec


def spec(i: int, stage: str = "scenes") -> TaskSpec:
    return TaskSpec(character="ada", stage=stage, template="scenes", template_version=1,
                    model="m", params={"temperature": 0.7}, inputs={"sample": i})


def answer(text: str = "ok") -> Completion:
    return Completion(text=text, finish_reason="stop")


def test_migrations_are_recorded_and_an_old_database_upgrades(tmp_path):
    path = tmp_path / "charforge.db"
    with Store(path) as store:
        assert store.applied_migrations() == [name for name, _ in MIGRATIONS]
    # A database created by the first migration only, then opened by today's code.
    first = tmp_path / "first.db"
    conn = sqlite3.connect(first)
    conn.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at REAL)")
    conn.executescript(MIGRATIONS[0][1])
    conn.execute("INSERT INTO migrations VALUES (?, 0)", (MIGRATIONS[0][0],))
    conn.commit()
    conn.close()
    with Store(first) as store:
        assert store.applied_migrations() == [name for name, _ in MIGRATIONS]
        assert store.integrity_check() == "ok"


def test_tasks_are_added_once_and_ids_hash_what_changes_output(tmp_path):
    with Store(tmp_path / "db") as store:
        assert store.add_tasks(spec(i) for i in range(10)) == 10
        assert store.add_tasks(spec(i) for i in range(15)) == 5
        assert store.count("ada", "scenes", "pending") == 15
    hotter = spec(1).model_copy(update={"params": {"temperature": 1.0}})
    assert hotter.id != spec(1).id
    assert spec(1).id == spec(1).id


def test_finish_is_all_or_nothing_and_needs_the_lease(tmp_path):
    with Store(tmp_path / "db") as store:
        store.add_tasks([spec(0), spec(1)])
        run = store.begin_run("test")
        task, other = store.lease(run, "ada", "scenes", 10)
        ok = store.finish(run, [FinishedTask.of(
            task, completions=[answer()], attempts=[AttemptLog(True, 0.1)],
            records=[("scene", {"n": 1}), ("scene", {"n": 2})])])
        assert ok == [True]
        # Finishing twice (a duplicate delivery) writes nothing more.
        assert store.finish(run, [FinishedTask.of(
            task, completions=[answer()], attempts=[], records=[("scene", {"n": 3})])]) == [False]
        # A record that cannot be written (here: not JSON) fails before anything
        # of its task reaches the database.
        with pytest.raises(TypeError):
            store.finish(run, [FinishedTask.of(other, completions=[answer()], attempts=[],
                                               records=[("scene", {"n": object()})])])
        assert store.task_status(other.id) == "leased"
        assert store.completions_of(other.id) == []
        assert [r.data for r in store.records("ada", "scene")] == [{"n": 1}, {"n": 2}]
        assert store.end_run(run) == 1  # the unfinished lease goes back
        assert store.task_status(other.id) == "pending"


def test_leases_of_a_dead_process_are_reclaimed(tmp_path):
    path = tmp_path / "db"
    with Store(path) as store:
        store.add_tasks(spec(i) for i in range(4))
    script = (
        "import os, sys\n"
        "from charforge.store import Store\n"
        f"s = Store({str(path)!r})\n"
        "run = s.begin_run('doomed')\n"
        "s.lease(run, 'ada', 'scenes', 3)\n"
        "os._exit(0)\n"  # dies holding three leases
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    with Store(path) as store:
        assert store.count("ada", "scenes", "leased") == 3
        assert store.reclaim_leases() == 3
        assert store.count("ada", "scenes", "pending") == 4


def test_reset_requeues_failed_and_rejected(tmp_path):
    with Store(tmp_path / "db") as store:
        store.add_tasks([spec(0), spec(1)])
        run = store.begin_run("test")
        bad, worse = store.lease(run, "ada", "scenes", 2)
        store.fail(bad, run, "HTTP 500", [AttemptLog(False, 0.0, "HTTP 500")])
        store.finish(run, [FinishedTask.of(worse, completions=[answer("junk")], attempts=[],
                                           rejection=("junk", "repeats"))])
        assert store.rejection_counts("ada") == {"junk": 1}
        assert store.reset("ada", "scenes", "failed") == 1
        assert store.reset("ada", "scenes", "rejected") == 1
        assert store.count("ada", "scenes", "pending") == 2
        assert store.rejection_counts("ada") == {}
        assert store.completions_of(worse.id) == []


def test_finish_writes_each_task_it_still_holds(tmp_path):
    with Store(tmp_path / "db") as store:
        store.add_tasks(spec(i) for i in range(3))
        run = store.begin_run("test")
        first, second, third = store.lease(run, "ada", "scenes", 3)
        store.end_run(run)  # all three leases go back...
        again = store.begin_run("again")
        store.lease(again, "ada", "scenes", 1)  # ...and another run takes the first
        items = [FinishedTask.of(t, completions=[answer()], attempts=[],
                                 records=[("scene", {"t": t.id})])
                 for t in (first, second, third)]
        assert store.finish(again, items) == [True, False, False]
        assert [r.data["t"] for r in store.records("ada", "scene")] == [first.id]
