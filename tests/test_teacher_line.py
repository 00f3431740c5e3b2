"""Every generate run starts by naming its teacher (on stderr, so piped stdout stays
clean); a workspace with no teacher configured is told how to add one."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from rich.console import Console

from charforge.demo import demo_file
from charforge.generate import DryRun, generate
from charforge.llm.local import LocalChatModel, LocalConfig
from charforge.llm.registry import NO_TEACHER_HINT
from charforge.testing import ScriptedOpenAIServer
from charforge.workspace import Workspace

from conftest import run, teacher_workspace
from scripted_teacher import answer

DEVICE = r"(CPU|cuda)"


def stderr_lines(result) -> list[str]:
    return result.stderr.strip().splitlines()


def test_a_run_names_its_endpoint_teacher_on_stderr_first(tmp_path):
    with ScriptedOpenAIServer(responder=answer) as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url)
        result = run("generate", "scenes", "beethoven", "--prompts", "1", cwd=ws.root)
        base_url = server.base_url
    assert result.returncode == 0, result.stderr
    lines = stderr_lines(result)
    assert lines[0] == f"teacher: teacher (openai, scripted at {base_url})"
    assert NO_TEACHER_HINT not in result.stderr  # a teacher is configured
    assert "teacher:" not in result.stdout


def test_an_unconfigured_workspace_is_told_and_the_embedded_model_is_not_loaded(tmp_path):
    cache = tmp_path / "cache"  # where loading the embedded model would write its copy
    assert run("init", "ws", cwd=tmp_path).returncode == 0
    ws = tmp_path / "ws"
    assert run("character", "import", demo_file("wiki_Beethoven.txt"), cwd=ws).returncode == 0
    result = run("generate", "scenes", "beethoven", "--dry-run", cwd=ws,
                 env={"CHARFORGE_CACHE": str(cache)})
    assert result.returncode == 0, result.stderr
    first, second = stderr_lines(result)[:2]
    assert re.fullmatch(rf"teacher: smollm2 \(embedded SmolLM2-135M on {DEVICE}: a weak "
                        r"teacher, for trying things out\)", first), first
    assert second == NO_TEACHER_HINT
    assert "add an OpenAI-compatible endpoint under `models:`" in second
    assert "task(s) to run for scenes" in result.stdout
    assert "teacher:" not in result.stdout
    assert not cache.exists() or not any(cache.rglob("config.json"))  # never loaded

    # Naming the embedded model on purpose: the line, without the hint.
    chosen = run("generate", "scenes", "beethoven", "--dry-run", "-m", "smollm2", cwd=ws,
                 env={"CHARFORGE_CACHE": str(cache)})
    assert chosen.returncode == 0, chosen.stderr
    assert stderr_lines(chosen)[0].startswith("teacher: smollm2 (embedded SmolLM2-135M")
    assert NO_TEACHER_HINT not in chosen.stderr


def test_a_local_folder_teacher_names_its_path(tmp_path, tiny_model_dir):
    assert run("init", "ws", cwd=tmp_path).returncode == 0
    ws = tmp_path / "ws"
    assert run("character", "import", demo_file("wiki_Beethoven.txt"), cwd=ws).returncode == 0
    config = yaml.safe_load((ws / "charforge.yaml").read_text())
    config["models"]["mine"] = {"backend": "local", "path": str(tiny_model_dir),
                                "device": "cpu"}
    config["default_model"] = "mine"
    (ws / "charforge.yaml").write_text(yaml.safe_dump(config))
    result = run("generate", "scenes", "beethoven", "--dry-run", cwd=ws)
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == [f"teacher: mine (local, {tiny_model_dir} on CPU)"]


def test_a_model_object_passed_to_generate_is_named_on_the_given_console(tmp_path: Path,
                                                                          tiny_model_dir):
    ws = Workspace.init(tmp_path / "ws")
    ws.import_character(demo_file("wiki_Beethoven.txt"))
    adapter = tmp_path / "adapter"
    adapter.mkdir()  # a dry run never loads it: only its files' identity is read
    model = LocalChatModel(LocalConfig(path=str(tiny_model_dir), adapter=str(adapter)),
                           name="student")
    console = Console(record=True, width=300, force_terminal=False)
    plan = generate(Workspace(ws.root), "beethoven", "scenes", model=model, dry_run=True,
                    console=console)
    assert isinstance(plan, DryRun)
    lines = console.export_text().strip().splitlines()
    # The workspace's default is the embedded model, but this run has its own teacher.
    assert len(lines) == 1
    assert re.fullmatch(rf"teacher: student \(local, {re.escape(str(tiny_model_dir))} \+ "
                        rf"adapter {re.escape(str(adapter))} on {DEVICE}\)", lines[0]), lines


def test_an_unreachable_teacher_fails_in_one_line_before_it_is_named(tmp_path):
    ws = teacher_workspace(tmp_path / "ws", "http://127.0.0.1:9/v1")
    result = run("generate", "scenes", "beethoven", cwd=ws.root)
    assert result.returncode == 1
    assert stderr_lines(result) == [stderr_lines(result)[0]]
    assert "cannot reach http://127.0.0.1:9/v1" in result.stderr
