"""`charforge dataset build` and `charforge review`: commands of the `charforge` app
(registered in `charforge.cli`), each a thin shell over one API function."""

from __future__ import annotations

import json
import sys
import textwrap
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from charforge.cli_common import (
    CharacterArg,
    WorkspaceOption,
    err,
    find_workspace,
    out,
    report_run,
    shown_path,
)
from charforge.errors import CharforgeError

if TYPE_CHECKING:
    from charforge.dataset.export import DatasetBuild


def dataset_build(
    character: CharacterArg,
    preset: Annotated[str | None, typer.Option(
        help="system prompt: charforge (ours, the default) or character-llm (the released "
        "checkpoints' meta prompt)", show_default=False)] = None,
    test_fraction: Annotated[float | None, typer.Option(
        min=0.0, max=0.9, help="share of dialogues held out (default 0)",
        show_default=False)] = None,
    recipe: Annotated[str | None, typer.Option(
        help="defaults for --preset and --test-fraction from a recipe (charforge recipes)",
        show_default=False)] = None,
    dedup_threshold: Annotated[float, typer.Option(
        help="questions this alike (cosine of their embeddings) count as one; in (0, 1]")] = 0.95,
    dialogue_threshold: Annotated[float, typer.Option(
        help="dialogues this alike (Jaccard of word 5-grams) count as one; in (0, 1]")] = 0.5,
    with_analysis: Annotated[bool, typer.Option(
        help="keep the teacher's analysis in the reply, inside <think>...</think>")] = False,
    dpo: Annotated[bool, typer.Option(
        help="also write dpo.jsonl: preference pairs (TRL's conversational format)")] = False,
    seed: Annotated[int, typer.Option(help="seed of the train/test split")] = 0,
    dedup: Annotated[bool, typer.Option(help="drop near-duplicates (--no-dedup keeps every "
                                        "record)")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the statistics as JSON, "
                                          "for scripts")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """A character's records -> SFT chat records, prompted records, DPO pairs, statistics.

    Experiences and protective scenes (Character-LLM) and answers and stylized
    instructions (PersLLM) go into one dataset; near-duplicates are removed and the
    train/test split keeps paraphrases of one passage or scene on one side."""
    from charforge.dataset.export import build_dataset
    from charforge.recipes import get_recipe

    part = get_recipe(recipe).dataset
    preset = preset or part.meta_prompt
    test_fraction = part.test_fraction if test_fraction is None else test_fraction
    if preset not in ("charforge", "character-llm"):
        raise CharforgeError(f"unknown preset {preset!r}; use charforge or character-llm")
    ws = find_workspace(workspace)
    with err.status(f"building the dataset of {escape(character)}…"):
        result = build_dataset(ws, character, preset=preset,  # type: ignore[arg-type]
                               test_fraction=test_fraction, dedup_threshold=dedup_threshold,
                               dialogue_threshold=dialogue_threshold,
                               with_analysis=with_analysis, dpo=dpo, seed=seed,
                               dedup=dedup)
    if as_json:
        print(json.dumps(result.model_dump(mode="json"), ensure_ascii=False, indent=2))
        return
    _print_dataset_stats(result)




def review(
    character: CharacterArg,
    feedback: Annotated[str | None, typer.Option(
        help="the note to keep, without asking (for scripts)", show_default=False)] = None,
    show: Annotated[int, typer.Option(min=0, max=50, help="answers to show first")] = 3,
    list_: Annotated[bool, typer.Option("--list", help="show the feedback history and "
                                        "stop")] = False,
    rerun_older: Annotated[bool, typer.Option(help="then ask again every answer written "
                                              "before the latest feedback")] = False,
    model: Annotated[str | None, typer.Option("--model", "-m", help="teacher model name, "
                                              "for --rerun-older")] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Read a few answers of a character and keep a note on their style (PersLLM's review).

    The note goes into the prompt of every answer planned after it; earlier answers keep
    theirs until --rerun-older (or generate answers --rerun-older) asks them again."""
    from charforge.review import add_feedback, answers_to_review, feedback_history

    ws = find_workspace(workspace)
    if list_:
        history = feedback_history(ws, character)
        if not history:
            out.print("no feedback yet")
        for note in history:
            when = _local_time(note.created_at)
            out.print(f"#{note.id}  {when}  {note.text}", markup=False, highlight=False)
        return
    shown = answers_to_review(ws, character, show)
    if show and not shown:
        err.print(f"{character} has no answers yet (charforge generate answers {character}); "
                  "a note kept now applies to all of them", markup=False, highlight=False)
    for number, answer in enumerate(shown, 1):
        stage = f" [{answer.stage}]" if answer.stage else ""
        out.rule(f"answer {number}{stage}, {answer.pattern}")
        out.print(f"Q: {answer.question}\nA: {answer.response}", markup=False, highlight=False)
    if feedback is None and sys.stdin.isatty():
        feedback = typer.prompt("Your note on these answers' style (empty: none)", default="",
                                show_default=False)
    if feedback is not None and feedback.strip():
        note = add_feedback(ws, character, feedback)
        out.print(f"kept feedback #{note.id}: it applies to answers planned from now on",
                  markup=False, highlight=False)
    elif feedback is None and not rerun_older:
        err.print("no feedback given (pass --feedback TEXT, or run in a terminal to be asked)")
    if rerun_older:
        from charforge.generate import generate

        result = generate(ws, character, "answers", model=model, console=err,
                          options={"rerun_older": True})
        report_run("answers", result)  # type: ignore[arg-type]


def _local_time(timestamp: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def _print_dataset_stats(result: DatasetBuild) -> None:
    """One statistic a line, so it reads at 80 columns and in a pipe."""
    s = result.stats
    dialogues = s.scene_outlines or any(s.dialogues.values()) or not s.qa_records
    lines = [
        *([("scenes imagined", str(s.scene_outlines)),
           ("dialogues", f"{s.dialogues.get('experience', 0)} experiences, "
                         f"{s.dialogues.get('protective', 0)} protective"),
           ("words", f"{s.words} ({s.turns_per_dialogue} turns a dialogue, "
                     f"{s.words_per_turn} words a turn)")] if dialogues else []),
        *([("PersLLM records", ", ".join(f"{k} {v}" for k, v in s.qa_records.items())
            + (f"; stage tokens {' '.join(s.stage_tokens)}" if s.stage_tokens else ""))]
          if s.qa_records else []),
        ("near-duplicates", ", ".join(f"{kind} {part['removed']} removed"
                                      for kind, part in s.dedup.items()) or "none"),
        ("SFT records", f"{s.sft_records} (train {s.train}, test {s.test})"),
        *([("DPO pairs", f"{s.dpo['pairs']} (" + ", ".join(
            f"{k} {v['pairs']}" for k, v in s.dpo["sources"].items() if v["pairs"]) + ")")]
          if s.dpo else []),
        *([("skipped", f"{s.skipped} dialogues (no turn of {s.name})"),
           ("thinking turns", str(s.thinking_turns))] if dialogues else []),
        ("rejected", _per_stage(s.rejected)),
        ("failed", ", ".join(f"{stage} {n}" for stage, n in s.failed.items() if n) or "0"),
    ]
    out.print(f"{s.name} ({s.character})", markup=False, highlight=False)
    indent = max(len(label) for label, _ in lines) + 2
    for label, value in lines:  # wrapped here, under the value column, no padding
        wrapped = textwrap.wrap(value, max(out.width - indent, 20)) or [""]
        out.print(f"{label:<{indent}}{wrapped[0]}", *(" " * indent + more for more in wrapped[1:]),
                  sep="\n", markup=False, highlight=False, soft_wrap=True)
    out.print(f"wrote {shown_path(result.folder)}", markup=False, highlight=False)


def _per_stage(rejected: dict[str, dict[str, int]]) -> str:
    """'0', or '5 (scenes: invalid 2; experiences: junk 3)'."""
    total = sum(n for reasons in rejected.values() for n in reasons.values())
    parts = [f"{stage}: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
             for stage, reasons in rejected.items() if reasons]
    return f"{total} ({'; '.join(parts)})" if parts else "0"


