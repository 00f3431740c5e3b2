"""Many processes: the accelerate configs charforge ships, and a real 2-process DDP run
(CPU, gloo) that ends where a 1-process run with the same global batch ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from charforge.errors import CharforgeError
from charforge.train.launch import CONFIGS, accelerate_config

SCENES = [
    ("Maestro, the publisher asks again for the new sonata.",
     "Tell him it will be finished when it is right, not before."),
    ("Was your father a hard teacher?", "He woke me at night to play. Music was my refuge."),
    ("Do you still visit Bonn?", "Bonn is far behind me; Vienna holds my work now."),
    ("What do you think of Haydn?", "A great master, though his lessons left me wanting."),
    ("Have you seen a telephone?", "A telephone? I know nothing of such machines."),
    ("Which form do you love most?", "The symphony, the sonata and the quartet: I made them mine."),
    ("Are you tired of the winter?", "The cold bites, but the music keeps me warm enough."),
    ("Will you play tonight?", "Only if the piano is tuned and the audience is silent."),
]


def sft_row(question: str, answer: str, stage: str = "") -> dict:
    """A chat record; `stage` (a stage token) opens the system message (PersLLM's time
    stages: the run then trains the stage tokens' embeddings too)."""
    system = f"{stage}\n" if stage else ""
    return {"messages": [
        {"role": "system", "content": system + "You are Ludwig van Beethoven. Stay Beethoven."},
        {"role": "user", "name": "Lily", "content": question},
        {"role": "assistant", "content": answer}],
        "source": "experience", "task_id": f"t-{question[:12]}", "split": "train"}


# -- the shipped configs -------------------------------------------------------------
@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_config_loads_with_accelerate(name: str) -> None:
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.utils import DistributedType

    path = accelerate_config(name)
    assert path.is_file() and path.suffix == ".yaml"
    config = load_config_from_file(str(path))
    assert isinstance(config, ClusterConfig)
    expected = {"ddp": DistributedType.MULTI_GPU, "fsdp": DistributedType.FSDP,
                "zero3": DistributedType.DEEPSPEED}[name]
    assert config.distributed_type == expected
    # charforge's --precision decides the autocast; the config does not override it
    assert config.mixed_precision == "no"
    # the number of GPUs is the user's to say (accelerate asks for --num_processes)
    assert config.num_processes == -1
    if name == "fsdp":
        fsdp = config.fsdp_config
        assert fsdp["fsdp_sharding_strategy"] == "FULL_SHARD"
        assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
        assert fsdp["fsdp_use_orig_params"] is True  # PEFT's trainable token indices
        assert fsdp["fsdp_cpu_ram_efficient_loading"] is True
        assert fsdp["fsdp_sync_module_states"] is True
        # the Trainer saves no final model with SHARDED_STATE_DICT
        assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    if name == "zero3":
        assert config.deepspeed_config["zero_stage"] == 3
        assert config.deepspeed_config["zero3_save_16bit_model"] is True


def test_unknown_config_is_one_line_listing_the_shipped_ones() -> None:
    with pytest.raises(CharforgeError) as excinfo:
        accelerate_config("zero2")
    message = str(excinfo.value)
    assert "\n" not in message
    assert "'zero2'" in message
    for name in CONFIGS:
        assert name in message


def test_config_path_printed_for_the_shell() -> None:
    result = subprocess.run([sys.executable, "-m", "charforge.train.launch", "fsdp"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == accelerate_config("fsdp")
    bad = subprocess.run([sys.executable, "-m", "charforge.train.launch", "nope"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("error: unknown accelerate config 'nope'")


def test_configs_are_package_data() -> None:
    import tomllib

    from conftest import REPO

    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["charforge"]
    assert "train/configs/*.yaml" in patterns


# -- a real 2-process DDP run on CPU -------------------------------------------------
def make_workspace(root: Path, profile: Path, rows: list[dict]) -> Path:
    from charforge.workspace import Workspace

    ws = Workspace.init(root)
    character = ws.import_character(profile, short_name="Beethoven")
    folder = ws.datasets_dir / character.slug
    folder.mkdir(parents=True)
    (folder / "sft.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root


def only_run(workspace: Path) -> Path:
    runs = [p for p in (workspace / "models" / "beethoven").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def test_two_process_ddp_matches_one_process(tmp_path: Path) -> None:
    """Same global batch (4 samples a step), 4 steps: a 2-process DDP run through the
    shipped ddp.yaml ends with the adapter a 1-process run ends with.

    Equal up to float summation order (each rank sums its own tokens' losses, DDP
    all-reduces the gradients): measured 1.5e-8. atol 1e-5 is far above that and far
    below what a real difference makes: each rank normalising its loss by its own
    tokens (average_tokens_across_devices off) or LoRA dropout (masks drawn per
    process) both end 5e-4 to 7e-4 apart, with weights of order 0.2.
    """
    import torch
    from safetensors.torch import load_file

    from tiny_models import build_tiny_chat_model

    tiny = build_tiny_chat_model(tmp_path / "tiny")
    profile = tmp_path / "b.txt"
    profile.write_text("# Ludwig van Beethoven\n\n"
                       "Ludwig van Beethoven was a composer born in Bonn.\n")
    rows = [sft_row(q, a, "<TIME-I>" if i % 2 else "<TIME-II>")
            for i, (q, a) in enumerate(SCENES)]
    ws1 = make_workspace(tmp_path / "ws1", profile, rows)
    ws2 = make_workspace(tmp_path / "ws2", profile, rows)
    settings = tmp_path / "settings.yaml"
    # dropout draws differ per process; two samples side by side in a micro-batch
    settings.write_text("lora_dropout: 0\nmicro_batch_tokens: 2048\n")
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("CHARFORGE_WORKSPACE", None)
    env.pop("WORLD_SIZE", None)

    def train(workspace: Path) -> list[str]:
        return ["-m", "charforge.cli", "train", "sft", "beethoven", "--base", str(tiny),
                "--max-steps", "4", "--effective-batch", "4", "--precision", "fp32",
                "--config", str(settings), "--workspace", str(workspace)]

    accelerate = Path(sys.executable).with_name("accelerate")
    # The shipped GPU config, with what a CPU needs said on the command line: two
    # processes, a free port (0: accelerate picks one; other runs may hold 29500), one
    # thread each. Without --cpu accelerate starts torchrun (with --cpu it starts one
    # process); the Trainer (use_cpu on a machine without CUDA) then joins them with gloo.
    launch = [str(accelerate), "launch", "--config_file", str(accelerate_config("ddp")),
              "--num_processes", "2", "--main_process_port", "0",
              "--num_cpu_threads_per_process", "1"]
    began = time.perf_counter()
    # both at once: most of their time is starting Python and importing torch
    # (each in its own session: a timeout ends torchrun's workers with the launcher;
    # output to files: a full pipe would stall one run while the other is awaited)
    runs = []
    for name, command in (("single", [sys.executable, *train(ws1)]),
                          ("ddp", [*launch, *train(ws2)])):
        with (tmp_path / f"{name}.log").open("w") as log:
            runs.append((name, subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log,
                                                stderr=subprocess.STDOUT,
                                                start_new_session=True)))
    try:
        for name, process in runs:
            process.wait(timeout=240)
            output = (tmp_path / f"{name}.log").read_text()
            assert process.returncode == 0, f"{name}: {output[-4000:]}"
    finally:
        for _, process in runs:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    seconds = time.perf_counter() - began

    run1, run2 = only_run(ws1), only_run(ws2)
    assert run1.name == run2.name  # the world size is not part of a run's identity
    record1 = json.loads((run1 / "run.json").read_text())
    record2 = json.loads((run2 / "run.json").read_text())
    assert record1["data"]["world_size"] == 1
    assert record2["data"]["world_size"] == 2
    assert record1["data"]["samples_per_step"] == record2["data"]["samples_per_step"] == 4
    assert (record1["data"]["micro_batch"], record1["data"]["accumulation"]) == (4, 1)
    assert (record2["data"]["micro_batch"], record2["data"]["accumulation"]) == (2, 1)
    assert record1["metrics"]["steps"] == record2["metrics"]["steps"] == 4
    assert record1["data"]["stage_tokens"] == record2["data"]["stage_tokens"] == 5
    assert not (run2 / "checkpoints").exists()

    adapter1 = load_file(run1 / "adapter_model.safetensors")
    adapter2 = load_file(run2 / "adapter_model.safetensors")
    assert adapter1.keys() == adapter2.keys()
    # it trained: LoRA's B matrices start at 0; the stage tokens have their own delta
    assert any(k.endswith("lora_B.weight") and adapter1[k].abs().max() > 0 for k in adapter1)
    assert any("trainable_tokens_delta" in k for k in adapter1)
    worst = max((adapter1[k] - adapter2[k]).abs().max().item() for k in adapter1)
    for key in adapter1:
        assert torch.allclose(adapter1[key], adapter2[key], rtol=0, atol=1e-5), (key, worst)
    losses1 = [json.loads(line).get("loss") for line in
               (run1 / "training_log.jsonl").read_text().splitlines()]
    losses2 = [json.loads(line).get("loss") for line in
               (run2 / "training_log.jsonl").read_text().splitlines()]
    assert [x for x in losses1 if x is not None] == pytest.approx(
        [x for x in losses2 if x is not None], abs=1e-4)
    print(f"2 runs in {seconds:.1f} s; largest difference {worst:.2e}")
