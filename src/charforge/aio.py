"""Sync wrappers over the async API, and what they say inside a running event loop.

Every API function that talks to a model or the store is async first
(`generate_async`, `run_stage`, `ask_async`, ...). Their sync forms call
`run_sync`, which runs the coroutine in a fresh event loop, or, when a loop is
already running (Jupyter, FastAPI, an async test), refuses in one line that names
the async form to await instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from charforge.errors import EventLoopError

T = TypeVar("T")


def run_sync(coroutine: Coroutine[Any, Any, T], *, sync_name: str, async_name: str) -> T:
    """Run `coroutine` to completion from synchronous code."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    coroutine.close()  # never awaited: close it so Python does not warn
    raise EventLoopError(
        f"{sync_name}() cannot run inside a running event loop (Jupyter, FastAPI, async "
        f"code); use: await {async_name}(...)"
    )
