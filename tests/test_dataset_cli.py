"""`charforge dataset build` as a user sees it: readable at 80 columns and in a pipe,
`--json` for scripts, and none of the `datasets` library's own progress bars."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from charforge.generate import generate
from charforge.testing import Reply, ScriptedOpenAIServer

from conftest import assert_one_line_error, run, teacher_workspace
from scripted_teacher import answer

QUIET = {"show_progress": False}
LIBRARY_BARS = ("Saving the dataset", "examples/s", "%|", "shards")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with scenes, experiences and protective scenes; the teacher's first
    answer is empty, so one scene prompt is rejected."""
    root = tmp_path_factory.mktemp("dataset") / "ws"
    with ScriptedOpenAIServer([Reply(text="")], responder=answer) as server:
        ws = teacher_workspace(root, server.base_url)
        options = {"prompts": 3, "scenes_per_prompt": 2}
        generate(ws, "beethoven", "scenes", options=options, **QUIET)
        generate(ws, "beethoven", "experiences", **QUIET)
        generate(ws, "beethoven", "protective", options={"count": 2}, **QUIET)
    return root


def build(ws: Path, *args: str, columns: str):
    return run("dataset", "build", "beethoven", *args, cwd=ws, env={"COLUMNS": columns})


@pytest.mark.parametrize("columns", ["80", ""], ids=["80-columns", "pipe"])
def test_the_statistics_fit_80_columns_without_library_bars(generated, columns):
    result = build(generated, "--test-fraction", "0.5", columns=columns)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= 80, result.stdout
    assert all(line == line.rstrip() for line in lines)  # no padding to the terminal width
    for bar in LIBRARY_BARS:
        assert bar not in result.stdout + result.stderr
    stats = json.loads((generated / "datasets/beethoven/stats.json").read_text())
    fields = {line[:17].strip(): line[17:] for line in lines[1:] if line[:1] != " "}
    assert lines[0] == "Ludwig van Beethoven (beethoven)"
    assert fields["scenes imagined"] == "4"  # 3 prompts of 2 scenes, one answered empty
    assert fields["dialogues"] == "4 experiences, 2 protective"
    assert fields["SFT records"] == f"6 (train {stats['train']}, test {stats['test']})"
    assert 0 < stats["test"] < 6
    assert fields["rejected"] == "1 (scenes: empty 1)"
    assert fields["failed"] == "0"
    assert lines[-1] == "wrote datasets/beethoven"


def test_json_is_all_that_reaches_stdout(generated):
    result = build(generated, "--json", "--preset", "character-llm", columns="80")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)  # nothing else is on stdout
    folder = Path(data["folder"])
    assert folder == generated / "datasets" / "beethoven"
    assert data["stats"] == json.loads((folder / "stats.json").read_text())
    assert data["stats"]["rejected"]["scenes"] == {"empty": 1}
    assert data["stats"]["sft_records"] == (folder / "sft.jsonl").read_text().count("\n") == 6
    for bar in LIBRARY_BARS:
        assert bar not in result.stderr


def test_a_bad_character_is_one_line_and_no_json(generated):
    missing = run("dataset", "build", "Mozart", "--json", cwd=generated)
    assert_one_line_error(missing, "unknown character 'Mozart'")
    assert missing.stdout == ""
