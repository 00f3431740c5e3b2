"""Kill a real generating process at random moments; resume; nothing is lost
or duplicated. Also: Ctrl-C hands leases back and exits cleanly."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from charforge.testing import ScriptedOpenAIServer

from conftest import teacher_workspace
from scripted_teacher import answer

PROMPTS = 600


def generate_command(ws: Path, concurrency: int = 8) -> list[str]:
    return [sys.executable, "-m", "charforge.cli", "generate", "scenes", "beethoven",
            "--prompts", str(PROMPTS), "--scenes-per-prompt", "2", "--concurrency",
            str(concurrency), "--format", "text", "-w", str(ws)]


def scene_records(ws: Path) -> list[str]:
    with sqlite3.connect(ws / "charforge.db") as conn:
        return [row[0] for row in conn.execute(
            "SELECT r.data FROM records r JOIN tasks t ON t.id = r.task_id "
            "ORDER BY t.rowid, r.idx")]


def wait_for_requests(server: ScriptedOpenAIServer, more_than: int, proc) -> None:
    """Until the server has seen a request beyond the first `more_than` (the run began)."""
    deadline = time.monotonic() + 60
    while len(server.chat_requests) <= more_than:
        assert proc.poll() is None and time.monotonic() < deadline, "the run never started"
        time.sleep(0.02)


@pytest.mark.slow  # ~32 s: five killed processes
def test_sigkill_at_five_random_moments_loses_and_repeats_nothing(tmp_path):
    rng = random.Random(20261124)
    # 4 in flight at 100 ms: 40 tasks/s, so five kills at most 2 s into each run cannot
    # finish the 600 tasks.
    with ScriptedOpenAIServer(responder=answer, latency_s=0.1) as server:
        ws = teacher_workspace(tmp_path / "killed", server.base_url).root
        progress = [0]
        for _ in range(5):
            proc = subprocess.Popen(generate_command(ws, concurrency=4), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            wait_for_requests(server, len(server.chat_requests), proc)
            time.sleep(rng.uniform(0.3, 2.0))  # then a timer, blind to what the run does
            proc.kill()
            assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
            progress.append(len(scene_records(ws)))
            # The kill landed mid-run: this run wrote records, and work remained after it.
            assert progress[-2] < progress[-1] < 2 * PROMPTS, progress
        final = subprocess.run(generate_command(ws), capture_output=True, text=True, timeout=300)
        assert final.returncode == 0, final.stderr[-2000:]
        requests_seen = len(server.chat_requests)

        reference = teacher_workspace(tmp_path / "straight", server.base_url).root
        straight = subprocess.run(generate_command(reference), capture_output=True, text=True,
                                  timeout=300)
        assert straight.returncode == 0, straight.stderr[-2000:]

    with sqlite3.connect(ws / "charforge.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        states = dict(conn.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status"))
        assert states == {"done": PROMPTS}
        completions = conn.execute("SELECT COUNT(*), COUNT(DISTINCT task_id) FROM completions")
        assert completions.fetchone() == (PROMPTS, PROMPTS)  # exactly one answer per task
        records = conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        assert records == 2 * PROMPTS
        leased = conn.execute("SELECT COUNT(*) FROM tasks WHERE lease_run IS NOT NULL")
        assert leased.fetchone() == (0,)
    # Delivery to the teacher is at least once (a kill can lose an answer in
    # flight); the store holds each exactly once, in the same order as a run
    # that was never interrupted.
    assert requests_seen >= PROMPTS
    assert scene_records(ws) == scene_records(reference)


def test_ctrl_c_returns_leases_and_the_rerun_finishes(tmp_path):
    with ScriptedOpenAIServer(responder=answer, latency_s=0.2) as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url).root
        proc = subprocess.Popen(generate_command(ws), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        wait_for_requests(server, 16, proc)  # the run has begun (beyond its first wave)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err[-2000:]
        assert "interrupted" in err and "Traceback" not in err
        with sqlite3.connect(ws / "charforge.db") as conn:
            states = dict(conn.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status"))
        assert "leased" not in states and 0 < states.get("done", 0) < PROMPTS
        assert states["pending"] + states["done"] == PROMPTS
        tries = dict(conn.execute("SELECT state, COUNT(*) FROM attempts GROUP BY state"))
        # Every answer received was kept; the requests cut short are on record as such.
        assert tries["answered"] == states["done"] and tries.get("in_flight", 0) == 0
        rerun = subprocess.run(generate_command(ws), capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
    with sqlite3.connect(ws / "charforge.db") as conn:
        assert dict(conn.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status")) == {
            "done": PROMPTS}
