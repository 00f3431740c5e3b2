"""The character server with the official `openai` SDK as its client: a tiny model
with two trained adapters and a prompted character, real HTTP, greedy fp32."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import httpx2 as httpx
import openai
import pytest

from charforge.llm.base import ChatMessage, Sampling
from charforge.llm.local import LocalChatModel, LocalConfig
from charforge.render import meta_prompt, stage_marked
from charforge.serve.app import ServeSettings, create_app
from charforge.serve.catalogue import Scene
from charforge.serve.protocol import Limits
from charforge.serve.thoughts import BlockReader, ThoughtSplitter
from charforge.testing import Reply, ScriptedOpenAIServer
from charforge.train.data import chat_samples
from charforge.train.runs import finished_runs

from serve_fixtures import served_workspace, serving

QUESTION = [{"role": "user", "content": "What do you think of your father?"}]
GREEDY = {"temperature": 0, "max_tokens": 12}


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_model_dir):
    return served_workspace(tmp_path_factory.mktemp("served"), tiny_model_dir)


@pytest.fixture(scope="module")
def server(ws):
    app = create_app(ws, ServeSettings(limits=Limits(max_body_bytes=1_000_000)))
    with serving(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def client(server):
    url, _ = server
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def runs_by_character(ws) -> dict[str, tuple]:
    return {record.character: (folder, record) for folder, record in finished_runs(ws.root)}


def test_models_and_characters_say_what_serves_each(ws, server, client):
    runs = runs_by_character(ws)
    ids = {model.id for model in client.models.list()}
    assert {"beethoven", "socrates", "diogenes", f"beethoven/{runs['beethoven'][1].run}",
            f"socrates/{runs['socrates'][1].run}"} == ids
    url, _ = server
    with urllib.request.urlopen(f"{url}/v1/characters") as answer:
        listed = {c["id"]: c for c in json.load(answer)["data"]}
    assert {m["serving"] for m in listed["beethoven"]["models"]} == {"adapter"}
    assert listed["diogenes"]["models"] == [{"id": "diogenes", "serving": "prompted",
                                             "run": None}]
    assert "philosopher" in listed["socrates"]["summary"]
    with urllib.request.urlopen(f"{url}/health") as answer:
        assert json.load(answer)["status"] == "ok"
    # Runs of one base saved the same tokenizer files: one tokenizer object serves both.
    catalogue = server[1].state.catalogue
    first, second = catalogue.get("beethoven"), catalogue.get("socrates")
    assert first.backend is second.backend
    assert first.backend.tokenizer_for(first.adapter) is \
        second.backend.tokenizer_for(second.adapter)


def test_plain_and_streamed_replies_agree(client):
    whole = client.chat.completions.create(model="beethoven", messages=QUESTION, **GREEDY)
    assert whole.choices[0].message.content
    assert whole.usage.completion_tokens > 0 and whole.usage.prompt_tokens > 10
    stream = client.chat.completions.create(model="beethoven", messages=QUESTION, stream=True,
                                            stream_options={"include_usage": True}, **GREEDY)
    pieces, finish, usage = [], None, None
    for event in stream:
        if event.usage:
            usage = event.usage
        for choice in event.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert len([p for p in pieces if p]) > 1, "streamed in pieces"
    assert "".join(pieces).strip() == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_a_stop_string_ends_the_reply_before_it(client):
    whole = client.chat.completions.create(model="socrates", messages=QUESTION,
                                           temperature=0, max_tokens=16)
    text = whole.choices[0].message.content
    words = text.split()
    assert len(words) >= 3, text
    marker = words[2]
    cut = client.chat.completions.create(model="socrates", messages=QUESTION, temperature=0,
                                         max_tokens=16, stop=[marker])
    assert cut.choices[0].finish_reason == "stop"
    assert marker not in cut.choices[0].message.content
    assert text.startswith(cut.choices[0].message.content.strip())


def test_twenty_concurrent_clients_get_their_characters_adapters(ws, server, tiny_model_dir):
    """Greedy fp32: each reply equals the same request served alone, and the reply of an
    independent model loaded with that character's adapter alone."""
    url, app = server
    runs = runs_by_character(ws)
    questions = ["What do you think of your father?", "Tell me about Vienna.",
                 "Do you know the telephone?", "What is music to you?", "Who taught you?"]
    # Each question goes to all three characters (rows of different lengths: max_tokens
    # differs by question).
    asks = [(["beethoven", "socrates", "diogenes"][i % 3], questions[i % 5], 6 + 2 * (i % 5))
            for i in range(20)]

    async def ask(client, model, question, tokens):
        answer = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}], temperature=0,
            max_tokens=tokens)
        return answer.choices[0].message.content

    async def scenario():
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x",
                                      max_retries=0) as client:
            alone = [await ask(client, *a) for a in asks]
            engines = {id(m.backend.engine): m.backend.engine for m in
                       app.state.catalogue.models.values()}
            before = {key: engine.largest_batch for key, engine in engines.items()}
            together = await asyncio.gather(*(ask(client, *a) for a in asks))
            return alone, together, before, engines

    alone, together, before, engines = asyncio.run(scenario())
    assert len(engines) == 1, "one base in memory: the prompted character shares it"
    assert together == alone
    (engine,) = engines.values()
    assert engine.largest_batch > max(*before.values(), 1), "answered alone, then batched"
    by_model = {}
    for (model, question, tokens), reply in zip(asks, alone, strict=True):
        by_model.setdefault((question, tokens), {})[model] = reply
    assert all(len(replies) == 3 for replies in by_model.values())
    assert sum(len(set(replies.values())) == 3 for replies in by_model.values()) >= 4, \
        "three characters, three different replies"

    catalogue = app.state.catalogue
    for name in ("beethoven", "socrates"):
        folder, _ = runs[name]
        reference = LocalChatModel(LocalConfig(path=str(tiny_model_dir), adapter=str(folder),
                                               dtype="float32"))
        model, question, tokens = next(a for a in asks if a[0] == name)
        messages = catalogue.get(name).messages(
            [ChatMessage(role="user", content=question)], Scene())
        expected = asyncio.run(reference.chat(messages, Sampling(temperature=0,
                                                                 max_tokens=tokens)))
        reference.engine.close()
        assert expected.text == alone[asks.index((model, question, tokens))]


