"""Keyless endpoints (vLLM, llama.cpp, Ollama): no api_key_env means no key, except on
OpenAI's own API, where it means OPENAI_API_KEY."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from charforge.errors import ChatModelError, MissingAPIKeyError
from charforge.llm.base import Sampling
from charforge.llm.openai_api import OpenAIConfig
from charforge.llm.registry import ModelsConfig, load_chat_model, model_fingerprint_of
from charforge.llm.secrets import NO_KEY_PLACEHOLDER
from charforge.testing import ScriptedOpenAIServer

from conftest import CLI

SECRET = "sk-keyless-test-must-not-travel-7f3a"


def ask(model):
    async def run():
        async with model:
            return await model.chat([{"role": "user", "content": "hi"}], Sampling(max_tokens=5))

    return asyncio.run(run())


def test_which_key_a_model_sends_when_api_key_env_is_left_out():
    def key_env(**options):
        return OpenAIConfig(model="m", **options).api_key_env

    assert key_env(base_url="http://127.0.0.1:8000/v1") is None
    assert key_env(provider="openai") == "OPENAI_API_KEY"
    assert key_env(base_url="https://API.openai.com/v1/") == "OPENAI_API_KEY"
    # Said explicitly, it is kept, wherever the endpoint is.
    assert key_env(provider="openai", api_key_env=None) is None
    assert key_env(base_url="http://127.0.0.1:8000/v1", api_key_env="MY_KEY") == "MY_KEY"


def test_a_keyless_entry_answers_and_never_sends_the_openai_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)  # exported for another model
    with ScriptedOpenAIServer() as server:
        config = ModelsConfig.model_validate({"models": {"vllm": {
            "backend": "openai", "model": "scripted", "base_url": server.base_url}}})
        completion = ask(load_chat_model("vllm", config=config))
        sent = server.chat_requests[0]
    assert completion.text == "ok"
    assert sent.headers["authorization"] == f"Bearer {NO_KEY_PLACEHOLDER}"
    assert SECRET not in str(sent.headers)


def test_an_endpoint_that_wants_a_key_says_where_it_goes():
    with ScriptedOpenAIServer(required_key=SECRET) as server:
        config = ModelsConfig.model_validate({"models": {"vllm": {
            "backend": "openai", "model": "scripted", "base_url": server.base_url,
            "max_retries": 0}}})
        with pytest.raises(ChatModelError) as info:
            ask(load_chat_model("vllm", config=config))
    message = str(info.value)
    assert "HTTP 401" in message
    assert "model 'vllm' sends no key: set api_key_env" in message
    assert "\n" not in message


def test_keys_are_never_part_of_a_models_identity():
    base = {"backend": "openai", "model": "m", "base_url": "http://h:8000/v1"}
    fingerprints = {
        model_fingerprint_of("x", ModelsConfig.model_validate({"models": {"x": base | extra}}))
        for extra in ({}, {"api_key_env": None}, {"api_key_env": "A"},
                      {"api_key_env": ["A", "B"]})
    }
    assert len(fingerprints) == 1


def test_openai_without_its_key_says_export_it_and_nothing_about_keyless(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    config = ModelsConfig.model_validate({"models": {"gpt": {
        "backend": "openai", "model": "gpt-4o-mini", "provider": "openai"}}})
    with pytest.raises(MissingAPIKeyError) as info:
        load_chat_model("gpt", config=config)
    message = str(info.value)
    assert "OPENAI_API_KEY is not set; export it" in message
    assert "api_key_env" not in message  # OpenAI's API always needs a key


def test_ask_with_a_missing_variable_names_it_and_how_to_go_keyless(tmp_path: Path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("CF_TEST_UNSET_KEY", "CHARFORGE_WORKSPACE")}
    assert subprocess.run([*CLI, "init", "ws"], cwd=tmp_path, env=env,
                          capture_output=True).returncode == 0
    ws = tmp_path / "ws"
    config = yaml.safe_load((ws / "charforge.yaml").read_text())
    config["models"]["local"] = {"backend": "openai", "model": "m",
                                 "base_url": "http://127.0.0.1:9/v1",
                                 "api_key_env": "CF_TEST_UNSET_KEY"}
    (ws / "charforge.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run([*CLI, "ask", "-m", "local", "hello"], cwd=ws, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == (
        "error: model 'local': environment variable CF_TEST_UNSET_KEY is not set; export it "
        "(the key is never stored in files), or remove api_key_env from model 'local' in "
        "charforge.yaml if the endpoint needs no key")


def test_ask_a_keyless_endpoint_from_the_command_line(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "CHARFORGE_WORKSPACE"}
    env["OPENAI_API_KEY"] = SECRET
    assert subprocess.run([*CLI, "init", "ws"], cwd=tmp_path, env=env,
                          capture_output=True).returncode == 0
    ws = tmp_path / "ws"
    with ScriptedOpenAIServer() as server:
        config = yaml.safe_load((ws / "charforge.yaml").read_text())
        config["models"]["ollama"] = {"backend": "openai", "model": "scripted",
                                      "base_url": server.base_url}
        (ws / "charforge.yaml").write_text(yaml.safe_dump(config))
        result = subprocess.run([*CLI, "ask", "-m", "ollama", "hello"], cwd=ws, env=env,
                                capture_output=True, text=True, timeout=120)
        sent = server.chat_requests
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert sent[0].headers["authorization"] == f"Bearer {NO_KEY_PLACEHOLDER}"
