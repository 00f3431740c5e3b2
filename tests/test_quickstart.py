"""The README's Quickstart, run as written: every shell line of its code block, then
its Python snippet, in a copy of the repository's layout, against a real local teacher.

The lines are read from README.md at test time, so an edit there that breaks a
command fails here. The one thing the test adds is the teacher: the Quickstart tells
the reader to name a real one in charforge.yaml, and a fresh workspace's default is the
embedded SmolLM2, which is too slow for a test and too weak to yield usable dialogues.
So right after `charforge init` the test writes the scripted OpenAI-compatible server
(`charforge.testing`, answering like a teacher from tests/scripted_teacher.py) into
my-project/charforge.yaml as the default model, keyless (`api_key_env: null`), exactly
as a reader would add their endpoint."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from charforge.importers.card import read_card_png
from charforge.testing import ScriptedOpenAIServer

from conftest import REPO
from scripted_teacher import answer

ACTIVATE = ["source", ".venv/bin/activate"]
# ~2 minutes: the fixture runs the Quickstart's 30 commands, each a process, LoRA steps and
# an answer on the embedded SmolLM2 among them.
pytestmark = pytest.mark.slow


def quickstart_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("\n## Quickstart\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def code_block(section: str, language: str) -> str:
    found = re.search(rf"^```{language}\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert found, f"no ```{language} block in the Quickstart"
    return found.group(1)


def shell_commands(block: str) -> list[list[str]]:
    """Each command's words, comments dropped, `a && b` split in two."""
    commands = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            commands.append(words[:cut])
            words = words[cut + 1:]
    return commands


def use_scripted_teacher(workspace: Path, base_url: str) -> None:
    config = yaml.safe_load((workspace / "charforge.yaml").read_text())
    config["default_model"] = "teacher"
    config["models"] = {"teacher": {
        "backend": "openai", "model": "scripted", "base_url": base_url, "api_key_env": None,
        "max_retries": 2, "backoff_base_s": 0.01, "timeout_s": 10,
    }}
    (workspace / "charforge.yaml").write_text(yaml.safe_dump(config))


def fresh_clone_layout(root: Path) -> Path:
    """What the Quickstart's relative paths reach from my-project: examples/ and the
    shipped profiles, at the same places as in the repository."""
    shutil.copytree(REPO / "examples", root / "examples")
    shutil.copytree(REPO / "src" / "charforge" / "data", root / "src" / "charforge" / "data")
    return root


def activated_env() -> dict[str, str]:
    """What `source .venv/bin/activate` does that matters here: the environment's
    scripts first on PATH."""
    env = {k: v for k, v in os.environ.items() if k != "CHARFORGE_WORKSPACE"}
    scripts = Path(sys.executable).parent
    env["PATH"] = f"{scripts}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(scripts.parent)
    env["COLUMNS"] = "80"
    return env


class Ran:
    def __init__(self) -> None:
        self.runs: list[tuple[list[str], subprocess.CompletedProcess[str], int]] = []

    def add(self, words: list[str], result: subprocess.CompletedProcess[str], asked: int):
        self.runs.append((words, result, asked))

    def one(self, *needles: str, exact: bool = False):
        """The only command holding all these words (or, `exact`, only them), and the
        number of teacher requests it made."""
        found = [(result, asked) for words, result, asked in self.runs
                 if (words[1:] == list(needles) if exact
                     else all(needle in words for needle in needles))]
        assert len(found) == 1, (needles, [words for words, _, _ in self.runs])
        return found[0]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory):
    section = quickstart_section()
    commands = shell_commands(code_block(section, "bash"))
    assert commands[0] == ACTIVATE
    root = fresh_clone_layout(tmp_path_factory.mktemp("clone"))
    env = activated_env()
    ran = Ran()
    with ScriptedOpenAIServer(responder=answer) as server:
        cwd = root
        for words in commands[1:]:
            if words[0] == "cd":
                cwd = (cwd / words[1]).resolve()
                continue
            assert words[0] == "charforge", f"not a charforge command: {shlex.join(words)}"
            before = len(server.chat_requests)
            result = subprocess.run(words, cwd=cwd, env=env, capture_output=True, text=True,
                                    timeout=300)
            assert result.returncode == 0, (shlex.join(words), result.stdout, result.stderr)
            assert "Traceback" not in result.stderr
            ran.add(words, result, len(server.chat_requests) - before)
            if words[:2] == ["charforge", "init"]:
                use_scripted_teacher(cwd / words[2], server.base_url)
        snippet = subprocess.run([sys.executable, "-c", code_block(section, "python")],
                                 cwd=root, env=env, capture_output=True, text=True, timeout=300)
        snippet_asked = len(server.chat_requests) - sum(asked for _, _, asked in ran.runs)
    return root, ran, snippet, snippet_asked


def test_characters_import_from_the_shipped_examples(quickstart):
    root, ran, _, _ = quickstart
    project = root / "my-project"
    listed = ran.one("list")[0].stdout.splitlines()
    ids = [line.split("│")[1].strip() for line in listed if line.startswith("│")]
    assert [i for i in ids if i] == ["beethoven", "darwin", "lovelace", "wren"]
    shown = ran.one("show", "darwin")[0].stdout
    assert "stage early <TIME-I>" in shown and "stage late <TIME-II>" in shown
    lovelace = yaml.safe_load((project / "characters/lovelace/character.yaml").read_text())
    assert len(lovelace["knowledge"]) == 14 and len(lovelace["style"]) == 8
    # the card's portrait is kept as the avatar, byte for byte
    assert (project / "characters/wren/avatar.png").read_bytes() == \
        (root / "examples/wren.png").read_bytes()
    exported, _ = read_card_png(project / "beethoven.png")
    assert exported.name == "Ludwig van Beethoven"
    assert ran.one("ask", "--character")[0].stdout.strip()
    assert "teacher (default)" in ran.one("models")[0].stdout  # exit 0: every model ok


