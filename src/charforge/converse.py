"""Two characters in conversation (PersLLM's multi-agent experiment): `converse`.

Each character answers as the server would serve it (`charforge.serve.catalogue`):
its latest trained run's adapter, or the prompted base when it has none. From a
character's point of view its own earlier lines are `assistant` turns and the other's
are `user` turns named after the other; the first character opens. What a character
thinks (reasoning) is recorded with its line but never shown to the other.

Every turn is one task of the stage `converse`, run through `run_stage` and recorded
in the store in one transaction: the plan yields only the next missing turn (turn k
is asked from the turns before it, read back from the stage's records), and the driver
runs the stage once per turn. A task's identity holds both characters, the scene, the
turn, a hash of the conversation so far (and the previous turn's task as its parent)
and both models' fingerprints (each bound to the scene), so rerunning the same
conversation after a kill continues at the first missing turn and never asks a
finished one again; another scene is another conversation.

The transcript is written whole from the store after each run, as JSON lines and
Markdown, under `<workspace>/conversations/<a>-<b>-<scene hash>.jsonl|.md`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, Field
from rich.console import Console
from rich.markup import escape

from charforge.agents import ServedCharacter, split_thoughts
from charforge.aio import run_sync
from charforge.character import Character
from charforge.errors import CharforgeError
from charforge.llm.base import ChatMessage, Sampling
from charforge.runner import RunSummary, run_stage, task_config, task_specs
from charforge.serve.catalogue import Catalogue, Scene
from charforge.serve.thoughts import Part
from charforge.session import TaskSession
from charforge.stages import (
    PlannedTask,
    Records,
    StageContext,
    StageOptions,
    TaskStage,
    build_stage,
)
from charforge.store import Store
from charforge.tasks import TaskRow, canonical
from charforge.workspace import Workspace

STAGE = "converse"
LINE_KIND = "converse_line"
ROLES = ("a", "b")  # a opens, then b, a, b, ...
# A line of talk, not an essay; some variety. (`--temperature 0` for greedy.)
CONVERSE_SAMPLING = Sampling(temperature=0.7, max_tokens=256)


def _hash(value: Any, size: int = 16) -> str:
    return hashlib.sha256(canonical(value).encode("utf-8")).hexdigest()[:size]


def scene_hash(scene: str, location: str = "") -> str:
    """The short hash naming a scene's transcript files."""
    return _hash({"scene": scene, "location": location}, 8)


def history_hash(lines: list[Mapping[str, Any]]) -> str:
    """The conversation so far: who said what, in order (thinking is not shown)."""
    return _hash([[line["role"], line["content"]] for line in lines])


# -- the stage ------------------------------------------------------------------------
class ConverseOptions(StageOptions):
    a: str = Field(description="the slug of the character who opens")
    b: str = Field(description="the slug of the character who answers")
    scene: str = Field(description="what is happening (the system prompts' status)")
    location: str = Field(default="", description="where it happens")
    turns: int = Field(default=6, ge=1, le=1000, description="lines in all")
    conversation: str = Field(description="the conversation's id: characters, scene, "
                                          "models and sampling hashed")


def conversation_view(lines: list[Mapping[str, Any]], role: str,
                      other_name: str) -> list[ChatMessage]:
    """The conversation so far as `role` sees it: its own lines as the assistant's, the
    other's as user turns named `other_name`; thinking left out."""
    return [ChatMessage(role="assistant", content=line["content"]) if line["role"] == role
            else ChatMessage(role="user", content=line["content"], name=other_name)
            for line in lines]


