"""Training a character agent (SFT): the loss mask on any chat template, one rendering
shared with serving, padding-free batches, learning, stage tokens, resume, NaN and the
trained agent as a named model. All on a tiny random Llama with a real tokenizer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from charforge.character import STAGE_TOKENS
from charforge.errors import CharforgeError
from charforge.llm.base import ChatMessage
from charforge.llm.local import LocalChatModel
from charforge.llm.registry import check_models, load_chat_model
from charforge.llm.turns import prompt_text, without_thoughts
from charforge.train.data import IGNORE, TemplateError, chat_samples, conversation_pieces
from charforge.train.merge import merge_run
from charforge.train.progress import NonFiniteLoss, TrainingInterrupted
from charforge.train.sft import train_sft

from conftest import CLI, assert_one_line_error, run
from train_fixtures import (
    DROPS_EARLIER_THOUGHTS,
    LLAMA2_STYLE,
    SCENE,
    scene_rows,
    workspace_with_data,
)

FAST = {"precision": "fp32", "effective_batch": 4}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _segments_tokens(tokenizer, segments):
    """Token ids and expected labels from (text, learned?) segments tokenised apart."""
    ids, labels = [], []
    for text, learned in segments:
        part = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += part
        labels += part if learned else [IGNORE] * len(part)
    return ids, labels


# -- the loss mask ---------------------------------------------------------------------
def test_mask_is_exactly_the_characters_tokens(tokenizer):
    first, second = chat_samples(tokenizer, SCENE, source="experience")
    # Sample 1 ends at the first reply with a thought; sample 2 at the last reply, with
    # the first reply's thought gone from its history and the middle reply learned.
    expected_first = _segments_tokens(tokenizer, [
        ("<|im_start|>system\nYou are Beethoven in Vienna.<|im_end|>\n"
         "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n", False),
        ("<think>Who knocks so early?</think>\nCome in, come in!<|im_end|>\n", True),
    ])
    assert (first.input_ids, first.labels) == expected_first
    expected_second = _segments_tokens(tokenizer, [
        ("<|im_start|>system\nYou are Beethoven in Vienna.<|im_end|>\n"
         "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\nCome in, come in!<|im_end|>\n"
         "<|im_start|>user\nLily: Good morning, master.\nTom: We brought bread and milk."
         "<|im_end|>\n<|im_start|>assistant\n", False),
        ("Put it on the table, child.<|im_end|>\n", True),
        ("<|im_start|>user\nLily: Will you play for us today?<|im_end|>\n"
         "<|im_start|>assistant\n", False),
        ("<think>My ears ache.</think>\nPerhaps later, after work.<|im_end|>\n", True),
    ])
    assert (second.input_ids, second.labels) == expected_second


def test_character_llm_loss_learns_the_whole_output(tokenizer):
    first, second = chat_samples(tokenizer, SCENE, source="experience", loss="output")
    system = tokenizer("<|im_start|>system\nYou are Beethoven in Vienna.<|im_end|>\n",
                       add_special_tokens=False)["input_ids"]
    assert first.labels[:len(system)] == [IGNORE] * len(system)
    assert first.labels[len(system):] == first.input_ids[len(system):]
    # The second sample learns what follows the first reply: Lily, Tom, Beethoven...
    learned = tokenizer.decode([t for t in second.labels if t != IGNORE])
    assert learned.startswith("<|im_start|>user\nLily: Good morning")
    assert "Tom: We brought bread" in learned and learned.endswith("after work.<|im_end|>\n")
    assert "Come in" not in learned


@pytest.mark.parametrize("template", ["chatml", "llama2", "drops_thoughts"])
def test_records_train_under_three_template_styles(tokenizer, tiny_model_dir, template):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = {"chatml": tok.chat_template, "llama2": LLAMA2_STYLE,
                         "drops_thoughts": DROPS_EARLIER_THOUGHTS}[template]
    samples = chat_samples(tok, SCENE, source="experience")
    learned = [tok.decode([t for t in s.labels if t != IGNORE]) for s in samples]
    assert "Who knocks so early?" in learned[0] and "Come in, come in!" in learned[0]
    assert "Put it on the table, child." in learned[1] and "My ears ache." in learned[1]
    for sample in samples:  # names reach the model; no other speaker is learned
        text = tok.decode(sample.input_ids)
        assert "Lily:" in text or sample is samples[0]
    assert not any("Lily" in part or "Tom" in part for part in learned)
    assert all(part.rstrip().endswith("<|im_end|>") for part in learned)


def test_a_template_that_rewrites_earlier_turns_is_refused(tokenizer, tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = ("{% for m in messages %}{{ m['role'] + ' of ' + messages|length|string"
                         " + ': ' + m['content'] + '<|im_end|>' }}{% endfor %}")
    with pytest.raises(TemplateError) as caught:
        chat_samples(tok, SCENE, source="experience", name="odd")
    assert "odd" in str(caught.value) and "\n" not in str(caught.value)


# -- one rendering: training and serving -------------------------------------------------
def test_training_and_serving_render_the_same_conversation(tiny_model_dir, tokenizer):
    """Each learned reply follows exactly the prompt the local model builds for the
    conversation as a client sends it: names as `name`, no earlier thoughts."""
    model = LocalChatModel.from_config("tiny", {"path": str(tiny_model_dir)})
    samples = chat_samples(tokenizer, SCENE, source="experience")
    replies = [i for i, m in enumerate(SCENE) if m["role"] == "assistant"]
    starts = [(s, i) for s in samples for i in range(1, len(s.labels))
              if s.labels[i] != IGNORE and s.labels[i - 1] == IGNORE]
    assert len(starts) == len(replies)
    for (sample, start), reply in zip(starts, replies, strict=True):
        sent = [ChatMessage(role=m["role"], name=m.get("name"),
                            content=without_thoughts(m["content"])
                            if m["role"] == "assistant" else m["content"])
                for m in SCENE[:reply]]
        served = model.prompt_ids(sent)
        assert served == sample.input_ids[:start]
        assert tokenizer.decode(sample.input_ids[:start]) == prompt_text(tokenizer, sent)


def test_pieces_keep_every_reply_once():
    pieces = conversation_pieces(SCENE)
    learned = [turn["content"] for turns, start in pieces for turn in turns[start:]
               if turn["role"] == "assistant"]
    assert learned == [SCENE[1]["content"], SCENE[4]["content"], SCENE[6]["content"]]
    assert all("<think>" not in t["content"] for turns, start in pieces for t in turns[:start])


# -- padding-free batches ----------------------------------------------------------------
def test_packed_samples_do_not_see_each_other(tiny_model_dir, tokenizer):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    samples = [s for row in scene_rows(3) for s in chat_samples(tokenizer, row["messages"],
                                                               source="x")]
    batch = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id,
                                            padding_free=True)(
        [{"input_ids": s.input_ids, "labels": s.labels} for s in samples])
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        packed = model(**inputs, use_cache=False).logits[0]
        offset = 0
        for sample in samples:
            alone = model(input_ids=torch.tensor([sample.input_ids])).logits[0]
            part = packed[offset:offset + len(sample.input_ids)]
            assert torch.allclose(part, alone, atol=1e-5)
            offset += len(sample.input_ids)
        # the check can fail: with a cache the samples would see each other
        leaky = model(**inputs, use_cache=True).logits[0]
        assert not torch.allclose(leaky, packed, atol=1e-3)


# -- learning ----------------------------------------------------------------------------
def _token_losses(model, tokenizer, rows):
    """Mean loss on the character's tokens and on the masked (non-system) tokens."""
    learned, masked = [], []
    for row in rows:
        for sample in chat_samples(tokenizer, row["messages"], source="x"):
            ids = torch.tensor([sample.input_ids])
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, :-1]
            losses = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")
            system_end = sample.input_ids.index(tokenizer.convert_tokens_to_ids("<|im_end|>"))
            for position, loss in enumerate(losses.tolist(), start=1):
                if sample.labels[position] != IGNORE:
                    learned.append(loss)
                elif position > system_end + 1:
                    masked.append(loss)
    return sum(learned) / len(learned), sum(masked) / len(masked)


