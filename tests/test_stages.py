"""The stage contract from outside the package: a stage written in a test file, with its
own templates and options, runs through `run_stage` and resumes; a task that is a
conversation with two models keeps each answer and survives a SIGKILL mid-way; the
API is async first and its sync forms say so inside a running event loop."""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from charforge.errors import EventLoopError, StageOptionsError
from charforge.generate import generate, generate_async
from charforge.llm.registry import load_chat_model
from charforge.runner import DryRun, run_stage
from charforge.stages import build_stage, registered_stages
from charforge.testing import Reply, ScriptedOpenAIServer
from charforge.workspace import Workspace

import custom_stage
import interview_script
from conftest import teacher_workspace
from scripted_teacher import answer as teacher_answer

HERE = Path(__file__).parent
QUIET = {"show_progress": False}


def riddle(request) -> str:
    number = request["messages"][-1]["content"].split("riddle number ")[1].split()[0]
    return f"What has keys but opens no lock? (riddle {number})"


def add_model(ws: Workspace, name: str, base_url: str, model: str | None = None) -> Workspace:
    config = yaml.safe_load(ws.config_path.read_text())
    config["models"][name] = {"backend": "openai", "model": model or name, "base_url": base_url,
                              "api_key_env": None, "max_retries": 2, "backoff_base_s": 0.01,
                              "supports_json_schema": False}
    ws.config_path.write_text(yaml.safe_dump(config))
    return Workspace(ws.root)


async def run_riddles(ws: Workspace, **kwargs):
    model = load_chat_model("teacher", config=ws.config)
    async with model:
        with ws.store() as store:
            stage = build_stage("riddles", ws.load_character("beethoven"), store,
                                options=kwargs.pop("options", {"riddles": 5}),
                                templates=ws.templates())
            return await run_stage(store, stage, model, show_progress=False, **kwargs)


def test_a_stage_from_outside_the_package_runs_and_resumes(tmp_path):
    assert registered_stages()["riddles"] is custom_stage.RiddleStage
    script = [Reply(text="No question here."), *[Reply.server_error()] * 5]
    with ScriptedOpenAIServer(script, responder=riddle) as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url)
        plan = asyncio.run(run_riddles(ws, dry_run=True))
        assert isinstance(plan, DryRun) and plan.tasks == 5
        system, user = plan.first_messages
        assert system.content == "You write riddles about people. Answer with the riddle only."
        assert user.content.startswith("Write riddle number 0 about Beethoven, in 2 lines")
        part = asyncio.run(run_riddles(ws, limit=2, concurrency=1))
        # Task 1: rejected (no question). Task 2: five server errors, the fifth fatal
        # (the teacher's max_retries is 4): failed, its tries kept.
        assert (part.done, part.rejected, part.failed) == (0, 1, 1)
        rest = asyncio.run(run_riddles(ws))
        assert (rest.done, rest.rejected, rest.failed) == (3, 0, 0)
        retry = asyncio.run(run_riddles(ws, retry="failed"))
        assert (retry.done, retry.failed) == (1, 0)
        again = asyncio.run(run_riddles(ws))
        assert again.finished == 0  # nothing left: resumed, never repeated
        assert len(server.chat_requests) == 1 + 5 + 3 + 1
    with ws.store() as store:
        stored = list(store.records("beethoven", "riddle"))
        assert sorted(r.data["number"] for r in stored) == [1, 2, 3, 4]
        assert {r.version for r in stored} == {2}  # records carry their schema version
        assert store.rejection_counts("beethoven", "riddles") == {"invalid": 1}


def test_stage_options_are_typed_and_checked(tmp_path):
    ws = teacher_workspace(tmp_path / "ws", "http://127.0.0.1:9/v1")
    character = ws.load_character("beethoven")
    with ws.store() as store:
        with pytest.raises(StageOptionsError, match="has no option 'riddle'; its options: "
                                                    "riddles, lines"):
            build_stage("riddles", character, store, options={"riddle": 3})
        with pytest.raises(StageOptionsError, match="option 'lines': Input should be less "
                                                    "than or equal to 8; given 99"):
            build_stage("riddles", character, store, options={"lines": 99})
        with pytest.raises(StageOptionsError, match="sampling temperature"):
            build_stage("riddles", character, store, sampling={"temperature": 9})
    # From the Python API, like from the CLI: a CharforgeError, never a TypeError.
    with pytest.raises(StageOptionsError, match="stage 'scenes' has no option 'promts'; its "
                                                "options: prompts, scenes_per_prompt"):
        generate(ws, "beethoven", "scenes", options={"promts": 3}, **QUIET)