def test_the_server_prompts_a_trained_agent_as_it_was_trained(ws, server):
    """The scene and stage of a request reach the model as the training record's system
    message does: the learned reply follows exactly the prompt the server builds."""
    _, app = server
    served = app.state.catalogue.get("beethoven")
    character = served.character
    record = [{"role": "system", "content": meta_prompt(character, "Vienna, 1802",
                                                        "Beethoven walks alone.")},
              {"role": "user", "name": "Lily", "content": "Master, the bread?"},
              {"role": "assistant", "content": "I was born in Bonn."}]
    tokenizer = served.backend.tokenizer_for(served.adapter)
    (sample,) = chat_samples(tokenizer, record, source="experience")
    start = next(i for i, label in enumerate(sample.labels) if label != -100)
    asked = served.messages([ChatMessage(role="user", name="Lily", content="Master, the bread?")],
                            Scene(location="Vienna, 1802", status="Beethoven walks alone."))
    assert served.backend.prompt_ids(asked, adapter=served.adapter) == sample.input_ids[:start]
    assert asked[0].content == stage_marked(record[0]["content"], None)


def post(url: str, body: bytes | str, headers: dict[str, str] | None = None) -> httpx.Response:
    data = body.encode() if isinstance(body, str) else body
    return httpx.post(f"{url}/v1/chat/completions", content=data, timeout=60,
                      headers={"Content-Type": "application/json", **(headers or {})})