def test_the_characters_loss_falls_and_the_masked_loss_does_not(tmp_path, tiny_model_dir,
                                                               tokenizer):
    rows = scene_rows(8)
    ws = workspace_with_data(tmp_path, rows)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    learned_before, masked_before = _token_losses(base, tokenizer, rows)
    result = train_sft(ws, "Beethoven", base=str(tiny_model_dir),
                       changes={**FAST, "method": "full", "max_steps": 30,
                                "full_learning_rate": 1e-2, "warmup_ratio": 0.0})
    trained = AutoModelForCausalLM.from_pretrained(result.folder, dtype=torch.float32).eval()
    learned_after, masked_after = _token_losses(trained, tokenizer, rows)
    assert learned_after <= 0.5 * learned_before, (learned_before, learned_after)
    assert masked_after > 0.75 * masked_before, (masked_before, masked_after)
    log = [json.loads(line) for line in (result.folder / "training_log.jsonl").open()]
    assert [entry["step"] for entry in log if "loss" in entry][:3] == [1, 2, 3]


# -- stage tokens --------------------------------------------------------------------------
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_stage_tokens_are_trained_and_survive_save_and_load(tmp_path, tiny_model_dir, tied):
    if tied:  # input and output embeddings shared, as SmolLM2's
        from tiny_models import build_tiny_chat_model

        tiny_model_dir = build_tiny_chat_model(tmp_path / "tied", tied=True)
    ws = workspace_with_data(tmp_path, scene_rows(6, stage_token=STAGE_TOKENS[0]))
    result = train_sft(ws, "Beethoven", base=str(tiny_model_dir),
                       changes={**FAST, "max_steps": 6, "lora_learning_rate": 5e-2})
    assert result.record.data["stage_tokens"] == len(STAGE_TOKENS)
    tokenizer = AutoTokenizer.from_pretrained(result.folder)
    ids = tokenizer.convert_tokens_to_ids(list(STAGE_TOKENS))
    assert tokenizer("<TIME-I>\nYou", add_special_tokens=False)["input_ids"][0] == ids[0]
    saved = load_file(result.folder / "adapter_model.safetensors")
    deltas = [v for k, v in saved.items() if "trainable_tokens_delta" in k]
    assert deltas and deltas[0].shape[0] == len(STAGE_TOKENS)
    # Loaded by name, as `ask` loads it: base grown, adapter applied.
    ws.reload_config()
    agent = load_chat_model("beethoven", config=ws.config)
    agent.load()
    rows = agent.model.get_input_embeddings()(torch.tensor(ids)).detach()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    mean = base.get_input_embeddings().weight.mean(dim=0)
    assert torch.allclose(rows, deltas[0].to(rows.dtype), atol=1e-6)
    assert (rows[0] - mean).abs().max() > 1e-3  # the trained row moved from its start
    # The one used in the data moved; all five are in the vocabulary.
    assert len(agent.tokenizer) == len(AutoTokenizer.from_pretrained(tiny_model_dir)) + 5


