"""Adapters in a batch: kept in the base's precision, computed in float32, each row
through its own adapter."""

from __future__ import annotations

import pytest

from charforge.llm.engine import BatchEngine, EngineRequest, Finished

from tiny_models import build_tiny_adapter


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed-adapters")
    return {name: build_tiny_adapter(tiny_model_dir, root / name, seed=seed, scale=0.5)
            for seed, name in enumerate(("ada", "tesla"))}


def _peft_model(tiny_model_dir, adapters, dtype):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=dtype).eval()
    names = list(adapters)
    model = PeftModel.from_pretrained(base, str(adapters[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(str(adapters[name]), adapter_name=name)
    assert model.base_model.model.model.layers[0].self_attn.q_proj.lora_A[names[0]] \
        .weight.dtype == torch.float32  # PEFT's own choice beside a bfloat16 base
    return model.eval()


def _ask(engine, tokenizer, text, adapter, max_tokens=8):
    import threading

    prompt = tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                           add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    done = threading.Event()
    ended: list[Finished] = []

    def sink(event):
        if isinstance(event, Finished):
            ended.append(event)
            done.set()

    engine.submit(EngineRequest(ids, tokenizer, adapter=adapter, max_tokens=max_tokens,
                                eos_ids=frozenset({tokenizer.eos_token_id})), sink)
    assert done.wait(60)
    return ids, ended[0].text


def _lora_bytes(model, name):
    return sum(p.element_size() * p.nelement() for key, p in model.named_parameters()
               if f".{name}." in key and "lora_" in key)


def test_adapters_are_kept_in_the_base_precision_and_computed_in_float32(
        tiny_model_dir, adapters):
    """Beside a bfloat16 base the engine keeps each adapter in bfloat16 (half PEFT's
    float32 copy), and a row's reply is the one PEFT gives with the adapter's weights
    rounded to bfloat16 and its arithmetic in float32."""
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = _peft_model(tiny_model_dir, adapters, torch.bfloat16)
    before = _lora_bytes(model, "ada")
    engine = BatchEngine(model, max_batch=4)
    try:
        assert _lora_bytes(model, "ada") * 2 == before
        replies = {name: _ask(engine, tokenizer, "I was born in Bonn", name) for name in adapters}
    finally:
        engine.close()

    reference = _peft_model(tiny_model_dir, adapters, torch.bfloat16)
    with torch.no_grad():
        for key, weight in reference.named_parameters():
            if "lora_" in key:
                weight.copy_(weight.to(torch.bfloat16).to(torch.float32))
    for name, (ids, text) in replies.items():
        reference.set_adapter(name)
        with torch.inference_mode():
            out = reference.generate(input_ids=torch.tensor([ids]), do_sample=False,
                                     max_new_tokens=8, eos_token_id=tokenizer.eos_token_id,
                                     pad_token_id=tokenizer.eos_token_id)
        assert text == tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)
    assert replies["ada"][1] != replies["tesla"][1]  # the adapters do change the replies


def test_a_float32_base_keeps_its_adapters_as_they_are(tiny_model_dir, adapters):
    import torch

    model = _peft_model(tiny_model_dir, adapters, torch.float32)
    before = _lora_bytes(model, "tesla")
    engine = BatchEngine(model, max_batch=4)
    engine.close()
    assert _lora_bytes(model, "tesla") == before


def test_a_layer_adds_each_rows_adapter_in_float32(tiny_model_dir, adapters):
    """One LoRA layer, rows of two adapters and the base in one call, and a call whose
    rows share one adapter: each row gets base(x) + B(A(x)) * scaling with the
    (bfloat16-kept) matrices in float32, exactly as computed here by hand."""
    import torch
    from torch.nn.functional import linear

    from charforge.llm.mixed_lora import MixedLoRA

    model = _peft_model(tiny_model_dir, adapters, torch.bfloat16)
    mixed = MixedLoRA.install(model)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.randn(3, 5, layer.in_features, generator=torch.Generator().manual_seed(0)) \
        .to(torch.bfloat16)

    def by_hand(rows, name):
        base = layer.base_layer(rows)
        if name is None:
            return base
        change = linear(linear(rows.float(), layer.lora_A[name].weight.float()),
                        layer.lora_B[name].weight.float()) * layer.scaling[name]
        return base, change

    with torch.inference_mode():
        mixed.plan(["ada", "__base__", "tesla"], "__base__", "cpu")
        out = layer(x)
        for i, name in enumerate(["ada", None, "tesla"]):
            if name is None:
                assert torch.equal(out[1], by_hand(x[1:2], None)[0])
            else:
                base, change = by_hand(x[i:i + 1], name)
                assert torch.equal(out[i], (base + change.to(torch.bfloat16))[0])
        mixed.plan(["tesla"] * 3, "__base__", "cpu")
        out = layer(x)
        base, change = by_hand(x, "tesla")
        assert torch.equal(out, (base + change).to(torch.bfloat16))
    mixed.rows = None
    mixed.remove()


def test_a_local_model_keeps_each_adapter_compact_as_it_loads(tiny_model_dir, adapters):
    """`LocalChatModel` compacts each adapter right after loading it, so a server
    loading many never holds all their float32 copies at once."""
    import torch

    from charforge.llm.local import LocalChatModel, LocalConfig

    model = LocalChatModel(LocalConfig(path=str(tiny_model_dir), dtype="bfloat16"),
                           adapters=adapters)
    model.load()
    dtypes = {key: p.dtype for key, p in model.model.named_parameters() if "lora_" in key}
    assert len(dtypes) == 2 * 2 * 2 * len(adapters)  # A and B, q and v, 2 layers
    assert set(dtypes.values()) == {torch.bfloat16}
