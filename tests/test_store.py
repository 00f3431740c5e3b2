"""The SQLite store on its own: migrations, identity, leases, exactly-once writes,
lineage and history."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from charforge.errors import StoreError
from charforge.llm.base import Completion, FailedTry, Sampling, Usage
from charforge.migrations import MIGRATIONS
from charforge.store import Store
from charforge.tasks import (
    ModelRef,
    TaskConfig,
    TaskFailed,
    TaskFinished,
    TaskSpec,
    TryStarted,
    TurnAnswered,
)

from conftest import read_only

DATA = Path(__file__).parent / "data"


def config(model_fp: str = "m1", prompt_fp: str = "p1", temperature: float = 0.7) -> TaskConfig:
    return TaskConfig(models={"teacher": ModelRef(name="teacher", fp=model_fp)},
                      prompt_fp=prompt_fp, output_fp="o1",
                      sampling=Sampling(temperature=temperature), mode="text")


def spec(i: int, cfg: TaskConfig | None = None, parents=()) -> TaskSpec:
    return TaskSpec(character="ada", stage="scenes", inputs={"sample": i},
                    config=cfg or config(), parents=tuple(parents))


def answer(text: str = "ok", tokens: int = 3) -> Completion:
    return Completion(text=text, finish_reason="stop", latency_s=0.25,
                      usage=Usage(prompt_tokens=10, completion_tokens=tokens))


def finish(store: Store, run: str, task, *records, rejection=None, turn: int = 0):
    """Answer `task`'s turn and finish it in one write, as the runner does."""
    ops = [TurnAnswered(task, turn, "teacher", answer()),
           TaskFinished.of(task, records=list(records), rejection=rejection)]
    return store.write(run, ops)


def test_a_store_written_before_task_keys_is_upgraded_in_place(tmp_path):
    # A real store written by the previous release (commit e17a0c1): 4 scene tasks,
    # 12 experiences (one rejected as truncated), 3 protective tasks (one failed).
    path = tmp_path / "charforge.db"
    with sqlite3.connect(path) as conn:
        conn.executescript((DATA / "store-0001.sql").read_text())
    before = sqlite3.connect(path)
    old_records = before.execute("SELECT task_id, idx, kind, data FROM records "
                                 "ORDER BY task_id, idx").fetchall()
    old_tasks = before.execute("SELECT id, status FROM tasks ORDER BY id").fetchall()
    old_completions = before.execute("SELECT COUNT(*) FROM completions").fetchone()[0]
    before.close()
    assert len(old_records) == 12 + 11 + 2 and len(old_tasks) == 19

    with Store(path) as store:
        assert store.applied_migrations() == [name for name, _, _ in MIGRATIONS]
        assert store.integrity_check() == "ok"
        conn = store._db
        assert conn.execute("SELECT task_id, idx, kind, data FROM records "
                            "ORDER BY task_id, idx").fetchall() == old_records
        assert conn.execute("SELECT id, status FROM tasks ORDER BY id").fetchall() == old_tasks
        assert conn.execute("SELECT COUNT(*) FROM completions").fetchone()[0] == old_completions
        # Every task has its key; experiences point at their scene through lineage now.
        assert conn.execute("SELECT COUNT(*) FROM tasks WHERE key IS NULL").fetchone() == (0,)
        experience = next(store.records("beethoven", "experience"))
        [(parent, idx)] = store.parents_of(experience.task_id)
        assert store.task_status(parent) == "done" and idx in range(3)
        assert "scene_ref" not in experience.inputs
        assert store.rejection_counts("beethoven") == {"truncated": 1}
        assert [r["state"] for r in store.tries(_failed_task(conn))] == ["failed"] * 5
    with Store(path) as again:  # opening again applies nothing twice
        assert len(again.applied_migrations()) == len(MIGRATIONS)


def _failed_task(conn: sqlite3.Connection) -> str:
    return conn.execute("SELECT id FROM tasks WHERE status='failed'").fetchone()[0]


def test_task_ids_follow_what_changes_the_answer_and_keys_what_is_asked():
    base = spec(1)
    for changed in (spec(1, config(model_fp="m2")), spec(1, config(prompt_fp="p2")),
                    spec(1, config(temperature=1.0))):
        assert changed.id != base.id and changed.key == base.key
    assert spec(2).key != base.key
    assert spec(1, parents=[("t", 0)]).key != base.key
    narrowed = TaskSpec(character="ada", stage="scenes", inputs={"sample": 1}, config=config(),
                        response_format={"type": "json_schema"})
    assert narrowed.id != base.id and narrowed.key == base.key


