"""`charforge run CONFIG.yaml` end to end: both recipes on a tiny random base, with a
scripted teacher, interviewer and judge behind a real OpenAI-compatible server (real
HTTP), through the CLI as a user runs it; a second run asks nothing and trains nothing;
a run SIGKILLed in the middle of generation, training, interviewing and judging, and
resumed each time, ends with the same report numbers as the uninterrupted run."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from charforge.testing import ScriptedOpenAIServer

import scripted_teacher
from conftest import CLI, REPO, run

BEETHOVEN = REPO / "src" / "charforge" / "data" / "wiki_Beethoven.txt"
STYLE = {"early": ["I will seize fate by the throat; it shall never wholly overcome me.",
                   "Come, friend, the organ at court waits for no one, least of all me.",
                   "Neefe says I play like a storm; I say a storm has no patience."],
         "late": ["I hear the music inside, clearer now than any orchestra could play it.",
                  "Write to me, do not speak: my ears have left me, my pen has not.",
                  "The quartets are for a later age; let the critics wait for it."]}
QUESTIONS = [
    {"topic_id": "topic-1", "topic": "past experiences", "question": "Who taught you in Bonn?"},
    {"topic_id": "topic-2", "topic": "relationships", "question": "What was your father like?"},
    {"topic_id": "topic-4", "topic": "difficult to answer without breaking character",
     "question": "Do you use a smartphone?"},
    {"topic_id": "topic-3", "topic": "values", "question": "What do you think of Napoleon?"},
]  # the run's evaluation.limit asks the first three


def responder(request: dict) -> str:
    """The judge: a reasoned score that depends only on what is judged (so an interrupted
    and an uninterrupted run agree); everything else: the scripted teacher."""
    text = request["messages"][-1]["content"]
    system = next((m["content"] for m in request["messages"] if m["role"] == "system"), "")
    digest = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
    if "judge of role-play" in system:
        return f"The answer keeps to what the profile says.\nScore: {1 + digest % 7}"
    if system.startswith("You compare role-play"):  # PersLLM's ranking judge
        return "A > B" if digest % 2 else "B > A"
    return scripted_teacher.answer(request)


def staged_beethoven(folder: Path) -> Path:
    """Beethoven as PersLLM stage files, from the shipped wiki profile: his early years
    (the first paragraphs) and his late ones (the last), with a few lines in his manner.
    The scripted teacher writes about Beethoven, so both recipes' checks read its answers
    against his own words."""
    lines = [line for line in BEETHOVEN.read_text(encoding="utf-8").splitlines()[1:]
             if line.strip()]
    stages = folder / "beethoven"
    stages.mkdir(exist_ok=True)
    for stage, part in (("early", lines[:12]), ("late", lines[-12:])):
        (stages / f"{stage}_knowledge.txt").write_text("\n".join(part) + "\n",
                                                       encoding="utf-8")
        (stages / f"{stage}_style.txt").write_text("\n".join(STYLE[stage]) + "\n",
                                                   encoding="utf-8")
    return stages


def write_config(folder: Path, base_url: str, tiny_model: Path, **changes) -> Path:
    questions = folder / "questions.json"
    questions.write_text(json.dumps(QUESTIONS), encoding="utf-8")
    config = {
        "workspace": "ws",
        "character": {"source": str(staged_beethoven(folder)),
                      "name": "Ludwig van Beethoven"},
        "recipe": ["character-llm", "persllm"],
        "preset": "default",
        "teacher": "teacher",
        "models": {"teacher": {"backend": "openai", "model": "scripted", "base_url": base_url,
                               "api_key_env": None, "max_retries": 2, "timeout_s": 5,
                               "backoff_base_s": 0.01, "backoff_max_s": 0.05}},
        "concurrency": 2,
        "stages": {"scenes": {"prompts": 2, "scenes_per_prompt": 3},
                   "experiences": {"min_words": 100},
                   "protective": {"count": 2},
                   "questions": {"patterns": ["ordinary", "error"], "count": 4,
                                 "per_passage": 2},
                   "answers": {"cot": True}},
        "dataset": {"test_fraction": 0.25, "dpo": True},
        "training": {"base": str(tiny_model), "epochs": 1, "max_steps": 12, "save_steps": 2,
                     "effective_batch": 2, "max_length": 1024, "precision": "fp32",
                     "dpo": True},
        "evaluation": {"questions": str(questions), "limit": 3, "max_tokens": 24,
                       "temperature": 0.0,
                       "judge_max_tokens": 64, "concurrency": 1},
    }
    config.update(changes)
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def report_numbers(ws: Path) -> dict:
    report = json.loads((ws / "reports" / "beethoven" / "report.json").read_text())
    return {key: report[key] for key in ("agents", "dimensions", "means", "comparisons",
                                         "metrics")}


def count(db: Path, query: str) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute(query).fetchone()[0]
    except sqlite3.Error:
        return 0


def records_of(kind: str) -> str:
    return f"SELECT COUNT(*) FROM records WHERE kind='{kind}'"


def kill_when(args: list, cwd: Path, ready, what: str, timeout: float = 240) -> None:
    """Start `charforge run`, SIGKILL it as soon as `ready()` holds (it must, before the
    run ends)."""
    env = {**os.environ, "COLUMNS": "200"}
    process = subprocess.Popen([*CLI, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return
        if process.poll() is not None:
            pytest.fail(f"the run ended before {what}: {process.stderr.read()[-2000:]}")
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.slow  # ~2 minutes: two whole runs and four killed ones, each a process
def test_run_both_recipes_rerun_and_kill_resume(tmp_path, tiny_model_dir):
    with ScriptedOpenAIServer(responder=responder) as server:
        straight = tmp_path / "straight"
        straight.mkdir()
        config = write_config(straight, server.base_url, tiny_model_dir)
        first = run("run", config, cwd=straight)
        assert first.returncode == 0, first.stderr[-3000:]
        ws = straight / "ws"
        summary = json.loads((ws / "reports" / "beethoven-summary.json").read_text())
        steps = [row["step"] for row in summary["stages"]]
        assert steps == ["scenes", "experiences", "protective", "questions", "answers",
                         "dataset", "train", "dpo", "interview", "judge", "report"]
        done = {row["step"]: row.get("done", 0) for row in summary["stages"]}
        assert all(done[s] > 0 for s in ("scenes", "experiences", "protective", "questions",
                                        "answers", "interview", "judge")), done
        assert sorted(row["kind"] for row in summary["training"]) == ["dpo", "sft"]
        judged = {row["dimension"] for row in summary["judge"]}
        assert len(judged) == 5 and all("difference" in row for row in summary["judge"])
        paired = {row["metric"] for row in summary["metrics"] if "difference" in row}
        assert {"profile_similarity", "log_perplexity"} <= paired, summary["metrics"]
        assert "charforge chat beethoven" in first.stdout
        printed = first.stdout.split("summary", 1)[1]  # the closing tables, each step's row
        assert all(re.search(rf"│ {step}\s+│ [0-9.]+ (s|min)", printed) for step in steps), printed
        numbers = report_numbers(ws)
        assert {"trained", "prompted"} <= set(numbers["agents"])
        assert count(ws / "charforge.db", records_of("interview")) == 3 * 2  # limit 3

        # A second run: no teacher or judge call, nothing trained, the same report.
        asked = len(server.chat_requests)
        runs = sorted(p.name for p in (ws / "models" / "beethoven").iterdir())
        again = run("run", config, cwd=straight)
        assert again.returncode == 0, again.stderr[-3000:]
        assert len(server.chat_requests) == asked
        assert sorted(p.name for p in (ws / "models" / "beethoven").iterdir()) == runs
        assert "already trained" in again.stderr
        assert report_numbers(ws) == numbers
        assert count(ws / "charforge.db", records_of("interview")) == 3 * 2

        # The same job, killed in the middle of each kind of step and resumed.
        killed = tmp_path / "killed"
        killed.mkdir()
        config = write_config(killed, server.base_url, tiny_model_dir)
        db = killed / "ws" / "charforge.db"
        models = killed / "ws" / "models" / "beethoven"
        kill_when(["run", config], killed,
                  lambda: count(db, records_of("experience")) >= 1, "experiences")
        kill_when(["run", config], killed,
                  lambda: any(models.glob("*/checkpoints/checkpoint-4")), "training")
        total = count((ws / "charforge.db"), records_of("interview"))
        kill_when(["run", config], killed,
                  lambda: 1 <= count(db, records_of("interview")) < total, "interviewing")
        judged_total = count((ws / "charforge.db"), records_of("judgment"))
        kill_when(["run", config], killed,
                  lambda: 1 <= count(db, records_of("judgment")) < judged_total, "judging")
        resumed = run("run", config, cwd=killed)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert report_numbers(killed / "ws") == numbers


@pytest.fixture
def server():
    with ScriptedOpenAIServer(responder=responder) as scripted:
        yield scripted


def one_line_error(result) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_bad_configurations_are_one_line_before_any_work(tmp_path, server, tiny_model_dir):
    config = write_config(tmp_path, server.base_url, tiny_model_dir)
    raw = yaml.safe_load(config.read_text())

    def with_change(name: str, change) -> Path:
        changed = json.loads(json.dumps(raw))
        change(changed)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(changed), encoding="utf-8")
        return path

    cases = {
        "missing character file": (with_change(
            "missing", lambda c: c["character"].update(source="nowhere/knowledge.txt")),
            r"character\.source: .*nowhere/knowledge\.txt does not exist"),
        "unknown key": (with_change("key", lambda c: c["training"].update(epoch=2)),
                        r"unknown key 'epoch' in training; valid keys: .*epochs"),
        "unknown stage key": (with_change(
            "stagekey", lambda c: c["stages"]["scenes"].update(prompt=2)),
            r"stages\.scenes: unknown key 'prompt'; valid keys: prompts"),
        "stage not in the recipe": (with_change(
            "stage", lambda c: c["stages"].update(interviews={"count": 1})),
            r"stages\.interviews: not a stage of the recipe"),
        "teacher unreachable": (with_change(
            "teacher", lambda c: c["models"]["teacher"].update(
                base_url="http://127.0.0.1:9/v1", max_retries=0, timeout_s=1)),
            r"teacher 'teacher': "),
        "recipe misspelt": (with_change("recipe", lambda c: c.update(recipe="charcter-llm")),
                            r"recipe: Input should be 'character-llm' or 'persllm'"),
        "a key in the file": (with_change(
            "secret", lambda c: c["models"]["teacher"].update(api_key="sk-do-not-write")),
            r"'api_key' looks like a secret; keys stay in the environment"),
        "a model option misspelt": (with_change(
            "option", lambda c: c["models"]["teacher"].update(max_concurrenc=3)),
            r"models\.teacher: .*unknown option 'max_concurrenc'"),
        "base not there": (with_change(
            "base", lambda c: c["training"].update(base=str(tmp_path / "no-model"))),
            r"no-model"),
    }
    for name, (path, pattern) in cases.items():
        result = run("run", path, cwd=tmp_path)
        line = one_line_error(result)
        assert re.search(pattern, line), (name, line)
        assert not (tmp_path / "ws").exists(), name  # refused before work: no empty workspace
    assert "sk-do-not-write" not in "".join(
        p.read_text() for p in tmp_path.rglob("*.yaml") if p.name == "charforge.yaml")
    unknown_step = run("run", config, "--from", "trainning", cwd=tmp_path)
    assert re.search(r"unknown stage 'trainning'; stages: scenes, .*report",
                     one_line_error(unknown_step))
    assert len(server.chat_requests) == 0


def test_dry_run_prints_the_plan_and_asks_nothing(tmp_path, server, tiny_model_dir):
    config = write_config(tmp_path, server.base_url, tiny_model_dir,
                          prices={"teacher": {"input": 1.0, "output": 2.0}})
    result = run("run", config, "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines()
            if line.count("│") > 3}
    assert {"scenes", "experiences", "protective", "questions", "answers", "dataset",
            "train", "dpo", "interview", "judge", "report"} <= set(rows)
    assert re.search(r"│ scenes\s+│ 2\s+│", rows["scenes"])
    assert re.search(r"│ experiences\s+│ 6\s+│", rows["experiences"])  # 2 prompts x 3
    assert re.search(r"│ interview\s+│ 6\s+│", rows["interview"])  # 3 questions x 2 agents
    # the rubric's 5 dimensions of 6 interviews, and the ranking: 3 questions x 2 rotations
    assert re.search(r"│ judge\s+│ 36\s+│", rows["judge"]) and "30 rubric + 6 rank" in rows["judge"]
    assert "$" in result.stdout and "at the configured prices" in result.stdout
    assert len(server.chat_requests) == 0
    assert count(tmp_path / "ws" / "charforge.db", "SELECT COUNT(*) FROM tasks") == 0


def test_the_examples_are_valid_configurations():
    from charforge.pipeline.run import Pipeline

    found = sorted(REPO.glob("examples/*.yaml"))
    assert {p.name for p in found} >= {"beethoven.yaml"} and len(found) >= 3
    for path in found:
        pipeline = Pipeline(path)
        pipeline.check_files()
        assert pipeline.config.steps()[-1] == "report"


def test_ctrl_c_stops_the_run_cleanly_and_the_same_command_resumes(tmp_path, tiny_model_dir):
    with ScriptedOpenAIServer(responder=responder, latency_s=0.4) as slow:
        config = write_config(tmp_path, slow.base_url, tiny_model_dir)
        process = subprocess.Popen([*CLI, "run", config, "--until", "scenes"],
                                   cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, env={**os.environ, "COLUMNS": "200"})
        deadline = time.monotonic() + 60
        while not slow.chat_requests and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 130, stderr[-2000:]
        assert "Traceback" not in stderr
        assert "scenes was interrupted: run the same command again" in stdout
        again = run("run", config, "--until", "scenes", cwd=tmp_path)
        assert again.returncode == 0, again.stderr[-2000:]
        summary = json.loads((tmp_path / "ws" / "reports" / "beethoven-summary.json").read_text())
        (scenes,) = summary["stages"]
        assert scenes["step"] == "scenes" and scenes["done"] + scenes["rejected"] == 2
