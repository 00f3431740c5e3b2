"""OpenAIChatModel against a real HTTP server (ScriptedOpenAIServer) through the real SDK."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import traceback
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from charforge.errors import ChatModelError, ConfigError, MissingAPIKeyError
from charforge.llm.base import ChatMessage, ChatModel, Sampling
from charforge.llm.openai_api import OpenAIChatModel, OpenAIConfig, retry_after_seconds
from charforge.testing import Reply, ScriptedOpenAIServer

SECRET = "sk-charforge-test-Zq81xVv0-DO-NOT-LEAK"


class RecordingSleep:
    """Stands in for asyncio.sleep: records each requested delay, waits only briefly."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(min(delay, 0.01))


@pytest.fixture
def server():
    with ScriptedOpenAIServer() as running:
        yield running


def make_model(server: ScriptedOpenAIServer, **options) -> OpenAIChatModel:
    settings = {"model": "scripted", "base_url": server.base_url, "api_key_env": None}
    model = OpenAIChatModel(OpenAIConfig(**(settings | options)), name="teacher")
    model._sleep = RecordingSleep()
    return model


def chat_once(model: OpenAIChatModel, *, response_format=None, **sampling):
    async def run():
        try:
            return await model.chat([{"role": "user", "content": "Hello there"}],
                                    Sampling(**sampling), response_format=response_format)
        finally:
            await model.aclose()

    return asyncio.run(run())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- success -------------------------------------------------------------------------
def test_happy_path_returns_completion_and_sends_every_parameter(server):
    server.enqueue(Reply(text="Good day to you, sir"))
    model = make_model(server)
    assert isinstance(model, ChatModel)
    messages = [
        ChatMessage(role="system", content="You are Beethoven."),
        {"role": "user", "content": "How are you today?", "name": "Karl"},
    ]
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}

    async def run():
        try:
            return await model.chat(
                messages, Sampling(temperature=0.2, top_p=0.9, max_tokens=64, stop=("\n\n",),
                                   seed=11), response_format=schema,
            )
        finally:
            await model.aclose()

    completion = asyncio.run(run())
    assert completion.text == "Good day to you, sir"
    assert completion.finish_reason == "stop" and not completion.truncated
    assert completion.usage.prompt_tokens == 7 and completion.usage.completion_tokens == 5
    assert completion.model == "scripted" and completion.attempts == 1
    assert completion.latency_s > 0
    assert model.stats.requests == 1 and model.stats.attempts == 1
    assert model.stats.usage.total_tokens == 12 and model.stats.failures == 0
    [request] = server.chat_requests
    assert request.headers["content-type"] == "application/json"
    sent = request.json
    assert sent["messages"] == [
        {"role": "system", "content": "You are Beethoven."},
        {"role": "user", "content": "How are you today?", "name": "Karl"},
    ]
    assert sent["model"] == "scripted" and sent["temperature"] == 0.2 and sent["top_p"] == 0.9
    assert sent["max_tokens"] == 64 and sent["seed"] == 11 and sent["stop"] == ["\n\n"]
    assert sent["response_format"] == schema
    assert request.headers["authorization"] == "Bearer no-key-needed"


def test_optional_parameters_are_left_out_and_extra_body_is_sent(server):
    chat_once(make_model(server, extra_body={"top_k": 20}))
    sent = server.chat_requests[0].json
    assert "seed" not in sent and "stop" not in sent and "response_format" not in sent
    assert sent["top_k"] == 20


def test_null_content_becomes_empty_text(server):
    server.enqueue(Reply(text=None, finish_reason="content_filter"))
    completion = chat_once(make_model(server))
    assert completion.text == "" and completion.finish_reason == "content_filter"


def test_truncated_answer_is_flagged_and_counted_never_printed(server, caplog):
    # A run may truncate hundreds of answers: each is counted and reported at the end,
    # never printed on its own (a line per answer through the progress bar).
    server.enqueue(Reply.truncated("It was the best of"))
    model = make_model(server)
    with caplog.at_level(logging.DEBUG, logger="charforge.llm"):
        completion = chat_once(model, max_tokens=5)
    assert completion.truncated and completion.text == "It was the best of"
    assert model.stats.truncated == 1
    ours = [r for r in caplog.records if r.name == "charforge.llm"]
    assert [r.levelname for r in ours] == ["DEBUG"] and "truncated" in ours[0].getMessage()


# -- retries -------------------------------------------------------------------------
def test_rate_limit_waits_for_retry_after_then_succeeds(server):
    server.enqueue(Reply.rate_limited(retry_after=1), Reply(text="finally"))
    model = make_model(server)
    completion = chat_once(model)
    assert completion.text == "finally" and completion.attempts == 2
    assert len(server.chat_requests) == 2
    assert model._sleep.delays == [pytest.approx(1.0)]
    assert model.stats.attempts == 2 and model.stats.requests == 1


def test_retry_after_is_capped_at_backoff_max(server):
    server.enqueue(Reply.rate_limited(retry_after=120))
    model = make_model(server, backoff_max_s=2.5)
    chat_once(model)
    assert model._sleep.delays == [2.5]


