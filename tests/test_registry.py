"""Named models from charforge.yaml, found through the backends' entry points."""

from __future__ import annotations

import asyncio
from importlib.metadata import entry_points

import pytest
import yaml

from charforge.errors import ConfigError, WorkspaceError
from charforge.llm.local import LocalChatModel
from charforge.llm.registry import load_chat_model, model_specs
from charforge.workspace import Workspace


def write_models(ws: Workspace, models: dict, default: str = "smollm2") -> None:
    ws.config_path.write_text(yaml.safe_dump({"default_model": default, "models": models}))


def test_builtin_backends_register_through_entry_points():
    names = {ep.name for ep in entry_points(group="charforge.backends")}
    assert {"openai", "local"} <= names


def test_the_embedded_model_is_always_configured(tmp_path):
    assert model_specs(None)["smollm2"] == {"backend": "local"}
    assert "smollm2" in model_specs(Workspace.init(tmp_path))


def test_workspace_model_loads_and_answers(tmp_path, tiny_model_dir):
    ws = Workspace.init(tmp_path)
    write_models(ws, {"tiny": {"backend": "local", "path": str(tiny_model_dir),
                               "dtype": "float32"}}, default="tiny")
    model = load_chat_model(workspace=ws)
    assert isinstance(model, LocalChatModel) and model.name == "tiny"
    completion = asyncio.run(model.chat([{"role": "user", "content": "hi"}], max_tokens=3))
    assert completion.usage.completion_tokens == 3


@pytest.mark.parametrize(
    ("models", "name", "message"),
    [
        ({}, "gpt9", "unknown model 'gpt9'; configured models: smollm2"),
        ({"x": {"backend": "carrier-pigeon"}}, "x", "unknown backend 'carrier-pigeon'"),
        ({"x": {"path": "a"}}, "x", "no 'backend'"),
        ({"x": {"backend": "local", "dtype": "int3"}}, "x", "model 'x': dtype"),
    ],
)
def test_misconfigured_models_are_one_clear_line(tmp_path, models, name, message):
    ws = Workspace.init(tmp_path)
    write_models(ws, models)
    with pytest.raises(ConfigError) as info:
        load_chat_model(name, workspace=ws)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_broken_config_file_names_the_file(tmp_path):
    ws = Workspace.init(tmp_path)
    ws.config_path.write_text("models: [unclosed\n")
    with pytest.raises(WorkspaceError, match=r"charforge\.yaml: invalid configuration"):
        load_chat_model(workspace=ws)
