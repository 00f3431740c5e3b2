"""The Experience Reconstruction chain against a real OpenAI-compatible server
that answers like a teacher would, faults included."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from charforge.errors import CharforgeError, ChatModelError, UnknownCharacterError
from charforge.generate import DryRun, generate
from charforge.llm.registry import load_chat_model
from charforge.runner import RunSummary
from charforge.testing import Reply, ScriptedOpenAIServer
from charforge.workspace import Workspace

from conftest import teacher_workspace
from scripted_teacher import REPLIES, answer

QUIET = {"show_progress": False}


def make_workspace(tmp_path: Path, base_url: str, *, json_schema: bool = False) -> Workspace:
    return teacher_workspace(tmp_path / "ws", base_url, json_schema=json_schema)


def db(ws: Workspace) -> sqlite3.Connection:
    return sqlite3.connect(ws.root / "charforge.db")


def test_whole_chain_text_mode_to_dataset(tmp_path):
    from datasets import load_from_disk

    from charforge.dataset.export import build_dataset

    with ScriptedOpenAIServer(responder=answer) as server:
        ws = make_workspace(tmp_path, server.base_url)
        scenes = generate(ws, "beethoven", "scenes", options={"prompts": 4,
                                                              "scenes_per_prompt": 3}, **QUIET)
        assert isinstance(scenes, RunSummary)
        assert (scenes.done, scenes.rejected, scenes.failed) == (4, 0, 0)
        experiences = generate(ws, "beethoven", "experiences", **QUIET)
        assert experiences.done == 12  # one per scene
        protective = generate(ws, "beethoven", "protective", options={"count": 3}, **QUIET)
        assert protective.done == 3
        assert len(server.chat_requests) == 4 + 12 + 3

    build = build_dataset(ws, "Beethoven", test_fraction=0.25)
    stats = build.stats
    assert stats.scene_outlines == 12
    assert stats.dialogues == {"experience": 12, "protective": 3}
    assert stats.sft_records == 15 and stats.train + stats.test == 15
    assert stats.turns_per_dialogue == 5.0

    rows = [json.loads(line) for line in (build.folder / "sft.jsonl").read_text().splitlines()]
    first = next(r for r in rows if r["source"] == "experience")
    roles = [m["role"] for m in first["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert "Where you are:" in first["messages"][0]["content"]
    assert first["messages"][1]["name"] in {"Anna", "Ferdinand", "Karl", "Therese", "Nikolaus"}
    assert first["messages"][2]["content"].startswith("<think>Always the publishers.")
    _thought, said = first["messages"][2]["content"].split("</think>\n")
    assert said in REPLIES  # the speech, after the thought

    prompted = [json.loads(x) for x in (build.folder / "prompted.jsonl").read_text().splitlines()]
    assert prompted[0]["prompt"].startswith("I want you to act like Ludwig van Beethoven.")
    assert prompted[0]["prompt"].endswith("The interactions are as follows:\n\n")
    assert prompted[0]["output"].endswith("<|eot|>")
    assert "<|eot|>\nBeethoven (thinking): Always the publishers." in prompted[0]["output"]

    card = (build.folder / "README.md").read_text()
    assert "| 12 | 12 | 3 |" in card
    hf = load_from_disk(str(build.folder / "hf"))
    assert len(hf["train"]) + len(hf.get("test", [])) == 15


def test_faults_are_retried_recorded_and_truncation_rejected(tmp_path):
    script = [Reply.rate_limited(retry_after=0.01), Reply.server_error(), Reply.malformed(),
              Reply.slow(5.0, "late"), Reply.truncated("Scene 1:\nType: Chat\nLocation: Bo")]
    with ScriptedOpenAIServer(script, responder=answer) as server:
        ws = make_workspace(tmp_path, server.base_url)
        summary = generate(ws, "beethoven", "scenes", concurrency=1,
                           options={"prompts": 3, "scenes_per_prompt": 2}, **QUIET)
    # The four faults are retried within the first task; the truncated answer
    # then arrives for the second task and is rejected, not accepted.
    assert (summary.done, summary.rejected, summary.failed) == (2, 1, 0)
    assert summary.rejection_reasons == {"truncated": 1}
    with db(ws) as conn:
        failed_tries = conn.execute("SELECT error FROM attempts WHERE ok=0").fetchall()
        assert len(failed_tries) == 4
        assert any("HTTP 429" in e for (e,) in failed_tries)
        assert any("timed out" in e for (e,) in failed_tries)
        kept = conn.execute("SELECT c.text FROM completions c JOIN rejections r "
                            "ON r.task_id = c.task_id").fetchall()
        assert kept == [("Scene 1:\nType: Chat\nLocation: Bo",)]  # raw text is kept


def test_endpoint_that_keeps_failing_marks_tasks_failed_then_retry(tmp_path):
    script = [Reply.server_error()] * 5
    with ScriptedOpenAIServer(script, responder=answer) as server:
        ws = make_workspace(tmp_path, server.base_url)
        first = generate(ws, "beethoven", "scenes", concurrency=1,
                         options={"prompts": 2, "scenes_per_prompt": 2}, **QUIET)
        assert (first.done, first.failed) == (1, 1)
        again = generate(ws, "beethoven", "scenes", retry="failed",
                         options={"prompts": 2, "scenes_per_prompt": 2}, **QUIET)
        assert (again.done, again.failed) == (1, 0)
    with db(ws) as conn:
        assert conn.execute("SELECT COUNT(*) FROM tasks WHERE status='done'").fetchone() == (2,)


def test_json_mode_repairs_once_then_validates(tmp_path):
    script = [Reply(text='{"scenes": [{"type": "chat"'), Reply(text="still not json")]
    with ScriptedOpenAIServer(script, responder=answer) as server:
        ws = make_workspace(tmp_path, server.base_url, json_schema=True)
        summary = generate(ws, "beethoven", "scenes", concurrency=1,
                           options={"prompts": 2, "scenes_per_prompt": 2}, **QUIET)
        sent = server.chat_requests
    # Task 1: invalid, repair still invalid -> rejected. Task 2: fine at once.
    assert (summary.done, summary.rejected) == (1, 1)
    assert summary.rejection_reasons == {"invalid": 1}
    assert sent[0].json["response_format"]["type"] == "json_schema"
    assert sent[1].json["messages"][-1]["content"].startswith("Your answer could not be used")
    assert sent[1].json["messages"][-2] == {"role": "assistant",
                                            "content": '{"scenes": [{"type": "chat"'}
    with db(ws) as conn:
        turns = conn.execute("SELECT task_id, COUNT(*) FROM completions GROUP BY task_id "
                             "ORDER BY 2").fetchall()
        assert [n for _, n in turns] == [1, 2]


def test_resume_skips_done_work_and_limit_stops_early(tmp_path):
    with ScriptedOpenAIServer(responder=answer) as server:
        ws = make_workspace(tmp_path, server.base_url)
        options = {"prompts": 5, "scenes_per_prompt": 2}
        part = generate(ws, "beethoven", "scenes", limit=2, options=options, **QUIET)
        assert part.done == 2
        rest = generate(ws, "beethoven", "scenes", options=options, **QUIET)
        assert rest.done == 3
        nothing = generate(ws, "beethoven", "scenes", options=options, **QUIET)
        assert nothing.finished == 0
        assert len(server.chat_requests) == 5


def test_dry_run_prints_the_first_prompt_and_sends_nothing(tmp_path):
    with ScriptedOpenAIServer(responder=answer) as server:
        ws = make_workspace(tmp_path, server.base_url)
        plan = generate(ws, "beethoven", "scenes", dry_run=True,
                        options={"prompts": 7, "scenes_per_prompt": 4}, **QUIET)
        assert server.chat_requests == []
    assert isinstance(plan, DryRun) and plan.tasks == 7
    _system, user = plan.first_messages
    assert "Imagine 4 different scenes from the life of Beethoven" in user.content
    assert "Scene 1:" in user.content
    with db(ws) as conn:
        assert conn.execute("SELECT COUNT(*) FROM tasks").fetchone() == (0,)


def test_unreachable_endpoint_fails_before_any_task_is_queued(tmp_path):
    ws = make_workspace(tmp_path, "http://127.0.0.1:9/v1")
    with pytest.raises(ChatModelError, match="cannot reach") as info:
        generate(ws, "beethoven", "scenes", **QUIET)
    assert "\n" not in str(info.value)
    with db(ws) as conn:
        assert conn.execute("SELECT COUNT(*) FROM tasks").fetchone() == (0,)


def test_unknown_character_and_stage(tmp_path):
    ws = make_workspace(tmp_path, "http://127.0.0.1:9/v1")
    with pytest.raises(UnknownCharacterError, match="known characters: Beethoven"):
        generate(ws, "Mozart", "scenes", **QUIET)
    with pytest.raises(CharforgeError, match="unknown stage 'poems'"):
        generate(ws, "beethoven", "poems", **QUIET)


def test_task_ids_ignore_concurrency_but_follow_the_prompt(tmp_path):
    from charforge.runner import task_config, task_specs
    from charforge.stages import build_stage

    with ScriptedOpenAIServer(responder=answer) as server:
        ws = make_workspace(tmp_path, server.base_url)
        character = ws.load_character("beethoven")
        model = load_chat_model("teacher", config=ws.config)

        def ids(**options):
            with ws.store() as store:
                stage = build_stage("scenes", character, store, options=options,
                                    sampling=options.pop("sampling", None))
                return [s.id for s in task_specs(stage, task_config(stage, {"teacher": model}))]

        three = ids(prompts=3)
        assert three == ids(prompts=3) and len(set(three)) == 3
        assert ids(prompts=5)[:3] == three  # asking for more keeps the work already done
        assert not set(ids(prompts=3, sampling={"temperature": 1.0})) & set(three)
        done = generate(ws, "beethoven", "scenes", options={"prompts": 3}, concurrency=1, **QUIET)
        again = generate(ws, "beethoven", "scenes", options={"prompts": 3}, concurrency=8, **QUIET)
        assert (done.done, again.finished) == (3, 0)
        assert len(server.chat_requests) == 3


def test_a_stage_bug_fails_its_task_and_the_run_goes_on(tmp_path):
    from charforge.generate import SceneStage
    from charforge.runner import run_stage
    from charforge.stages import build_stage

    class BrokenScenes(SceneStage):
        def parse_answer(self, task, text):
            if task.inputs["sample"] == 1:
                return [("scene", {"not json": object()})]
            return super().parse_answer(task, text)

    with ScriptedOpenAIServer(responder=answer) as server:
        ws = make_workspace(tmp_path, server.base_url)
        character = ws.load_character("beethoven")
        model = load_chat_model("teacher", config=ws.config)

        async def run(store):
            async with model:
                stage = build_stage(BrokenScenes, character, store,
                                    options={"prompts": 3, "scenes_per_prompt": 2})
                return await run_stage(store, stage, model, show_progress=False)

        with ws.store() as store:
            summary = asyncio.run(run(store))
            failed = store.count("beethoven", "scenes", "failed")
            [error] = store._db.execute("SELECT error FROM tasks WHERE status='failed'").fetchone()
    assert (summary.done, summary.failed) == (2, 1) and failed == 1
    assert error.startswith("internal error in stage scenes: TypeError")


def test_a_resumed_run_exports_the_same_bytes_as_a_straight_one(tmp_path):
    from charforge.dataset.export import build_dataset

    options = {"prompts": 3, "scenes_per_prompt": 2}
    with ScriptedOpenAIServer(responder=answer) as server:
        straight = make_workspace(tmp_path / "a", server.base_url)
        stepwise = make_workspace(tmp_path / "b", server.base_url)
        for stage, opts in (("scenes", options), ("experiences", {}),
                            ("protective", {"count": 2})):
            generate(straight, "beethoven", stage, options=opts, concurrency=8, **QUIET)
            generate(stepwise, "beethoven", stage, options=opts, limit=1, concurrency=1,
                     **QUIET)
            generate(stepwise, "beethoven", stage, options=opts, concurrency=3, **QUIET)
    first = build_dataset(straight, "beethoven").folder
    second = build_dataset(stepwise, "beethoven").folder
    for name in ("sft.jsonl", "prompted.jsonl", "stats.json", "README.md"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_progress_shows_counts_and_rate(tmp_path):
    from rich.console import Console

    console = Console(record=True, width=200, force_terminal=False)
    with ScriptedOpenAIServer([Reply.truncated("Scene 1:")], responder=answer) as server:
        ws = make_workspace(tmp_path, server.base_url)
        generate(ws, "beethoven", "scenes", concurrency=1, console=console,
                 options={"prompts": 3, "scenes_per_prompt": 2})
    shown = console.export_text()
    assert "scenes · beethoven" in shown
    assert "3/3" in shown
    assert "done 2 · rejected 1 · failed 0" in shown
    assert "tasks/s" in shown
