"""The batched engine on a tiny model: rows join between steps, keep their own
settings, stream, and leave when cancelled, without changing anyone else's reply."""

from __future__ import annotations

import json
import threading
import time

import pytest

from charforge.llm.engine import BatchEngine, Delta, EngineRequest, Finished

PROMPTS = ["I was born in Bonn", "music was my refuge", "what do you think of your father",
           "telephones?", "The symphony, the sonata"]


class Collector:
    """Events of submitted requests, by index, with when each ended."""

    def __init__(self) -> None:
        self.deltas: dict[int, list[str]] = {}
        self.done: dict[int, Finished] = {}
        self.ended_at: dict[int, float] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def sink(self, index: int):
        def receive(event):
            with self._changed:
                if isinstance(event, Delta):
                    self.deltas.setdefault(index, []).append(event.text)
                elif isinstance(event, Finished):
                    self.done[index] = event
                    self.ended_at[index] = time.monotonic()
                self._changed.notify_all()
        return receive

    def wait(self, count: int, timeout: float = 60) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.done) >= count, timeout), self.done


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    engine = BatchEngine(model, max_batch=8)
    yield engine, tokenizer
    engine.close()


def request(tokenizer, text: str, **settings) -> EngineRequest:
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                           add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return EngineRequest(ids, tokenizer, eos_ids=frozenset({tokenizer.eos_token_id}),
                         **{"max_tokens": 10, **settings})


def run(engine, requests, gap: float = 0.0) -> Collector:
    collector = Collector()
    for index, item in enumerate(requests):
        engine.submit(item, collector.sink(index))
        time.sleep(gap)
    collector.wait(len(requests))
    return collector


def test_rows_in_a_batch_equal_rows_alone_and_stream_their_text(engine):
    engine, tokenizer = engine
    requests = [request(tokenizer, PROMPTS[i % 5], max_tokens=4 + 3 * i) for i in range(8)]
    alone = [run(engine, [item]).done[0] for item in requests]
    together = run(engine, requests, gap=0.01)
    assert [together.done[i].text for i in range(8)] == [a.text for a in alone]
    for index, finished in together.done.items():
        assert "".join(together.deltas.get(index, [])) == finished.text
        assert finished.completion_tokens == requests[index].max_tokens
        assert finished.reason == "length"


def test_a_newcomer_does_not_wait_for_the_running_batch(engine):
    engine, tokenizer = engine
    long = request(tokenizer, PROMPTS[0], max_tokens=150)
    short = request(tokenizer, PROMPTS[1], max_tokens=3)
    collector = Collector()
    engine.submit(long, collector.sink(0))
    time.sleep(0.05)
    engine.submit(short, collector.sink(1))
    collector.wait(2)
    assert collector.ended_at[1] < collector.ended_at[0], "the short reply ended first"


def test_seeds_sampling_and_cancel_are_per_row(engine):
    engine, tokenizer = engine
    sampled = [request(tokenizer, PROMPTS[2], temperature=1.0, top_p=0.9, seed=seed,
                       max_tokens=12) for seed in (1, 2, 1)]
    greedy = request(tokenizer, PROMPTS[3], max_tokens=12)
    doomed = request(tokenizer, PROMPTS[4], max_tokens=200)
    collector = Collector()
    jobs = [engine.submit(item, collector.sink(i))
            for i, item in enumerate([*sampled, greedy, doomed])]
    time.sleep(0.05)
    jobs[4].cancel()
    collector.wait(5)
    assert collector.done[4].reason == "cancelled"
    assert collector.done[0].text == collector.done[2].text, "same seed, same reply"
    assert collector.done[0].text != collector.done[1].text
    assert collector.done[3].text == run(engine, [greedy]).done[0].text


def test_a_stop_string_is_never_streamed(engine):
    engine, tokenizer = engine
    whole = run(engine, [request(tokenizer, PROMPTS[0], max_tokens=20)]).done[0].text
    marker = whole[len(whole) // 2: len(whole) // 2 + 3]
    assert len(marker) == 3
    cut = run(engine, [request(tokenizer, PROMPTS[0], max_tokens=20, stop=(marker,))])
    assert cut.done[0].reason == "stop"
    assert cut.done[0].text == whole[: whole.index(marker)]
    assert "".join(cut.deltas.get(0, [])) == cut.done[0].text


def test_a_grammar_row_and_a_free_row_share_a_batch(engine):
    engine, tokenizer = engine
    from charforge.llm.grammar import GrammarCompiler

    schema = {"type": "object", "properties": {"mood": {"enum": ["calm", "angry"]}},
              "required": ["mood"], "additionalProperties": False}
    compiled = GrammarCompiler(tokenizer, engine._vocab).compile(schema)
    constrained = request(tokenizer, PROMPTS[1], max_tokens=30, grammar=compiled)
    free = request(tokenizer, PROMPTS[2], max_tokens=30)
    together = run(engine, [constrained, free])
    assert json.loads(together.done[0].text)["mood"] in ("calm", "angry")
    assert together.done[1].text == run(engine, [free]).done[0].text


def test_greedy_rows_equal_transformers_generate(engine):
    """The engine's own cache handling (rows joined, trimmed, appended in place past
    its spare slots) gives the tokens transformers' `generate` gives."""
    import torch

    engine, tokenizer = engine
    requests = [request(tokenizer, PROMPTS[i], max_tokens=45) for i in (0, 3)]
    together = run(engine, requests, gap=0.02)
    for index, item in enumerate(requests):
        with torch.inference_mode():
            out = engine.model.generate(torch.tensor([list(item.prompt_ids)]), do_sample=False,
                                        max_new_tokens=45, eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.eos_token_id)
        expected = tokenizer.decode(out[0, len(item.prompt_ids):], skip_special_tokens=True)
        assert together.done[index].text == expected


def test_the_output_layer_gets_its_rows_packed(tiny_model_dir):
    """A prefill keeps only each row's last position: a strided view of the prompt's
    hidden states. torch multiplies such a view by a frozen weight through a copy of the
    whole weight (71 ms a row on SmolLM2), so the engine hands the output layer packed
    rows; the replies are the same."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    model.requires_grad_(False)  # as a PEFT model's base
    seen: dict[str, list[tuple[int, int]]] = {"given": [], "used": []}

    def record(key):
        def hook(_module, args):
            hidden = args[0]
            seen[key].append((hidden.stride(0), hidden.shape[1] * hidden.shape[2]))
        return hook

    head = model.get_output_embeddings()
    handles = [head.register_forward_pre_hook(record("given"), prepend=True)]
    engine = BatchEngine(model, max_batch=4)
    handles.append(head.register_forward_pre_hook(record("used")))
    try:
        requests = [request(tokenizer, text, max_tokens=6) for text in PROMPTS[:3]]
        replies = run(engine, requests)
    finally:
        engine.close()
        for handle in handles:
            handle.remove()
    assert any(stride != packed for stride, packed in seen["given"])  # prefills' views
    assert seen["used"] and all(stride == packed for stride, packed in seen["used"])
    for index, item in enumerate(requests):
        with torch.inference_mode():
            out = model.generate(torch.tensor([list(item.prompt_ids)]), do_sample=False,
                                 max_new_tokens=6, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.eos_token_id)
        expected = tokenizer.decode(out[0, len(item.prompt_ids):], skip_special_tokens=True)
        assert replies.done[index].text == expected
