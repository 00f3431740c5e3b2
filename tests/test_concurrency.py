"""Several processes on one workspace, as a user running two characters at once does:
two `generate` runs at concurrency 64 over 1,000+ records each, a third process reading
`charforge status --json` in a loop. No lock errors, no task done twice, every task done."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from charforge.testing import ScriptedOpenAIServer

from conftest import teacher_workspace
from scripted_teacher import answer

CLI = [sys.executable, "-m", "charforge.cli"]
SCENE_PROMPTS = 210  # x 5 scenes = 1,050 scene records per character

MOZART = """# Wolfgang Amadeus Mozart

Wolfgang Amadeus Mozart was a prolific and influential composer of the Classical period. Born
in Salzburg, he showed prodigious ability from his earliest childhood.

He composed more than 800 works, virtually every genre of his time, and died in Vienna in 1791.
"""


def cli(ws: Path, *args: str) -> list[str]:
    return [*CLI, *args, "-w", str(ws)]


class StatusLoop(threading.Thread):
    """Reads `charforge status --json` over and over while the runs go on."""

    def __init__(self, ws: Path) -> None:
        super().__init__(daemon=True)
        self.ws, self.stop, self.reads, self.errors = ws, threading.Event(), 0, []

    def run(self) -> None:
        while not self.stop.is_set():
            result = subprocess.run(cli(self.ws, "status", "--json"), capture_output=True,
                                    text=True, timeout=120)
            if result.returncode != 0:
                self.errors.append(result.stderr)
            else:
                json.loads(result.stdout)
                self.reads += 1


@pytest.mark.parametrize("characters", [("beethoven", "beethoven"), ("beethoven", "mozart")],
                         ids=["same character", "two characters"])
def test_two_generate_processes_and_a_status_loop_share_a_workspace(tmp_path, characters):
    with ScriptedOpenAIServer(responder=answer, latency_s=0.01) as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url)
        (tmp_path / "wiki_Mozart.txt").write_text(MOZART)
        ws.import_character(tmp_path / "wiki_Mozart.txt")
        for name in sorted(set(characters)):
            scenes = subprocess.run(
                cli(ws.root, "generate", "scenes", name, "--prompts", str(SCENE_PROMPTS),
                    "--concurrency", "64", "--format", "text"),
                capture_output=True, text=True, timeout=300)
            assert scenes.returncode == 0, scenes.stderr[-2000:]
        sent_before = len(server.chat_requests)

        status = StatusLoop(ws.root)
        status.start()
        env = {**os.environ, "COLUMNS": "120"}
        runs = [subprocess.Popen(
            cli(ws.root, "generate", "experiences", name, "--concurrency", "64", "--format",
                "text"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for name in characters]
        outputs = [run.communicate(timeout=600) for run in runs]
        status.stop.set()
        status.join(timeout=120)
        sent = len(server.chat_requests) - sent_before

    for run, (_out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err[-3000:]
        assert "locked" not in err and "Traceback" not in err, err[-3000:]
    assert status.errors == [] and status.reads >= 1
    with sqlite3.connect(ws.root / "charforge.db") as conn:
        states = dict(conn.execute("SELECT status, COUNT(*) FROM tasks WHERE stage='experiences' "
                                   "GROUP BY status"))
        answers, distinct = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT task_id) FROM completions c JOIN tasks t "
            "ON t.id = c.task_id WHERE t.stage='experiences'").fetchone()
        scene_records = conn.execute("SELECT COUNT(*) FROM records WHERE kind='scene'"
                                     ).fetchone()[0]
    expected = scene_records  # one experience per scene, of one or of both characters
    assert states == {"done": expected}  # every task done
    assert answers == distinct == expected  # none done twice
    assert sent == expected  # and none asked twice
    assert scene_records >= 1000 * len(set(characters))
