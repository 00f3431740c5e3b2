"""Answer quality of `charforge ask` in character on the embedded SmolLM2-135M.

    .venv/bin/python bench/ask_quality.py                  # 82 questions, 10-20 minutes
    .venv/bin/python bench/ask_quality.py --questions 20   # every 4th question or so
    .venv/bin/python bench/ask_quality.py --smoke          # 2 short answers (the tests run it)

Imports the Character-LLM Beethoven profile shipped with the package into a temporary
workspace and puts the 82 Character-LLM interview questions to him through the very
path `charforge ask -c beethoven` takes (`roleplay.ask`, the registry's model, the
shared `ASK_SAMPLING`), one at a time. Prints, per answer and in sum:

- loop: how often the most frequent 4-word run occurs in the answer (target: <= 2);
- distinct-2: distinct word bigrams / bigrams, per answer then averaged over the
  answers (target >= 0.6), and pooled over all answers (printed beside it);
- the median answer length in words (target 15-120);
- answers that call themselves an AI, a language model or an assistant (target 0);
- names from the profile: answers that use a proper name ("Bonn", "Neefe") found in the
  passages the system message gave them (not in the question, not their own name);
- answers cut at max_tokens, total generation time and completion tokens/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from charforge.demo import demo_file, interview_questions
from charforge.llm.registry import ModelEntry, build_chat_model
from charforge.prompts import PROMPTS
from charforge.roleplay import (
    ASK_PROFILE_WORDS,
    ask,
    ask_sampling,
    question_messages,
    relevant_passages,
)
from charforge.textstats import (
    claims_to_be_a_machine,
    distinct_n,
    max_ngram_repeats,
    median_words,
    names_used,
    words,
)
from charforge.workspace import Workspace

ALL_QUESTIONS = 82
SMOKE_QUESTIONS, SMOKE_MAX_TOKENS = 2, 16
LOOP_LIMIT, DISTINCT_MIN, LENGTH_RANGE = 2, 0.6, (15, 120)


def spread(items: list[str], count: int) -> list[str]:
    """`count` of `items`, evenly spaced from the first to the last."""
    if count >= len(items):
        return items
    if count == 1:
        return items[:1]
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help=f"{SMOKE_QUESTIONS} questions, {SMOKE_MAX_TOKENS} tokens each")
    parser.add_argument("--questions", type=int, default=ALL_QUESTIONS,
                        help="how many of the 82 questions, evenly spaced")
    parser.add_argument("--model", default="smollm2", help="a built-in model name")
    parser.add_argument("--max-tokens", type=int, help="instead of ask_sampling()'s")
    parser.add_argument("--temperature", type=float, help="instead of ask_sampling()'s")
    parser.add_argument("--repetition-penalty", type=float,
                        help="instead of the registry entry's (a local model's option)")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (a local model's option); 1 is far faster "
                        "when another process keeps a core busy")
    parser.add_argument("--seed", type=int, default=0,
                        help="sampling seed of every answer (default 0, as in the demo)")
    parser.add_argument("--show", action="store_true", help="print whole answers")
    parser.add_argument("--json", type=Path, help="also write every answer and figure here")
    args = parser.parse_args()

    count = SMOKE_QUESTIONS if args.smoke else args.questions
    sampling = ask_sampling(
        max_tokens=SMOKE_MAX_TOKENS if args.smoke else args.max_tokens,
        temperature=args.temperature, seed=args.seed,
    )
    with tempfile.TemporaryDirectory(prefix="charforge-ask-bench-") as folder:
        ws = Workspace.init(Path(folder) / "ws")
        beethoven = ws.import_character(demo_file("wiki_Beethoven.txt"))
        name, entry = ws.config.entry(args.model)
        changes = {"repetition_penalty": args.repetition_penalty, "threads": args.threads}
        changes = {key: value for key, value in changes.items() if value is not None}
        if changes:
            entry = ModelEntry(**{**entry.model_dump(), **changes})
        model = build_chat_model(name, entry)
        questions = spread(interview_questions(ALL_QUESTIONS), count)
        system_words = [len(words(question_messages(beethoven, q)[0].content))
                        for q in questions]
        print(f"model {name} ({entry.options() or 'registry defaults'}), sampling "
              f"{sampling.model_dump(exclude_defaults=True)}, roleplay_system v"
              f"{PROMPTS.version('roleplay_system')}, profile <= {ASK_PROFILE_WORDS} words, "
              f"system message median {statistics.median(system_words):.0f} words")
        started = time.perf_counter()
        loaded = asyncio.run(model.check())
        print(f"model {loaded} in {time.perf_counter() - started:.1f} s; "
              f"{len(questions)} questions", flush=True)

        rows = []
        for number, question in enumerate(questions, 1):
            completion = ask(question, model, character=beethoven, sampling=sampling)
            text = completion.text
            passages = "\n".join(relevant_passages(beethoven, question))
            names = names_used(text, passages, besides=f"{question} {beethoven.name}")
            row = {
                "question": question, "answer": text, "words": len(words(text)),
                "loop": max_ngram_repeats(text, 4), "distinct2": distinct_n(text, 2),
                "machine": claims_to_be_a_machine(text), "names": sorted(names), "tokens":
                completion.usage.completion_tokens, "prompt_tokens":
                completion.usage.prompt_tokens, "seconds": completion.latency_s,
                "cut": completion.truncated,
            }
            rows.append(row)
            d2 = "  -  " if row["distinct2"] is None else f"{row['distinct2']:.2f}"
            flags = "".join([" LOOP" if row["loop"] > LOOP_LIMIT else "",
                             " AI" if row["machine"] else "", " cut" if row["cut"] else "",
                             f" names: {', '.join(row['names'])}" if row["names"] else ""])
            shown = text if args.show else (text[:110] + "…" if len(text) > 110 else text)
            print(f"{number:3d} {row['words']:4d}w loop {row['loop']:2d} d2 {d2} "
                  f"{row['tokens']:4d} tok {row['seconds']:5.1f}s{flags} | {question}\n"
                  f"      {' '.join(shown.split())}", flush=True)

    summarise(rows)
    if args.json:
        args.json.write_text(json.dumps({"sampling": sampling.model_dump(),
                                         "model": entry.model_dump(), "answers": rows},
                                        indent=1), encoding="utf-8")


def summarise(rows: list[dict]) -> None:
    answers = [row["answer"] for row in rows]
    per_answer = [row["distinct2"] for row in rows if row["distinct2"] is not None]
    mean_d2 = statistics.mean(per_answer) if per_answer else 0.0
    pooled = distinct_n(answers, 2) or 0.0
    median = median_words(answers)
    loops = sum(row["loop"] > LOOP_LIMIT for row in rows)
    worst = max((row["loop"] for row in rows), default=0)
    machine = sum(row["machine"] for row in rows)
    seconds = sum(row["seconds"] for row in rows)
    tokens = sum(row["tokens"] for row in rows)

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    low, high = LENGTH_RANGE
    print("\nsummary over", len(rows), "answers")
    print(f"  answers with a 4-word run repeated > {LOOP_LIMIT}x: {loops} (worst run: {worst}x)"
          f"  [target 0: {verdict(loops == 0)}]")
    print(f"  distinct-2, mean over answers: {mean_d2:.3f} (pooled over all answers: "
          f"{pooled:.3f})  [target >= {DISTINCT_MIN}: {verdict(mean_d2 >= DISTINCT_MIN)}]")
    print(f"  median answer: {median:.0f} words  [target {low}-{high}: "
          f"{verdict(low <= median <= high)}]")
    print(f"  answers claiming to be an AI/model/assistant: {machine}  "
          f"[target 0: {verdict(machine == 0)}]")
    named = sum(bool(row["names"]) for row in rows)
    print(f"  answers using a name from the profile passages they were given: {named} of "
          f"{len(rows)}")
    print(f"  cut at max_tokens: {sum(row['cut'] for row in rows)}; empty: "
          f"{sum(not row['answer'].strip() for row in rows)}")
    print(f"  generation: {seconds:.1f} s in all, {seconds / max(len(rows), 1):.1f} s per "
          f"answer, {tokens} tokens, {tokens / max(seconds, 1e-9):.1f} tokens/s; prompts "
          f"{statistics.median(row['prompt_tokens'] for row in rows):.0f} tokens (median)")


if __name__ == "__main__":
    sys.exit(main())