def test_the_api_works_inside_a_running_loop_through_its_async_forms(tmp_path):
    from charforge.dataset.export import build_dataset_async
    from charforge.llm.registry import check_models, check_models_async
    from charforge.roleplay import ask_async
    from charforge.status import workspace_status_async

    with ScriptedOpenAIServer(responder=teacher_answer) as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url)

        async def in_a_notebook():
            for sync_call, name in ((lambda: generate(ws, "beethoven", "scenes", **QUIET),
                                     "generate_async"),
                                    (lambda: check_models(ws.config), "check_models_async")):
                with pytest.raises(EventLoopError) as info:
                    sync_call()
                message = str(info.value)
                assert "\n" not in message and f"await {name}(...)" in message
            scenes = await generate_async(ws, "beethoven", "scenes",
                                          options={"prompts": 2, "scenes_per_prompt": 2},
                                          **QUIET)
            experiences = await generate_async(ws, "beethoven", "experiences", **QUIET)
            build = await build_dataset_async(ws, "beethoven")
            status = await workspace_status_async(ws)
            [check] = await check_models_async(ws.config, names=["teacher"])
            answer = await ask_async("Where were you born?",
                                     load_chat_model("teacher", config=ws.config))
            return scenes, experiences, build, status, check, answer

        scenes, experiences, build, status, check, answer = asyncio.run(in_a_notebook())
    assert (scenes.done, experiences.done, build.stats.sft_records) == (2, 4, 4)
    assert [(row.stage, row.done) for row in status] == [("experiences", 4), ("scenes", 2)]
    assert check.ok and answer.text


def interview_workspace(root: Path, base_url: str) -> Workspace:
    ws = teacher_workspace(root, base_url)
    ws = add_model(ws, "interviewer", base_url)
    return add_model(ws, "agent", base_url)


def interview_process(ws: Workspace) -> list[str]:
    return [sys.executable, str(HERE / "run_interview.py"), str(ws.root)]


