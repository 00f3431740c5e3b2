"""`charforge export vllm|ollama`: a character trained on a tiny model (real PEFT adapters
from real SFT runs), exported as a user would, checked as the engine would read it."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from transformers import AutoTokenizer
from typer.testing import CliRunner

from charforge.character import Stage
from charforge.cli_export import export_app
from charforge.errors import CharforgeError
from charforge.export import OLLAMA_CHATML, ollama_modelfile, ollama_template, vllm_lora_rank
from charforge.render import meta_prompt, stage_marked
from charforge.roleplay import roleplay_system_prompt
from charforge.train.merge import merge_run
from charforge.train.sft import train_sft

from train_fixtures import LLAMA2_STYLE, scene_rows, workspace_with_data

FAST = {"precision": "fp32", "effective_batch": 1, "max_steps": 1}
STAGES = [Stage(label="early", token="<TIME-I>"), Stage(label="late", token="<TIME-II>")]


def _add_character(ws, root, short_name: str, rows) -> None:
    profile = root / f"{short_name}.txt"
    profile.write_text(f"# {short_name} of Athens\n\n{short_name} was a philosopher.\n",
                       encoding="utf-8")
    character = ws.import_character(profile, short_name=short_name)
    folder = ws.datasets_dir / character.slug
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """Beethoven (rank 16) and Socrates (rank 24) on the tiny model, Plato on another
    base, and Diogenes never trained."""
    from tiny_models import build_tiny_chat_model

    root = tmp_path_factory.mktemp("export")
    ws = workspace_with_data(root, scene_rows(2))
    _add_character(ws, root, "Socrates", scene_rows(2))
    _add_character(ws, root, "Plato", scene_rows(2))
    _add_character(ws, root, "Diogenes", scene_rows(2))
    train_sft(ws, "beethoven", base=str(tiny_model_dir), changes=FAST)
    train_sft(ws, "socrates", base=str(tiny_model_dir), changes={**FAST, "lora_r": 24})
    other = build_tiny_chat_model(root / "other-base", seed=1)
    train_sft(ws, "plato", base=str(other), changes=FAST)
    ws.reload_config()
    return ws


@pytest.fixture(scope="module")
def staged(tmp_path_factory, tiny_model_dir):
    """A PersLLM-style Beethoven with two time stages, trained with stage tokens."""
    root = tmp_path_factory.mktemp("staged")
    ws = workspace_with_data(root, scene_rows(2, stage_token="<TIME-I>"))
    character = ws.load_character("beethoven")
    ws.save_character(character.model_copy(update={"stages": STAGES}), replace=True)
    train_sft(ws, "beethoven", base=str(tiny_model_dir), changes=FAST)
    return ws


def export(*args):
    result = CliRunner().invoke(export_app, [*map(str, args)])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def refused(*args) -> str:
    """The one-line error of a refused export."""
    result = CliRunner().invoke(export_app, [*map(str, args)])
    assert result.exit_code != 0
    assert isinstance(result.exception, CharforgeError), result.exception
    message = str(result.exception)
    assert message and "\n" not in message
    return message


def run_folder(ws, character: str):
    [folder] = [p for p in (ws.root / "models" / character).iterdir()
                if not p.name.endswith("-merged")]
    return folder


def lora_modules(words: list[str]) -> dict[str, str]:
    start = words.index("--lora-modules") + 1
    pairs = []
    for word in words[start:]:
        if word.startswith("--"):
            break
        pairs.append(word.split("=", 1))
    return dict(pairs)


def option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


# -- vLLM ------------------------------------------------------------------------------
def test_vllm_serves_the_adapter_on_its_base(trained, tiny_model_dir):
    result = export("vllm", "beethoven", "-w", trained.root)
    words = shlex.split(result.stdout.strip().splitlines()[0])
    folder = run_folder(trained, "beethoven")
    assert words[:3] == ["vllm", "serve", str(tiny_model_dir)]
    assert "--enable-lora" in words
    assert lora_modules(words) == {"beethoven": str(folder)}
    rank = json.loads((folder / "adapter_config.json").read_text())["r"]
    assert int(option(words, "--max-loras")) >= 1
    assert int(option(words, "--max-lora-rank")) >= rank
    template = option(words, "--chat-template")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert Path(template).read_text(encoding="utf-8") == tokenizer.chat_template
    exported = trained.root / "exports" / "beethoven" / "vllm"
    character = trained.load_character("beethoven")
    assert (exported / "system_prompt.txt").read_text() == meta_prompt(character, "", "")
    assert f"exec {result.stdout.splitlines()[0]}" in (exported / "serve.sh").read_text()
    client = (exported / "client.py").read_text()
    compile(client, "client.py", "exec")
    assert "'beethoven': 'system_prompt.txt'" in client and "temperature=0.2" in client


def test_several_characters_share_one_vllm_server(trained, tmp_path):
    result = export("vllm", "beethoven", "Socrates", "-o", tmp_path / "out",
                    "--run", f"socrates/{run_folder(trained, 'socrates').name}",
                    "-w", trained.root)
    words = shlex.split(result.stdout.strip())
    assert lora_modules(words) == {"beethoven": str(run_folder(trained, "beethoven")),
                                   "socrates": str(run_folder(trained, "socrates"))}
    assert int(option(words, "--max-loras")) >= 2
    assert option(words, "--max-lora-rank") == "32"  # rank 24, as vLLM accepts it
    for name in ("beethoven", "socrates"):
        character = trained.load_character(name)
        prompt = (tmp_path / "out" / f"{name}.system_prompt.txt").read_text()
        assert prompt == meta_prompt(character, "", "")
    assert vllm_lora_rank(16) == 16 and vllm_lora_rank(17) == 32
    with pytest.raises(CharforgeError, match="largest"):
        vllm_lora_rank(600)


def test_stage_tokens_serve_the_merged_model_after_merge(staged):
    message = refused("vllm", "beethoven", "--stage", "early", "-w", staged.root)
    assert "adds tokens" in message and "charforge train merge beethoven" in message
    assert "charforge train merge" in refused("ollama", "beethoven", "-w", staged.root)
    merged = merge_run(staged, "beethoven")
    result = export("vllm", "beethoven", "--stage", "early", "--location", "Vienna, 1802",
                    "--status", "A quiet evening", "-w", staged.root)
    words = shlex.split(result.stdout.strip())
    assert words[:3] == ["vllm", "serve", str(merged)]
    assert option(words, "--served-model-name") == "beethoven"
    assert "--enable-lora" not in words and "--lora-modules" not in words
    template = option(words, "--chat-template")
    merged_tokenizer = AutoTokenizer.from_pretrained(merged)
    assert Path(template).read_text(encoding="utf-8") == merged_tokenizer.chat_template
    character = staged.load_character("beethoven")
    prompt = (staged.root / "exports" / "beethoven" / "vllm" / "system_prompt.txt").read_text()
    assert prompt == stage_marked(meta_prompt(character, "Vienna, 1802", "A quiet evening"),
                                  "<TIME-I>")
    assert prompt.splitlines()[0] == "<TIME-I>"
    by_token = export("vllm", "beethoven", "--stage", "<TIME-II>", "-w", staged.root)
    assert by_token.exit_code == 0
    assert (staged.root / "exports" / "beethoven" / "vllm" / "system_prompt.txt"
            ).read_text().startswith("<TIME-II>\n")
    unmarked = CliRunner().invoke(export_app, ["vllm", "beethoven", "-w", str(staged.root)])
    assert unmarked.exit_code == 0 and "pass --stage (early, late)" in unmarked.stderr


def test_prompted_serves_the_base_under_the_roleplay_prompt(trained, tiny_model_dir):
    result = export("vllm", "diogenes", "--prompted", "--base", tiny_model_dir,
                    "-w", trained.root)
    words = shlex.split(result.stdout.strip())
    assert words[:3] == ["vllm", "serve", str(tiny_model_dir)]
    assert option(words, "--served-model-name") == "diogenes" and "--enable-lora" not in words
    character = trained.load_character("diogenes")
    prompt = (trained.root / "exports" / "diogenes" / "vllm" / "system_prompt.txt").read_text()
    assert prompt == roleplay_system_prompt(character)


# -- Ollama ------------------------------------------------------------------------------
def _modelfile_lines(result) -> tuple[str, list[str]]:
    path = result.stdout.splitlines()[0].removeprefix("Modelfile: ")
    text = Path(path).read_text(encoding="utf-8")
    return text, [line.split(" ", 1)[0] for line in text.splitlines()]


def test_ollama_modelfile_puts_the_adapter_on_its_base(trained, tiny_model_dir):
    result = export("ollama", "beethoven", "-w", trained.root)
    text, keywords = _modelfile_lines(result)
    folder = run_folder(trained, "beethoven")
    assert f"\nFROM {tiny_model_dir}\n" in text and f"\nADAPTER {folder}\n" in text
    character = trained.load_character("beethoven")
    assert f'SYSTEM """{meta_prompt(character, "", "")}"""' in text
    assert f'TEMPLATE """{OLLAMA_CHATML}"""' in text
    assert 'PARAMETER stop "<|im_end|>"' in text and "PARAMETER temperature 0.2" in text
    assert {"FROM", "ADAPTER", "TEMPLATE", "SYSTEM", "PARAMETER"} <= set(keywords)
    modelfile = trained.root / "exports" / "beethoven" / "ollama" / "Modelfile"
    assert result.stdout.splitlines()[1] == f"ollama create beethoven -f {modelfile}"


def test_ollama_with_stage_tokens_is_from_the_merged_model(staged):
    merged = merge_run(staged, "beethoven")
    text, keywords = _modelfile_lines(export("ollama", "beethoven", "--stage", "late",
                                             "-w", staged.root))
    assert f"\nFROM {merged}\n" in text and "ADAPTER" not in keywords
    assert 'SYSTEM """<TIME-II>\nYou are Ludwig van Beethoven.' in text