def test_generation_status_and_dataset_as_the_quickstart_says(quickstart):
    root, ran, _, _ = quickstart
    dry, asked = ran.one("scenes", "--dry-run")
    assert "4 task(s) to run for scenes" in dry.stdout and asked == 0
    scenes, asked = ran.one("generate", "scenes", "beethoven", "--prompts", "4",
                            "--scenes-per-prompt", "3", exact=True)
    assert "scenes: 4 done, 0 rejected, 0 failed" in scenes.stdout and asked == 4
    assert "accepted 4 of 4 answered tries (100%)" in scenes.stdout
    assert "experiences: 6 done, 0 rejected, 0 failed" in ran.one(
        "experiences", "6")[0].stdout
    assert "protective: 4 done, 0 rejected, 0 failed" in ran.one("protective")[0].stdout
    rows = {row["stage"]: row for row in json.loads(ran.one("status", "--json")[0].stdout)}
    assert {stage: rows[stage]["records"] for stage in rows} == {
        "scenes": 12, "experiences": 6, "protective": 4}
    table = ran.one("status", exact=True)[0].stdout.splitlines()
    assert table[1].split()[:8] == ["beethoven", "experiences", "6", "6", "0", "0", "0", "6"]
    # nothing failed and nothing is stale, so these two ask the teacher nothing
    assert ran.one("--retry-failed")[1] == 2  # --limit 2: two more of the pending scenes
    assert ran.one("--rerun-stale")[1] == 0
    assert "character-llm:" in ran.one("recipes")[0].stdout
    built = ran.one("dataset", "build", "beethoven")[0].stdout
    assert "wrote datasets/beethoven" in built
    sft = root / "my-project/datasets/beethoven/sft.jsonl"
    stats = json.loads((sft.parent / "stats.json").read_text())
    removed = stats["dedup"]["dialogues"]["removed"]  # scripted lines repeat now and then
    assert removed <= 2 and len(sft.read_text().splitlines()) == 12 - removed  # 8 + 4 accepted


def test_training_as_the_quickstart_says(quickstart):
    """LoRA on the embedded SmolLM2 for two steps, then the agent answers by name."""
    root, ran, _, _ = quickstart
    trained = ran.one("train", "sft", "beethoven")[0]
    assert trained.returncode == 0, trained.stderr
    assert "trained beethoven/sft-" in trained.stdout
    [run_file] = (root / "my-project/models/beethoven").glob("*/run.json")
    record = json.loads(run_file.read_text())
    assert record["metrics"]["steps"] == 2 and record["recipe"] == "demo"
    assert record["model"]["adapter"] == str(run_file.parent)
    assert ran.one("ask", "-m", "beethoven")[0].stdout.strip()


def test_personified_data_as_the_quickstart_says(quickstart):
    root, ran, _, _ = quickstart
    ordinary, asked = ran.one("questions", "ordinary")
    assert "questions: 4 done, 0 rejected, 0 failed" in ordinary.stdout and asked == 4
    error, asked = ran.one("questions", "error")
    assert "questions: 2 done" in error.stdout and asked == 2
    answers, asked = ran.one("answers", "--cot")
    assert "answers: 10 done, 0 rejected, 0 failed" in answers.stdout
    assert asked == 12  # 8 ordinary answers, 2 error answers and their 2 checks
    assert "kept feedback #1" in ran.one("review", "--feedback")[0].stdout
    assert "Shorter answers" in ran.one("review", "--list")[0].stdout
    built = ran.one("dataset", "build", "darwin")[0].stdout
    assert "wrote datasets/darwin" in built and "stage tokens <TIME-I> <TIME-II>" in built
    stats = json.loads((root / "my-project/datasets/darwin/stats.json").read_text())
    assert stats["stage_tokens"] == ["<TIME-I>", "<TIME-II>"]
    assert sum(stats["qa_records"].values()) + stats["dedup"]["questions"]["removed"] == 10
    rows = [json.loads(line) for line in
            (root / "my-project/datasets/darwin/sft.jsonl").read_text().splitlines()]
    assert all(row["messages"][-1]["content"].startswith("<think>") for row in rows)


def test_the_python_snippet_runs_as_written(quickstart):
    _, _, snippet, asked = quickstart
    assert snippet.returncode == 0, snippet.stderr
    assert "Traceback" not in snippet.stderr
    assert " stop " in snippet.stdout  # the answer's finish reason, printed
    assert "RunSummary(" in snippet.stdout
    assert asked == 1  # its question; its 4 scene prompts were already done above


def test_the_example_card_is_a_real_picture_its_script_redraws(tmp_path):
    from PIL import Image

    redrawn = tmp_path / "wren.png"
    subprocess.run([sys.executable, str(REPO / "examples/make_card.py"), str(redrawn)],
                   check=True, capture_output=True, timeout=60)
    assert redrawn.read_bytes() == (REPO / "examples/wren.png").read_bytes()
    with Image.open(redrawn) as image:
        assert image.size == (256, 256)
        assert len(image.convert("RGB").getcolors(256 * 256)) > 500
    character, _ = read_card_png(redrawn)
    card = json.loads((REPO / "examples/wren.json").read_text())
    assert character.name == card["data"]["name"] == "Wren Halloway"
    assert len(character.knowledge) == len(card["data"]["character_book"]["entries"])