def test_a_two_model_conversation_survives_sigkill_mid_way(tmp_path):
    rng = random.Random(20261201)
    with ScriptedOpenAIServer(responder=interview_script.answer, latency_s=0.4) as server:
        ws = interview_workspace(tmp_path / "ws", server.base_url)
        proc = subprocess.Popen(interview_process(ws), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while len(server.chat_requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)  # the conversation has begun...
        time.sleep(rng.uniform(0.05, 0.9))  # ...then a timer, blind to the answers
        proc.kill()
        assert proc.wait() == -signal.SIGKILL, proc.stderr.read()[-2000:]
        sent_before = len(server.chat_requests)
        assert 2 <= sent_before < 8, "the kill did not land mid-conversation"
        with sqlite3.connect(ws.root / "charforge.db") as conn:
            kept = conn.execute("SELECT COUNT(*) FROM completions").fetchone()[0]
        assert 1 <= kept <= sent_before  # answers are kept as they arrive

        resumed = subprocess.run(interview_process(ws), capture_output=True, text=True,
                                 timeout=120)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        requests = server.chat_requests

    asked_again = [(interview_script.who(r.json), interview_script.turn_of(r.json))
                   for r in requests[sent_before:]]
    order = [(role, turn) for turn in range(1, 5) for role in ("interviewer", "agent")]
    assert asked_again == order[kept:]  # no request for a turn whose answer was stored
    with sqlite3.connect(ws.root / "charforge.db") as conn:
        states = dict(conn.execute("SELECT state, COUNT(*) FROM attempts GROUP BY state"))
        roles = [r for (r,) in conn.execute("SELECT role FROM completions ORDER BY turn")]
    assert states.get("answered") == 8 and states.get("abandoned", 0) <= 1
    assert set(states) <= {"answered", "abandoned"}
    assert roles == [role for role, _ in order]
    with Workspace(ws.root).store() as store:
        [record] = list(store.records("beethoven", "interview"))
    transcript = record.data["transcript"]
    assert transcript == [line for turn in range(1, 5) for line in (
        f"Q{turn}: What did you compose in year {turn}?",
        f"A{turn}: In year {turn} I wrote a sonata, of course.")]


def test_a_failed_conversation_resumes_from_its_stored_turns(tmp_path):
    # The agent's endpoint fails for good at turn 3; --retry-failed asks only what is missing.
    script = [Reply(text="Q1?"), Reply(text="A1."), Reply(text="Q2?"), Reply(text="A2."),
              Reply(text="Q3?"), *[Reply.server_error()] * 3]
    with ScriptedOpenAIServer(script, responder=interview_script.answer) as server:
        ws = interview_workspace(tmp_path / "ws", server.base_url)

        async def interview(retry=None):
            models = {n: load_chat_model(n, config=ws.config) for n in ("interviewer", "agent")}
            async with models["interviewer"], models["agent"]:
                with ws.store() as store:
                    stage = build_stage("test-interview", ws.load_character("beethoven"), store,
                                        options={"turns": 4}, templates=ws.templates())
                    return await run_stage(store, stage, models, retry=retry, **QUIET)

        first = asyncio.run(interview())
        assert first.failed == 1
        second = asyncio.run(interview(retry="failed"))
        assert second.done == 1
        sent = [interview_script.turn_of(r.json) for r in server.chat_requests]
    assert sent == [1, 1, 2, 2, 3, 3, 3, 3, 3, 4, 4]  # turn 3's agent asked 3 + 1 times
    with ws.store() as store:
        [record] = list(store.records("beethoven", "interview"))
    assert record.data["transcript"][:5] == ["Q1: Q1?", "A1: A1.", "Q2: Q2?", "A2: A2.",
                                             "Q3: Q3?"]


def test_a_stage_narrows_its_output_schema_per_task(tmp_path):
    from typing import Literal

    from charforge.generate import ProtectiveStage
    from charforge.parse.schemas import DialogueAnswer, TurnAnswer, narrowed
    from charforge.runner import task_config, task_specs

    class ByName(ProtectiveStage):
        """Speakers limited to the character and one visitor named in the inputs."""

        def output_model(self, inputs):
            names = Literal[inputs["short_name"], f"Visitor {inputs['sample']}"]
            turn = narrowed(TurnAnswer, "Turn", speaker=names)
            return narrowed(DialogueAnswer, "NamedDialogue", turns=list[turn])

    ws = teacher_workspace(tmp_path / "ws", "http://127.0.0.1:9/v1")
    model = load_chat_model("teacher", config=ws.config)
    with ws.store() as store:
        stage = build_stage(ByName, ws.load_character("beethoven"), store, mode="json",
                            options={"count": 2})
        specs = list(task_specs(stage, task_config(stage, {"teacher": model})))
    schemas = [s.response_format["json_schema"]["schema"] for s in specs]
    speakers = [s["properties"]["turns"]["items"]["properties"]["speaker"]["enum"]
                for s in schemas]
    assert speakers == [["Beethoven", "Visitor 0"], ["Beethoven", "Visitor 1"]]
    assert schemas[0]["properties"]["turns"]["items"]["additionalProperties"] is False
    # The same narrowing is built once (its schema, and later its grammar, are cached).
    assert narrowed(TurnAnswer, "Turn", speaker=Literal["A"]) is narrowed(
        TurnAnswer, "Turn", speaker=Literal["A"])


def test_a_write_nobody_waited_for_is_not_lost_when_it_fails():
    import sqlite3

    from charforge.session import StoreWriter

    class FailingStore:
        def write(self, run_id, ops):
            raise sqlite3.OperationalError("disk I/O error")

    async def run():
        writer = StoreWriter(FailingStore(), "run")  # type: ignore[arg-type]
        writer.submit(["a request started"], wait=False)  # type: ignore[list-item]
        await asyncio.sleep(0)  # the flush runs, fails, and nobody is waiting for it
        with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
            writer.submit(["the next write"], wait=False)  # type: ignore[list-item]
        with pytest.raises(sqlite3.OperationalError):
            writer.raise_failure()

    asyncio.run(run())
