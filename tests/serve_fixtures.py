"""A served workspace for the serving tests: three characters on one tiny model (two
with their own trained LoRA adapter, one prompted) and a real uvicorn server."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import uvicorn
import yaml

from charforge.workspace import Workspace

from train_fixtures import scene_rows, workspace_with_data

FAST = {"precision": "fp32", "effective_batch": 1, "max_steps": 1}


def _add_character(ws: Workspace, root: Path, short_name: str, *, train_rows=None) -> None:
    profile = root / f"{short_name}.txt"
    profile.write_text(f"# {short_name} of Athens\n\n{short_name} was a philosopher who "
                       "walked the market and asked questions.\n", encoding="utf-8")
    character = ws.import_character(profile, short_name=short_name)
    if train_rows is not None:
        folder = ws.datasets_dir / character.slug
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train_rows))


def _scramble_adapter(folder: Path, seed: int) -> None:
    """Give a one-step adapter large random LoRA weights, so its replies are plainly its
    own (one training step barely moves it from the base)."""
    import torch
    from safetensors.torch import load_file, save_file

    path = folder / "adapter_model.safetensors"
    tensors = load_file(str(path))
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in tensors.items():
        if "lora_" in name:
            tensors[name] = torch.randn(tensor.shape, generator=generator) * 0.8
    save_file(tensors, str(path), metadata={"format": "pt"})


def _serve_in_float32(folder: Path) -> None:
    """Serve the run in float32, as the prompted character's model is: `dtype: auto` is
    bfloat16 on AVX-512 hosts, and greedy replies must not depend on the host."""
    run_file = folder / "run.json"
    record = json.loads(run_file.read_text())
    record["model"]["dtype"] = "float32"
    run_file.write_text(json.dumps(record, indent=2))


def served_workspace(root: Path, tiny_model_dir: Path) -> Workspace:
    """Beethoven and Socrates trained (their adapters scrambled apart), Diogenes
    prompted through the tiny base (the workspace's default model), fp32."""
    from charforge.train.runs import finished_runs
    from charforge.train.sft import train_sft

    ws = workspace_with_data(root, scene_rows(2))
    _add_character(ws, root, "Socrates", train_rows=scene_rows(2))
    _add_character(ws, root, "Diogenes")
    train_sft(ws, "beethoven", base=str(tiny_model_dir), changes=FAST)
    train_sft(ws, "socrates", base=str(tiny_model_dir), changes=FAST)
    for seed, (folder, _) in enumerate(finished_runs(ws.root)):
        _scramble_adapter(folder, seed)
        _serve_in_float32(folder)
    config = yaml.safe_load(ws.config_path.read_text())
    config["default_model"] = "tiny"
    config["models"] = {**(config.get("models") or {}),
                        "tiny": {"backend": "local", "path": str(tiny_model_dir),
                                 "dtype": "float32"}}
    ws.config_path.write_text(yaml.safe_dump(config))
    return Workspace(ws.root)


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """Run `app` with uvicorn in a thread on a free port; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