def test_planning_adds_once_replaces_unstarted_work_and_reports_stale(tmp_path):
    with Store(tmp_path / "db") as store:
        first = store.plan(spec(i) for i in range(4))
        assert (first.added, first.known) == (4, 0)
        assert store.plan(spec(i) for i in range(6)).added == 2
        run = store.begin_run("test")
        done = store.lease(run, "ada", "scenes", 2)
        for task in done:
            finish(store, run, task, ("scene", {"n": task.inputs["sample"]}))
        store.end_run(run)
        # Another model: the 4 never-started tasks are replaced, the 2 done are stale.
        other = config(model_fp="m2")
        plan = store.plan(spec(i, other) for i in range(6))
        assert (plan.added, plan.replaced, plan.stale, plan.stale_queued) == (4, 4, 2, 0)
        assert store.count("ada", "scenes", "pending") == 4
        assert store.count("ada", "scenes", "done") == 2
        # Asked again on purpose: queued; the old answers stay until the new are done.
        plan = store.plan((spec(i, other) for i in range(6)), rerun_stale=True)
        assert (plan.added, plan.stale_queued) == (2, 2)
        assert [r.data["n"] for r in store.records("ada", "scene")] == [0, 1]
        run = store.begin_run("again")
        for task in store.lease(run, "ada", "scenes", 10, config=other.fingerprint):
            finish(store, run, task, ("scene", {"n": task.inputs["sample"], "by": "m2"}))
        # Insertion order: the replacements of 0 and 1 were planned after 2-5.
        assert [r.data for r in store.records("ada", "scene")] == [
            {"n": i, "by": "m2"} for i in (2, 3, 4, 5, 0, 1)]
        assert store.stage_counts()[0].superseded == 6  # 4 replaced + 2 superseded
        assert store.plan(spec(i, other) for i in range(6)).known == 6


def test_a_run_leases_only_tasks_of_its_own_config(tmp_path):
    with Store(tmp_path / "db") as store:
        store.plan(spec(i) for i in range(3))
        run = store.begin_run("test")
        assert store.lease(run, "ada", "scenes", 10, config=config(model_fp="m9").fingerprint) == []
        assert len(store.lease(run, "ada", "scenes", 10, config=config().fingerprint)) == 3


def test_answers_are_kept_as_they_arrive_and_finish_is_all_or_nothing(tmp_path):
    with Store(tmp_path / "db") as store:
        store.plan([spec(0), spec(1)])
        run = store.begin_run("test")
        task, other = store.lease(run, "ada", "scenes", 10)
        assert store.write(run, [TryStarted(task, 0, "teacher"),
                                 TurnAnswered(task, 0, "teacher", answer("first"))]) == [True] * 2
        assert store.completions_of(task.id) == [(0, "first")]
        assert store.task_status(task.id) == "leased"  # an answer is not a finished task
        assert finish(store, run, task, ("scene", {"n": 1}), turn=1) == [True, True]
        # Finishing twice (a duplicate delivery) writes nothing more.
        assert store.write(run, [TaskFinished.of(task, records=[("scene", {"n": 3})])]) == [False]
        # A record that cannot be serialised fails before anything of its task is written.
        with pytest.raises(TypeError):
            TaskFinished.of(other, records=[("scene", {"n": object()})])
        assert [r.data for r in store.records("ada", "scene")] == [{"n": 1}]
        tries = store.tries(task.id)
        assert [(t["turn"], t["state"]) for t in tries] == [(0, "answered"), (1, "answered")]
        assert tries[0]["latency_s"] == 0.25 and tries[0]["completion_tokens"] == 3
        assert store.end_run(run) == 1  # the unfinished lease goes back
        assert store.task_status(other.id) == "pending"


def test_requests_in_flight_when_a_run_ends_are_abandoned(tmp_path):
    with Store(tmp_path / "db") as store:
        store.plan([spec(0)])
        run = store.begin_run("test")
        [task] = store.lease(run, "ada", "scenes", 1)
        store.write(run, [TryStarted(task, 0, "teacher")])
        store.end_run(run)
        assert [t["state"] for t in store.tries(task.id)] == ["abandoned"]


