"""Character-LLM's released interviews (seven characters, four models) imported and
judged end to end through the CLI against a scripted judge server (real HTTP); the judge
run is SIGKILLed and resumed, and no judgment is asked twice; the report's numbers are
the stored judgments'."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from charforge.store import DB_NAME
from charforge.testing import ScriptedOpenAIServer
from charforge.workspace import Workspace

from conftest import CLI, run

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "character-llm"
RESULTS = SHARED / "gen_results"
PROFILES = SHARED / "seed_data" / "profiles"
# The seven characters' five "difficult to answer without breaking character" questions,
# single-turn, four models: 140 interviews, five dimensions each.
JUDGED = 7 * 5 * 4 * 5

pytestmark = pytest.mark.skipif(not RESULTS.is_dir(), reason="the shared Character-LLM data")


def judged_score(request: dict) -> str:
    """A reasoned score that depends only on what is judged (stable across runs)."""
    text = request["messages"][-1]["content"]
    digest = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
    return f"The answer keeps to the period.\nScore: {1 + digest % 7}"


def judgments(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM records WHERE kind='judgment'"
                                ).fetchone()[0]
    except sqlite3.Error:
        return 0


def test_import_judge_kill_resume_and_report(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    for profile in sorted(PROFILES.glob("wiki_*.txt")):
        ws.import_character(profile)
    imported = run("eval", "import-characterllm", RESULTS, cwd=ws.root)
    assert imported.returncode == 0, imported.stderr
    counts = dict(line.split(": ", 1) for line in imported.stdout.strip().splitlines())
    assert counts["beethoven"].startswith("528 interview(s) imported")  # (82 + 50) x 4
    assert counts["hermione"].startswith("692 interview(s) imported")  # folders "Hermonie"
    assert len(counts) == 7
    again = run("eval", "import-characterllm", RESULTS, cwd=ws.root)
    assert "0 interview(s) imported, 528 already there" in again.stdout

    with ScriptedOpenAIServer(responder=judged_score) as server:
        config = yaml.safe_load(ws.config_path.read_text())
        config["models"]["judge"] = {"backend": "openai", "model": "scripted-judge",
                                     "base_url": server.base_url, "api_key_env": None}
        ws.config_path.write_text(yaml.safe_dump(config))
        slugs = sorted(c.slug for c in Workspace(ws.root).characters())
        db = ws.root / DB_NAME
        # one process judges every character in turn; killed part-way through
        script = ("import sys; from charforge.cli import main; sys.argv=['charforge','eval',"
                  "'judge',sys.argv[1],'--judge','judge','--topic','topic-4','--mode',"
                  "'single']; main()")
        env = {**os.environ, "COLUMNS": "200"}
        killed_at = None
        for slug in slugs:
            process = subprocess.Popen([CLI[0], "-c", script, slug], cwd=ws.root, env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if killed_at is None and slug == slugs[3]:
                deadline = time.monotonic() + 60
                while judgments(db) < 3 * 100 + 30 and time.monotonic() < deadline:
                    time.sleep(0.02)
                process.send_signal(signal.SIGKILL)
                process.wait()
                killed_at = judgments(db)
                continue
            assert process.wait(timeout=120) == 0, process.stderr.read().decode()
        assert killed_at is not None and 300 < killed_at < 400  # part of the 4th character
        asked_before = len(server.chat_requests)
        resumed = run("eval", "judge", slugs[3], "--judge", "judge", "--topic", "topic-4",
                      "--mode", "single", cwd=ws.root)
        assert resumed.returncode == 0, resumed.stderr
        asked = len(server.chat_requests)
        rerun = run("eval", "judge", slugs[3], "--judge", "judge", "--topic", "topic-4",
                    "--mode", "single", cwd=ws.root)
        assert "judge: 0 done" in rerun.stdout and len(server.chat_requests) == asked

    assert judgments(db) == JUDGED
    gone = run("eval", "judge", slugs[0], "--judge", "judge", cwd=ws.root)  # server stopped
    assert gone.returncode != 0 and "Traceback" not in gone.stderr
    assert gone.stderr.strip().splitlines() == [gone.stderr.strip()]  # one line
    assert "cannot reach" in gone.stderr
    # only the requests in flight at the kill were asked again (concurrency 16 at most)
    assert JUDGED <= asked <= JUDGED + 16
    left = 100 - (killed_at - 300)  # the 4th character's judgments not kept at the kill
    assert left <= asked - asked_before <= left + 16
    with sqlite3.connect(db) as conn:
        per_task = conn.execute("SELECT MAX(n) FROM (SELECT COUNT(*) n FROM records WHERE "
                                "kind='judgment' GROUP BY task_id)").fetchone()[0]
        stored = [json.loads(d) for (d,) in conn.execute(
            "SELECT r.data FROM records r JOIN tasks t ON t.id = r.task_id "
            "WHERE r.kind='judgment' AND t.character='beethoven'")]
    assert per_task == 1

    report = run("eval", "report", "beethoven", "--no-metrics", "-o", tmp_path / "rep",
                 cwd=ws.root)
    assert report.returncode == 0, report.stderr
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    for mean in data["means"]:
        scores = [j["score"] for j in stored if j["agent"] == mean["agent"]
                  and j["dimension"] == mean["dimension"] and j["score"] is not None]
        assert mean["n"] == len(scores) == 5
        assert mean["mean"] == pytest.approx(round(sum(scores) / len(scores), 2))
    assert {m["agent"] for m in data["means"]} == {"sft", "chatgpt", "alpaca-7b", "vicuna-7b"}
    assert len(data["comparisons"]) == 6 * 5  # every pair of the four, every dimension
    assert "beethoven · memorization · sft:" in report.stdout