class ConverseStage(TaskStage):
    """One line of a two-character conversation per task; the next one only."""

    name: ClassVar[str] = STAGE
    description: ClassVar[str] = "two characters in conversation, one line per task"
    system_template: ClassVar[str | None] = None
    # What the core fingerprints: the prompted characters' system prompt (the served
    # ones' meta prompts are in their models' identities, with the scene).
    user_template: ClassVar[str] = "roleplay_system"
    repair_template: ClassVar[str | None] = None
    Options: ClassVar[type[StageOptions]] = ConverseOptions
    roles: ClassVar[tuple[str, ...]] = ROLES
    sampling: ClassVar[Sampling] = CONVERSE_SAMPLING

    def __init__(self, context: StageContext, other: Character | None = None) -> None:
        super().__init__(context)
        self.other = other or context.character
        self.lines: list[dict[str, Any]] = []

    def names(self, role: str) -> tuple[str, str]:
        """(speaker's short name, the other's) for `role`."""
        a, b = self.character.short_name, self.other.short_name
        return (a, b) if role == "a" else (b, a)

    def recorded(self) -> list[dict[str, Any]]:
        """The conversation's lines so far, from the store: turn 0, then each turn whose
        record follows on from exactly the lines before it, up to the first gap."""
        wanted = self.options.conversation
        found: dict[tuple[int, str], dict[str, Any]] = {}
        for record in self.context.reader.records(self.character.slug, LINE_KIND):
            data = record.data
            if data.get("conversation") == wanted:
                found.setdefault((data["turn"], data["history"]),
                                 {**data, "task_id": record.task_id})
        lines: list[dict[str, Any]] = []
        while len(lines) < self.options.turns:
            line = found.get((len(lines), history_hash(lines)))
            if line is None:
                break
            lines.append(line)
        return lines

    def plan(self) -> Iterator[PlannedTask]:
        self.lines = self.recorded()
        turn = len(self.lines)
        if turn >= self.options.turns:
            return
        previous = ((self.lines[-1]["task_id"], 0),) if self.lines else ()
        yield PlannedTask(inputs={
            "a": self.options.a, "b": self.options.b, "scene": self.options.scene,
            "location": self.options.location, "conversation": self.options.conversation,
            "turn": turn, "speaker": ROLES[turn % 2], "history": history_hash(self.lines),
        }, parents=previous)

    def _lines_before(self, task: TaskRow) -> list[dict[str, Any]]:
        turn = task.inputs["turn"]
        lines = self.lines[:turn]
        if len(lines) != turn or history_hash(lines) != task.inputs["history"]:
            lines = self.recorded()[:turn]
        if len(lines) != turn or history_hash(lines) != task.inputs["history"]:
            raise RuntimeError(f"turn {turn}: the lines before it are not in the store")
        return lines

    def messages(self, task: TaskRow) -> list[ChatMessage]:
        role = task.inputs["speaker"]
        return conversation_view(self._lines_before(task), role, self.names(role)[1])

    async def run(self, task: TaskRow, session: TaskSession) -> Records:
        role = task.inputs["speaker"]
        completion = await session.ask(self.messages(task), role=role)
        reasoning, content = split_thoughts(completion.text)
        speaker = self.character if role == "a" else self.other
        return [(LINE_KIND, {
            "conversation": task.inputs["conversation"], "turn": task.inputs["turn"],
            "history": task.inputs["history"], "role": role, "speaker": speaker.slug,
            "name": speaker.short_name, "content": content.strip(),
            "reasoning": reasoning.strip(), "model": completion.model,
            "finish_reason": completion.finish_reason,
            "tokens": {"prompt": completion.usage.prompt_tokens,
                       "completion": completion.usage.completion_tokens},
        })]


# -- the result and its files -------------------------------------------------------------
class ConversationTurn(BaseModel):
    turn: int
    speaker: str
    name: str
    content: str
    reasoning: str = ""
    model: str
    tokens: dict[str, int]


class ConversationResult(BaseModel):
    a: str
    b: str
    scene: str
    location: str = ""
    conversation: str
    turns: list[ConversationTurn]
    jsonl: Path
    markdown: Path
    asked: int = Field(description="turns asked of a model in this run")
    planned: int = Field(description="tasks newly added to the store in this run")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    interrupted: bool = False


