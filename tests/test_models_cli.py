"""`charforge models`: local models checked by their files without torch; --load loads them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from charforge.llm.registry import ModelsConfig, check_models

from conftest import CLI, REPO, run

CHECK_SCRIPT = """
import json, sys
from charforge.llm.registry import check_models
from charforge.workspace import Workspace
results = check_models(Workspace.find(sys.argv[1]).config)
print(json.dumps({"torch": "torch" in sys.modules,
                  "transformers": "transformers" in sys.modules,
                  "results": [r.model_dump() for r in results]}))
"""


def rows(stdout: str) -> dict[str, str]:
    """The table's rows by model name: each cell's wrapped lines joined, then the cells."""
    found: dict[str, list[list[str]]] = {}
    columns: list[list[str]] = []
    for line in stdout.splitlines():
        if not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if cells[0]:
            columns = [[] for _ in cells]
            found[cells[0].removesuffix(" (default)")] = columns
        for column, cell in zip(columns, cells, strict=False):
            if cell:
                column.append(cell)
    return {name: " | ".join(" ".join(parts) for parts in cols) for name, cols in found.items()}


def workspace_with(tmp_path: Path, models: dict) -> Path:
    result = run("init", "ws", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ws = tmp_path / "ws"
    config = yaml.safe_load((ws / "charforge.yaml").read_text())
    config["models"] = models
    (ws / "charforge.yaml").write_text(yaml.safe_dump(config))
    return ws


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "CHARFORGE_WORKSPACE"}


def imported_modules(stderr: str) -> set[str]:
    """Module names from `python -X importtime` output."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def hub_cache_with(cache: Path, repo_id: str, model_dir: Path) -> None:
    """`model_dir` laid out as a Hugging Face cache snapshot of `repo_id`."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(model_dir, repo / "snapshots" / commit)


def test_local_models_are_checked_by_their_files_without_torch(tmp_path, tiny_model_dir):
    hub_cache_with(tmp_path / "hub", "charforge-test/tiny", tiny_model_dir)
    ws = workspace_with(tmp_path, {"mine": {"backend": "local", "path": str(tiny_model_dir)},
                                   "hub": {"backend": "local", "path": "charforge-test/tiny"}})
    script = subprocess.run([sys.executable, "-c", CHECK_SCRIPT, str(ws)], cwd=REPO,
                            capture_output=True, text=True, timeout=120,
                            env={**_env(), "HF_HUB_CACHE": str(tmp_path / "hub")})
    assert script.returncode == 0, script.stderr
    report = json.loads(script.stdout)
    assert report["torch"] is False and report["transformers"] is False
    by_name = {r["name"]: r for r in report["results"]}
    assert by_name["mine"]["ok"] is True
    assert "config.json + model.safetensors" in by_name["mine"]["detail"]
    assert by_name["hub"]["ok"] is True, by_name["hub"]
    assert by_name["hub"]["detail"].startswith("Hugging Face cache: config.json")
    assert by_name["smollm2"]["ok"] is True
    assert "GGUF file" in by_name["smollm2"]["detail"]
    assert "not loaded" in by_name["smollm2"]["detail"]

    # The command itself, as a user runs it: exit 0, the table, and torch never imported.
    cli = subprocess.run([sys.executable, "-X", "importtime", *CLI[1:], "models"], cwd=ws,
                         capture_output=True, text=True, timeout=120,
                         env={**_env(), "COLUMNS": "200", "HF_HUB_CACHE": str(tmp_path / "hub")})
    assert cli.returncode == 0, cli.stderr[-2000:]
    modules = imported_modules(cli.stderr)
    assert "charforge.llm.registry" in modules  # the import log is really there
    assert not {"torch", "transformers"} & modules
    table = rows(cli.stdout)
    assert "ok" in table["mine"] and "model.safetensors" in table["mine"]
    assert "ok" in table["smollm2"] and "GGUF file" in table["smollm2"]


def test_a_missing_local_path_fails_its_row_and_exits_1(tmp_path, tiny_model_dir):
    ws = workspace_with(tmp_path, {
        "gone": {"backend": "local", "path": str(tmp_path / "no-such-model")},
        "mine": {"backend": "local", "path": str(tiny_model_dir)},
    })
    result = run("models", cwd=ws)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    table = rows(result.stdout)
    assert "failed" in table["gone"] and "does not exist" in table["gone"]
    assert "no-such-model" in table["gone"]
    assert "ok" in table["mine"]  # one broken model does not hide the others
    only = run("models", "mine", cwd=ws)
    assert only.returncode == 0 and set(rows(only.stdout)) == {"mine"}


def _broken(tmp_path: Path, tiny_model_dir: Path) -> dict[str, dict]:
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text("{}")
    not_gguf = tmp_path / "fake.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 not a gguf")
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text("{}")
    (sharded / "model-00001-of-00002.safetensors").write_bytes(b"x")
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    adapter_less = tmp_path / "empty-adapter"
    adapter_less.mkdir()
    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model_dir / name, no_tokenizer / name)
    no_template = tmp_path / "no-template"
    shutil.copytree(tiny_model_dir, no_template)
    (no_template / "chat_template.jinja").unlink()
    return {
        "no_tokenizer": {"backend": "local", "path": str(no_tokenizer)},
        "no_template": {"backend": "local", "path": str(no_template)},
        "no_weights": {"backend": "local", "path": str(no_weights)},
        "not_gguf": {"backend": "local", "path": str(not_gguf)},
        "sharded": {"backend": "local", "path": str(sharded)},
        "no_adapter": {"backend": "local", "path": str(tiny_model_dir),
                       "adapter": str(tmp_path / "nowhere")},
        "empty_adapter": {"backend": "local", "path": str(tiny_model_dir),
                          "adapter": str(adapter_less)},
        "not_cached": {"backend": "local", "path": "nobody/no-such-model-xyz"},
    }


def test_each_kind_of_broken_model_is_named_in_one_line(tmp_path, tiny_model_dir):
    config = ModelsConfig.model_validate({"models": _broken(tmp_path, tiny_model_dir)})
    results = {r.name: r for r in check_models(config)}
    expected = {
        "no_weights": "has config.json but no weights",
        "not_gguf": "is not a GGUF file",
        "sharded": "weight shard model-00002-of-00002.safetensors is missing (1 of 2)",
        "no_adapter": "is not a folder",
        "empty_adapter": "has no adapter_config.json",
        "not_cached": "not a model in the local Hugging Face cache",
        "no_tokenizer": "has no tokenizer",
        "no_template": "has no chat template",
    }
    for name, needle in expected.items():
        assert results[name].ok is False, name
        assert needle in results[name].detail, (name, results[name].detail)
        assert results[name].detail.startswith(f"model {name!r}: ")
        assert "\n" not in results[name].detail


def test_load_loads_a_local_model_and_asks_it_for_one_token(tmp_path, tiny_model_dir):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)  # right names, junk weights
    ws = workspace_with(tmp_path, {
        "mine": {"backend": "local", "path": str(tiny_model_dir), "dtype": "float32"},
        "broken": {"backend": "local", "path": str(broken)},
    })
    # By its files, the broken model looks fine: only loading tells.
    quick = run("models", "mine", "broken", cwd=ws)
    assert quick.returncode == 0, quick.stdout + quick.stderr
    loaded = run("models", "mine", "broken", "--load", cwd=ws)
    assert loaded.returncode == 1, loaded.stdout + loaded.stderr
    assert "Traceback" not in loaded.stderr + loaded.stdout
    table = rows(loaded.stdout)
    assert "ok loaded:" in table["mine"] and "answered 1 token" in table["mine"]
    assert "failed" in table["broken"] and "model 'broken': cannot load" in table["broken"]


@pytest.mark.parametrize("args", [("--load", "--no-check"), ("nosuch",)])
def test_bad_arguments_are_one_line(tmp_path, args):
    ws = workspace_with(tmp_path, {})
    result = run("models", *args, cwd=ws)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: ")
