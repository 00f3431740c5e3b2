"""The CLI as a hostile user drives it: broken stores, absurd files, odd names, crashes
mid-write, a careless model entry. Each case was first reproduced as a traceback, a
hang or a silent mistake; each must now be one `error:` line and a non-zero exit, with
nothing already produced lost."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from charforge.demo import demo_file
from charforge.importers.card import card_png_bytes
from charforge.testing import Reply, ScriptedOpenAIServer

from conftest import assert_one_line_error, files_under, read_only, run
from scripted_teacher import answer

BEETHOVEN = demo_file("wiki_Beethoven.txt")


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    assert run("init", "ws", cwd=tmp_path).returncode == 0
    assert run("character", "import", BEETHOVEN, cwd=tmp_path / "ws").returncode == 0
    return tmp_path / "ws"


# -- the store ---------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["random bytes", "truncated", "a folder"])
def test_a_damaged_store_is_one_line(ws, damage):
    db = ws / "charforge.db"
    if damage == "a folder":
        db.mkdir()
    elif damage == "random bytes":
        db.write_bytes(os.urandom(8192))
    else:
        assert run("status", cwd=ws).returncode == 0  # creates the store
        for n in range(40):
            run_sql(db, f"INSERT INTO runs VALUES ('r{n}', 1, 'h', '{'x' * 900}', 0, 0, NULL)")
        for extra in ("-wal", "-shm"):
            Path(f"{db}{extra}").unlink(missing_ok=True)
        db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    for command in (["status"], ["generate", "scenes", "beethoven", "--dry-run"]):
        assert_one_line_error(run(*command, cwd=ws), "charforge.db", "move it aside")


def run_sql(db: Path, sql: str) -> None:
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute(sql)


def test_a_read_only_store_reads_and_refuses_to_write_in_one_line(ws):
    with ScriptedOpenAIServer() as server:
        add_model(ws, base_url=server.base_url)
        assert run("status", cwd=ws).returncode == 0
        for extra in ("-wal", "-shm"):
            Path(f"{ws / 'charforge.db'}{extra}").unlink(missing_ok=True)
        with read_only(ws / "charforge.db"):
            assert run("status", cwd=ws).returncode == 0
            assert_one_line_error(run("generate", "scenes", "beethoven", "--prompts", "1",
                                      cwd=ws), "charforge.db is read-only")


# -- absurd character files ------------------------------------------------------------
@pytest.mark.parametrize("depth", [300, 1000, 20000])
def test_a_card_nested_absurdly_deep_is_one_line(ws, depth):
    card = {"spec": "chara_card_v2", "data": {"name": "Deep", "extensions": {}}}
    nested = "[" * depth + "]" * depth
    text = json.dumps(card).replace('"extensions": {}', f'"extensions": {{"x": {nested}}}')
    (ws / "deep.json").write_text(text)
    before = files_under(ws)
    assert_one_line_error(run("character", "import", ws / "deep.json", cwd=ws),
                          "deep.json", "nested more than 64 levels deep")
    assert files_under(ws) == before


def test_a_name_of_100000_characters_is_one_short_line(ws):
    card = {"spec": "chara_card_v2", "data": {"name": "N" * 100_000, "description": "Hi."}}
    (ws / "long.json").write_text(json.dumps(card))
    result = run("character", "import", ws / "long.json", cwd=ws)
    assert_one_line_error(result, "long.json", "is 100,000 characters long")
    assert len(result.stderr) < 1000


def test_oversized_files_are_refused_before_they_are_read(ws):
    big = ws / "wiki_Big.txt"
    with big.open("w") as file:
        file.write("# Big Person\n\n")
        paragraph = ("Big Person did many things. " * 40 + "\n\n")
        for _ in range(50 * 1024 * 1024 // len(paragraph)):
            file.write(paragraph)
    png = ws / "big.png"
    png.write_bytes(card_png_bytes_large())
    for path in (big, png):
        started = time.monotonic()
        result = run("character", "import", path, cwd=ws)
        assert_one_line_error(result, path.name, "over the import limit of 10.0 MB",
                              "limits.max_import_mb")
        assert time.monotonic() - started < 10
    config = yaml.safe_load((ws / "charforge.yaml").read_text())
    config["limits"] = {"max_import_mb": 0.001}  # the limit is the workspace's to set
    (ws / "charforge.yaml").write_text(yaml.safe_dump(config))
    assert_one_line_error(run("character", "import", BEETHOVEN, "--replace", cwd=ws),
                          "over the import limit of 1.0 KB")


def card_png_bytes_large() -> bytes:
    """A real card PNG, padded past 50 MB with an ancillary chunk."""
    import struct
    import zlib

    from charforge.character import Character

    png = card_png_bytes(Character(name="Big Card", short_name="Big", profile=["Hi."]), None)
    body = b"x" * (53 * 1024 * 1024)
    chunk = struct.pack(">I", len(body)) + b"zTXt" + body + struct.pack(
        ">I", zlib.crc32(b"zTXt" + body))
    return png[:-12] + chunk + png[-12:]


def test_lookups_do_not_parse_every_character(ws):
    other = ws / "characters" / "mozart"
    other.mkdir()
    (other / "character.yaml").write_text("name: [this is : not yaml")
    (other / "summary.json").write_text(json.dumps({
        "slug": "mozart", "name": "Wolfgang Amadeus Mozart", "short_name": "Mozart",
        "profile": 3, "knowledge": 0, "style": 0, "stages": [], "source_format": "wiki"}))
    shown = run("character", "show", "Ludwig van Beethoven", cwd=ws)
    assert shown.returncode == 0, shown.stderr
    listed = run("character", "list", cwd=ws)
    assert listed.returncode == 0 and "Mozart" in listed.stdout and "beethoven" in listed.stdout
    # Only the character asked for is read, and a broken one says so in one line.
    assert_one_line_error(run("character", "show", "mozart", cwd=ws),
                          "characters/mozart/character.yaml", "unreadable character file")


# -- crashes mid-write ------------------------------------------------------------------------
KILL_AFTER_RENAME = """
import os, signal, sys
from pathlib import Path
from charforge.character import Character
from charforge.workspace import Workspace

