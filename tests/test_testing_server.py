"""The scripted OpenAI-compatible server itself, spoken to over plain HTTP."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from charforge.testing import Reply, ScriptedOpenAIServer


def post_chat(server: ScriptedOpenAIServer, body: dict, key: str | None = None):
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    request = urllib.request.Request(
        f"{server.base_url}/chat/completions", data=json.dumps(body).encode(), headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


CHAT = {"model": "m", "messages": [{"role": "user", "content": "one two three"}]}


def test_starts_fast_and_stops_without_leftover_threads():
    before = set(threading.enumerate())
    started = time.monotonic()
    with ScriptedOpenAIServer() as server:
        assert time.monotonic() - started < 1.0
        assert server.base_url.startswith("http://127.0.0.1:")
        assert server.base_url.endswith("/v1")
    assert set(threading.enumerate()) <= before
    with pytest.raises(RuntimeError):
        _ = server.base_url


def test_script_is_consumed_in_order_then_the_responder_answers():
    replies = [Reply(text="first answer"), Reply.truncated("cut")]
    with ScriptedOpenAIServer(replies, responder=lambda body: f"echo {body['model']}") as server:
        answers = [json.loads(post_chat(server, CHAT)[2]) for _ in range(3)]
    texts = [a["choices"][0]["message"]["content"] for a in answers]
    assert texts == ["first answer", "cut", "echo m"]
    assert [a["choices"][0]["finish_reason"] for a in answers] == ["stop", "length", "stop"]
    assert answers[0]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert [r.json for r in server.chat_requests] == [CHAT] * 3
    received = [r.received_at for r in server.requests]
    assert received == sorted(received)


def test_errors_have_the_openai_shape_and_headers():
    script = [Reply.rate_limited(retry_after=2), Reply.server_error(503), Reply.malformed("{")]
    with ScriptedOpenAIServer(script) as server:
        status, headers, body = post_chat(server, CHAT)
        assert status == 429 and headers["retry-after"] == "2"
        assert json.loads(body)["error"]["type"] == "rate_limit_error"
        status, _, body = post_chat(server, CHAT)
        assert status == 503 and set(json.loads(body)["error"]) == {
            "message", "type", "param", "code"
        }
        assert post_chat(server, CHAT)[::2] == (200, "{")


def test_streaming_is_refused_without_consuming_the_script():
    with ScriptedOpenAIServer([Reply(text="kept")]) as server:
        status, _, body = post_chat(server, {**CHAT, "stream": True})
        assert status == 400 and "streaming not supported" in body
        assert server.pending == 1


def test_required_key_and_models_list():
    with ScriptedOpenAIServer(required_key="good", model_names=["a", "b"]) as server:
        status, _, body = post_chat(server, CHAT, key="wrong")
        assert status == 401 and "wrong" in body
        assert post_chat(server, CHAT, key="good")[0] == 200
        with urllib.request.urlopen(
            urllib.request.Request(
                f"{server.base_url}/models", headers={"authorization": "Bearer good"}
            ),
            timeout=5,
        ) as response:
            listed = json.loads(response.read())
    assert [m["id"] for m in listed["data"]] == ["a", "b"]
    assert server.requests[-1].path == "/v1/models" and server.requests[-1].json is None


def test_latency_applies_to_every_request():
    with ScriptedOpenAIServer(latency_s=0.2) as server:
        started = time.monotonic()
        post_chat(server, CHAT)
        assert time.monotonic() - started >= 0.2
        assert server.max_in_flight == 1
