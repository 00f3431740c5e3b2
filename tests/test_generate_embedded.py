"""Each Experience Reconstruction stage on the real embedded SmolLM2-135M with the
grammar: every answer is JSON of the stage's shape (unless cut at max_tokens), and
every record accepted passes the content rules a reader would apply."""

from __future__ import annotations

import json
import sqlite3
import statistics

import pytest

from charforge.demo import demo_file
from charforge.generate import generate
from charforge.llm.local import LocalChatModel, LocalConfig
from charforge.parse import junk_reason
from charforge.workspace import Workspace

KNOWN_REASONS = {"invalid", "empty", "too_short", "one_speaker", "no_background", "truncated",
                 "junk", "copied"}
STAGES = [("scenes", {"prompts": 1, "scenes_per_prompt": 2}, 320),
          ("experiences", {"min_words": 120}, 600),
          ("protective", {"count": 1}, 600)]


@pytest.mark.integration
def test_every_stage_on_the_embedded_teacher(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    ws.import_character(demo_file("wiki_Beethoven.txt"))
    teacher = LocalChatModel(LocalConfig(repetition_penalty=1.2), name="smollm2")
    for stage, options, max_tokens in STAGES:
        summary = generate(ws, "beethoven", stage, model=teacher, limit=1, options=options,
                           sampling={"max_tokens": max_tokens, "seed": 1},
                           output_format="json", show_progress=False)
        assert summary.failed == 0 and summary.done + summary.rejected == 1, stage
        assert set(summary.rejection_reasons) <= KNOWN_REASONS
        if stage == "scenes" and not summary.done:
            pytest.fail(f"no scene accepted, so nothing to build on: {summary}")

    with sqlite3.connect(ws.root / "charforge.db") as db:
        answers = db.execute("SELECT c.text, c.finish_reason FROM completions c").fetchall()
        records = db.execute("SELECT kind, data FROM records").fetchall()
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
