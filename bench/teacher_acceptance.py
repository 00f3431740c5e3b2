"""Acceptance of Experience Reconstruction on the embedded teacher (SmolLM2-135M).

    .venv/bin/python bench/teacher_acceptance.py [--smoke] [--scenes N] [--experiences N]
        [--protective N] [--workspace DIR] [--dump answers.jsonl]

Runs scenes -> experiences -> protective for Beethoven (the profile shipped with the
package) on the embedded model with grammar-constrained JSON, then prints, per stage,
the tries answered, how many were accepted (over every try, repair requests apart),
the rejection reasons, tokens and time. `--dump` writes every raw answer with its
outcome, for labelling by hand. With `--smoke` it runs one tiny task per stage.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

from charforge.demo import demo_file
from charforge.errors import CharforgeError
from charforge.generate import generate
from charforge.llm.local import LocalChatModel, LocalConfig
from charforge.workspace import Workspace


def stage_plan(args: argparse.Namespace) -> list[tuple[str, dict, dict, int]]:
    """(stage, options, sampling, task limit) for each stage; the rest from the `demo`
    recipe (answer lengths, temperature)."""
    if args.smoke:  # starts, runs every stage once, reports: answers are cut short
        return [("scenes", {"prompts": 1, "scenes_per_prompt": 1}, {"max_tokens": 24}, 1),
                ("experiences", {}, {"max_tokens": 24}, 1),
                ("protective", {"count": 1}, {"max_tokens": 24}, 1)]
    return [("scenes", {"prompts": args.scenes, "scenes_per_prompt": 3}, {}, args.scenes),
            ("experiences", {}, {}, args.experiences),
            ("protective", {"count": args.protective}, {}, args.protective)]


def dump_answers(root: Path, out: Path) -> int:
    with sqlite3.connect(root / "charforge.db") as db:
        rows = db.execute(
            "SELECT t.stage, t.id, c.round, c.turn, c.text, c.finish_reason, t.status, "
            "j.reason, j.detail FROM completions c JOIN tasks t ON t.id = c.task_id "
            "LEFT JOIN rejections j ON j.task_id = c.task_id AND j.round = c.round "
            "ORDER BY c.created_at").fetchall()
    keys = ("stage", "task", "round", "turn", "text", "finish_reason", "status", "reason",
            "detail")
    with out.open("a", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(dict(zip(keys, row, strict=True)), ensure_ascii=False) + "\n")
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--scenes", type=int, default=4, help="scene prompts")
    parser.add_argument("--experiences", type=int, default=8, help="experience tasks")
    parser.add_argument("--protective", type=int, default=6, help="protective tasks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repetition-penalty", type=float, default=1.2)
    parser.add_argument("--workspace", type=Path)
    parser.add_argument("--dump", type=Path)
    args = parser.parse_args()

    root = args.workspace or Path(tempfile.mkdtemp(prefix="charforge-acceptance-"))
    ws = Workspace.init(root)
    if not ws.characters():
        ws.import_character(demo_file("wiki_Beethoven.txt"))
    model = LocalChatModel(LocalConfig(repetition_penalty=args.repetition_penalty),
                           name="smollm2")
    print(f"workspace {root}; teacher: embedded SmolLM2-135M, repetition penalty "
          f"{args.repetition_penalty}, grammar-constrained JSON")
    totals = []
    for stage, options, sampling, limit in stage_plan(args):
        options = {**options, **({"seed": args.seed} if stage == "scenes" else {})}
        started = time.perf_counter()
        try:
            summary = generate(ws, "beethoven", stage, model=model, concurrency=1,
                               limit=limit, options=options, output_format="json",
                               show_progress=False, recipe="demo",
                               sampling={**sampling, "seed": args.seed} if args.seed
                               else sampling)
        except CharforgeError as exc:  # e.g. no scene accepted to build experiences on
            print(f"{stage:12} {exc}")
            continue
        seconds = time.perf_counter() - started
        if summary.interrupted:
            raise SystemExit(f"{stage}: interrupted; rerun with --workspace {root} to resume")
        with ws.store() as store:
            accepted, tries = store.acceptance("beethoven", stage, run_id=summary.run_id)
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(summary.rejection_reasons.items()))
        share = accepted / tries if tries else 0.0
        totals.append((stage, accepted, tries))
        print(f"{stage:12} {accepted}/{tries} tries accepted ({share:.0%}); rejected: "
              f"{reasons or 'none'}; failed {summary.failed}; {seconds:.0f} s, "
              f"{model.stats.usage.completion_tokens} tokens so far")
    accepted = sum(a for _, a, _ in totals)
    tries = sum(t for _, _, t in totals)
    print(f"all stages   {accepted}/{tries} tries accepted "
          f"({accepted / tries if tries else 0:.0%})")
    if args.dump:
        print(f"{dump_answers(root, args.dump)} answers appended to {args.dump}")


if __name__ == "__main__":
    main()
