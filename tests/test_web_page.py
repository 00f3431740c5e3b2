"""The web chat page of `charforge serve`, driven in headless Chromium against the real
server: a workspace with Beethoven, answered by a scripted OpenAI-compatible model whose
reply carries a thinking block and a `<script>` tag."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Request, expect, sync_playwright

from charforge.serve.app import ServeSettings, create_app
from charforge.testing import ScriptedOpenAIServer

from conftest import teacher_workspace
from serve_fixtures import serving

CHROMIUM = Path("/usr/bin/chromium")
THINKING = "I weigh the question."
CONTENT = "Hello <script>window.__pwned=1</script> friend"
SCRIPTED_REPLY = f"<think>{THINKING}</think>\n{CONTENT}"
TIMEOUT_MS = 10_000


@pytest.fixture(autouse=True)
def chromium_installed():
    # Not a skip: `make test` installs it, so its absence is a broken install.
    assert CHROMIUM.exists(), "no /usr/bin/chromium: `make test` installs it " \
        "(apt-get install -y chromium)"

# Counts every <script> element added to the document after it is installed.
WATCH_SCRIPTS = """() => {
  window.__scriptsAdded = 0;
  new MutationObserver((mutations) => {
    for (const mutation of mutations) {
      for (const node of mutation.addedNodes) {
        if (node.nodeType !== Node.ELEMENT_NODE) continue;
        if (node.tagName === "SCRIPT") window.__scriptsAdded += 1;
        window.__scriptsAdded += node.querySelectorAll("script").length;
      }
    }
  }).observe(document, { childList: true, subtree: true });
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def model_server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(responder=lambda request: SCRIPTED_REPLY) as server:
        yield server


def serve_beethoven(tmp_path: Path, model_server: ScriptedOpenAIServer, **settings):
    workspace = teacher_workspace(tmp_path / "ws", model_server.base_url)
    return serving(create_app(workspace, ServeSettings(model="teacher", **settings)))


def send(page: Page, text: str) -> Request:
    """Types and sends a message; returns the chat request the page made."""
    page.get_by_test_id("message-input").fill(text)
    with page.expect_request(lambda r: r.url.endswith("/v1/chat/completions")) as request:
        page.get_by_test_id("send").click()
    return request.value


def test_a_reply_streams_in_with_its_thinking_apart_and_its_tags_as_text(
        tmp_path, model_server, page):
    with serve_beethoven(tmp_path, model_server) as base_url:
        page.goto(base_url)
        characters = page.get_by_test_id("character-select")
        expect(characters.locator("option[value=beethoven]")).to_have_count(1)
        expect(characters).to_have_value("beethoven")
        expect(page.get_by_test_id("model-select").locator("option")).not_to_have_count(0)
        page.evaluate(WATCH_SCRIPTS)

        page.get_by_test_id("location").fill("a tavern in Vienna")
        sent = send(page, "Who taught you music?").post_data_json
        assert sent["stream"] is True
        assert sent["model"] == page.get_by_test_id("model-select").input_value()
        assert sent["messages"] == [{"role": "user", "content": "Who taught you music?"}]
        assert sent["metadata"] == {"location": "a tavern in Vienna"}  # only what was set

        reply = page.get_by_test_id("reply")
        expect(reply).to_have_attribute("data-state", "done")
        content = reply.get_by_test_id("reply-content")
        reasoning = reply.get_by_test_id("reply-reasoning")
        expect(content).to_have_text(CONTENT)  # the tag shows literally, as text
        expect(reasoning).to_have_text(THINKING)
        assert THINKING not in content.text_content()
        assert not content.evaluate("(el, other) => el.contains(other)", reasoning.element_handle())
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert page.evaluate("window.__scriptsAdded") == 0
        assert content.locator("script").count() == 0

        # The next turn sends the reply's content back, never its thinking.
        sent = send(page, "And your father?").post_data_json
        assert sent["messages"][1] == {"role": "assistant", "content": CONTENT}
        assert THINKING not in json.dumps(sent["messages"])
        expect(page.get_by_test_id("reply").nth(1)).to_have_attribute("data-state", "done")

        with page.expect_download() as download:
            page.get_by_test_id("download-json").click()
        transcript = json.loads(Path(download.value.path()).read_text())
    assert transcript["character"]["id"] == "beethoven"
    assert transcript["scene"]["location"] == "a tavern in Vienna"
    assert transcript["messages"] == [
        {"role": "user", "content": "Who taught you music?"},
        {"role": "assistant", "content": CONTENT},
        {"role": "user", "content": "And your father?"},
        {"role": "assistant", "content": CONTENT},
    ]
    assert [r["reasoning_content"] for r in transcript["replies"]] == [THINKING, THINKING]


def test_a_wrong_api_key_shows_as_an_error_in_the_page(tmp_path, model_server, page):
    with serve_beethoven(tmp_path, model_server, api_key="k") as base_url:
        page.goto(base_url)
        error = page.get_by_test_id("error")
        expect(error).to_be_visible()  # no key yet: the character list is refused
        expect(error).to_contain_text("401")

        key = page.get_by_test_id("api-key")
        key.fill("k")
        key.press("Tab")
        expect(page.get_by_test_id("character-select")).to_have_value("beethoven")
        expect(error).to_be_hidden()

        key.fill("wrong")
        send(page, "Who taught you music?")
        expect(error).to_be_visible()
        expect(error).to_contain_text("401")
        expect(page.get_by_test_id("reply")).to_have_count(0)
        expect(page.get_by_test_id("message-input")).to_have_value("Who taught you music?")
        # The key lives in the field only.
        assert page.evaluate("localStorage.length + sessionStorage.length") == 0
        assert page.evaluate("document.cookie") == ""
        assert "wrong" not in page.url
    assert not model_server.chat_requests  # refused before any model was asked