ws = Workspace(sys.argv[1])
stop_after = int(sys.argv[2])
renames = 0
real_rename = Path.rename

def rename(self, target):
    global renames
    result = real_rename(self, target)
    renames += 1
    if renames == stop_after:
        os.kill(os.getpid(), signal.SIGKILL)
    return result

Path.rename = rename
character = ws.load_character("beethoven").model_copy(update={"profile": ["Rewritten."]})
if stop_after == 0:
    real_write = Path.write_text
    def write_then_die(self, *args, **kwargs):
        real_write(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
    Path.write_text = write_then_die
ws.save_character(character, replace=True)
"""


@pytest.mark.parametrize(("kill_after", "profile"), [
    (0, "old"),  # while writing the staging folder
    (1, "new"),  # staging complete, renamed .beethoven.new
    (2, "new"),  # the old folder moved aside: no 'beethoven' at all until recovery
    (3, "new"),  # swapped, the old copy not yet removed
])
def test_a_kill_at_any_step_of_a_folder_swap_is_recovered(ws, kill_after, profile):
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_RENAME, str(ws), str(kill_after)],
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    leftovers = [p.name for p in (ws / "characters").iterdir() if p.name.startswith(".")
                 and p.is_dir()]
    assert leftovers, "the kill left nothing to recover"
    shown = run("character", "show", "beethoven", "--json", cwd=ws)
    assert shown.returncode == 0, shown.stderr
    rewritten = json.loads(shown.stdout)["profile"] == ["Rewritten."]
    assert rewritten == (profile == "new")
    assert [p.name for p in (ws / "characters").iterdir() if p.is_dir()] == ["beethoven"]


# -- names -------------------------------------------------------------------------------------
def card_file(folder: Path, name: str, file_name: str) -> Path:
    path = folder / file_name
    path.write_text(json.dumps({"spec": "chara_card_v2",
                                "data": {"name": name, "description": "A person."}}))
    return path


def test_names_are_cleaned_and_look_alikes_are_one_name(ws):
    assert run("character", "import", card_file(ws, "Nul Person", "a.json"), cwd=ws
               ).returncode == 0
    assert_one_line_error(run("character", "import", card_file(ws, "Nul\x00Person", "b.json"),
                              cwd=ws), "already exists")
    evil = run("character", "import", card_file(ws, "Evil\u202eNamE\u200b", "c.json"), cwd=ws)
    assert evil.returncode == 0 and "\u202e" not in evil.stdout
    listed = run("character", "list", cwd=ws).stdout
    assert "EvilNamE" in listed and "\u202e" not in listed and "\x00" not in listed
    for n, name in enumerate(["???", "!!!", "孔子", "Émile Zola"]):
        assert run("character", "import", card_file(ws, name, f"n{n}.json"), cwd=ws
                   ).returncode == 0, name
    folders = sorted(p.name for p in (ws / "characters").iterdir() if p.is_dir())
    assert "孔子" in folders and "zola" in folders
    assert len([f for f in folders if f.startswith("character-")]) == 2  # never one 'character'
    profile = ws / "wiki_Ansi.txt"
    profile.write_text("# Ansi Person\n\nHe wrote \x1b[2J\x1b[31mred\x1b[0m text.\n")
    assert run("character", "import", profile, cwd=ws).returncode == 0
    shown = run("character", "show", "ansi", cwd=ws).stdout
    assert "\x1b" not in shown and "[31mred" in shown


# -- models ------------------------------------------------------------------------------------
def add_model(ws: Path, **options) -> None:
    config = yaml.safe_load((ws / "charforge.yaml").read_text())
    config["models"]["teacher"] = {"backend": "openai", "model": "scripted",
                                   "api_key_env": None, "max_retries": 0, **options}
    config["default_model"] = "teacher"
    (ws / "charforge.yaml").write_text(yaml.safe_dump(config))


@pytest.mark.parametrize(("options", "problem"), [
    ({}, "base_url is required (or provider: openai"),
    ({"base_url": "127.0.0.1:8000/v1"}, "is not an http(s) URL"),
    ({"base_url": "http://[::1/v1"}, "is not a URL"),
])
def test_a_model_entry_never_sends_a_key_where_nobody_said(ws, options, problem):
    add_model(ws, **options)
    result = run("generate", "scenes", "beethoven", "--prompts", "1", cwd=ws)
    assert_one_line_error(result, "model 'teacher'", problem)


def test_truncated_answers_are_summarised_not_printed_one_by_one(ws):
    with ScriptedOpenAIServer([Reply.truncated("Scene 1:\nType: Chat")] * 30) as server:
        add_model(ws, base_url=server.base_url, supports_json_schema=False)
        result = run("generate", "scenes", "beethoven", "--prompts", "30", cwd=ws)
    assert result.returncode == 0, result.stderr
    assert "scenes: 0 done, 30 rejected (truncated 30), 0 failed" in result.stdout
    assert result.stderr.count("truncat") == 0


def test_an_api_key_never_lands_on_disk(ws):
    secret = "sk-hostile-" + base64.b16encode(os.urandom(6)).decode()
    with ScriptedOpenAIServer(required_key=secret, responder=answer) as server:
        add_model(ws, base_url=server.base_url, api_key_env="CF_HOSTILE_KEY",
                  supports_json_schema=False)
        result = run("generate", "scenes", "beethoven", "--prompts", "2", cwd=ws,
                     env={"CF_HOSTILE_KEY": secret})
    assert result.returncode == 0, result.stderr
    assert "scenes: 2 done" in result.stdout  # the key was sent, and accepted
    assert all(secret.encode() not in p.read_bytes() for p in ws.rglob("*") if p.is_file())
