"""`charforge converse`: two characters talk, every line a recorded task; a killed
conversation resumes to the same transcript as an uninterrupted one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from charforge.converse import converse, scene_hash
from charforge.serve.catalogue import ServedModel
from charforge.store import DB_NAME
from charforge.workspace import Workspace

from serve_fixtures import served_workspace

SCENE = "They meet at a concert in Vienna and argue about music."
GREEDY = {"temperature": 0.0, "max_tokens": 6}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def template_ws(tmp_path_factory, tiny_model_dir) -> Path:
    """The served workspace (two trained characters, one prompted), built once."""
    return served_workspace(tmp_path_factory.mktemp("converse") / "ws", tiny_model_dir).root


def _copy(template: Path, dest: Path) -> Workspace:
    shutil.copytree(template, dest)
    return Workspace(dest)


def _cli_app() -> typer.Typer:
    from charforge.cli_converse import converse_command

    app = typer.Typer()
    app.command()(converse_command)
    return app


def _lines_recorded(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM records WHERE kind='converse_line'"
                                ).fetchone()[0]
    except sqlite3.Error:
        return 0


def test_turns_alternate_see_the_other_named_and_rerun_asks_nothing(template_ws, tmp_path,
                                                                   monkeypatch):
    ws = _copy(template_ws, tmp_path / "ws")
    asked: list[tuple[str, list]] = []
    original = ServedModel.stream

    def recording(self, messages, scene, sampling):
        asked.append((self.character.slug, self.messages(messages, scene)))
        return original(self, messages, scene, sampling)

    monkeypatch.setattr(ServedModel, "stream", recording)
    result = converse(ws, "beethoven", "diogenes", scene=SCENE, location="Vienna", turns=4,
                      sampling=GREEDY)

    assert [t.speaker for t in result.turns] == ["beethoven", "diogenes"] * 2
    assert [t.turn for t in result.turns] == [0, 1, 2, 3]
    assert result.asked == 4 and result.planned == 4
    assert result.turns[0].model.startswith("beethoven/")  # its trained run
    assert result.turns[1].model.startswith("diogenes@")  # prompted on the base
    # What each speaker was asked: its own lines as assistant, the other's named.
    assert [slug for slug, _ in asked] == ["beethoven", "diogenes"] * 2
    for turn, (slug, messages) in enumerate(asked):
        assert messages[0].role == "system"
        seen = messages[1:]
        assert len(seen) == turn  # A opens with no user turn
        for earlier, message in zip(result.turns[:turn], seen, strict=True):
            assert message.content == earlier.content
            if earlier.speaker == slug:
                assert (message.role, message.name) == ("assistant", None)
            else:
                assert message.role == "user"
                assert message.name == ("Diogenes" if slug == "beethoven" else "Beethoven")
    assert "Vienna" in asked[1][1][0].content  # the prompted one's system prompt: the scene

    # The same command again: nothing planned, nothing asked, the same transcript.
    asked.clear()
    again = converse(ws, "beethoven", "diogenes", scene=SCENE, location="Vienna", turns=4,
                     sampling=GREEDY)
    assert (again.asked, again.planned, asked) == (0, 0, [])
    assert again.turns == result.turns
    # More turns go on from where it stopped; another scene is another conversation.
    longer = converse(ws, "beethoven", "diogenes", scene=SCENE, location="Vienna", turns=5,
                      sampling=GREEDY)
    assert longer.turns[:4] == result.turns and (longer.asked, longer.planned) == (1, 1)
    other = converse(ws, "beethoven", "diogenes", scene="A quiet walk.", turns=1,
                     sampling=GREEDY)
    assert other.asked == 1 and other.jsonl != result.jsonl


def test_transcript_files_agree_with_the_store(template_ws, tmp_path):
    ws = _copy(template_ws, tmp_path / "ws")
    result = converse(ws, "socrates", "beethoven", scene=SCENE, turns=3, sampling=GREEDY)
    stem = f"socrates-beethoven-{scene_hash(SCENE)}"
    assert result.jsonl == ws.root / "conversations" / f"{stem}.jsonl"
    assert result.markdown == ws.root / "conversations" / f"{stem}.md"
    rows = [json.loads(line) for line in result.jsonl.read_text().splitlines()]
    assert [r["turn"] for r in rows] == [0, 1, 2]
    assert [r["speaker"] for r in rows] == ["socrates", "beethoven", "socrates"]
    assert set(rows[0]) >= {"turn", "speaker", "content", "reasoning", "model", "tokens"}
    assert all(r["tokens"]["completion"] >= 1 for r in rows)
    markdown = result.markdown.read_text()
    assert SCENE in markdown
    headings = [line for line in markdown.splitlines() if line.startswith("## ")]
    assert headings == ["## 1. Socrates", "## 2. Beethoven", "## 3. Socrates"]
    for row in rows:
        assert row["content"] in markdown
    # Written from the store: deleting the files and rerunning writes the same bytes.
    before = result.jsonl.read_bytes(), markdown
    result.jsonl.unlink()
    result.markdown.unlink()
    again = converse(ws, "socrates", "beethoven", scene=SCENE, turns=3, sampling=GREEDY)
    assert (again.jsonl.read_bytes(), again.markdown.read_text()) == before


def test_killed_conversation_resumes_to_the_uninterrupted_transcript(template_ws, tmp_path):
    whole = _copy(template_ws, tmp_path / "whole")
    killed = _copy(template_ws, tmp_path / "killed")
    args = ["beethoven", "socrates", "--scene", SCENE, "--turns", "5", "--temperature", "0",
            "--max-tokens", "6"]
    script = ("import typer; from charforge.cli_converse import converse_command; "
              "app = typer.Typer(); app.command()(converse_command); app()")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    process = subprocess.Popen([sys.executable, "-c", script, *args, "-w", str(killed.root)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = killed.root / DB_NAME
    deadline = time.monotonic() + 120
    try:
        while _lines_recorded(db) < 2:
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the conversation did not get going"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    recorded = _lines_recorded(db)
    assert 2 <= recorded < 5, "killed too late to test resuming"

    result = CliRunner().invoke(_cli_app(), [*args, "-w", str(killed.root)])
    assert result.exit_code == 0, result.output
    assert "(recorded)" in result.output  # the lines from before the kill, not asked again
    resumed = (killed.root / "conversations"
               / f"beethoven-socrates-{scene_hash(SCENE)}.jsonl").read_bytes()
    uninterrupted = converse(whole, "beethoven", "socrates", scene=SCENE, turns=5,
                             sampling=GREEDY)
    assert uninterrupted.jsonl.read_bytes() == resumed
    with killed.store() as store:  # no finished turn asked twice
        assert store.count("beethoven", "converse", "done") == 5


@pytest.mark.parametrize(("args", "expected"), [
    (["beethoven", "nobody", "--scene", "x"], "nobody"),
    (["beethoven", "Beethoven", "--scene", "x"], "two characters"),
    (["beethoven", "socrates", "--scene", "x", "--turns", "0"], "--turns"),
    (["beethoven", "socrates", "--scene", "x", "--temperature", "9"], "temperature"),
])
def test_bad_input_is_one_line(template_ws, args, expected):
    result = CliRunner().invoke(_cli_app(), [*args, "-w", str(template_ws)])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], \
        result.output


def test_thinking_is_recorded_and_never_shown_to_the_other(template_ws, tmp_path, monkeypatch):
    from charforge.serve.thoughts import Part

    ws = _copy(template_ws, tmp_path / "ws")
    asked: list[list] = []
    original = ServedModel.stream

    async def thinking(self, messages, scene, sampling):
        asked.append(list(messages))
        yield Part("reasoning", f"{self.character.short_name} ponders.")
        async for piece in original(self, messages, scene, sampling):
            yield piece

    monkeypatch.setattr(ServedModel, "stream", thinking)
    result = converse(ws, "beethoven", "socrates", scene=SCENE, turns=2, sampling=GREEDY)
    assert [t.reasoning for t in result.turns] == ["Beethoven ponders.", "Socrates ponders."]
    assert all("ponders" not in t.content for t in result.turns)
    assert [m.content for m in asked[1]] == [result.turns[0].content]  # the words only
    assert "<details><summary>thinking</summary>" in result.markdown.read_text()
