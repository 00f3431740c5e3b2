"""LocalChatModel on a tiny random Llama (fast) and the embedded SmolLM2."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from charforge.errors import ConfigError
from charforge.llm.base import ChatModel, Sampling
from charforge.llm.grammar import HINTS_KEY
from charforge.llm.local import LocalChatModel, LocalConfig

QUESTION = [
    {"role": "system", "content": "You are Beethoven."},
    {"role": "user", "content": "What do you think of your father?"},
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir) -> LocalChatModel:
    model = LocalChatModel(LocalConfig(path=str(tiny_model_dir), dtype="float32"), name="tiny")
    model.load()
    return model


def chat(model, messages=QUESTION, *, response_format=None, **sampling):
    return asyncio.run(model.chat(messages, Sampling(**sampling),
                                  response_format=response_format))


def test_is_a_chat_model(tiny):
    assert isinstance(tiny, ChatModel)


def test_answer_counts_the_templated_prompt_and_new_tokens(tiny):
    before = tiny.stats.requests
    completion = chat(tiny, temperature=0, max_tokens=12)
    prompt = tiny.tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True)
    ids = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
    assert completion.usage.prompt_tokens == len(ids)
    assert 0 < completion.usage.completion_tokens <= 12
    assert completion.model == "tiny"
    assert tiny.stats.requests == before + 1


def test_hitting_max_tokens_is_reported_as_truncated(tiny):
    completion = chat(tiny, temperature=0, max_tokens=5)
    assert completion.usage.completion_tokens == 5
    assert completion.finish_reason == "length"
    assert completion.truncated


def test_stop_string_cuts_the_answer(tiny):
    full = chat(tiny, temperature=0, max_tokens=40).text
    assert len(full) > 12, full
    stop = full[8:11]
    cut_at = full.find(stop)
    completion = chat(tiny, temperature=0, max_tokens=40, stop=(stop,))
    assert completion.text == full[:cut_at].strip()
    assert completion.finish_reason == "stop"
    assert stop not in completion.text


def test_seed_makes_sampling_repeatable(tiny):
    first = chat(tiny, temperature=1.0, max_tokens=20, seed=7).text
    again = chat(tiny, temperature=1.0, max_tokens=20, seed=7).text
    other = chat(tiny, temperature=1.0, max_tokens=20, seed=8).text
    assert first == again
    assert first != other


def test_generation_runs_off_the_event_loop(tiny):
    async def scenario():
        ticks = 0
        done = False

        async def ticker():
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        started = time.perf_counter()
        await tiny.chat(QUESTION, Sampling(temperature=0, max_tokens=120))
        elapsed = time.perf_counter() - started
        done = True
        await task
        return ticks, elapsed

    ticks, elapsed = asyncio.run(scenario())
    # A blocked loop would tick once; a free one ticks throughout generation.
    assert ticks >= max(3, int(elapsed / 0.01)), (ticks, elapsed)


def test_concurrent_chats_all_complete(tiny):
    async def many():
        return await asyncio.gather(
            *(tiny.chat(QUESTION, Sampling(temperature=0, max_tokens=8)) for _ in range(4))
        )

    results = asyncio.run(many())
    assert len({r.text for r in results}) == 1  # greedy: same prompt, same answer


SPEAKERS_SCHEMA = {
    "type": "object",
    "properties": {"turns": {"type": "array", "items": {
        "type": "object",
        "properties": {"speaker": {"enum": ["Beethoven", "Karl"]},
                       "action": {"enum": ["thinking", "speaking"]}},
        "required": ["speaker", "action"], "additionalProperties": False}}},
    "required": ["turns"], "additionalProperties": False,
}


def test_json_schema_answers_are_valid_even_from_a_random_model(tiny):
    """A random model left alone writes noise; under the grammar every answer parses and
    matches the schema (the item bounds come from charforge's hints)."""
    form = {"type": "json_schema", "json_schema": {"name": "t", "schema": SPEAKERS_SCHEMA},
            HINTS_KEY: {"items": {"turns": [2, 3]}}}
    for seed in range(3):
        completion = chat(tiny, response_format=form, temperature=1.0, max_tokens=400, seed=seed)
        assert completion.finish_reason == "stop", completion.text
        data = json.loads(completion.text)
        assert 2 <= len(data["turns"]) <= 3, completion.text
        for turn in data["turns"]:
            assert turn["speaker"] in ("Beethoven", "Karl") and set(turn) == {"speaker", "action"}
    plain = chat(tiny, temperature=1.0, max_tokens=40, seed=0)
    with pytest.raises(json.JSONDecodeError):
        json.loads(plain.text)


def test_unsupported_response_format_is_one_clear_line(tiny):
    with pytest.raises(ConfigError, match="unsupported response_format 'grammar'"):
        chat(tiny, response_format={"type": "grammar"})


@pytest.mark.parametrize(
    ("path", "message"),
    [("./no-such-model", "not a model folder"), ("someone/not-cached-model", "cannot load")],
)
def test_unloadable_model_is_one_clear_line(tmp_path, monkeypatch, path, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    model = LocalChatModel(LocalConfig(path=path), name="broken")
    with pytest.raises(ConfigError, match=message) as info:
        model.load()
    assert "\n" not in str(info.value)


def test_from_config_names_the_bad_field():
    with pytest.raises(ConfigError, match=r"model 'x': dtype"):
        LocalChatModel.from_config("x", {"dtype": "int3"})


@pytest.mark.integration
def test_embedded_smollm2_answers_in_character():
    from charforge.llm.embedded import smollm2_gguf

    assert smollm2_gguf().stat().st_size > 50_000_000
    model = LocalChatModel(name="smollm2")
    completion = chat(model, temperature=0.2, max_tokens=48, seed=0)
    assert completion.usage.completion_tokens > 0
    assert sum(ch.isalpha() for ch in completion.text) > 10, completion.text
    assert completion.finish_reason in ("stop", "length")
    assert "helpful AI assistant named SmolLM" not in completion.text


@pytest.mark.integration
def test_gguf_file_loads_directly():
    from charforge.llm.embedded import smollm2_gguf

    model = LocalChatModel(LocalConfig(path=str(smollm2_gguf()), dtype="float32"), name="gguf")
    completion = chat(model, temperature=0, max_tokens=8)
    assert completion.usage.completion_tokens > 0


def test_hub_id_loads_from_the_local_cache_without_network(tmp_path, tiny_model_dir):
    """A model already in the Hugging Face cache loads by its hub id, offline."""
    import shutil
    import subprocess
    import sys

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--charforge-test--tiny-llama"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    script = (
        "import asyncio\n"
        "from charforge.llm.local import LocalChatModel, LocalConfig\n"
        "m = LocalChatModel(LocalConfig(path='charforge-test/tiny-llama'), name='hub')\n"
        "from charforge.llm.base import Sampling\n"
        "c = asyncio.run(m.chat([{'role': 'user', 'content': 'hi'}], Sampling(max_tokens=4)))\n"
        "print(c.usage.completion_tokens)\n"
    )
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "4"


def test_embedded_minilm_is_found_offline():
    from charforge.llm.embedded import minilm_dir

    folder = minilm_dir()
    assert (folder / "config.json").is_file()
    assert any(folder.glob("*.safetensors")) or any(folder.rglob("*.bin"))
