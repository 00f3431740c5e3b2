"""`charforge.train.dpo`: real DPO training of a tiny Llama on CPU, from a real SFT run.

The prompts open with a stage token, so the SFT adapter trains token rows
(`trainable_token_indices`): the reference must carry them too (TRL's own copy of the
adapter misses them)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from charforge.errors import CharforgeError

CHOSEN = [
    "I was born in Bonn and moved to Vienna to study with Haydn.",
    "My father taught me harshly; music was my refuge and my work.",
    "The symphony, the sonata and the quartet: forms I made my own.",
    "Music was my refuge; I made the symphony my own in Vienna.",
]
REJECTED = [
    "As an AI language model, I cannot have a father or feelings.",
    "Sure! Here are 5 fun facts: 1) TikTok 2) Wi-Fi 3) GPUs 4) emojis 5) memes.",
    "LOL idk, google it on your smartphone lmao #music #vibes",
]
TRAIN_QUESTIONS = [
    "Where were you born?", "Who taught you music?", "What do you think of your father?",
    "Which forms did you make your own?", "Why did you move to Vienna?",
    "What was your refuge?", "Tell me about your work.", "What is a symphony to you?",
]
TEST_QUESTIONS = ["Who was Haydn to you?", "What of your mother?",
                  "How do you compose?", "What is your work?"]
SYSTEM = "<TIME-I>\nYou are Ludwig van Beethoven, a composer born in Bonn. Answer as him."
BETA = 0.5
DPO_CHANGES = {"max_steps": 24, "effective_batch": 4, "precision": "fp32",
               "dpo_learning_rate": 5e-3, "dpo_beta": BETA, "scheduler": "constant",
               "warmup_steps": 0, "save_steps": 100, "eval_steps": 100}


def _pair(question: str, i: int, split: str) -> dict:
    return {"prompt": [{"role": "system", "content": SYSTEM},
                       {"role": "user", "content": question}],
            "chosen": [{"role": "assistant", "content": CHOSEN[i % len(CHOSEN)]}],
            "rejected": [{"role": "assistant", "content": REJECTED[i % len(REJECTED)]}],
            "source": "other_character", "character": "beethoven", "task_id": f"{split}{i}",
            "split": split}


def _write_data(folder: Path, *, system: str = SYSTEM) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    sft = [{"messages": [{"role": "system", "content": system},
                         {"role": "user", "name": "Lily", "content": question},
                         {"role": "assistant", "content": CHOSEN[i % len(CHOSEN)]}],
            "source": "answer", "task_id": f"s{i}", "split": "train"}
           for i, question in enumerate(TRAIN_QUESTIONS)]
    pairs = [_pair(q, i, "train") for i, q in enumerate(TRAIN_QUESTIONS)]
    pairs += [_pair(q, i + 1, "test") for i, q in enumerate(TEST_QUESTIONS)]
    for row in pairs:
        row["prompt"][0]["content"] = system
    (folder / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft))
    (folder / "dpo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A tiny model gains nothing from a second thread, and on a busy machine threads that
    wait for each other make each step ten times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(one_thread: None, tmp_path_factory: pytest.TempPathFactory):
    """A workspace with Beethoven, his data, an SFT run (LoRA, stage tokens) and a DPO run."""
    from charforge.train.dpo import train_dpo
    from charforge.train.sft import train_sft
    from charforge.workspace import Workspace

    from tiny_models import build_tiny_chat_model

    tmp = tmp_path_factory.mktemp("dpo")
    tiny = build_tiny_chat_model(tmp / "tiny")
    ws = Workspace.init(tmp / "ws")
    profile = tmp / "b.txt"
    profile.write_text("# Ludwig van Beethoven\n\nLudwig van Beethoven was a composer born "
                       "in Bonn.\n")
    character = ws.import_character(profile, short_name="Beethoven")
    _write_data(ws.datasets_dir / character.slug)
    sft = train_sft(ws, "Beethoven", base=str(tiny),
                    changes={"max_steps": 4, "effective_batch": 4, "precision": "fp32",
                             "lora_learning_rate": 3e-2})
    assert sft.trained and sft.record.data["stage_tokens"] == 5
    dpo = train_dpo(ws, "Beethoven", changes=DPO_CHANGES)
    return ws, character, tiny, sft, dpo


def _test_pairs(ws, character, tokenizer) -> list[dict]:
    from charforge.train.data import read_jsonl
    from charforge.train.dpo import tokenized_pair

    rows = read_jsonl(ws.datasets_dir / character.slug / "dpo.jsonl")
    return [tokenized_pair(tokenizer, row) for row in rows if row["split"] == "test"]


def _log_probs(model, pairs: list[dict]) -> tuple[list[float], list[float]]:
    """Summed log-probabilities of each pair's chosen and rejected reply, computed here
    (plain forward passes, no TRL)."""
    import torch

    sides: dict[str, list[float]] = {"chosen_ids": [], "rejected_ids": []}
    for pair in pairs:
        for side, values in sides.items():
            ids = torch.tensor([pair["prompt_ids"] + pair[side]])
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, :-1].float()
            per_token = logits.log_softmax(-1).gather(-1, ids[0, 1:, None])[:, 0]
            values.append(float(per_token[len(pair["prompt_ids"]) - 1:].sum()))
    return sides["chosen_ids"], sides["rejected_ids"]


def _named_model(ws, name: str):
    """A trained run as `charforge ask` loads it (base + adapter), in fp32 on the CPU."""
    from charforge.llm.local import LocalChatModel

    entry = ws.config.entries()[name]
    local = LocalChatModel.from_config(name, {**entry.options(), "dtype": "float32",
                                              "device": "cpu"})
    local.load()
    return local


def _first_eval(folder: Path) -> dict:
    lines = [json.loads(line) for line in (folder / "training_log.jsonl").read_text().splitlines()]
    return next(line for line in lines if "eval_logps/chosen" in line)


def test_rendering_matches_the_template_and_keeps_one_end_of_turn(trained) -> None:
    from transformers import AutoTokenizer

    from charforge.train.data import IGNORE, chat_samples
    from charforge.train.dpo import pair_texts, tokenized_pair

    _ws, _character, _tiny, sft, _dpo = trained
    tokenizer = AutoTokenizer.from_pretrained(sft.folder)
    row = _pair("Where were you born?", 0, "train")
    prompt, chosen, rejected = pair_texts(tokenizer, row)
    assert prompt.startswith("<|im_start|>system\n<TIME-I>\n")
    assert prompt.endswith("<|im_start|>user\nWhere were you born?<|im_end|>\n"
                           "<|im_start|>assistant\n")
    assert chosen == CHOSEN[0] + "<|im_end|>\n"
    assert rejected == REJECTED[0] + "<|im_end|>\n"
    ids = tokenized_pair(tokenizer, row)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert ids["chosen_ids"].count(end) == 1 and ids["rejected_ids"].count(end) == 1
    assert tokenizer.convert_tokens_to_ids("<TIME-I>") in ids["prompt_ids"]  # one token
    assert tokenizer.decode(ids["prompt_ids"] + ids["chosen_ids"]) == prompt + chosen
    # the very tokens SFT learns from the same conversation, its learned ones the reply's
    [sample] = chat_samples(tokenizer, row["prompt"] + row["chosen"], source="answer")
    assert sample.input_ids == ids["prompt_ids"] + ids["chosen_ids"]
    assert [t for t in sample.labels if t != IGNORE] == ids["chosen_ids"]


def test_the_reference_is_the_sft_model_not_the_base(trained) -> None:
    """Before the first step the trainer's reference log-probabilities of the held-out
    pairs are the SFT model's (base + SFT adapter, loaded apart), not the bare base's."""
    import numpy as np
    from transformers import AutoModelForCausalLM

    from charforge.llm.vocab import grow_vocabulary

    ws, character, tiny, sft, dpo = trained
    first = _first_eval(dpo.folder)
    assert first["step"] == 0
    # TRL logs the policy's mean log-probabilities and beta * (policy - reference)
    reference = (first["eval_logps/chosen"] - first["eval_rewards/chosen"] / BETA,
                 first["eval_logps/rejected"] - first["eval_rewards/rejected"] / BETA)
    assert dpo.record.data["eval"]["samples"] == 4
    sft_model = _named_model(ws, f"{character.slug}/{sft.record.run}")
    pairs = _test_pairs(ws, character, sft_model.tokenizer)
    sft_means = [float(np.mean(side)) for side in _log_probs(sft_model.model, pairs)]
    np.testing.assert_allclose(reference, sft_means, rtol=0, atol=2e-4)
    # the policy starts as the SFT model too: every reward is 0, the loss is ln 2
    np.testing.assert_allclose([first["eval_logps/chosen"], first["eval_logps/rejected"]],
                               sft_means, rtol=0, atol=2e-4)
    assert dpo.record.metrics["eval_loss_before"] == pytest.approx(math.log(2), abs=1e-5)
    base = AutoModelForCausalLM.from_pretrained(tiny)
    grow_vocabulary(base, len(sft_model.tokenizer))
    base_means = [float(np.mean(side)) for side in _log_probs(base.eval(), pairs)]
    assert min(abs(a - b) for a, b in zip(reference, base_means, strict=True)) > 0.5


def test_the_margin_of_held_out_pairs_rises(trained) -> None:
    import numpy as np

    ws, character, _tiny, sft, dpo = trained
    assert dpo.trained and dpo.record.metrics["steps"] == 24
    before = _named_model(ws, f"{character.slug}/{sft.record.run}")
    after = _named_model(ws, f"{character.slug}/{dpo.record.run}")
    pairs = _test_pairs(ws, character, before.tokenizer)
    chosen, rejected = _log_probs(before.model, pairs)
    margin_before = np.array(chosen) - np.array(rejected)
    chosen, rejected = _log_probs(after.model, pairs)
    margin_after = np.array(chosen) - np.array(rejected)
    assert margin_after.mean() > margin_before.mean() + 1.0
    assert (margin_after > margin_before).all()
    assert dpo.record.metrics["eval_loss"] < dpo.record.metrics["eval_loss_before"]


def test_the_dpo_run_is_a_named_model_and_an_identical_rerun_trains_nothing(trained) -> None:
    from charforge.llm.local import LocalChatModel
    from charforge.llm.registry import load_chat_model
    from charforge.roleplay import ask
    from charforge.train.dpo import train_dpo

    ws, character, _tiny, sft, dpo = trained
    record = dpo.record
    assert record.kind == "dpo" and record.run.startswith("dpo-")
    assert record.parent == sft.record.run
    assert record.data["pairs"] == len(TRAIN_QUESTIONS) and record.data["pairs_per_step"] == 4
    assert record.model == {**sft.record.model, "adapter": str(dpo.folder)}
    assert (dpo.folder / "adapter_model.safetensors").is_file()
    assert not (dpo.folder / "ref").exists() and not (dpo.folder / "checkpoints").exists()
    assert "<TIME-I>" in (dpo.folder / "tokenizer.json").read_text()
    ws.reload_config()
    name = f"{character.slug}/{record.run}"
    entries = ws.config.entries()
    assert name in entries and entries[character.slug].options()["adapter"] == str(dpo.folder)
    model = load_chat_model(name, config=ws.config)
    assert isinstance(model, LocalChatModel) and model.config.adapter == str(dpo.folder)
    answer = ask("Who taught you music?", model, character=ws.load_character("Beethoven"))
    assert isinstance(answer.text, str) and answer.usage.completion_tokens >= 1
    again = train_dpo(ws, "Beethoven", changes=DPO_CHANGES)
    assert not again.trained and again.folder == dpo.folder and again.record == record


def test_one_line_errors(trained, tmp_path: Path) -> None:
    from charforge.train.dpo import train_dpo

    ws, character, _tiny, sft, _dpo = trained
    data = ws.datasets_dir / character.slug / "dpo.jsonl"
    moved = data.rename(tmp_path / "dpo.jsonl")
    try:
        with pytest.raises(CharforgeError) as missing:
            train_dpo(ws, "Beethoven", changes=DPO_CHANGES)
    finally:
        moved.rename(data)
    assert "charforge dataset build beethoven --dpo" in str(missing.value)
    assert "\n" not in str(missing.value)
    with pytest.raises(CharforgeError) as unknown:
        train_dpo(ws, "Beethoven", sft_run=f"{character.slug}/sft-000000000000")
    assert sft.record.run in str(unknown.value) and "\n" not in str(unknown.value)
    with pytest.raises(CharforgeError) as method:
        train_dpo(ws, "Beethoven", changes={**DPO_CHANGES, "method": "full"})
    assert "LoRA" in str(method.value)

    profile = tmp_path / "m.txt"
    profile.write_text("# Wolfgang Amadeus Mozart\n\nMozart was a composer born in Salzburg.\n")
    ws.import_character(profile, short_name="Mozart")
    with pytest.raises(CharforgeError) as no_sft:
        train_dpo(ws, "Mozart")
    assert "no SFT run for Mozart" in str(no_sft.value)
    assert "charforge train sft mozart" in str(no_sft.value) and "\n" not in str(no_sft.value)


def test_full_fine_tune_trains_fully_against_a_frozen_sft_copy(tmp_path: Path) -> None:
    """A full SFT run: DPO trains its whole model; the reference is the SFT model (the
    loss starts at ln 2) and stays so; the run registers its own folder."""
    import torch
    from safetensors.torch import load_file

    from charforge.train.dpo import train_dpo
    from charforge.train.sft import train_sft
    from charforge.workspace import Workspace

    from tiny_models import build_tiny_chat_model

    tiny = build_tiny_chat_model(tmp_path / "tiny")
    ws = Workspace.init(tmp_path / "ws")
    profile = tmp_path / "b.txt"
    profile.write_text("# Ludwig van Beethoven\n\nLudwig van Beethoven was a composer.\n")
    character = ws.import_character(profile, short_name="Beethoven")
    _write_data(ws.datasets_dir / character.slug,
                system="You are Ludwig van Beethoven. Answer as him.")
    sft = train_sft(ws, "Beethoven", base=str(tiny),
                    changes={"method": "full", "max_steps": 2, "effective_batch": 4,
                             "precision": "fp32", "full_learning_rate": 1e-3})
    dpo = train_dpo(ws, "Beethoven", changes={"max_steps": 3, "effective_batch": 4,
                                              "precision": "fp32", "dpo_learning_rate": 1e-3,
                                              "dpo_beta": BETA})
    assert dpo.trained and dpo.record.settings["method"] == "full"
    assert dpo.record.metrics["eval_loss_before"] == pytest.approx(math.log(2), abs=1e-5)
    assert dpo.record.model["path"] == str(dpo.folder) and "adapter" not in dpo.record.model
    before = load_file(sft.folder / "model.safetensors")
    after = load_file(dpo.folder / "model.safetensors")
    changed = [key for key in before if not torch.equal(before[key], after[key])]
    assert len(changed) > len(before) // 2  # every weight trains, not an adapter


def test_a_tied_embedding_base_trains_sft_then_dpo_with_stage_tokens(tmp_path) -> None:
    """SmolLM2 ties its input and output embeddings: PEFT then wraps the output head too
    (trainable stage-token rows), which TRL's fused loss must get through, in SFT and DPO."""
    from charforge.train.dpo import train_dpo
    from charforge.train.sft import train_sft
    from charforge.workspace import Workspace

    from tiny_models import build_tiny_chat_model

    tiny = build_tiny_chat_model(tmp_path / "tied", tied=True)
    ws = Workspace.init(tmp_path / "ws")
    profile = tmp_path / "b.txt"
    profile.write_text("# Ludwig van Beethoven\n\nLudwig van Beethoven was a composer.\n")
    character = ws.import_character(profile, short_name="Beethoven")
    _write_data(ws.datasets_dir / character.slug)
    sft = train_sft(ws, "Beethoven", base=str(tiny),
                    changes={"max_steps": 2, "effective_batch": 4, "precision": "fp32"})
    assert sft.record.data["stage_tokens"] == 5
    dpo = train_dpo(ws, "Beethoven", changes={**DPO_CHANGES, "max_steps": 2})
    assert dpo.trained and dpo.record.metrics["steps"] == 2
