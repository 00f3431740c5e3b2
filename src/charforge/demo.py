"""`make demo`: the main job, end to end on the embedded model.

Import Beethoven from the Character-LLM profile shipped with the package,
load the embedded SmolLM2-135M-Instruct, print his answers to interview
questions from the Character-LLM question set, then run Experience
Reconstruction small (scenes -> experiences -> protective -> dataset) with the
same model as teacher. A 135M teacher writes mostly unusable scenes: the demo
shows the rejection counts and reasons as they are. Later stages extend this
into the whole pipeline.
"""

from __future__ import annotations

import asyncio
import json
import time
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.panel import Panel

from charforge.errors import CharforgeError
from charforge.llm.base import Sampling
from charforge.llm.local import LocalChatModel, LocalConfig
from charforge.roleplay import question_messages
from charforge.workspace import Workspace

DEMO_PROFILE = "wiki_Beethoven.txt"
DEMO_QUESTIONS = "interview_Beethoven.json"


def demo_file(name: str) -> Path:
    return Path(str(resources.files("charforge").joinpath("data", name)))


def interview_questions(limit: int) -> list[str]:
    rows = json.loads(demo_file(DEMO_QUESTIONS).read_text(encoding="utf-8"))
    return [row["question"] for row in rows[:limit]]


def run_demo(
    workspace_path: str | Path,
    *,
    questions: int = 2,
    max_tokens: int = 120,
    generation: bool = True,
    console: Console | None = None,
) -> list[tuple[str, str]]:
    """Run the demo; return the (question, answer) pairs it printed."""
    console = console or Console()
    workspace = Workspace.init(workspace_path)
    names = {c.short_name for c in workspace.characters()}
    if "Beethoven" in names:
        character = workspace.load_character("Beethoven")
        console.print(f"character: {character.name} (already in {workspace.root})")
    else:
        character = workspace.import_character(demo_file(DEMO_PROFILE))
        console.print(
            f"imported {character.name}: {len(character.profile)} profile paragraphs "
            f"into {workspace.character_dir(character)}"
        )

    # A mild repetition penalty keeps the 135M model from looping on one phrase.
    model = LocalChatModel(LocalConfig(repetition_penalty=1.2), name="smollm2")
    started = time.perf_counter()
    with console.status("loading the embedded SmolLM2-135M-Instruct (the first run converts "
                        "its GGUF file to a safetensors cache, ~30 s)…"):
        description = asyncio.run(model.check())
    console.print(f"model: smollm2, {description}, in {time.perf_counter() - started:.1f} s")

    answers = []
    for number, question in enumerate(interview_questions(questions), start=1):
        messages = question_messages(character, question, max_profile_words=250)
        with console.status(f"question {number}/{questions}: generating…"):
            completion = asyncio.run(
                model.chat(messages, Sampling(temperature=0.2, max_tokens=max_tokens, seed=0))
            )
        rate = completion.usage.completion_tokens / max(completion.latency_s, 1e-9)
        cut = " · cut at max_tokens" if completion.truncated else ""
        console.print(
            Panel(
                completion.text or "(empty answer)",
                title=f"Q{number}: {question}",
                subtitle=f"{completion.usage.completion_tokens} tokens, {rate:.1f} tok/s{cut}",
                title_align="left",
            )
        )
        answers.append((question, completion.text))
    console.print(
        "SmolLM2-135M is a tiny, untrained stand-in: expect a weak Beethoven. Point charforge "
        "at a stronger model in charforge.yaml (charforge models) for real work."
    )
    if generation:
        run_small_generation(workspace, character.slug, model, console)
    return answers


# Small enough to finish in a few minutes on a laptop CPU at ~15 tokens/s.
DEMO_STAGES = [
    ("scenes", {"prompts": 2, "scenes_per_prompt": 3}, 320),
    ("experiences", {"min_words": 200}, 360),
    ("protective", {"count": 1}, 300),
]


def run_small_generation(
    workspace: Workspace, character: str, model: LocalChatModel, console: Console
) -> None:
    """Experience Reconstruction on the embedded teacher, resumable like any run."""
    from charforge.dataset.export import build_dataset
    from charforge.generate import generate

    console.rule("Experience Reconstruction with the embedded teacher")
    for stage, options, max_tokens in DEMO_STAGES:
        summary = generate(
            workspace, character, stage, model=model, concurrency=1, options=options,
            sampling={"temperature": 0.7, "max_tokens": max_tokens}, console=console,
            limit=2,
        )
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(summary.rejection_reasons.items()))
        console.print(
            f"{stage}: {summary.done} accepted, {summary.rejected} rejected"
            f"{f' ({reasons})' if reasons else ''}, {summary.failed} failed"
        )
        with workspace.store() as store:
            for _, reason, detail in store.rejections(character, stage)[:2]:
                console.print(f"  rejected ({reason}): {detail}", markup=False, highlight=False)
    try:
        build = build_dataset(workspace, character)
    except CharforgeError as exc:
        console.print(f"dataset: {exc}")
        return
    stats = build.stats
    console.print(
        f"dataset: {stats.sft_records} SFT records, {stats.words} words, "
        f"{stats.turns_per_dialogue} turns per dialogue -> {build.folder}"
    )
