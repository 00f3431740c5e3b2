"""The `charforge` command as a user runs it: a real process, real files."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from charforge.character import Character, Passage, Stage
from charforge.demo import demo_file

from conftest import CLI, assert_one_line_error, files_under, run

BEETHOVEN = demo_file("wiki_Beethoven.txt")


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    result = run("init", "ws", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return tmp_path / "ws"


def test_init_writes_a_config_that_names_the_default_model(ws):
    config = yaml.safe_load((ws / "charforge.yaml").read_text())
    assert config["default_model"] == "smollm2"
    assert (ws / "characters").is_dir()


def test_import_list_show_a_wiki_profile(ws):
    result = run("character", "import", BEETHOVEN, cwd=ws)
    assert result.returncode == 0, result.stderr
    assert "imported Ludwig van Beethoven as 'beethoven'" in result.stdout
    saved = yaml.safe_load((ws / "characters/beethoven/character.yaml").read_text())
    assert saved["name"] == "Ludwig van Beethoven"
    assert saved["profile"][0].startswith("Ludwig van Beethoven (baptised")

    listing = run("character", "list", cwd=ws)
    assert "beethoven" in listing.stdout and "Ludwig van Beethoven" in listing.stdout

    shown = run("character", "show", "Beethoven", "--json", cwd=ws)
    assert json.loads(shown.stdout)["profile"] == saved["profile"]


def test_workspace_is_found_from_a_subfolder_and_by_option(ws, tmp_path):
    sub = ws / "characters"
    assert run("character", "import", BEETHOVEN, cwd=sub).returncode == 0
    assert "beethoven" in run("character", "list", "-w", ws, cwd=tmp_path).stdout


def test_persllm_files_import_with_a_name(ws, tmp_path):
    knowledge = tmp_path / "knowledge.txt"
    style = tmp_path / "style.txt"
    knowledge.write_text("【Book 1】Harry lives with the Dursleys.\n\nHogwarts is a school.\n")
    style.write_text("【Chapter 2】\"I'm Harry,\" said Harry.\n")
    result = run("character", "import", knowledge, "--style", style, "--name", "Harry Potter",
                 cwd=ws)
    assert result.returncode == 0, result.stderr
    shown = json.loads(run("character", "show", "Harry Potter", "--json", cwd=ws).stdout)
    assert [p["text"] for p in shown["knowledge"]] == [
        "Harry lives with the Dursleys.", "Hogwarts is a school."]
    assert shown["style"][0]["text"] == "\"I'm Harry,\" said Harry."


def test_card_png_and_json_round_trip_through_the_cli(ws, tmp_path):
    assert run("character", "import", BEETHOVEN, cwd=ws).returncode == 0
    png, card_json = tmp_path / "b.png", tmp_path / "b.json"
    assert run("character", "export", "beethoven", "-o", png, cwd=ws).returncode == 0
    assert run("character", "export", "beethoven", "-o", card_json, cwd=ws).returncode == 0
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert json.loads(card_json.read_text())["spec"] == "chara_card_v2"

    original = json.loads(run("character", "show", "beethoven", "--json", cwd=ws).stdout)
    for card in (png, card_json):
        other = tmp_path / f"other-{card.suffix[1:]}"
        run("init", other, cwd=tmp_path)
        result = run("character", "import", card, cwd=other)
        assert result.returncode == 0, result.stderr
        back = json.loads(run("character", "show", "beethoven", "--json", cwd=other).stdout)
        for field in ("name", "short_name", "profile", "knowledge", "style", "stages"):
            assert back[field] == original[field], field


def test_png_card_keeps_its_picture(ws, tmp_path):
    from charforge.importers import card as cards

    character = Character(
        name="Cleopatra VII", short_name="Cleopatra", profile=["Queen of Egypt."],
        knowledge=[Passage(text="Alexandria", stage="early")],
        stages=[Stage(label="early", token="<TIME-I>")],
    )
    source = tmp_path / "cleo.png"
    cards.write_card_png(character, source, avatar=None)
    assert run("character", "import", source, cwd=ws).returncode == 0
    kept = ws / "characters/cleopatra/avatar.png"
    assert kept.read_bytes() == source.read_bytes()
    again = tmp_path / "again.png"
    assert run("character", "export", "cleopatra", "-o", again, cwd=ws).returncode == 0
    assert cards.read_card_png(again)[0].stages == character.stages


BAD_INPUTS = {
    "no-name.txt": (b"Ludwig was a composer.\n\nHe was deaf.\n", "# Full Name"),
    "empty-profile.txt": (b"# Ludwig van Beethoven\n\n\n", "empty"),
    "latin1.txt": ("# Beethoven\n\nK\u00f6ln und Bonn".encode("latin-1"), "UTF-8"),
    "broken.json": (b'{"spec": "chara_card_v2", "data": {', "invalid card JSON"),
    "not-a-card.json": (b'{"hello": "world"}', "not a Character Card"),
    "plain.png": (None, "no character card"),
    "fake.png": (b"this is not a png", "not a PNG"),
}


@pytest.mark.parametrize("filename", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_nothing_written(ws, tmp_path, filename):
    content, problem = BAD_INPUTS[filename]
    path = tmp_path / filename
    if content is None:
        from PIL import Image

        Image.new("RGB", (8, 8), "red").save(path)
    else:
        path.write_bytes(content)
    before = files_under(ws)
    result = run("character", "import", path, cwd=ws)
    assert_one_line_error(result, filename, problem)
    assert files_under(ws) == before


def test_duplicate_import_is_refused_and_keeps_the_first(ws):
    assert run("character", "import", BEETHOVEN, cwd=ws).returncode == 0
    saved = (ws / "characters/beethoven/character.yaml").read_text()
    assert_one_line_error(run("character", "import", BEETHOVEN, cwd=ws), "already exists",
                          "--replace")
    assert (ws / "characters/beethoven/character.yaml").read_text() == saved
    assert run("character", "import", BEETHOVEN, "--replace", cwd=ws).returncode == 0


def test_unknown_character_lists_the_known_ones(ws):
    run("character", "import", BEETHOVEN, cwd=ws)
    assert_one_line_error(run("character", "show", "Mozart", cwd=ws), "'Mozart'", "Beethoven")


def test_missing_workspace_says_how_to_make_one(tmp_path):
    assert_one_line_error(run("character", "list", cwd=tmp_path), "charforge init")


def test_missing_file_and_unknown_export_format(ws, tmp_path):
    assert_one_line_error(run("character", "import", tmp_path / "nope.txt", cwd=ws), "nope.txt")
    run("character", "import", BEETHOVEN, cwd=ws)
    assert_one_line_error(
        run("character", "export", "beethoven", "-o", tmp_path / "b.yaml", cwd=ws), "b.yaml"
    )


# -- models and ask, against a real OpenAI-compatible server on 127.0.0.1 ------------
SECRET = "sk-test-cli-4b1d9e7f0c"


def add_remote_model(ws: Path, base_url: str, *, default: bool = True) -> None:
    config = yaml.safe_load((ws / "charforge.yaml").read_text())
    config["models"]["teacher"] = {
        "backend": "openai", "model": "scripted", "base_url": base_url,
        "api_key_env": "CF_TEST_KEY", "max_retries": 1, "backoff_base_s": 0.01,
    }
    if default:
        config["default_model"] = "teacher"
    (ws / "charforge.yaml").write_text(yaml.safe_dump(config))


def test_ask_in_character_through_an_endpoint(ws):
    from charforge.testing import Reply, ScriptedOpenAIServer

    run("character", "import", BEETHOVEN, cwd=ws)
    with ScriptedOpenAIServer([Reply(text="Bonn, on the Rhine.")]) as server:
        add_remote_model(ws, server.base_url)
        result = run("ask", "-c", "beethoven", "Where do you come from?", "--seed", "3",
                     cwd=ws, env={"CF_TEST_KEY": SECRET})
        sent = server.chat_requests[0]
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Bonn, on the Rhine."
    system, user = sent.json["messages"]
    assert system["role"] == "system" and "Ludwig van Beethoven" in system["content"]
    assert user == {"role": "user", "content": "Where do you come from?"}
    assert sent.json["seed"] == 3
    assert sent.headers["authorization"] == f"Bearer {SECRET}"
    assert all(SECRET not in p.read_text(errors="ignore") for p in ws.rglob("*") if p.is_file())


def test_ask_warns_when_the_answer_is_cut(ws):
    from charforge.testing import Reply, ScriptedOpenAIServer

    with ScriptedOpenAIServer([Reply.truncated("Well, I")]) as server:
        add_remote_model(ws, server.base_url)
        result = run("ask", "hello", "--max-tokens", "3", cwd=ws, env={"CF_TEST_KEY": SECRET})
    assert result.returncode == 0
    assert result.stdout.strip() == "Well, I"
    assert "cut at --max-tokens 3" in result.stderr


def test_ask_with_a_missing_key_names_the_variable(ws):
    add_remote_model(ws, "http://127.0.0.1:9/v1")
    env = {k: v for k, v in os.environ.items() if k != "CF_TEST_KEY"}
    result = subprocess.run([*CLI, "ask", "hi"], cwd=ws, env=env, capture_output=True,
                            text=True, timeout=60)
    assert_one_line_error(result, "CF_TEST_KEY is not set")


def test_ask_failing_endpoint_is_one_line_exit_1_without_the_key(ws):
    from charforge.testing import Reply, ScriptedOpenAIServer

    with ScriptedOpenAIServer([Reply.server_error(), Reply.server_error()]) as server:
        add_remote_model(ws, server.base_url)
        result = run("ask", "hi", cwd=ws, env={"CF_TEST_KEY": SECRET})
        assert len(server.chat_requests) == 2  # max_retries 1: two attempts, no more
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "gave up after 2 attempt(s)" in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_models_lists_and_checks_each_model(ws, tiny_model_dir):
    from charforge.testing import ScriptedOpenAIServer

    config = yaml.safe_load((ws / "charforge.yaml").read_text())
    config["models"]["tiny"] = {"backend": "local", "path": str(tiny_model_dir)}
    config["models"]["gone"] = {"backend": "openai", "model": "m", "api_key_env": None,
                                "base_url": "http://127.0.0.1:9/v1", "timeout_s": 2}
    (ws / "charforge.yaml").write_text(yaml.safe_dump(config))
    with ScriptedOpenAIServer() as server:
        add_remote_model(ws, server.base_url, default=False)
        result = run("models", cwd=ws, env={"CF_TEST_KEY": SECRET})
    assert result.returncode == 1  # 'gone' is unreachable
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines()
            if line.startswith("│") and line.split("│")[1].strip()}
    assert "ok" in rows["teacher"] and "reachable: 1 model" in rows["teacher"]
    assert "ok" in rows["tiny"] and "loaded" in rows["tiny"]
    assert "failed" in rows["gone"]
    assert "smollm2 (default)" in rows


# -- generate, status, dataset ----------------------------------------------------------
def test_generate_bad_inputs_fail_before_any_task_is_queued(ws):
    run("character", "import", BEETHOVEN, cwd=ws)
    add_remote_model(ws, "http://127.0.0.1:9/v1")
    env = {k: v for k, v in os.environ.items() if k != "CF_TEST_KEY"}
    missing = subprocess.run([*CLI, "generate", "scenes", "beethoven"], cwd=ws, env=env,
                             capture_output=True, text=True, timeout=60)
    assert_one_line_error(missing, "CF_TEST_KEY is not set")
    unreachable = run("generate", "scenes", "beethoven", cwd=ws, env={"CF_TEST_KEY": SECRET})
    assert unreachable.returncode == 1
    assert "cannot reach http://127.0.0.1:9/v1" in unreachable.stderr
    assert unreachable.stderr.strip().count("\n") == 0
    assert_one_line_error(run("generate", "scenes", "Mozart", cwd=ws),
                          "unknown character 'Mozart'", "Beethoven")
    status = run("status", cwd=ws)
    assert "nothing generated yet" in status.stdout


def test_generate_dry_run_then_run_then_status_and_dataset(ws):
    from charforge.testing import ScriptedOpenAIServer

    from scripted_teacher import answer

    run("character", "import", BEETHOVEN, cwd=ws)
    env = {"CF_TEST_KEY": SECRET}
    with ScriptedOpenAIServer(responder=answer) as server:
        add_remote_model(ws, server.base_url)
        dry = run("generate", "scenes", "beethoven", "--prompts", "3", "--dry-run", cwd=ws,
                  env=env)
        assert dry.returncode == 0, dry.stderr
        assert "3 task(s) to run for scenes" in dry.stdout
        assert "Imagine 5 different scenes" in dry.stdout
        assert server.chat_requests == []
        scenes = run("generate", "scenes", "beethoven", "--prompts", "3",
                     "--scenes-per-prompt", "2", cwd=ws, env=env)
        assert scenes.returncode == 0, scenes.stderr
        assert "scenes: 3 done, 0 rejected, 0 failed" in scenes.stdout
        assert run("generate", "experiences", "beethoven", cwd=ws, env=env).returncode == 0
    status = run("status", "--json", cwd=ws)
    rows = {row["stage"]: row for row in json.loads(status.stdout)}
    assert set(rows) == {"scenes", "experiences"}
    scenes_row = rows["scenes"]
    counts = [scenes_row[k] for k in ("pending", "running", "done", "rejected", "failed",
                                      "stale", "records")]
    assert counts == [0, 0, 3, 0, 0, 0, 6]
    # the scripted server's word counts
    assert scenes_row["prompt_tokens"] > 100 and scenes_row["completion_tokens"] > 50
    for columns in ("80", None):  # an 80-column terminal, and a pipe (no COLUMNS at all)
        table = run("status", cwd=ws, env={"COLUMNS": columns} if columns else {"COLUMNS": ""})
        lines = table.stdout.splitlines()
        assert lines[0].split() == ["character", "stage", "done", "pend", "rej", "fail",
                                    "stale", "records", "tokens", "in/out"]
        assert max(map(len, lines)) <= 80, table.stdout
        assert lines[1].split()[:8] == ["beethoven", "experiences", "6", "0", "0", "0", "0", "6"]
    built = run("dataset", "build", "beethoven", cwd=ws)
    assert built.returncode == 0, built.stderr
    assert (ws / "datasets/beethoven/sft.jsonl").read_text().count("\n") == 6


def test_stage_options_belong_to_their_stage(ws):
    run("character", "import", BEETHOVEN, cwd=ws)
    assert_one_line_error(run("generate", "protective", "beethoven", "--prompts", "3", cwd=ws),
                          "--prompts applies to the scenes stage only")
    assert run("generate", "poems", "beethoven", cwd=ws).returncode == 2