# -- resume, NaN ---------------------------------------------------------------------------
def test_a_killed_run_resumes_and_ends_as_an_uninterrupted_one(tmp_path, tiny_model_dir):
    rows = scene_rows(16)
    config = tmp_path / "train.yaml"
    config.write_text("save_steps: 8\nlora_dropout: 0.0\n")
    args = ["train", "sft", "beethoven", "--base", str(tiny_model_dir), "--max-steps", "24",
            "--precision", "fp32", "--effective-batch", "4", "--config", str(config)]
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("CHARFORGE_WORKSPACE", None)
    straight, killed = (workspace_with_data(tmp_path, rows, name)
                        for name in ("straight", "killed"))
    uninterrupted = subprocess.Popen([*CLI, *args, "-w", str(straight.root)], cwd=tmp_path,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    process = subprocess.Popen([*CLI, *args, "-w", str(killed.root)], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    checkpoints = killed.root / "models" / "beethoven"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        if list(checkpoints.glob("*/checkpoints/checkpoint-8/trainer_state.json")):
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not list(checkpoints.glob("*/run.json")), "the run finished before it was killed"
    resumed = run(*args, "-w", killed.root, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from checkpoint-8" in resumed.stdout
    assert uninterrupted.wait(timeout=180) == 0, uninterrupted.stderr.read()
    [a] = (straight.root / "models" / "beethoven").glob("*/adapter_model.safetensors")
    [b] = checkpoints.glob("*/adapter_model.safetensors")
    assert a.parent.name == b.parent.name  # the same run identity
    first, second = load_file(a), load_file(b)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.allclose(first[key], second[key], atol=1e-6), key


class _PoisonAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                for name, weight in model.named_parameters():
                    if "lora_B" in name:
                        weight.fill_(float("nan"))


def test_a_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path,
                                                                     tiny_model_dir):
    ws = workspace_with_data(tmp_path, scene_rows(8))
    with pytest.raises(NonFiniteLoss) as caught:
        train_sft(ws, "Beethoven", base=str(tiny_model_dir),
                  changes={**FAST, "max_steps": 10, "save_steps": 2},
                  callbacks=[_PoisonAt(3)])
    message = str(caught.value)
    assert "\n" not in message and "the loss is nan" in message
    assert "training stopped at step 4" in message and "checkpoint-2" in message
    [folder] = (ws.root / "models" / "beethoven").iterdir()
    assert (folder / "checkpoints" / "checkpoint-2").is_dir()
    assert not (folder / "run.json").exists()


class _CtrlCAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def test_ctrl_c_says_where_the_next_run_resumes(tmp_path, tiny_model_dir):
    ws = workspace_with_data(tmp_path, scene_rows(8))
    changes = {**FAST, "max_steps": 10, "save_steps": 2}
    with pytest.raises(TrainingInterrupted) as caught:
        train_sft(ws, "Beethoven", base=str(tiny_model_dir), changes=changes,
                  callbacks=[_CtrlCAt(3)])
    assert caught.value.exit_code == 130 and "\n" not in str(caught.value)
    assert "interrupted at step 3" in str(caught.value) and "checkpoint-2" in str(caught.value)
    resumed = train_sft(ws, "Beethoven", base=str(tiny_model_dir), changes=changes)
    assert resumed.record.metrics["resumed_from"] == "checkpoint-2"
    log = [json.loads(line) for line in (resumed.folder / "training_log.jsonl").open()]
    steps = [entry["step"] for entry in log if "loss" in entry]
    assert steps == sorted(set(steps)) == list(range(1, 11))  # no step logged twice


# -- the agent by name; bad input --------------------------------------------------------
def test_ask_answers_through_the_trained_adapter_by_name(tmp_path, tiny_model_dir):
    ws = workspace_with_data(tmp_path, scene_rows(4))
    trained = run("train", "sft", "beethoven", "--base", tiny_model_dir, "--max-steps", "2",
                  "--precision", "fp32", cwd=ws.root)
    assert trained.returncode == 0, trained.stderr
    assert "trained beethoven/sft-" in trained.stdout
    assert "Warning" not in trained.stderr and "[RANK" not in trained.stderr  # ours only
    [folder] = (ws.root / "models" / "beethoven").iterdir()
    card = (folder / "README.md").read_text()
    assert "base_model: " in card and "recipe" in card and "Losses" in card
    answer = run("ask", "-m", "beethoven", "-c", "beethoven", "Will you play?",
                 "--max-tokens", "4", cwd=ws.root)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip()
    ws.reload_config()
    [listed] = check_models(ws.config, names=[f"beethoven/{folder.name}"])
    assert listed.ok and "adapter" in listed.detail
    ws.reload_config()
    agent = load_chat_model("beethoven", config=ws.config)
    assert agent.config.adapter == str(folder)
    again = train_sft(ws, "Beethoven", base=str(tiny_model_dir),
                      changes={"max_steps": 2, "precision": "fp32"})
    assert not again.trained and again.folder == folder
    whole = AutoModelForCausalLM.from_pretrained(merge_run(ws, "beethoven"))
    # float32 whatever the host (`dtype: auto` is bfloat16 on AVX-512 CPUs)
    agent = LocalChatModel(agent.config.model_copy(update={"dtype": "float32"}), name="b")
    agent.load()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(whole(input_ids=ids).logits,
                              agent.model.float()(input_ids=ids).logits, atol=1e-4)


def test_bad_input_is_one_line(tmp_path, tiny_model_dir):
    ws = workspace_with_data(tmp_path, scene_rows(2))
    cases = [
        (["--base", "no-such/model"], ["not found", "no-such/model", "Hugging Face cache",
                                       "charforge.yaml"]),
        (["--base", "./no/such/folder"], ["not found", "no/such/folder"]),
        (["--lora", "--full"], ["--lora and --full"]),
        (["--base", str(tiny_model_dir), "--recipe", "nope"], ["unknown recipe"]),
    ]
    for flags, needles in cases:
        assert_one_line_error(run("train", "sft", "beethoven", *flags, cwd=ws.root), *needles)
    (ws.datasets_dir / "beethoven" / "sft.jsonl").unlink()
    assert_one_line_error(run("train", "sft", "beethoven", cwd=ws.root),
                          "charforge dataset build beethoven")
    silent = workspace_with_data(tmp_path, [{"messages": [
        {"role": "system", "content": "You are Beethoven."},
        {"role": "user", "name": "Lily", "content": "Hello?"}], "split": "train"}], "silent")
    assert_one_line_error(run("train", "sft", "beethoven", "--base", tiny_model_dir,
                              cwd=silent.root), "never speaks")
    with pytest.raises(CharforgeError, match="4bit"):
        train_sft(silent, "Beethoven", base=str(tiny_model_dir), changes={"quantize": "4bit"})
