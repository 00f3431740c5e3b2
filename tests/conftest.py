"""Shared fixtures. Tiny models are built once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def assert_format_error(excinfo: pytest.ExceptionInfo, path: Path, problem: str) -> None:
    """A bad character file: the right error type, naming the file and the problem, one line."""
    from charforge.errors import CharacterFormatError

    message = str(excinfo.value)
    assert excinfo.type is CharacterFormatError
    assert str(path) in message
    assert problem in message
    assert "\n" not in message


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_models import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-llama"))


def teacher_workspace(root: Path, base_url: str, *, json_schema: bool = False):
    """A workspace with Beethoven and a model 'teacher' (the default) served at base_url."""
    import yaml

    from charforge.demo import demo_file
    from charforge.workspace import Workspace

    ws = Workspace.init(root)
    ws.import_character(demo_file("wiki_Beethoven.txt"))
    config = yaml.safe_load(ws.config_path.read_text())
    config["default_model"] = "teacher"
    config["models"]["teacher"] = {
        "backend": "openai", "model": "scripted", "base_url": base_url, "api_key_env": None,
        "max_retries": 4, "backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 2,
        "supports_json_schema": json_schema,
    }
    ws.config_path.write_text(yaml.safe_dump(config))
    return Workspace(ws.root)


# -- the CLI as a user runs it: a real process, real files ---------------------------
CLI = [sys.executable, "-m", "charforge.cli"]


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None):
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    full_env.pop("CHARFORGE_WORKSPACE", None)
    return subprocess.run(
        [*CLI, *map(str, args)], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300
    )


def assert_one_line_error(result, *needles: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    # A generate run names its teacher first; the error is then the one line after it.
    lines = [line for line in result.stderr.strip().splitlines()
             if not line.startswith("teacher: ")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@contextmanager
def read_only(path: Path):
    """`path` made unwritable: by its mode, or (for root, whom modes do not stop) by the
    immutable attribute."""
    path.chmod(0o444)
    immutable = False
    if _can_write(path):
        immutable = subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
    try:
        if _can_write(path):
            pytest.skip("cannot make a file read-only here (root without chattr)")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o644)


def _can_write(path: Path) -> bool:
    try:
        with path.open("ab"):
            return True
    except OSError:
        return False
