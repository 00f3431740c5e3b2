"""charforge: turn a character's profile into a trainable role-playing agent.

The public API is re-exported here lazily, so that `import charforge` (and the
CLI's `--help`) stays fast: torch and transformers load only when a model does.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "CharforgeError": "charforge.errors",
    "Character": "charforge.character",
    "Passage": "charforge.character",
    "Stage": "charforge.character",
    "Workspace": "charforge.workspace",
    "ChatModel": "charforge.llm.base",
    "ChatMessage": "charforge.llm.base",
    "Completion": "charforge.llm.base",
    "Usage": "charforge.llm.base",
    "Sampling": "charforge.llm.base",
    "TaskStage": "charforge.stages",
    "StageOptions": "charforge.stages",
    "PlannedTask": "charforge.stages",
    "register_stage": "charforge.stages",
    "build_stage": "charforge.stages",
    "run_stage": "charforge.runner",
    "generate": "charforge.generate",
    "generate_async": "charforge.generate",
    "workspace_status": "charforge.status",
    "check_models": "charforge.llm.registry",
    "check_models_async": "charforge.llm.registry",
    "OpenAIChatModel": "charforge.llm.openai_api",
    "LocalChatModel": "charforge.llm.local",
    "load_chat_model": "charforge.llm.registry",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'charforge' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
