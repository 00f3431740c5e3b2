"""`charforge status` as an API: per character and stage, tasks by state, records,
tokens billed, rejection reasons, and which tasks are stale.

A task is stale when what made it has changed since: one of its models (another
endpoint, model id, revision, weights or adapter behind the same name), a template
its stage renders, or its output schema. Stale work is kept and still used; `charforge
generate STAGE CHARACTER --rerun-stale` asks it again under today's configuration.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from charforge.errors import CharforgeError
from charforge.llm.registry import model_fingerprint_of
from charforge.stages import registered_stages

if TYPE_CHECKING:
    from charforge.workspace import Workspace

LEGACY = "made before task fingerprints were recorded (store upgraded)"


class StageStatus(BaseModel):
    """One character's stage, as `charforge status --json` prints it."""

    character: str
    stage: str
    pending: int = 0
    running: int = Field(default=0, description="leased by a run now")
    done: int = 0
    rejected: int = 0
    failed: int = 0
    stale: int = Field(default=0, description="made with a model, prompt or schema since changed")
    superseded: int = Field(default=0, description="replaced by the same work asked again")
    records: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    rejection_reasons: dict[str, int] = Field(default_factory=dict)
    stale_reasons: list[str] = Field(default_factory=list)


class _Today:
    """Today's fingerprints of models (by name), prompts and outputs (by stage)."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.stages = registered_stages()
        self.templates = workspace.templates()
        self._models: dict[str, str | None] = {}

    def model(self, name: str) -> str | None:
        if name not in self._models:
            try:
                self._models[name] = model_fingerprint_of(name, self.workspace.config)
            except CharforgeError:
                self._models[name] = None  # no longer configured, or unusable
        return self._models[name]

    def reasons(self, stage: str, models: dict[str, Any] | None, prompt_fp: str | None,
                output_fp: str | None) -> list[str]:
        """Why a group of tasks is stale (empty: it is current, or cannot be told)."""
        if models is None:
            return [LEGACY]
        cls = self.stages.get(stage)
        if cls is None:
            return []  # a stage this process does not know: nothing to compare with
        found = [f"model {ref['name']!r} changed" for ref in models.values()
                 if self.model(ref["name"]) != ref["fp"]]
        if prompt_fp != cls.prompt_fingerprint_in(self.templates):
            found.append("prompts changed")
        if output_fp != cls.output_fingerprint():
            found.append("output schema changed")
        return found


def workspace_status(workspace: Workspace) -> list[StageStatus]:
    """Every character's stages, sorted by character and stage."""
    today = _Today(workspace)
    with workspace.store() as store:
        counts = store.stage_counts()
        groups = store.identity_groups()
        reasons = {(row.character, row.stage): store.rejection_counts(row.character, row.stage)
                   for row in counts}
    rows: dict[tuple[str, str], StageStatus] = {}
    for row in counts:
        rows[(row.character, row.stage)] = StageStatus(
            character=row.character, stage=row.stage, pending=row.pending, running=row.leased,
            done=row.done, rejected=row.rejected, failed=row.failed, superseded=row.superseded,
            records=row.records, prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            rejection_reasons=reasons[(row.character, row.stage)])
    for character, stage, models, prompt_fp, output_fp, n in groups:
        why = today.reasons(stage, models, prompt_fp, output_fp)
        if why:
            status = rows[(character, stage)]
            status.stale += n
            status.stale_reasons = sorted({*status.stale_reasons, *why})
    return [rows[key] for key in sorted(rows)]


async def workspace_status_async(workspace: Workspace) -> list[StageStatus]:
    """`workspace_status` in a worker thread, so an event loop stays free."""
    return await asyncio.to_thread(workspace_status, workspace)
