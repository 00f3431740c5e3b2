"""Recovering a character model released as a weight difference, as Character-LLM's 7B
agents are (target = base + delta): on a tiny random Llama, a "character model" made
from it (perturbed weights, tokens added) and the delta between them, written as the
releases are (sharded .bin or safetensors)."""

from __future__ import annotations

import json
import shutil
import weakref
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from charforge import checkpoints
from charforge.checkpoints import (
    CheckpointError,
    OutputExistsError,
    TensorMismatchError,
    recover_checkpoint,
)
from charforge.cli_checkpoint import checkpoint_app

from tiny_models import build_tiny_chat_model

SHARD = 30_000  # bytes: the tiny model's weights span several files
ADDED = ["<|scene|>", "<|beethoven|>"]  # tokens the character model added
PROMPT = "<|beethoven|> I was born in Bonn and moved to Vienna"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".index.json")


# -- building a base, a character model and the delta between them --------------------------
def save_shards(state: dict[str, torch.Tensor], folder: Path, *, fmt: str) -> None:
    """`state` in the Hugging Face layout: shards of at most SHARD bytes and an index."""
    folder.mkdir(parents=True, exist_ok=True)
    shards: list[list[str]] = [[]]
    filled = 0
    for name, tensor in state.items():
        size = tensor.numel() * tensor.element_size()
        if shards[-1] and filled + size > SHARD:
            shards.append([])
            filled = 0
        shards[-1].append(name)
        filled += size
    stem, suffix = ("model", "safetensors") if fmt == "safetensors" else ("pytorch_model", "bin")
    weight_map = {}
    for number, shard in enumerate(shards, 1):
        file = f"{stem}-{number:05d}-of-{len(shards):05d}.{suffix}"
        part = {name: state[name].clone().contiguous() for name in shard}
        if fmt == "safetensors":
            save_file(part, folder / file, metadata={"format": "pt"})
        else:
            torch.save(part, folder / file)
        weight_map.update(dict.fromkeys(shard, file))
    (folder / f"{stem}.{suffix}.index.json").write_text(json.dumps({"weight_map": weight_map}))


def read_state(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors model folder (one file, or shards with an index)."""
    index = folder / "model.safetensors.index.json"
    files = (sorted(set(json.loads(index.read_text())["weight_map"].values()))
             if index.exists() else ["model.safetensors"])
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(folder / file))
    return state


def model_folder(state: dict[str, torch.Tensor], folder: Path, *, like: Path,
                 fmt: str = "safetensors") -> Path:
    """A model folder holding `state` with the config and tokenizer files of `like`."""
    save_shards(state, folder, fmt=fmt)
    for file in like.iterdir():
        if not file.name.endswith(WEIGHT_SUFFIXES):
            shutil.copyfile(file, folder / file.name)
    return folder


def character_model(base: Path, folder: Path, *, added: list[str]) -> Path:
    """A "fine-tuned" character model: the base's weights moved (then kept
    fp16-representable, as released models are), with `added` tokens in its vocabulary."""
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if added:
        tokenizer.add_tokens(added, special_tokens=True)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    torch.manual_seed(1)
    with torch.no_grad():
        for weight in model.parameters():
            weight.add_(torch.randn_like(weight) * 0.02)
            weight.copy_(weight.half().float())
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def weight_difference(base: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                      dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """target - base, as FastChat's make_delta writes it (added token rows kept whole)."""
    delta = {}
    for name, tensor in target.items():
        change = tensor.float().clone()
        change[: base[name].shape[0]] -= base[name].float()
        delta[name] = change.to(dtype)
    return delta


def fastchat_sum(base: dict[str, torch.Tensor], delta: dict[str, torch.Tensor]):
    """What recovering must give: the delta with the base added into its leading rows,
    summed in float32, in the delta's dtype."""
    target = {}
    for name, change in delta.items():
        total = change.float().clone()
        total[: base[name].shape[0]] += base[name].float()
        target[name] = total.to(change.dtype)
    return target


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    base = build_tiny_chat_model(root / "base", seed=0)
    return SimpleNamespace(
        base=base, base_state=read_state(base),
        same_vocab=character_model(base, root / "same-vocab", added=[]),
        grown_vocab=character_model(base, root / "grown-vocab", added=ADDED))


def greedy_tokens(folder: Path) -> list[int]:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    prompt = tokenizer(PROMPT, return_tensors="pt")
    output = model.generate(**prompt, max_new_tokens=12, do_sample=False,
                            pad_token_id=tokenizer.pad_token_id)
    return output[0].tolist()


def delta_of(models, target: Path, folder: Path, *, dtype=torch.float16,
             edit=None) -> Path:
    """A delta folder (safetensors shards) for `target`; `edit` changes its tensors first."""
    delta = weight_difference(models.base_state, read_state(target), dtype)
    if edit:
        edit(delta)
    return model_folder(delta, folder, like=target)