def test_retry_after_header_forms():
    assert retry_after_seconds({"retry-after-ms": "250"}) == pytest.approx(0.25)
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < retry_after_seconds({"retry-after": later}) <= 30
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_server_errors_are_retried_with_full_jitter_backoff(server):
    server.enqueue(Reply.server_error(), Reply.server_error(503), Reply(text="up again"))
    model = make_model(server, backoff_base_s=0.5, backoff_max_s=30)
    model._random = random.Random(1234)
    completion = chat_once(model)
    assert completion.text == "up again" and completion.attempts == 3
    assert len(server.chat_requests) == 3
    first, second = model._sleep.delays
    assert 0 <= first <= 0.5 and 0 <= second <= 1.0
    expected = random.Random(1234)
    assert [first, second] == [expected.uniform(0, 0.5), expected.uniform(0, 1.0)]


def test_backoff_never_exceeds_backoff_max(server):
    model = make_model(server, backoff_base_s=10, backoff_max_s=0.5)
    assert all(model._backoff_s(attempt, None) <= 0.5 for attempt in range(20))


def test_timeout_is_retried(server):
    server.enqueue(Reply.slow(1.5, "too late"), Reply(text="in time"))
    completion = chat_once(make_model(server, timeout_s=0.3))
    assert completion.text == "in time" and completion.attempts == 2
    assert len(server.chat_requests) == 2


@pytest.mark.parametrize("body", ['{"choices": [', "<html>oops</html>", '{"id": "x"}'])
def test_malformed_body_is_retried(server, body):
    server.enqueue(Reply.malformed(body), Reply(text="well formed"))
    completion = chat_once(make_model(server))
    assert completion.text == "well formed" and completion.attempts == 2


def test_malformed_forever_gives_up_after_max_retries(server):
    server.enqueue(*[Reply.malformed() for _ in range(3)], Reply(text="never reached"))
    model = make_model(server, max_retries=2)
    with pytest.raises(ChatModelError) as caught:
        chat_once(model)
    message = str(caught.value)
    assert "\n" not in message and "3 attempt" in message and "malformed" in message
    assert "'teacher'" in message
    assert len(server.chat_requests) == 3 and server.pending == 1
    assert model.stats.failures == 1 and model.stats.attempts == 3


def test_server_errors_stop_after_the_limit(server):
    server.enqueue(*[Reply.server_error() for _ in range(6)])
    with pytest.raises(ChatModelError, match=r"gave up after 3 attempt.*HTTP 500"):
        chat_once(make_model(server, max_retries=2))
    assert len(server.chat_requests) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retried(server, status):
    server.enqueue(Reply(status=status, error_message="you did it wrong"), Reply(text="no"))
    model = make_model(server)
    with pytest.raises(ChatModelError) as caught:
        chat_once(model)
    message = str(caught.value)
    assert f"HTTP {status}" in message and "you did it wrong" in message and "\n" not in message
    assert len(server.chat_requests) == 1 and model._sleep.delays == []
    assert model.stats.failures == 1


# -- keys ----------------------------------------------------------------------------
def test_keys_rotate_round_robin(monkeypatch, server):
    monkeypatch.setenv("CF_TEST_KEY_A", "key-alpha")
    monkeypatch.setenv("CF_TEST_KEY_B", "key-beta")
    model = make_model(server, api_key_env=["CF_TEST_KEY_A", "CF_TEST_KEY_B"])

    async def run():
        for _ in range(4):
            await model.chat([{"role": "user", "content": "hi"}])
        await model.aclose()

    asyncio.run(run())
    bearers = [r.headers["authorization"] for r in server.chat_requests]
    assert bearers == ["Bearer key-alpha", "Bearer key-beta"] * 2


