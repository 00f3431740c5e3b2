"""Named models from charforge.yaml, found through the backends' entry points."""

from __future__ import annotations

import asyncio
from importlib.metadata import entry_points

import pytest
import yaml

from charforge.errors import ConfigError, WorkspaceError
from charforge.llm.base import Sampling
from charforge.llm.local import LocalChatModel
from charforge.llm.registry import ModelsConfig, load_chat_model, model_identity
from charforge.workspace import Workspace


def write_models(ws: Workspace, models: dict, default: str = "smollm2") -> None:
    ws.config_path.write_text(yaml.safe_dump({"default_model": default, "models": models}))


def test_builtin_backends_register_through_entry_points():
    names = {ep.name for ep in entry_points(group="charforge.backends")}
    assert {"openai", "local"} <= names


def test_the_embedded_model_is_always_configured(tmp_path):
    assert ModelsConfig().entries()["smollm2"].backend == "local"
    assert "smollm2" in Workspace.init(tmp_path).config.entries()


def test_workspace_model_loads_and_answers(tmp_path, tiny_model_dir):
    ws = Workspace.init(tmp_path)
    write_models(ws, {"tiny": {"backend": "local", "path": str(tiny_model_dir),
                               "dtype": "float32"}}, default="tiny")
    model = load_chat_model(config=ws.config)
    assert isinstance(model, LocalChatModel) and model.name == "tiny"
    completion = asyncio.run(model.chat([{"role": "user", "content": "hi"}],
                                        Sampling(max_tokens=3)))
    assert completion.usage.completion_tokens == 3


@pytest.mark.parametrize(
    ("models", "name", "message"),
    [
        ({}, "gpt9", "unknown model 'gpt9'; configured models: smollm2"),
        ({"x": {"backend": "carrier-pigeon"}}, "x", "unknown backend 'carrier-pigeon'"),
        ({"x": {"backend": "local", "dtype": "int3"}}, "x", "model 'x': dtype"),
        ({"x": {"backend": "local", "pth": "typo"}}, "x", "model 'x': pth: Extra inputs"),
        # Never a silent fallback to OpenAI's endpoint: the key would go where nobody said.
        ({"x": {"backend": "openai", "model": "m", "api_key_env": None}}, "x",
         "model 'x': base_url is required (or provider: openai"),
        ({"x": {"backend": "openai", "model": "m", "base_url": "localhost:8000/v1"}}, "x",
         "option 'base_url': 'localhost:8000/v1' is not an http(s) URL"),
        ({"x": {"backend": "openai", "model": "m", "base_url": "http://h:99999/v1"}}, "x",
         "is not a URL"),
        ({"x": {"backend": "openai", "model": "m", "base_url": "http://user:pw@h/v1"}}, "x",
         "put credentials in api_key_env"),
    ],
)
def test_misconfigured_models_are_one_clear_line(tmp_path, models, name, message):
    ws = Workspace.init(tmp_path)
    write_models(ws, models)
    with pytest.raises(ConfigError) as info:
        load_chat_model(name, config=ws.config)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_model_entry_without_backend_names_the_field(tmp_path):
    ws = Workspace.init(tmp_path)
    write_models(ws, {"x": {"path": "a"}})
    with pytest.raises(WorkspaceError, match=r"models\.x\.backend: Field required"):
        load_chat_model("x", config=ws.config)


def test_openai_provider_needs_no_base_url_and_urls_are_normalised():
    config = ModelsConfig.model_validate({"models": {
        "a": {"backend": "openai", "model": "gpt-4o-mini", "provider": "openai"},
        "b": {"backend": "openai", "model": "m", "base_url": "HTTP://LocalHost:80/v1/"},
        "c": {"backend": "openai", "model": "m", "base_url": "http://localhost/v1",
              "revision": "2026-11-01"},
    }})
    assert model_identity("a", config)["base_url"] == "https://api.openai.com/v1"
    b, c = model_identity("b", config), model_identity("c", config)
    assert b == {"backend": "openai", "base_url": "http://localhost/v1", "model": "m"}
    assert c == {**b, "revision": "2026-11-01"}  # same endpoint, pinned: another identity


def test_broken_config_file_names_the_file(tmp_path):
    ws = Workspace.init(tmp_path)
    ws.config_path.write_text("models: [unclosed\n")
    with pytest.raises(WorkspaceError, match=r"charforge\.yaml: invalid configuration"):
        load_chat_model(config=ws.config)