# -- recovering ---------------------------------------------------------------------------
def test_a_released_fp16_delta_with_added_tokens_recovers_the_character_model(models, tmp_path):
    """Character-LLM's case: a .bin base (with the rotary buffers old Llama conversions
    saved), an fp16 safetensors delta whose vocabulary has two more tokens."""
    buffers = {f"model.layers.{i}.self_attn.rotary_emb.inv_freq": torch.rand(4)
               for i in range(2)}
    base = model_folder({**models.base_state, **buffers}, tmp_path / "llama", like=models.base,
                        fmt="bin")
    delta = delta_of(models, models.grown_vocab, tmp_path / "wdiff")
    steps = []

    summary = recover_checkpoint(base, delta, tmp_path / "beethoven", max_shard_bytes=SHARD,
                                 progress=lambda done, total, name: steps.append(done))

    out = tmp_path / "beethoven"
    recovered, target = read_state(out), read_state(models.grown_vocab)
    rows = models.base_state["model.embed_tokens.weight"].shape[0]
    assert summary.vocabulary == (rows, rows + len(ADDED))
    assert summary.dtypes == ["float16"]
    assert sorted(summary.skipped) == sorted(buffers)
    assert summary.tensors == len(target) == len(recovered)
    assert steps == list(range(1, len(target) + 1))
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert summary.shards == len(set(index["weight_map"].values())) > 1
    assert all(tensor.dtype == torch.float16 for tensor in recovered.values())
    expected = fastchat_sum(models.base_state, read_state(delta))
    for name, tensor in target.items():
        assert torch.equal(recovered[name], expected[name]), name
        assert torch.allclose(recovered[name].float(), tensor, rtol=1e-3, atol=1e-4), name
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert all(token in tokenizer.get_vocab() for token in ADDED)
    assert tokenizer(PROMPT)["input_ids"][0] >= rows  # the added token is in the prompt
    assert greedy_tokens(out) == greedy_tokens(models.grown_vocab)


def test_an_fp32_delta_against_a_safetensors_base_recovers_exactly(models, tmp_path):
    base = model_folder(models.base_state, tmp_path / "base", like=models.base)
    delta = delta_of(models, models.same_vocab, tmp_path / "wdiff", dtype=torch.float32)

    summary = recover_checkpoint(base, delta, tmp_path / "out", max_shard_bytes=SHARD)

    recovered, target = read_state(tmp_path / "out"), read_state(models.same_vocab)
    assert summary.vocabulary is None and summary.dtypes == ["float32"]
    expected = fastchat_sum(models.base_state, read_state(delta))
    for name, tensor in target.items():
        assert torch.equal(recovered[name], expected[name]), name
        assert torch.allclose(recovered[name], tensor, rtol=0, atol=1e-6), name
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out").state_dict()
    assert all(torch.equal(loaded[name], recovered[name]) for name in recovered)
    assert greedy_tokens(tmp_path / "out") == greedy_tokens(models.same_vocab)
    assert greedy_tokens(tmp_path / "out") != greedy_tokens(models.base)  # it moved


def test_recovery_streams_tensor_by_tensor(models, tmp_path, monkeypatch):
    """No more than one base and one delta tensor are alive at any read, and the output
    tensors held are those of one shard, never the model."""
    base = model_folder(models.base_state, tmp_path / "base", like=models.base)
    delta = delta_of(models, models.same_vocab, tmp_path / "wdiff")
    reads: list[weakref.ref] = []
    most_alive = 0
    read = checkpoints._Weights.tensor

    def counted(self, name):
        nonlocal most_alive
        tensor = read(self, name)
        reads.append(weakref.ref(tensor))
        most_alive = max(most_alive, sum(ref() is not None for ref in reads))
        return tensor

    monkeypatch.setattr(checkpoints._Weights, "tensor", counted)
    summary = recover_checkpoint(base, delta, tmp_path / "out", max_shard_bytes=SHARD)

    assert len(reads) == 2 * summary.tensors
    assert most_alive <= 2
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    per_shard = [list(index["weight_map"].values()).count(file)
                 for file in set(index["weight_map"].values())]
    assert summary.peak_tensors_held == max(per_shard) < summary.tensors
    largest = max(tensor.numel() * 2 for tensor in read_state(delta).values())
    assert summary.peak_bytes_held <= max(SHARD, largest) < summary.bytes_written


def test_a_small_model_is_one_file_without_an_index(models, tmp_path):
    base = model_folder(models.base_state, tmp_path / "base", like=models.base)
    delta = delta_of(models, models.same_vocab, tmp_path / "wdiff")

    summary = recover_checkpoint(base, delta, tmp_path / "out")

    assert summary.shards == 1
    names = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert "model.safetensors" in names and "config.json" in names
    assert not any(name.endswith(".index.json") for name in names)
    assert {"config.json", "tokenizer.json", "tokenizer_config.json"} <= set(summary.copied)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.is_dir()]


# -- what is refused ------------------------------------------------------------------------
def _grow_rows(name: str, rows: int):
    def edit(delta):
        delta[name] = torch.cat([delta[name], torch.zeros(rows, *delta[name].shape[1:],
                                                          dtype=delta[name].dtype)])
    return edit