@pytest.mark.parametrize("body,status,needle", [
    ('{"model": "nobody", "messages": [{"role": "user", "content": "hi"}]}', 404,
     "does not exist"),
    ('{"model": "../../etc/passwd", "messages": [{"role": "user", "content": "hi"}]}', 404,
     "does not exist"),
    ('{"model": "beethoven", "messages": [', 400, "not JSON"),
    ('{"model": "beethoven"}', 400, "messages"),
    ('{"model": "beethoven", "messages": [{"role": "wizard", "content": "hi"}]}', 400, "role"),
    ('{"model": "beethoven", "n": 1000000, "messages": [{"role": "user", "content": "hi"}]}',
     400, "n must be 1"),
    ('{"model": "beethoven", "max_tokens": 1000000000, '
     '"messages": [{"role": "user", "content": "hi"}]}', 400, "at most 4,096"),
    ('{"model": "beethoven", "messages": [{"role": "user", "content": "hi"}], '
     '"metadata": {"stage": "old"}}', 400, "no stage"),
    ('[1, 2]', 400, "JSON object"),
])
def test_bad_requests_get_openai_errors(server, body, status, needle):
    url, _ = server
    answer = post(url, body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert needle in error["message"] and error["type"] and "\n" not in error["message"]


def test_a_prompt_over_the_context_and_a_huge_body_are_refused(server, client):
    url, _ = server
    long = {"model": "beethoven", "messages": [{"role": "user", "content": "music " * 2000}]}
    answer = post(url, json.dumps(long))
    assert answer.status_code == 400
    assert "context is 512 tokens" in answer.json()["error"]["message"]
    assert answer.json()["error"]["code"] == "context_length_exceeded"
    huge = post(url, b'{"model": "beethoven", "messages": [{"role": "user", "content": "'
                + b"a" * 20_000_000 + b'"}]}')
    assert huge.status_code == 413
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nobody", messages=QUESTION)
    # ...and the server goes on serving.
    assert client.chat.completions.create(model="diogenes", messages=QUESTION,
                                          **GREEDY).choices[0].message.content is not None


def test_an_api_key_guards_every_v1_route_and_reasoning_comes_apart(tmp_path, ws):
    """Auth on; a prompted character through an upstream endpoint whose replies think
    aloud: the thinking is `reasoning_content`, never in `content`; a full house is 429."""
    reply = "<think>He asks of my father. Careful.</think>\nMy father was harsh."
    with ScriptedOpenAIServer(responder=lambda _request: reply) as upstream:
        import yaml

        config = yaml.safe_load(ws.config_path.read_text())
        config["models"]["upstream"] = {"backend": "openai", "model": "scripted",
                                        "base_url": upstream.base_url, "api_key_env": None,
                                        "max_retries": 0}
        ws.config_path.write_text(yaml.safe_dump(config))
        from charforge.workspace import Workspace

        fresh = Workspace(ws.root)
        app = create_app(fresh, ServeSettings(model="upstream", api_key="sesame",
                                              limits=Limits(max_in_flight=1)))
        with serving(app) as url:
            for key in (None, "wrong"):
                headers = {"Authorization": f"Bearer {key}"} if key else {}
                answer = httpx.get(f"{url}/v1/models", headers=headers)
                assert answer.status_code == 401
                assert answer.json()["error"]["code"] == "invalid_api_key"
            assert httpx.get(f"{url}/health").status_code == 200
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="sesame", max_retries=0)
            answer = client.chat.completions.create(model="diogenes", messages=QUESTION)
            message = answer.choices[0].message
            assert message.content == "My father was harsh."
            assert message.model_extra["reasoning_content"] == "He asks of my father. Careful."
            stream = client.chat.completions.create(model="diogenes", messages=QUESTION,
                                                    stream=True)
            reasoning, content = "", ""
            for event in stream:
                for choice in event.choices:
                    content += choice.delta.content or ""
                    reasoning += (choice.delta.model_extra or {}).get("reasoning_content") or ""
            assert (reasoning, content) == ("He asks of my father. Careful.",
                                            "My father was harsh.")
            upstream.enqueue(Reply.slow(3.0, reply))  # held open: the house is full
            with httpx.stream("POST", f"{url}/v1/chat/completions",
                              headers={"Authorization": "Bearer sesame"},
                              json={"model": "diogenes", "messages": QUESTION,
                                    "stream": True}) as held:
                assert held.status_code == 200
                busy = post(url, json.dumps({"model": "diogenes", "messages": QUESTION}),
                            {"Authorization": "Bearer sesame"})
                assert busy.status_code == 429
            upstream.enqueue(Reply.server_error(500))  # the upstream fails: a 500, in shape
            failed = post(url, json.dumps({"model": "diogenes", "messages": QUESTION}),
                          {"Authorization": "Bearer sesame"})
            assert failed.status_code == 500
            assert failed.json()["error"]["message"].startswith("generation failed")
            assert client.chat.completions.create(model="diogenes", messages=QUESTION)
        sent = upstream.chat_requests[-1].json
        assert sent["messages"][0]["role"] == "system" and "Diogenes" in \
            sent["messages"][0]["content"]
    assert "sesame" not in json.dumps(sent)