def _turn(line: Mapping[str, Any]) -> ConversationTurn:
    return ConversationTurn(turn=line["turn"], speaker=line["speaker"], name=line["name"],
                            content=line["content"], reasoning=line["reasoning"],
                            model=line["model"], tokens=line["tokens"])


def transcript_markdown(a: Character, b: Character, scene: str, location: str,
                        turns: list[ConversationTurn]) -> str:
    out = [f"# {a.short_name} and {b.short_name}", "", f"Scene: {scene}"]
    if location:
        out.append(f"Location: {location}")
    out.append("")
    for turn in turns:
        out += [f"## {turn.turn + 1}. {turn.name}", "", f"<!-- model: {turn.model} -->", ""]
        if turn.reasoning:
            out += ["<details><summary>thinking</summary>", "", turn.reasoning, "",
                    "</details>", ""]
        out += [turn.content, ""]
    return "\n".join(out)


def _write_whole(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staged.write_text(text, encoding="utf-8")
    os.replace(staged, path)


def write_transcript(folder: Path, a: Character, b: Character, scene: str, location: str,
                     turns: list[ConversationTurn]) -> tuple[Path, Path]:
    """The transcript as JSON lines and Markdown, each written whole."""
    stem = f"{a.slug}-{b.slug}-{scene_hash(scene, location)}"
    jsonl, markdown = folder / f"{stem}.jsonl", folder / f"{stem}.md"
    _write_whole(jsonl, "".join(json.dumps(t.model_dump(), ensure_ascii=False) + "\n"
                                for t in turns))
    _write_whole(markdown, transcript_markdown(a, b, scene, location, turns))
    return jsonl, markdown


# -- printing as it goes ----------------------------------------------------------------
class _Printer:
    """Prints each line as it streams: the speaker's name, the thinking dimmed."""

    def __init__(self, console: Console | None, names: Mapping[str, str]) -> None:
        self.console, self.names = console, names
        self.open: str | None = None
        self.streamed = False

    def part(self, role: str, part: Part) -> None:
        if self.console is None:
            return
        if self.open != role:
            self.console.print(f"\n[bold]{escape(self.names[role])}:[/bold] ", end="")
            self.open = role
        style = "dim italic" if part.kind == "reasoning" else None
        self.console.print(part.text, style=style, end="", markup=False, highlight=False)
        self.streamed = True

    def end_line(self) -> None:
        if self.console is not None and self.open is not None:
            self.console.print()
        self.open, self.streamed = None, False

    def whole(self, turn: ConversationTurn, note: str = "") -> None:
        if self.console is None:
            return
        self.console.print(f"\n[bold]{escape(turn.name)}:[/bold]{note} ", end="")
        if turn.reasoning:
            self.console.print(turn.reasoning, style="dim italic", markup=False,
                               highlight=False)
        self.console.print(turn.content, markup=False, highlight=False)


# -- the API --------------------------------------------------------------------------------
def _workspace(workspace: Workspace | str | Path) -> Workspace:
    return workspace if isinstance(workspace, Workspace) else Workspace.find(Path(workspace))


async def converse_async(
    workspace: Workspace | str | Path,
    a: str,
    b: str,
    *,
    scene: str,
    location: str = "",
    turns: int = 6,
    model: str | None = None,
    sampling: Sampling | Mapping[str, Any] | None = None,
    console: Console | None = None,
) -> ConversationResult:
    """Let `a` and `b` talk for `turns` lines in `scene` (`a` opens), resuming the same
    conversation where the store left it; print it to `console` as it goes."""
    if turns < 1:
        raise CharforgeError(f"--turns must be at least 1 (given {turns})")
    if not scene.strip():
        raise CharforgeError("--scene is empty; say what is happening, e.g. "
                             "--scene 'two old friends meet at a concert'")
    ws = _workspace(workspace)
    char_a, char_b = ws.load_character(a), ws.load_character(b)
    if char_a.slug == char_b.slug:
        raise CharforgeError(f"a conversation needs two characters; {a!r} and {b!r} are both "
                             f"{char_a.short_name}")
    try:
        sampling = CONVERSE_SAMPLING.but(**(sampling.model_dump() if isinstance(
            sampling, Sampling) else dict(sampling or {})))
    except ValueError as exc:
        raise CharforgeError(str(exc)) from None
    where = Scene(location=location, status=scene)
    printer = _Printer(console, {"a": char_a.short_name, "b": char_b.short_name})
    catalogue = Catalogue.from_workspace(ws, model=model)
    try:
        models = {role: ServedCharacter(catalogue.get(char.slug), where, role, printer.part)
                  for role, char in zip(ROLES, (char_a, char_b), strict=True)}
        with ws.store() as store:
            return await _converse(ws, store, char_a, char_b, models, where, turns,
                                   sampling, printer)
    finally:
        await catalogue.aclose()


async def _converse(ws: Workspace, store: Store, char_a: Character, char_b: Character,
                    models: dict[str, ServedCharacter], where: Scene, turns: int,
                    sampling: Sampling, printer: _Printer) -> ConversationResult:
    from charforge.llm.base import model_fingerprint

    conversation = _hash({"a": char_a.slug, "b": char_b.slug, "scene": where.status,
                          "location": where.location,
                          "models": {r: model_fingerprint(m) for r, m in models.items()},
                          "sampling": sampling.model_dump(mode="json")})
    options = ConverseOptions(a=char_a.slug, b=char_b.slug, scene=where.status,
                              location=where.location, turns=turns, conversation=conversation)
    stage = ConverseStage(build_stage(ConverseStage, char_a, store, options=options,
                                      sampling=sampling).context, other=char_b)
    lines = stage.recorded()
    for line in lines:
        printer.whole(_turn(line), " [dim](recorded)[/dim]")
    totals = RunSummary()
    first = True
    while len(lines) < turns:
        summary = await run_stage(store, stage, models, retry="failed", check=first,
                                  show_progress=False, command=f"converse {char_a.slug} "
                                  f"{char_b.slug}", settings={"conversation": conversation})
        assert isinstance(summary, RunSummary)
        first = False
        streamed = printer.streamed
        printer.end_line()
        totals.done += summary.done
        totals.plan.added += summary.plan.added
        totals.prompt_tokens += summary.prompt_tokens
        totals.completion_tokens += summary.completion_tokens
        if summary.interrupted:
            totals.interrupted = True
            break
        now = stage.recorded()
        if len(now) <= len(lines):
            problem = _last_error(store, stage, models)
            raise CharforgeError(f"turn {len(lines) + 1} of the conversation failed"
                                 f"{f' ({problem})' if problem else ''}; fix it and run the "
                                 "same command again to resume")
        if not streamed:
            for line in now[len(lines):]:
                printer.whole(_turn(line))
        lines = now
    done = [_turn(line) for line in lines]
    jsonl, markdown = write_transcript(ws.root / "conversations", char_a, char_b, where.status,
                                       where.location, done)
    return ConversationResult(
        a=char_a.slug, b=char_b.slug, scene=where.status, location=where.location,
        conversation=conversation, turns=done, jsonl=jsonl, markdown=markdown,
        asked=totals.done, planned=totals.plan.added, prompt_tokens=totals.prompt_tokens,
        completion_tokens=totals.completion_tokens, interrupted=totals.interrupted)


def _last_error(store: Store, stage: ConverseStage,
                models: Mapping[str, ServedCharacter]) -> str | None:
    """Why the next turn's task did not finish: its last try's error."""
    spec = next(task_specs(stage, task_config(stage, models)), None)
    tries = store.tries(spec.id) if spec is not None else []
    errors = [t.get("error") for t in tries if t.get("error")]
    return str(errors[-1]) if errors else None


def converse(workspace: Workspace | str | Path, a: str, b: str, **kwargs: Any
             ) -> ConversationResult:
    """The sync form of `converse_async`."""
    return run_sync(converse_async(workspace, a, b, **kwargs), sync_name="converse",
                    async_name="converse_async")
