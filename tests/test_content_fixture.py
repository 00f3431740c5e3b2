"""Real SmolLM2-135M answers, labelled by hand as usable or not: the stages' content
checks must agree with every label.

`tests/data/smollm2-answers.jsonl` holds answers of the embedded teacher (grammar-
constrained JSON, and the seed's text layout from earlier runs), each with the task
inputs it answered, the label a reader gave it and why. The labels were written by
reading the answers, before looking at what the checks said."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from charforge.demo import demo_file
from charforge.importers import load_character_file
from charforge.records import Rejected
from charforge.stages import build_stage
from charforge.store import Store
from charforge.tasks import TaskRow

FIXTURE = Path(__file__).parent / "data" / "smollm2-answers.jsonl"
ROWS = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]


def test_the_fixture_is_big_enough():
    """At least 20 answers from every stage. (Few SmolLM2 answers are usable: the usable
    side of the checks is also tested on written answers in test_er_data.)"""
    assert len(ROWS) >= 20
    assert {row["stage"] for row in ROWS} == {"scenes", "experiences", "protective"}
    assert all(row["label"] in ("usable", "unusable") and row["why"] for row in ROWS)


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    character, _ = load_character_file(demo_file("wiki_Beethoven.txt"))
    store = Store(tmp_path_factory.mktemp("store") / "charforge.db")
    built = {(name, mode): build_stage(name, character, store, mode=mode)
             for name in ("scenes", "experiences", "protective") for mode in ("json", "text")}
    yield built
    store.close()


def verdict(stages, row) -> tuple[str, str]:
    stage = stages[(row["stage"], row["mode"])]
    task = TaskRow(id="fixture", key="fixture", character="beethoven", stage=row["stage"],
                   config=None, params={"mode": row["mode"]}, inputs=row["inputs"],
                   parents=(), status="leased", attempts=0, round=0)
    try:
        stage.parse_answer(task, row["text"])
    except Rejected as problem:
        return "unusable", f"{problem.reason}: {problem.detail}"
    return "usable", "accepted"


@pytest.mark.parametrize("row", ROWS, ids=[f"{r['stage']}-{i}" for i, r in enumerate(ROWS)])
def test_the_checks_agree_with_the_reader(stages, row):
    label, detail = verdict(stages, row)
    assert label == row["label"], f"checks say {label} ({detail}); the reader: {row['why']}"
