"""The prefix cache: a prompt that opens like one read before (same adapter) starts
from the kept states of that opening, and answers exactly as if read whole."""

from __future__ import annotations

import asyncio

import pytest

from charforge.llm.base import Sampling
from charforge.llm.local import LocalChatModel, LocalConfig
from charforge.llm.prefixes import Prefix, PrefixCache
from charforge.llm.sampling import nucleus_of

SYSTEM = ("You are Ludwig van Beethoven, composer, in Vienna in 1824; you are deaf, proud, "
          "and you speak of music as the one thing that never lied to you.")
QUESTIONS = ["What do you think of your father?", "telephones?", "The symphony, the sonata",
             "Who taught you counterpoint?", "Is Vienna kind to you?"]


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    from tiny_models import build_tiny_adapter

    root = tmp_path_factory.mktemp("prefix-adapters")
    return {name: build_tiny_adapter(tiny_model_dir, root / name, seed=seed, scale=0.5)
            for seed, name in enumerate(["a", "b"], start=1)}


def model(tiny_model_dir, adapters, **options) -> LocalChatModel:
    return LocalChatModel(LocalConfig(path=str(tiny_model_dir), dtype="float32", **options),
                          name="tiny", adapters=adapters)


def ask_all(chat_model, asks):
    """Every (adapter, system, question) of `asks` at once, greedy: their replies."""
    async def every():
        return await asyncio.gather(*[
            chat_model.chat([{"role": "system", "content": system},
                             {"role": "user", "content": question}],
                            Sampling(temperature=0.0, max_tokens=12), adapter=adapter)
            for adapter, system, question in asks])
    return [completion.text for completion in asyncio.run(every())]


def test_a_kept_opening_answers_as_the_prompt_read_whole(tiny_model_dir, adapters):
    asks = [(adapter, SYSTEM, question) for adapter in ("a", "b", "__base__")
            for question in QUESTIONS[:3]]
    asks.append(("a", "You are Socrates, and you only ask questions back.", QUESTIONS[3]))
    plain = model(tiny_model_dir, adapters, prefix_cache_mib=0)
    expected = [ask_all(plain, [item])[0] for item in asks]
    assert plain.model.active_adapter == "a", "a step of one adapter runs it as the active one"
    plain.shutdown()
    assert expected[0] != expected[3], "adapters a and b answer differently"

    cached = model(tiny_model_dir, adapters)
    firsts = [asks[0], asks[3], asks[6]]  # one read whole per adapter: its opening kept
    assert ask_all(cached, firsts) == [expected[0], expected[3], expected[6]]
    prefixes = cached.engine.prefixes
    assert (len(prefixes), prefixes.hits) == (3, 0), "one entry per adapter, none used yet"
    assert ask_all(cached, asks) == expected  # hits and a miss in one prefill
    assert prefixes.hits >= 6 and prefixes.tokens_saved >= 6 * prefixes.min_tokens
    assert len(prefixes) == 4, "Socrates' opening kept too"
    cached.shutdown()


def test_the_opening_runs_to_the_end_of_the_system_message(tiny_model_dir):
    from charforge.llm.base import as_messages

    chat_model = LocalChatModel(LocalConfig(path=str(tiny_model_dir), dtype="float32"))
    chat_model.load()
    chat = as_messages([{"role": "system", "content": SYSTEM},
                        {"role": "user", "content": QUESTIONS[0]}])
    request = chat_model.engine_request(chat, Sampling())
    tokenizer = chat_model.tokenizer_for()
    head = tokenizer.decode(request.prompt_ids[:request.prefix])
    assert SYSTEM[:-3] in head and QUESTIONS[0] not in head
    assert len(request.prompt_ids) - request.prefix < 30, "only the question's turn is left"
    user_only = as_messages([{"role": "user", "content": QUESTIONS[0]}])
    no_system = chat_model.engine_request(user_only, Sampling())
    assert no_system.prefix == 0
    chat_model.shutdown()


def test_prefix_cache_keeps_the_recent_within_its_budget():
    import torch

    def entry(adapter: str, ids: range) -> Prefix:
        states = torch.zeros((1, 2, len(ids), 4))  # 32 bytes a token a tensor
        return Prefix(adapter, tuple(ids), ((states, states.clone()),))

    cache = PrefixCache(budget_bytes=64 * 40, min_tokens=4)
    cache.store(entry("a", range(20)))
    cache.store(entry("b", range(20)))
    assert len(cache) == 2 and cache.nbytes == 2 * 20 * 64
    found = cache.longest("a", [*range(10), 99, 98])
    assert found is not None and found[1] == 10
    assert cache.longest("a", [0, 1, 2, 99]) is None, "under min_tokens"
    assert cache.longest("c", list(range(20))) is None, "another adapter's states"
    assert cache.longest("b", list(range(20)))[1] == 19, "the last token is always read"
    cache.store(entry("c", range(5)))  # over budget: the least recently used (a) goes
    assert len(cache) == 2 and cache.longest("a", list(range(20))) is None
    cache.store(entry("d", range(100)))  # larger than the whole budget: not kept
    assert cache.longest("d", list(range(100))) is None and cache.nbytes <= cache.budget_bytes
    assert not cache.wants("b", range(20)) and cache.wants("b", range(21))


def test_nucleus_matches_a_full_sort():
    import torch

    torch.manual_seed(0)
    scaled = torch.randn(4, 1000) * 4
    scaled[3] = torch.randn(1000) * 0.01  # flat: its nucleus is wider than the top 256
    top_p = torch.tensor([0.9, 0.5, 0.99, 0.95])
    probs, order = nucleus_of(scaled, top_p)
    full = torch.softmax(scaled, dim=-1)
    for row in range(4):
        ranked, ids = torch.sort(full[row], descending=True)

        def nucleus(p: float) -> set[int]:
            return {int(i) for i in ids[: int((ranked.cumsum(0) - ranked <= p).sum())]}  # noqa: B023

        chosen = {int(i): float(p) for i, p in zip(order[row], probs[row], strict=True) if p > 0}
        assert nucleus(float(top_p[row]) - 1e-5) <= set(chosen) <= nucleus(float(top_p[row]) + 1e-5)
        for token, p in chosen.items():
            assert p == pytest.approx(float(full[row, token]), rel=1e-4)
    assert len(chosen) > 256


def test_draw_follows_each_rows_probabilities_with_its_own_generator():
    import torch

    from charforge.llm.sampling import draw

    # the second row is not normalised
    probs = torch.tensor([[0.0, 0.2, 0.0, 0.6, 0.2], [1.0, 1.0, 0.0, 0.0, 2.0]])
    counts = torch.zeros_like(probs)
    generators = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    for _ in range(4000):
        picks = draw(probs, generators).squeeze(1)
        counts[0, picks[0]] += 1
        counts[1, picks[1]] += 1
    share = counts / 4000
    expected = probs / probs.sum(-1, keepdim=True)
    assert torch.allclose(share, expected, atol=0.03), share
    assert counts[0, 0] == counts[0, 2] == counts[1, 2] == counts[1, 3] == 0
    again = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    first = draw(probs, again).squeeze(1).tolist()
    assert first == draw(probs, [torch.Generator().manual_seed(1),
                                  torch.Generator().manual_seed(2)]).squeeze(1).tolist()
