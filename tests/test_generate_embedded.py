"""Experience completion on the real embedded SmolLM2-135M: a weak teacher,
so each scene must end as a parsed experience or a recorded rejection."""

from __future__ import annotations

import sqlite3

import pytest

from charforge.generate import generate
from charforge.llm.local import LocalChatModel
from charforge.testing import ScriptedOpenAIServer

from conftest import teacher_workspace
from scripted_teacher import answer

KNOWN_REASONS = {"invalid", "empty", "too_short", "no_background", "truncated", "junk"}


@pytest.mark.integration
def test_two_scenes_become_experiences_or_recorded_rejections(tmp_path):
    with ScriptedOpenAIServer(responder=answer) as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url)
        scenes = generate(ws, "beethoven", "scenes", show_progress=False,
                          options={"prompts": 1, "scenes_per_prompt": 2})
        assert scenes.done == 1

    smollm2 = LocalChatModel(name="smollm2")
    summary = generate(ws, "beethoven", "experiences", model=smollm2, concurrency=2,
                       sampling={"temperature": 0.7, "max_tokens": 160}, show_progress=False)
    assert summary.failed == 0
    assert summary.done + summary.rejected == 2
    assert set(summary.rejection_reasons) <= KNOWN_REASONS
    with sqlite3.connect(ws.root / "charforge.db") as conn:
        rows = conn.execute(
            "SELECT t.status, r.reason, r.detail, c.text FROM tasks t "
            "JOIN completions c ON c.task_id = t.id LEFT JOIN rejections r ON r.task_id = t.id "
            "WHERE t.stage = 'experiences'").fetchall()
        records = conn.execute("SELECT COUNT(*) FROM records WHERE kind='experience'").fetchone()
    assert len(rows) == 2
    for status, reason, detail, text in rows:
        assert text.strip(), "the raw answer is kept"
        if status == "rejected":
            assert reason in KNOWN_REASONS and detail
        else:
            assert status == "done" and reason is None
    assert records == (summary.done,)
