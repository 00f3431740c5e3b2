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
from charforge.llm.local import LocalChatModel
from charforge.llm.registry import BUILTIN_MODELS, DEFAULT_MODEL
from charforge.roleplay import ask_sampling, question_messages
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
    max_tokens: int | None = None,
    generation: bool = True,
    console: Console | None = None,
) -> list[tuple[str, str]]:
    """Run the demo; return the (question, answer) pairs it printed. The interview
    asks like `charforge ask` does: the built-in smollm2 and `ASK_SAMPLING` (with
    seed 0, and `max_tokens` when given)."""
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

    model = LocalChatModel.from_config(DEFAULT_MODEL, BUILTIN_MODELS[DEFAULT_MODEL].options())
    sampling = ask_sampling(max_tokens=max_tokens, seed=0)
    started = time.perf_counter()
    with console.status("loading the embedded SmolLM2-135M-Instruct (the first run converts "
                        "its GGUF file to a safetensors cache, ~30 s)…"):
        description = asyncio.run(model.check())
    console.print(f"model: smollm2, {description}, in {time.perf_counter() - started:.1f} s")

    answers = []
    for number, question in enumerate(interview_questions(questions), start=1):
        messages = question_messages(character, question)
        with console.status(f"question {number}/{questions}: generating…"):
            completion = asyncio.run(model.chat(messages, sampling))
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


# The `demo` recipe (charforge.recipes) sets each stage's counts and answer lengths;
# these are the tasks run now, small enough for a few minutes at ~15 tokens/s.
DEMO_LIMITS = {"scenes": 2, "experiences": 3, "protective": 2}


def run_small_generation(
    workspace: Workspace, character: str, model: LocalChatModel, console: Console
) -> None:
    """Experience Reconstruction on the embedded teacher, resumable like any run. A rerun
    asks the rejected tasks again, so each run of the demo adds what it can."""
    from charforge.dataset.export import build_dataset
    from charforge.generate import generate

    console.rule("Experience Reconstruction with the embedded teacher")
    for stage, limit in DEMO_LIMITS.items():
        try:
            summary = generate(workspace, character, stage, model=model, concurrency=1,
                               recipe="demo", retry="rejected", console=console, limit=limit)
        except CharforgeError as exc:  # e.g. no scenes were accepted to build upon
            console.print(f"{stage}: {exc}", markup=False, highlight=False)
            continue
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(summary.rejection_reasons.items()))
        share = (f" ({summary.accepted_tries / summary.tries:.0%} of {summary.tries} tries)"
                 if summary.tries else "")
        if summary.finished == 0:
            console.print(f"{stage}: nothing new to ask (done earlier)")
        else:
            console.print(f"{stage}: {summary.done} accepted{share}, {summary.rejected} rejected"
                          f"{f' ({reasons})' if reasons else ''}, {summary.failed} failed")
        for note in summary.notes:
            console.print(f"  {note}", markup=False, highlight=False)
        with workspace.store() as store:
            for _, reason, detail in store.rejections_in_run(summary.run_id, character,
                                                             stage)[:2]:
                console.print(f"  rejected ({reason}): {detail}", markup=False, highlight=False)
    try:
        build = build_dataset(workspace, character)
    except CharforgeError as exc:
        console.print(f"dataset: {exc}", markup=False, highlight=False)
        console.print("Each run of the demo asks the rejected tasks again (run make demo "
                      "again), and a stronger teacher in charforge.yaml gives usable data "
                      "at once.")
        return
    stats = build.stats
    console.print(
        f"dataset: {stats.sft_records} SFT records, {stats.words} words, "
        f"{stats.turns_per_dialogue} turns per dialogue -> {build.folder}"
    )
