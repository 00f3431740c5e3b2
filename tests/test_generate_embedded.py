"""Each Experience Reconstruction stage on the real embedded SmolLM2-135M with the
grammar: every answer is JSON of the stage's shape (unless cut at max_tokens), and
every record accepted passes the content rules a reader would apply."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics

import pytest

from charforge.generate import generate, generate_async
from charforge.llm.local import LocalChatModel, LocalConfig
from charforge.parse import junk_reason
from charforge.testing import ScriptedOpenAIServer

from conftest import teacher_workspace
from scripted_teacher import answer

KNOWN_REASONS = {"invalid", "empty", "too_short", "one_speaker", "no_background", "truncated",
                 "junk", "copied"}
STAGES = [("scenes", {"prompts": 1, "scenes_per_prompt": 1}, 160),
          ("experiences", {"min_words": 120}, 420),
          ("protective", {"count": 1}, 420)]


@pytest.mark.slow  # ~50 s: SmolLM2 writes three answers, batched
@pytest.mark.integration
def test_every_stage_on_the_embedded_teacher(tmp_path):
    with ScriptedOpenAIServer(responder=answer) as server:  # a scene to build on, whatever
        ws = teacher_workspace(tmp_path / "ws", server.base_url)  # SmolLM2's scenes become
        generate(ws, "beethoven", "scenes", show_progress=False,
                 options={"prompts": 1, "scenes_per_prompt": 2})
    teacher = LocalChatModel(LocalConfig(repetition_penalty=1.2), name="smollm2")

    async def every_stage_at_once():
        """The three stages side by side, as `charforge run` could: the engine batches
        their requests (the experience builds on the scripted scenes)."""
        await teacher.check()
        return await asyncio.gather(*(
            generate_async(ws, "beethoven", stage, model=teacher, limit=1, options=options,
                           sampling={"max_tokens": max_tokens, "seed": 1},
                           output_format="json", show_progress=False)
            for stage, options, max_tokens in STAGES))

    for (stage, _, _), summary in zip(STAGES, asyncio.run(every_stage_at_once()), strict=True):
        assert summary.failed == 0 and summary.done + summary.rejected == 1, stage
        assert set(summary.rejection_reasons) <= KNOWN_REASONS

    with sqlite3.connect(ws.root / "charforge.db") as db:
        answers = db.execute("SELECT c.text, c.finish_reason FROM completions c JOIN tasks t "
                             "ON t.id = c.task_id WHERE t.models LIKE '%smollm2%'").fetchall()
        records = db.execute("SELECT r.kind, r.data FROM records r JOIN tasks t ON "
                             "t.id = r.task_id WHERE t.models LIKE '%smollm2%'").fetchall()
    assert len(answers) >= 3
    for text, finish in answers:
        if finish != "length":
            json.loads(text)  # the grammar makes every finished answer JSON
    for kind, data in map(lambda row: (row[0], json.loads(row[1])), records):
        if kind == "scene":
            assert len(data["background"].split()) >= 5 and not junk_reason(data["location"])
            continue
        turns = data["dialogue"]["turns"]
        assert len(turns) >= 3 and len({t["speaker"] for t in turns}) >= 2
        assert statistics.median(len(t["content"].split()) for t in turns) >= 8
        assert any(t["speaker"] == "Beethoven" for t in turns)
