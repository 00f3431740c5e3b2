"""What a run trains on, before any weight moves: Character-LLM's prompted records, the
PersLLM mix (repeat and general data), cut samples counted, and the settings' layers."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from charforge.dataset.build import EOT
from charforge.errors import CharforgeError
from charforge.recipes import get_recipe
from charforge.train.data import IGNORE, prompted_sample
from charforge.train.settings import resolve_settings
from charforge.train.sft import batch_shape, plan_run, sft_files, sft_samples

from train_fixtures import scene_rows, workspace_with_data

PROMPT = "I want you to act like Beethoven.\n\n"
OUTPUT = (f"Beethoven (thinking): Who knocks?{EOT}\nLily (speaking): Good morning.{EOT}\n"
          f"Beethoven (speaking): Come in!{EOT}")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _learned(tokenizer, sample) -> str:
    return tokenizer.decode([t for t in sample.labels if t != IGNORE])


def test_prompted_records_learn_the_whole_scene_then_the_end(tokenizer):
    sample = prompted_sample(tokenizer, PROMPT, OUTPUT, source="experience")
    assert _learned(tokenizer, sample) == OUTPUT + tokenizer.eos_token
    assert tokenizer.decode(sample.input_ids) == PROMPT + OUTPUT + tokenizer.eos_token
    own = prompted_sample(tokenizer, PROMPT, OUTPUT, source="experience", speaker="Beethoven")
    learned = _learned(tokenizer, own)
    assert "Who knocks?" in learned and "Come in!" in learned and "Lily" not in learned


def _prompted_workspace(tmp_path, rows):
    ws = workspace_with_data(tmp_path, rows)
    prompted = [{"prompt": PROMPT, "output": OUTPUT, "source": "experience",
                 "task_id": row["task_id"]} for row in rows]
    (ws.datasets_dir / "beethoven" / "prompted.jsonl").write_text(
        "".join(json.dumps(row) + "\n" for row in prompted))
    return ws


def test_the_prompted_format_reads_prompted_jsonl_with_the_chat_split(tmp_path, tokenizer,
                                                                     tiny_model_dir):
    ws = _prompted_workspace(tmp_path, scene_rows(6, test_every=3))
    plan = plan_run(ws, "beethoven", "sft", base=str(tiny_model_dir), recipe="character-llm",
                    config_file=None, changes={"format": "prompted"}, data_files=sft_files)
    assert [f.name for f in plan.data_files] == ["sft.jsonl", "prompted.jsonl"]
    assert plan.settings.loss == "output" and plan.settings.method == "full"
    train, test, _, _ = sft_samples(plan, tokenizer)
    assert (len(train), len(test)) == (4, 2)  # tasks t0 and t3 are in the test split
    assert _learned(tokenizer, train[0]) == OUTPUT + tokenizer.eos_token


def test_mix_repeat_and_cut_samples_are_counted(tmp_path, tokenizer, tiny_model_dir):
    ws = workspace_with_data(tmp_path, scene_rows(3))
    mix = tmp_path / "general.jsonl"
    mix.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"Name a river {i}."},
        {"role": "assistant", "content": "The Rhine flows past Bonn."}]}) + "\n"
        for i in range(4)))
    plan = plan_run(ws, "beethoven", "sft", base=str(tiny_model_dir), recipe="persllm",
                    config_file=None, changes={"mix": str(mix), "max_length": 100},
                    data_files=sft_files)
    train, _, stats, mixed = sft_samples(plan, tokenizer)
    assert plan.settings.repeat == 5
    assert mixed["character_samples"] == 15 and mixed["mix_samples"] == 4
    assert len(train) == 19 and stats.samples == 19
    assert stats.truncated == 15  # every scene is longer than 100 tokens; the mix is not
    assert max(len(s.input_ids) for s in train) == 100
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no messages"}\n')
    bad_plan = plan_run(ws, "beethoven", "sft", base=str(tiny_model_dir), recipe=None,
                        config_file=None, changes={"mix": str(bad)}, data_files=sft_files)
    with pytest.raises(CharforgeError, match="record 1: messages: Field required"):
        sft_samples(bad_plan, tokenizer)


def test_settings_come_from_recipe_then_file_then_flags(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("epochs: 2\nlora_r: 8\n")
    settings = resolve_settings(get_recipe("character-llm").training, config, {"lora_r": 4})
    assert (settings.epochs, settings.lora_r, settings.effective_batch) == (2, 4, 64)
    config.write_text("epochs: -1\n")
    with pytest.raises(CharforgeError, match="epochs") as caught:
        resolve_settings(get_recipe(None).training, config)
    assert str(config) in str(caught.value) and "\n" not in str(caught.value)
    config.write_text("- a list\n")
    with pytest.raises(CharforgeError, match="mapping"):
        resolve_settings(get_recipe(None).training, config)


def test_the_global_batch_is_kept_for_any_number_of_processes():
    from charforge.train.data import TokenStats

    settings = get_recipe("character-llm").training  # 64 a step, 2,048-token micro-batches
    stats = TokenStats(samples=100, tokens=72_000)  # 720 tokens a sample
    for world in (1, 2, 8):
        assert batch_shape(settings, stats, world, varlen=False) == (1, 64 // world)
        micro, accumulation = batch_shape(settings, stats, world, varlen=True)
        assert micro == 2 and micro * accumulation * world == 64
    odd = settings.model_copy(update={"effective_batch": 20, "micro_batch_tokens": 2048})
    stats = TokenStats(samples=100, tokens=40_000)  # 400 tokens: 5 fit in 2,048
    assert batch_shape(odd, stats, 1) == (5, 4) and batch_shape(odd, stats, 4) == (5, 1)
    assert batch_shape(odd, stats, 2) == (5, 2)
    assert batch_shape(odd.model_copy(update={"effective_batch": 14}), stats, 1) == (2, 7)
    with pytest.raises(CharforgeError, match="does not divide among 3 processes"):
        batch_shape(odd, stats, 3)


def test_samples_cut_to_nothing_say_so(tmp_path, tokenizer, tiny_model_dir):
    ws = workspace_with_data(tmp_path, scene_rows(2))
    plan = plan_run(ws, "beethoven", "sft", base=str(tiny_model_dir), recipe=None,
                    config_file=None, changes={"max_length": 40}, data_files=sft_files)
    with pytest.raises(CharforgeError, match="raise --max-length"):
        sft_samples(plan, tokenizer)


def test_bad_rows_are_one_line_naming_file_line_and_field(tmp_path, tokenizer,
                                                          tiny_model_dir):
    ws = workspace_with_data(tmp_path, scene_rows(2))
    data = ws.datasets_dir / "beethoven" / "sft.jsonl"
    plan = plan_run(ws, "beethoven", "sft", base=str(tiny_model_dir), recipe=None,
                    config_file=None, changes=None, data_files=sft_files)
    for line, problem in [('{"messages": [{"role": "narrator", "content": "x"}]}', "role"),
                          ('{"messages": [{"role": "user"}]}', "content"),
                          ('{"text": "hi"}', "messages")]:
        data.write_text(json.dumps(scene_rows(1)[0]) + "\n" + line + "\n")
        with pytest.raises(CharforgeError) as caught:
            sft_samples(plan, tokenizer)
        assert f"{data}:2: messages" in str(caught.value) and problem in str(caught.value)
    data.write_bytes(b'{"messages": "\xff"}\n')
    with pytest.raises(CharforgeError, match="as UTF-8 text"):
        sft_samples(plan, tokenizer)


def test_the_end_is_learned_only_after_the_speakers_own_last_turn(tokenizer):
    lily_last = OUTPUT + f"\nLily (speaking): Thank you.{EOT}"
    sample = prompted_sample(tokenizer, PROMPT, lily_last, source="x", speaker="Beethoven")
    assert sample.labels[-1] == IGNORE and "Thank you" not in _learned(tokenizer, sample)
    own = prompted_sample(tokenizer, PROMPT, OUTPUT, source="x", speaker="Beethoven")
    assert own.labels[-1] == tokenizer.eos_token_id


def test_a_reply_token_holding_the_prompts_last_space_is_learned(tiny_model_dir):
    from charforge.train.data import chat_samples

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = ("{% for m in messages %}{{ m['role'].upper() + ': ' + m['content'] + "
                         "'<|im_end|>' }}{% endfor %}{% if add_generation_prompt %}"
                         "{{ 'ASSISTANT: ' }}{% endif %}")
    [sample] = chat_samples(tok, [{"role": "user", "content": "Hello?"},
                                  {"role": "assistant", "content": "Bonn and Vienna."}],
                            source="x")
    assert _learned(tok, sample).strip() == "Bonn and Vienna.<|im_end|>"


def test_an_unreadable_run_is_an_error_not_a_retrain(tmp_path, tiny_model_dir):
    from charforge.train.runs import UnreadableRun, finished_runs

    ws = workspace_with_data(tmp_path, scene_rows(2))
    plan = plan_run(ws, "beethoven", "sft", base=str(tiny_model_dir), recipe=None,
                    config_file=None, changes=None, data_files=sft_files)
    plan.folder.mkdir(parents=True)
    (plan.folder / "run.json").write_text("{not json")
    with pytest.raises(UnreadableRun, match="remove"):
        _ = plan.finished
    assert finished_runs(ws.root) == []  # listing models goes on
    assert "smollm2" in ws.config.entries()
