"""Character-LLM's released interview outputs into the store: `import_characterllm`.

Each released interview becomes one task of the stage `interview-import` whose record is
the interview (kind `interview`, the agent named after the released model: `sft`,
`chatgpt`, `alpaca-7b`, `vicuna-7b`), so judges and the report read imported and fresh
interviews alike, and the same item pairs across all of them. The stage asks no model:
its one role is the release itself (`ReleasedResults`, whose identity is the file's
content), and the runner gives it what every stage gets: recorded, resumable, never
repeated. Characters are matched to the workspace's by name
(`characterllm.match_character`); one with no match is reported, not guessed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Console

from charforge.aio import run_sync
from charforge.llm.base import Completion, MessagesLike, ModelStats, Sampling
from charforge.runner import run_stage
from charforge.session import TaskSession
from charforge.stages import PlannedTask, Records, StageOptions, TaskStage, build_stage
from charforge.tasks import TaskRow
from charforge.workspace import Workspace

from .characterllm import match_character, read_results
from .records import INTERVIEW_KIND, InterviewRecord

STAGE = "interview-import"


class ReleasedResults:
    """The release as the stage's one "model": never asked, known by its content."""

    supports_json_schema = False

    def __init__(self, digest: str) -> None:
        self.name = "character-llm-release"
        self.digest = digest
        self.stats = ModelStats()

    def identity(self) -> dict[str, Any]:
        return {"kind": "imported", "source": "character-llm", "content": self.digest}

    async def chat(self, messages: MessagesLike, sampling: Sampling | None = None, *,
                   response_format: Mapping[str, Any] | None = None) -> Completion:
        raise RuntimeError("imported interviews ask no model")

    async def check(self) -> str:
        return self.name

    async def aclose(self) -> None:
        return None

    async def __aenter__(self) -> ReleasedResults:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class ImportOptions(StageOptions):
    interviews: tuple[InterviewRecord, ...]


class ImportedInterviews(TaskStage):
    """One task per released interview; its record is the interview as read."""

    name: ClassVar[str] = STAGE
    description: ClassVar[str] = "interviews imported from Character-LLM's release"
    system_template: ClassVar[str | None] = None
    user_template: ClassVar[str] = ""
    repair_template: ClassVar[str | None] = None
    generation: ClassVar[bool] = False
    Options: ClassVar[type[StageOptions]] = ImportOptions
    roles: ClassVar[tuple[str, ...]] = ("source",)

    @classmethod
    def template_names(cls) -> list[str]:
        return []

    def plan(self) -> Iterator[PlannedTask]:
        for record in self.options.interviews:
            yield PlannedTask({"agent": record.agent, "mode": record.mode,
                               "item": record.item, "record": record.model_dump(mode="json")})

    def messages(self, task: TaskRow) -> list[Any]:
        return []

    async def run(self, task: TaskRow, session: TaskSession) -> Records:
        return [(INTERVIEW_KIND, task.inputs["record"])]


@dataclass
class ImportSummary:
    imported: dict[str, int] = field(default_factory=dict)  # slug -> interviews added now
    known: dict[str, int] = field(default_factory=dict)  # slug -> already in the store
    unmatched: list[str] = field(default_factory=list)  # characters not in the workspace
    problems: list[tuple[Path, str]] = field(default_factory=list)
    interrupted: bool = False


def _digest(records: list[InterviewRecord]) -> str:
    digest = hashlib.sha256()
    for record in records:
        digest.update(record.model_dump_json().encode("utf-8"))
    return digest.hexdigest()[:24]


async def import_characterllm_async(workspace: Workspace | str | Path, folder: str | Path, *,
                                    console: Console | None = None,
                                    show_progress: bool = True) -> ImportSummary:
    """Import every released interview under `folder` for the workspace's characters."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(Path(workspace))
    report = read_results(folder)
    summary = ImportSummary(problems=list(report.problems))
    known = [(c.slug, c.name, c.short_name) for c in ws.characters()]
    with ws.store() as store:
        for imported in report.characters():
            slug = match_character(imported.name, known)
            if slug is None:
                summary.unmatched.append(imported.name)
                continue
            character = ws.load_character(slug)
            stage = build_stage(ImportedInterviews, character, store,
                                options={"interviews": tuple(imported.records)})
            result = await run_stage(store, stage, ReleasedResults(_digest(imported.records)),
                                     check=False, concurrency=64, console=console,
                                     show_progress=show_progress,
                                     command=f"eval import-characterllm {folder}")
            summary.imported[slug] = result.done  # type: ignore[union-attr]
            summary.known[slug] = result.plan.known  # type: ignore[union-attr]
            if result.interrupted:  # type: ignore[union-attr]
                summary.interrupted = True
                break
    return summary


def import_characterllm(workspace: Workspace | str | Path, folder: str | Path,
                        **kwargs: Any) -> ImportSummary:
    return run_sync(import_characterllm_async(workspace, folder, **kwargs),
                    sync_name="import_characterllm", async_name="import_characterllm_async")
