"""Shared fixtures. Tiny models are built once per test session."""

from __future__ import annotations

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