def test_a_template_that_is_not_plain_chatml_is_left_out_with_a_comment(tiny_model_dir,
                                                                       trained):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert ollama_template(tokenizer) == (OLLAMA_CHATML, "")
    smollm_like = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != "
                   "'system' %}{{ '<|im_start|>system\nYou are SmolLM<|im_end|>\n' }}{% endif %}"
                   + tokenizer.chat_template.removeprefix("{% for message in messages %}"))
    tokenizer.chat_template = smollm_like  # its default system prompt: unused under SYSTEM
    assert ollama_template(tokenizer)[0] == OLLAMA_CHATML
    tokenizer.chat_template = LLAMA2_STYLE
    template, why = ollama_template(tokenizer)
    assert template is None and "otherwise than plain ChatML" in why
    from charforge.export import served_agent

    agent = served_agent(trained, "beethoven", "ollama")
    text = ollama_modelfile(agent, template=None, template_note=why, stops=["<|im_end|>"])
    assert "TEMPLATE" not in [line.split(" ")[0] for line in text.splitlines()]
    assert f"# TEMPLATE omitted: {why}" in text


# -- refusals ----------------------------------------------------------------------------
def test_refusals_are_one_line(trained, staged):
    ws = ["-w", trained.root]
    assert "unknown character 'nobody'" in refused("vllm", "nobody", *ws)
    assert "charforge train sft diogenes" in refused("vllm", "diogenes", *ws)
    assert "charforge train sft diogenes" in refused("ollama", "diogenes", *ws)
    assert "no stage 'middle'" in refused("vllm", "beethoven", "--stage", "middle", "-w",
                                          staged.root)
    assert "stages: none" in refused("ollama", "beethoven", "--stage", "early", *ws)
    different = refused("vllm", "beethoven", "plato", *ws)
    assert "one base" in different and "other-base" in different
    assert "CHARACTER/RUN" in refused("vllm", "beethoven", "socrates", "--run", "sft-x", *ws)
    assert "no finished run" in refused("ollama", "beethoven", "--run", "sft-nope", *ws)
    assert "--base applies to --prompted" in refused("ollama", "beethoven", "--base", "x", *ws)
