"""`charforge serve` and `charforge chat` as a user runs them: real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import openai
import pytest

from conftest import CLI, assert_one_line_error, run
from serve_fixtures import served_workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_model_dir):
    return served_workspace(tmp_path_factory.mktemp("served-cli"), tiny_model_dir)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_answers_until_stopped(ws):
    port = free_port()
    env = {**os.environ, "CHARFORGE_API_KEY": "k2"}
    env.pop("CHARFORGE_WORKSPACE", None)
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port)], cwd=ws.root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k2",
                               max_retries=0, timeout=30)
        deadline = time.monotonic() + 120
        while True:
            try:
                ids = {model.id for model in client.models.list()}
                break
            except openai.APIConnectionError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the server never answered"
                time.sleep(0.2)
        assert {"beethoven", "socrates", "diogenes"} <= ids
        reply = client.chat.completions.create(
            model="socrates", messages=[{"role": "user", "content": "Who taught you?"}],
            temperature=0, max_tokens=5)
        assert reply.usage.completion_tokens > 0
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert "k2" not in stderr and "serving 5 models of 3 characters" in stderr


def test_serve_refuses_an_open_address_without_a_key(ws):
    result = run("serve", "--host", "0.0.0.0", cwd=ws.root,
                 env={"CHARFORGE_API_KEY": ""})
    assert_one_line_error(result, "0.0.0.0", "CHARFORGE_API_KEY")


def test_chat_streams_a_reply_and_ends_on_an_empty_line(ws):
    env = {**os.environ}
    env.pop("CHARFORGE_WORKSPACE", None)
    result = subprocess.run([*CLI, "chat", "socrates", "--temperature", "0", "--max-tokens",
                             "6"], cwd=ws.root, env=env, input="Who taught you?\n\n",
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Socrates> " in result.stdout and "adapter" in result.stderr
    reply = result.stdout.split("Socrates> ", 1)[1].strip()
    assert reply


@pytest.mark.parametrize("args,needle", [
    (["chat", "nobody"], "nobody"),
    (["chat", "socrates", "--stage", "old"], "no stage 'old'"),
    (["chat", "socrates", "--model", "socrates/sft-none"], "does not exist"),
    (["serve", "--checkpoint", "socrates"], "CHARACTER=FOLDER"),
])
def test_bad_chat_and_serve_input_is_one_line(ws, args, needle):
    assert_one_line_error(run(*args, cwd=ws.root), needle)


def test_cli_help_lists_the_serving_commands():
    result = subprocess.run([sys.executable, "-m", "charforge.cli", "--help"],
                            capture_output=True, text=True, env={**os.environ,
                                                                 "COLUMNS": "200"})
    for command in ("serve", "chat", "export", "checkpoint"):
        assert f" {command} " in result.stdout