def test_missing_key_variable_is_named(monkeypatch, server):
    monkeypatch.delenv("CF_TEST_MISSING_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError, match="CF_TEST_MISSING_KEY is not set"):
        make_model(server, api_key_env="CF_TEST_MISSING_KEY")
    monkeypatch.setenv("CF_TEST_MISSING_KEY", "  ")
    with pytest.raises(MissingAPIKeyError, match="CF_TEST_MISSING_KEY is empty"):
        make_model(server, api_key_env="CF_TEST_MISSING_KEY")


def test_secret_never_leaks_into_errors_or_logs(monkeypatch, caplog):
    monkeypatch.setenv("CF_TEST_SECRET_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    with ScriptedOpenAIServer(required_key=SECRET) as server:
        # A retried 500 whose body quotes the key: the retry is logged, redacted.
        server.enqueue(Reply(status=500, error_message=f"upstream rejected {SECRET}"))
        model = make_model(server, api_key_env="CF_TEST_SECRET_KEY")
        assert chat_once(model).attempts == 2
        retry_logs = [r.getMessage() for r in caplog.records if r.name == "charforge.llm"]
        assert any("upstream rejected ***" in m for m in retry_logs), retry_logs
        # From now on the server refuses the key and quotes it in its 401 message.
        server.required_key = "the-right-key"
        assert SECRET not in repr(model)
        with pytest.raises(ChatModelError) as caught:
            chat_once(model)

        async def check():
            try:
                await model.check()
            finally:
                await model.aclose()

        with pytest.raises(ChatModelError) as caught_check:
            asyncio.run(check())
    # The server did echo the key it received: redaction, not luck, keeps it out.
    assert server.requests[-1].headers["authorization"] == f"Bearer {SECRET}"
    # Whatever the SDK or the HTTP stack might log is redacted too.
    logging.getLogger("openai._base_client").debug("headers: %s", {"api-key": SECRET})
    try:
        raise RuntimeError(f"request failed with key {SECRET}")
    except RuntimeError:
        logging.getLogger("httpx").exception("transport error for %s", SECRET)
    for error in (caught.value, caught_check.value):
        shown = str(error) + repr(error) + "".join(traceback.format_exception(error))
        assert "HTTP 401" in str(error) and "***" in str(error)
        assert SECRET not in shown
    assert caplog.records, "expected DEBUG records from the SDK and HTTP stack"
    for record in caplog.records:
        assert SECRET not in record.getMessage()
    assert SECRET not in caplog.text


# -- reachability --------------------------------------------------------------------
def test_check_lists_models(server):
    model = make_model(server)

    async def run():
        try:
            return await model.check()
        finally:
            await model.aclose()

    assert asyncio.run(run()) == "reachable: 1 model"
    assert server.requests[-1].path == "/v1/models"


def test_unreachable_endpoint_fails_check_with_one_line():
    url = f"http://127.0.0.1:{free_port()}/v1"
    model = OpenAIChatModel(OpenAIConfig(model="m", base_url=url, api_key_env=None), name="x")

    with pytest.raises(ChatModelError) as caught:
        asyncio.run(model.check())
    assert str(caught.value) == f"model 'x': cannot reach {url} (connection refused)"


def test_unreachable_endpoint_fails_chat_after_retries():
    url = f"http://127.0.0.1:{free_port()}/v1"
    config = OpenAIConfig(model="m", base_url=url, api_key_env=None, max_retries=1)
    model = OpenAIChatModel(config, name="x")
    model._sleep = RecordingSleep()
    with pytest.raises(ChatModelError, match=r"gave up after 2 attempt.*connection refused"):
        chat_once(model)


# -- concurrency ---------------------------------------------------------------------
def run_concurrently(server: ScriptedOpenAIServer, max_concurrency: int, count: int) -> None:
    model = make_model(server, max_concurrency=max_concurrency)

    async def run():
        prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(count)]
        await asyncio.gather(*(model.chat(p) for p in prompts))
        await model.aclose()

    asyncio.run(run())


def test_concurrency_limit_is_respected():
    with ScriptedOpenAIServer(latency_s=0.2) as server:
        run_concurrently(server, max_concurrency=2, count=6)
        assert len(server.chat_requests) == 6
        assert server.max_in_flight == 2


def test_without_a_tight_limit_requests_overlap():
    with ScriptedOpenAIServer(latency_s=0.2) as server:
        run_concurrently(server, max_concurrency=16, count=6)
        assert server.max_in_flight == 6


def test_model_survives_a_second_event_loop(server):
    model = make_model(server)
    chat_once(model)
    chat_once(model)
    assert model.stats.requests == 2


# -- configuration -------------------------------------------------------------------
def test_from_config_validates_options(server):
    model = OpenAIChatModel.from_config(
        "local", {"backend": "openai", "model": "m", "base_url": server.base_url,
                  "api_key_env": None},
    )
    assert model.name == "local" and model.config.model == "m"
    with pytest.raises(ConfigError, match=r"model 'local': option 'timeout_s'"):
        OpenAIChatModel.from_config("local", {"model": "m", "timeout_s": 0})
    with pytest.raises(ConfigError, match=r"unknown option 'base_ur'"):
        OpenAIChatModel.from_config("local", {"model": "m", "base_ur": "http://x"})
    with pytest.raises(ConfigError, match=r"option 'model' is required"):
        OpenAIChatModel.from_config("local", {})


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_both_transports_answer_retry_and_name_a_refused_connection(server, transport):
    server.enqueue(Reply.server_error(), Reply(text="Vienna, of course."))
    model = make_model(server, http_client=transport)
    completion = chat_once(model)
    assert completion.text == "Vienna, of course." and completion.attempts == 2
    assert [t.error for t in completion.failed_tries] == [
        "HTTP 500: The server had an error (scripted)"]
    assert completion.failed_tries[0].latency_s > 0
    url = f"http://127.0.0.1:{free_port()}/v1"
    refused = OpenAIChatModel(OpenAIConfig(model="m", base_url=url, api_key_env=None,
                                           max_retries=0, http_client=transport), name="x")
    with pytest.raises(ChatModelError, match=r"connection error \(connection refused\)"):
        chat_once(refused)