def test_leases_and_tries_of_a_dead_process_are_reclaimed(tmp_path):
    path = tmp_path / "db"
    with Store(path) as store:
        store.plan(spec(i) for i in range(4))
    script = (
        "import os\n"
        "from charforge.store import Store\n"
        "from charforge.tasks import TryStarted\n"
        f"s = Store({str(path)!r})\n"
        "run = s.begin_run('doomed')\n"
        "tasks = s.lease(run, 'ada', 'scenes', 3)\n"
        "s.write(run, [TryStarted(tasks[0], 0, 'teacher')])\n"
        "os._exit(0)\n"  # dies holding three leases and a request in flight
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    with Store(path) as store:
        assert store.count("ada", "scenes", "leased") == 3
        assert store.reclaim_leases() == 3
        assert store.count("ada", "scenes", "pending") == 4
        states = store._db.execute("SELECT state FROM attempts").fetchall()
        assert states == [("abandoned",)]


def test_retrying_keeps_rejected_answers_and_failed_tries(tmp_path):
    with Store(tmp_path / "db") as store:
        store.plan([spec(0), spec(1)])
        run = store.begin_run("test")
        bad, worse = store.lease(run, "ada", "scenes", 2)
        store.write(run, [TaskFailed(bad, "HTTP 500", [FailedTry(error="HTTP 500",
                                                                 latency_s=0.5)])])
        finish(store, run, worse, rejection=("junk", "repeats"))
        assert store.rejection_counts("ada") == {"junk": 1}
        assert store.reset("ada", "scenes", "failed") == 1
        assert store.reset("ada", "scenes", "rejected") == 1
        assert store.count("ada", "scenes", "pending") == 2
        assert store.rejection_counts("ada") == {}  # nothing is rejected *now*...
        assert store.completions_of(worse.id) == []  # ...and the new round starts empty,
        assert store.completions_of(worse.id, all_rounds=True) == [(0, "ok")]  # the old kept
        history = store._db.execute("SELECT round, reason FROM rejections").fetchall()
        assert history == [(0, "junk")]
        assert [(t["state"], t["latency_s"]) for t in store.tries(bad.id)] == [("failed", 0.5)]
        run = store.begin_run("again")
        retried = {t.id: t for t in store.lease(run, "ada", "scenes", 2)}
        assert retried[worse.id].round == 1 and retried[bad.id].round == 0


def test_writes_need_the_lease(tmp_path):
    with Store(tmp_path / "db") as store:
        store.plan(spec(i) for i in range(3))
        run = store.begin_run("test")
        first, second, third = store.lease(run, "ada", "scenes", 3)
        store.end_run(run)  # all three leases go back...
        again = store.begin_run("again")
        store.lease(again, "ada", "scenes", 1)  # ...and another run takes the first
        ops = [TaskFinished.of(t, records=[("scene", {"t": t.id})]) for t in (first, second)]
        ops.append(TurnAnswered(third, 0, "teacher", answer()))
        assert store.write(again, ops) == [True, False, False]
        assert [r.data["t"] for r in store.records("ada", "scene")] == [first.id]
        assert store.completions_of(third.id) == []


def test_records_page_through_in_order_while_the_caller_writes(tmp_path):
    with Store(tmp_path / "db") as store:
        store.plan(spec(i) for i in range(7))
        run = store.begin_run("test")
        for task in store.lease(run, "ada", "scenes", 7):
            finish(store, run, task, *[("scene", {"n": task.inputs["sample"], "k": k})
                                       for k in range(3)])
        seen = []
        for record in store.records("ada", "scene", page=4):
            seen.append((record.data["n"], record.data["k"]))
            # Writing between pages is what planning does: it must not fail or disturb.
            store.plan([TaskSpec(character="ada", stage="experiences", inputs={"r": len(seen)},
                                 config=config(), parents=((record.task_id, record.idx),))])
        assert seen == [(n, k) for n in range(7) for k in range(3)]
        assert store.count("ada", "experiences", "pending") == 21
        first = next(store.records("ada", "scene"))
        child = store.children_of(first.task_id, first.idx)
        assert len(child) == 1 and store.parents_of(child[0]) == [(first.task_id, 0)]


def test_runs_keep_the_settings_they_ran_with(tmp_path):
    with Store(tmp_path / "db") as store:
        run = store.begin_run("generate scenes ada", {"concurrency": 4, "model": "teacher"})
        assert store.run_settings(run) == {"concurrency": 4, "model": "teacher"}


@pytest.mark.parametrize(("content", "problem"), [
    (b"", None),  # an empty file is a new store
    (b"\x00garbage" * 512, "is not a readable charforge store"),
    (None, "is a folder"),
])
def test_a_broken_store_is_one_line(tmp_path, content, problem):
    path = tmp_path / "charforge.db"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    if problem is None:
        Store(path).close()
        return
    with pytest.raises(StoreError, match=problem) as info:
        Store(path)
    assert "\n" not in str(info.value)


def test_a_truncated_store_is_one_line(tmp_path):
    path = tmp_path / "charforge.db"
    with Store(path) as store:
        store.plan(TaskSpec(character="ada", stage="scenes", inputs={"i": i, "pad": "x" * 200},
                            config=config()) for i in range(500))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with pytest.raises(StoreError, match=r"not a readable charforge store .*malformed") as info:
        Store(path)
    assert "\n" not in str(info.value)


def test_a_read_only_store_is_one_line(tmp_path):
    path = tmp_path / "charforge.db"
    Store(path).close()
    for extra in ("-wal", "-shm"):
        Path(f"{path}{extra}").unlink(missing_ok=True)
    with read_only(path), Store(path) as store:
        assert store.count("ada", "scenes", "pending") == 0  # reading works...
        with pytest.raises(StoreError, match="is read-only") as info:
            store.plan([spec(0)])  # ...writing is one line that says why
        assert "\n" not in str(info.value)


def test_store_text_is_canonical_json(tmp_path):
    with Store(tmp_path / "db") as store:
        store.plan([spec(0)])
        params = store._db.execute("SELECT params FROM tasks").fetchone()[0]
    assert json.loads(params)["sampling"]["temperature"] == 0.7
    # kept in the order given (a response_format's schema is written in its key order)
    assert params == json.dumps(spec(0).params, separators=(",", ":"))
