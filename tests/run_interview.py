"""Runs the two-model interview stage of `custom_stage.py` on a workspace, as a
separate process (the conversation tests kill it). Usage: run_interview.py WORKSPACE"""

from __future__ import annotations

import asyncio
import sys

from charforge.llm.registry import load_chat_model
from charforge.runner import run_stage
from charforge.stages import build_stage
from charforge.workspace import Workspace

import custom_stage  # noqa: F401  (registers the stage)


async def main(root: str) -> int:
    ws = Workspace(root)
    interviewer = load_chat_model("interviewer", config=ws.config)
    agent = load_chat_model("agent", config=ws.config)
    async with interviewer, agent:
        with ws.store() as store:
            stage = build_stage("test-interview", ws.load_character("beethoven"), store,
                                options={"topics": ["music"], "turns": 4},
                                templates=ws.templates())
            summary = await run_stage(store, stage, {"interviewer": interviewer, "agent": agent},
                                      concurrency=1, show_progress=False)
    print(f"done {summary.done} rejected {summary.rejected} failed {summary.failed}")
    return 0 if summary.done == 1 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1])))