@pytest.mark.parametrize(("name", "edit", "shapes"), [
    ("model.layers.0.self_attn.q_proj.weight",
     _grow_rows("model.layers.0.self_attn.q_proj.weight", 1), ("[32, 32]", "[33, 32]")),
    ("model.embed_tokens.weight",
     lambda d: d.update({"model.embed_tokens.weight": d["model.embed_tokens.weight"][:-3]}),
     ("[{rows}, 32]", "[{fewer}, 32]")),
    ("lm_head.weight",
     lambda d: d.update({"lm_head.weight": d["lm_head.weight"][:, :16]}),
     ("[{rows}, 32]", "[{rows}, 16]")),
])
def test_a_shape_mismatch_names_the_tensor_and_both_shapes(models, tmp_path, name, edit,
                                                          shapes):
    base = model_folder(models.base_state, tmp_path / "base", like=models.base)
    delta = delta_of(models, models.same_vocab, tmp_path / "wdiff", edit=edit)
    rows = models.base_state["model.embed_tokens.weight"].shape[0]

    with pytest.raises(TensorMismatchError) as caught:
        recover_checkpoint(base, delta, tmp_path / "out")

    message = str(caught.value)
    assert "\n" not in message and name in message
    for shape in shapes:
        assert shape.format(rows=rows, fewer=rows - 3) in message, message
    assert not (tmp_path / "out").exists()


def test_a_tensor_on_one_side_only_is_named(models, tmp_path):
    base = model_folder(models.base_state, tmp_path / "base", like=models.base)
    dropped = "model.layers.1.mlp.up_proj.weight"
    lacking = delta_of(models, models.same_vocab, tmp_path / "lacking",
                       edit=lambda d: d.pop(dropped))
    extra = delta_of(models, models.same_vocab, tmp_path / "extra",
                     edit=lambda d: d.update({"model.layers.2.mlp.up_proj.weight":
                                              torch.zeros(64, 32, dtype=torch.float16)}))

    with pytest.raises(TensorMismatchError, match=rf"{dropped} is in the base .* not in the "
                       r"delta") as caught:
        recover_checkpoint(base, lacking, tmp_path / "out")
    assert "\n" not in str(caught.value)
    with pytest.raises(TensorMismatchError, match=r"layers\.2\.mlp\.up_proj\.weight is in "
                       r"the delta .* not in the base"):
        recover_checkpoint(base, extra, tmp_path / "out")


def test_an_existing_output_is_kept_unless_forced(models, tmp_path):
    base = model_folder(models.base_state, tmp_path / "base", like=models.base)
    delta = delta_of(models, models.same_vocab, tmp_path / "wdiff")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")

    with pytest.raises(OutputExistsError, match="--force"):
        recover_checkpoint(base, delta, out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]

    recover_checkpoint(base, delta, out, force=True)
    assert (out / "model.safetensors").exists() and not (out / "notes.txt").exists()


def test_bad_folders_are_refused_before_anything_is_written(models, tmp_path):
    base = model_folder(models.base_state, tmp_path / "base", like=models.base)
    delta = delta_of(models, models.same_vocab, tmp_path / "wdiff")
    (tmp_path / "empty").mkdir()
    cases = [
        (tmp_path / "nowhere", delta, tmp_path / "out", "base folder .* was not found"),
        (tmp_path / "empty", delta, tmp_path / "out", "no weights found in the base"),
        (base, delta, base / "out", "inside the base folder"),
        (base, delta, tmp_path, "is inside the output"),
    ]
    for base_dir, delta_dir, out, problem in cases:
        with pytest.raises(CheckpointError, match=problem):
            recover_checkpoint(base_dir, delta_dir, out, force=True)
    assert not (tmp_path / "out").exists() and not (base / "out").exists()
    assert (base / "model.safetensors.index.json").exists()


# -- the command ----------------------------------------------------------------------------
def test_the_command_recovers_and_prints_one_line(models, tmp_path):
    base = model_folder(models.base_state, tmp_path / "base", like=models.base)
    delta = delta_of(models, models.grown_vocab, tmp_path / "wdiff")

    result = CliRunner().invoke(checkpoint_app, ["recover", "--base", str(base), "--delta",
                                                 str(delta), "-o", str(tmp_path / "out")])

    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("recovered "), result.stdout
    assert "float16" in lines[0] and "-> " in lines[0]
    assert AutoTokenizer.from_pretrained(tmp_path / "out")


@pytest.mark.parametrize(("flags", "needles"), [
    (["--base", "{tmp}/nowhere"], ["base folder", "nowhere", "not found"]),
    (["-o", "{tmp}/taken"], ["--force", "taken"]),
])
def test_the_commands_errors_are_one_line(models, tmp_path, flags, needles):
    base = model_folder(models.base_state, tmp_path / "base", like=models.base)
    delta = delta_of(models, models.same_vocab, tmp_path / "wdiff")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    given = {"--base": str(base), "--delta": str(delta), "-o": str(tmp_path / "out")}
    given.update({flag: value.format(tmp=tmp_path) for flag, value in zip(flags[::2],
                                                                         flags[1::2],
                                                                         strict=True)})

    result = CliRunner().invoke(checkpoint_app, ["recover", *sum(given.items(), ())])

    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