def test_a_client_that_hangs_up_stops_its_generation(server):
    url, app = server
    engine = app.state.catalogue.get("beethoven").backend.engine
    steps = engine.steps
    with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=60,
                      json={"model": "beethoven", "messages": QUESTION, "stream": True,
                            "temperature": 0, "max_tokens": 400}) as answer:
        for line in answer.iter_lines():
            if '"content": "' in line and '"content": ""' not in line:
                break  # the first words: hang up
    deadline = time.monotonic() + 20
    while not engine.idle and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.idle, "the engine still works for a client that left"
    assert engine.steps - steps < 399, "the row left before its 400 tokens"


def test_a_released_character_llm_checkpoint_is_asked_in_its_own_format(ws, tiny_model_dir):
    """--checkpoint CHARACTER=FOLDER: the meta prompt as published, `Name (speaking):
    ...<|eot|>` turns, the character's turn opened; no chat template involved."""
    from charforge.serve.catalogue import character_llm_prompt

    app = create_app(ws, ServeSettings(checkpoints={"socrates": str(tiny_model_dir)}))
    with serving(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        answer = client.chat.completions.create(
            model="socrates/character-llm", messages=QUESTION, temperature=0, max_tokens=8,
            metadata={"location": "Athens, the agora"})
        served = app.state.catalogue.get("socrates/character-llm")
        prompt = character_llm_prompt(served.character, [ChatMessage(**QUESTION[0])],
                                      Scene(location="Athens, the agora"))
        tokenizer = served.backend.tokenizer_for(None)
    assert prompt.startswith("I want you to act like Socrates")
    assert "Location: Athens, the agora" in prompt
    assert prompt.endswith("Man (speaking): What do you think of your father?<|eot|>\n"
                           "Socrates (")
    assert answer.usage.prompt_tokens == len(tokenizer(prompt)["input_ids"])
    assert answer.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("cut", range(1, 40))
def test_thoughts_are_parted_wherever_the_stream_is_cut(cut):
    text = "<think>I weigh it.</think>\nNo, never <b>telephones</b>."
    splitter = ThoughtSplitter()
    parts = [p for i in range(0, len(text), cut) for p in splitter.feed(text[i:i + cut])]
    parts += splitter.close()
    reasoning = "".join(p.text for p in parts if p.kind == "reasoning")
    content = "".join(p.text for p in parts if p.kind == "content")
    assert (reasoning, content) == ("I weigh it.", "No, never <b>telephones</b>.")


def test_character_llm_blocks_end_at_another_speaker():
    reader = BlockReader("Beethoven", "Beethoven (")
    text = ("thinking): He mocks me.<|eot|>\nBeethoven (speaking): Leave my room.<|eot|>\n"
            "Man (speaking): Sorry.<|eot|>\nBeethoven (speaking): never seen")
    parts = [p for i in range(0, len(text), 7) for p in reader.feed(text[i:i + 7])]
    assert reader.ended
    assert [(p.kind, p.text.strip()) for p in parts] == [("reasoning", "He mocks me."),
                                                         ("content", "Leave my room.")]
