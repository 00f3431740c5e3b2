"""Evaluation throughput: judgments/s against a local server, interview answers/s on the
embedded model (batched against one at a time).

    .venv/bin/python bench/evaluate.py [--interviews 600] [--c1-judgments 40] [--questions 16]
                                       [--max-tokens 96] [--skip-judge] [--skip-local] [--smoke]

1. Judging. A workspace with Beethoven; `--interviews` single-turn interviews are written
   first (`charforge.evaluate.interview`, agent `model:fast`, a scripted server in this
   process answering at once), then judged on the rubric's five dimensions by
   `charforge.evaluate.judge` against a scripted OpenAI-compatible server in a process of
   its own answering every request after a fixed 100 ms ("...\\nScore: 5"): at
   concurrency 1 (`--c1-judgments`, through `limit=`) and 64 (every interview x 5
   dimensions), each level on a copy of the interviewed workspace (nothing judged before;
   the judge `slow` with `max_concurrency` c in its models entry). Printed per level:
   judgments/s beside the latency bound (c / 0.1 s, c capped by the number of judgments),
   CPU per judgment of this process and of the server, the share of the machine other
   processes took.
   Target: at c=64 at least 80% of the bound, as the generation runner reaches
   (bench/generation.py).
2. Interviewing on the embedded SmolLM2-135M: the `prompted` agent (the workspace's default
   model, local, batched engine) answers the first `--questions` (16) of Beethoven's
   bundled interview questions at `--max-tokens` (96: an in-character answer at `ask`'s
   settings has a median of ~61 words, bench/ask_quality.py) and temperature 0.2, with as many in
   flight as there are questions: once with the built-in `smollm2` (`max_batch` 16: rows
   decoded together) and once with `smollm2-serial` (the built-in entry's options,
   `max_batch` 1: one at a time), each in a fresh workspace. Printed: answers/s and
   tokens/s of each, the ratios. Target: batched at least 4x one at a time (answers/s).

Rates are over the run alone (`RunSummary.elapsed_s`: after the models are loaded and
checked and the tasks planned); the whole call's seconds are printed beside them. The
client and the server share this machine's cores: the output says how much CPU each used.
`--smoke` runs every path with a few tasks and a few tokens (the tests run it): a check
that the bench works, not figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import psutil
import yaml

LATENCY_S = 0.1
JUDGE_ANSWER = ("The answers name his teachers, his works and his deafness as the record "
                "has them, in a voice of his own.\nScore: 5")
INTERVIEW_ANSWER = ("I wrote it down that very night, by candlelight, while the landlord "
                    "complained of my piano. Nobody in Vienna understood it then.")
JUDGE_LEVELS = (1, 64)
DIMENSIONS = 5  # the rubric's: memorization, values, personality, hallucination, stability
TARGET_BOUND = 0.8  # judgments/s at c=64 against the latency bound
TARGET_SPEEDUP = 4.0  # batched against one at a time, answers/s
TEMPERATURE = 0.2  # Character-LLM's agents', the interview stage's default
NOISY = 0.10  # a level during which other processes took more of the machine is flagged
SMOKE = {"interviews": 4, "c1_judgments": 3, "questions": 4, "max_tokens": 4}


# -- the slow server, in a child process ----------------------------------------------------
def serve(latency_s: float) -> None:
    """Child: a scripted server answering every request after `latency_s` with a judgment
    that ends on a score; prints its URL, serves until stdin closes."""
    from charforge.testing import ScriptedOpenAIServer

    with ScriptedOpenAIServer(latency_s=latency_s,
                              responder=lambda _request: JUDGE_ANSWER) as server:
        print(server.base_url, flush=True)
        sys.stdin.read()


class SlowServer:
    def __init__(self, latency_s: float) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(latency_s)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            self.close()
            raise SystemExit("the bench server did not start (its error is above)")
        self.ps = psutil.Process(self.proc.pid)

    def cpu_s(self) -> float:
        times = self.ps.cpu_times()
        return times.user + times.system

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- measuring ------------------------------------------------------------------------------
def machine_cpu() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine since boot (guest time is already in
    user time: not counted twice)."""
    t = psutil.cpu_times()
    total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    return total - t.idle - getattr(t, "iowait", 0.0), total


def others_now(seconds: float = 1.0) -> float:
    """Cores other processes keep busy, over `seconds` of this process sleeping."""
    (busy0, all0), cpu0 = machine_cpu(), time.process_time()
    time.sleep(seconds)
    (busy1, all1), cpu1 = machine_cpu(), time.process_time()
    cores = psutil.cpu_count() or 1
    return max(0.0, (busy1 - busy0) - (cpu1 - cpu0)) / max(1e-9, all1 - all0) * cores


@dataclass
class Meter:
    """Wall seconds, this process's CPU, the server's CPU and the machine's, over a call."""

    server: SlowServer | None = None
    wall: float = 0.0
    cpu: float = 0.0
    server_cpu: float = 0.0
    others: float = 0.0  # share of the machine other processes took
    _start: tuple[float, ...] = field(default=(), repr=False)

    def __enter__(self) -> Meter:
        self._start = (time.perf_counter(), time.process_time(),
                       self.server.cpu_s() if self.server else 0.0, *machine_cpu())
        return self

    def __exit__(self, *exc: object) -> None:
        wall0, cpu0, server0, busy0, all0 = self._start
        busy1, all1 = machine_cpu()
        self.wall = time.perf_counter() - wall0
        self.cpu = time.process_time() - cpu0
        self.server_cpu = (self.server.cpu_s() if self.server else 0.0) - server0
        ours = self.cpu + self.server_cpu
        self.others = max(0.0, (busy1 - busy0) - ours) / max(1e-9, all1 - all0)


def run_rows(ws: Any, run_id: str) -> tuple[int, list[int]]:
    """(failed tries, completion tokens of each answered try) of one run, from the store."""
    with sqlite3.connect(ws.root / "charforge.db") as conn:
        failed = conn.execute("SELECT COUNT(*) FROM attempts WHERE run_id = ? AND "
                              "state = 'failed'", (run_id,)).fetchone()[0]
        tokens = [row[0] for row in conn.execute(
            "SELECT completion_tokens FROM attempts WHERE run_id = ? AND state = 'answered'",
            (run_id,))]
    return failed, tokens


def checked(summary: Any, count: int, what: str) -> Any:
    from charforge.runner import RunSummary

    if not isinstance(summary, RunSummary) or summary.done != count or summary.failed:
        raise SystemExit(f"{what}: {getattr(summary, 'done', 0)} done, "
                         f"{getattr(summary, 'failed', 0)} failed; expected {count} done")
    return summary


# -- workspaces -----------------------------------------------------------------------------
def workspace(root: Path, models: dict[str, dict[str, Any]],
              default_model: str | None = None) -> tuple[Any, str]:
    """A fresh workspace with Beethoven and `models` in its charforge.yaml; (it, his slug)."""
    from charforge.demo import demo_file
    from charforge.workspace import Workspace

    ws = Workspace.init(root)
    slug = ws.import_character(demo_file("wiki_Beethoven.txt")).slug
    config = yaml.safe_load(ws.config_path.read_text(encoding="utf-8"))
    config["models"] = {**(config.get("models") or {}), **models}
    if default_model:
        config["default_model"] = default_model
    ws.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return Workspace(ws.root), slug


def endpoint(url: str, concurrency: int) -> dict[str, Any]:
    return {"backend": "openai", "model": "scripted", "base_url": url, "api_key_env": None,
            "max_concurrency": concurrency, "max_retries": 2, "timeout_s": 30}


def synthetic_questions(count: int) -> list[Any]:
    from charforge.evaluate.questions import Question

    places = ("Bonn", "Vienna", "Heiligenstadt", "Baden", "Teplitz")
    return [Question(topic_id=f"bench-{n % 25}", topic=f"work in {places[n % 5]}",
                     question=f"What do you remember of day {n} of your work in "
                              f"{places[n % 5]}?") for n in range(count)]


# -- 1. judging -----------------------------------------------------------------------------
@dataclass
class JudgeLevel:
    concurrency: int
    judgments: int
    run_s: float
    meter: Meter
    requests: int
    retried: int

    @property
    def rate(self) -> float:
        return self.judgments / self.run_s

    @property
    def bound(self) -> float:
        return min(self.concurrency, self.judgments) / LATENCY_S


def judging(root: Path, interviews: int, c1_judgments: int) -> None:
    from charforge.evaluate.api import interview, judge
    from charforge.testing import ScriptedOpenAIServer
    from charforge.workspace import Workspace

    print(f"\njudging: {interviews} interviews x {DIMENSIONS} dimensions; the judge server "
          f"answers every request after {LATENCY_S * 1000:.0f} ms, in a process of its own",
          flush=True)
    server = SlowServer(LATENCY_S)
    levels: list[JudgeLevel] = []
    try:
        with ScriptedOpenAIServer(responder=lambda _request: INTERVIEW_ANSWER) as fast:
            ws, slug = workspace(root / "interviewed", {"fast": endpoint(fast.base_url, 64)})
            started = time.perf_counter()
            checked(interview(ws, slug, agent="model:fast", questions=synthetic_questions(
                interviews), concurrency=64, show_progress=False), interviews, "interviews")
            print(f"  {interviews} interviews written in {time.perf_counter() - started:.1f} s "
                  "(agent model:fast, a server answering at once)", flush=True)
        for c in JUDGE_LEVELS:
            # A copy of the workspace a level: no judgment planned or made before.
            copy = Workspace(Path(shutil.copytree(ws.root, root / f"judge-c{c}")))
            config = yaml.safe_load(copy.config_path.read_text(encoding="utf-8"))
            config["models"]["slow"] = endpoint(server.url, c)
            copy.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
            count = min(c1_judgments, interviews * DIMENSIONS) if c == 1 \
                else interviews * DIMENSIONS
            with Meter(server) as meter:
                summary = checked(judge(Workspace(copy.root), slug, judge="slow",
                                        concurrency=c, limit=count, show_progress=False),
                                  count, f"judge c={c}")
            retried, tokens = run_rows(copy, summary.run_id)
            level = JudgeLevel(c, count, summary.elapsed_s, meter, len(tokens), retried)
            levels.append(level)
            print(f"  c={c}: {count} judgments in {level.run_s:.2f} s ({meter.wall:.2f} s "
                  f"the whole call): {level.rate:.1f}/s", flush=True)
    finally:
        server.close()

    head = (f"{'':<10}{'judgments':>10}{'requests':>9}{'seconds':>9}{'call s':>8}"
            f"{'judg./s':>9}{'bound/s':>9}{'% bound':>9}{'client CPU':>12}{'server CPU':>12}"
            f"{'others':>8}")
    print("\n" + head + "\n" + "-" * len(head))
    for lv in levels:
        print(f"{f'c={lv.concurrency}':<10}{lv.judgments:>10}{lv.requests:>9}{lv.run_s:>9.2f}"
              f"{lv.meter.wall:>8.2f}{lv.rate:>9.1f}{lv.bound:>9.0f}"
              f"{100 * lv.rate / lv.bound:>8.0f}%"
              f"{1000 * lv.meter.cpu / lv.judgments:>9.2f} ms"
              f"{1000 * lv.meter.server_cpu / lv.judgments:>9.2f} ms{lv.meter.others:>8.0%}")
    print("(seconds: the run alone; call s: the whole judge() call, planning included; bound: "
          "min(c, judgments) / latency; requests: answered requests (one a judgment when every "
          "answer has its score); CPU: per judgment, this process over the whole call and the "
          "server; others: share of the machine other processes took)")
    noisy(f"c={lv.concurrency}" for lv in levels if lv.meter.others > NOISY)
    retried = sum(lv.retried for lv in levels)
    if retried:
        print(f"  {retried} requests failed and were retried")
    top = max(levels, key=lambda lv: lv.concurrency)
    need = TARGET_BOUND * top.bound
    print(f"\ntargets\n  c={top.concurrency} >= {TARGET_BOUND:.0%} of the bound: "
          f"{top.rate:.0f}/s vs {need:.0f}/s ({top.rate / top.bound:.0%})  "
          f"{verdict(top.rate >= need)}")
    print(f"  (the client used {top.meter.cpu / top.meter.wall:.0%} of a core over the call, "
          f"{1000 * top.meter.cpu / top.judgments:.2f} ms of CPU a judgment: at most "
          f"~{top.judgments / max(1e-9, top.meter.cpu):.0f} judgments/s from one process "
          "whatever the latency)")


# -- 2. interviewing on the embedded model --------------------------------------------------
@dataclass
class LocalLevel:
    setting: str
    max_batch: int
    answers: int
    run_s: float
    tokens: int
    at_max: int
    meter: Meter

    @property
    def rate(self) -> float:
        return self.answers / self.run_s

    @property
    def tok_rate(self) -> float:
        return self.tokens / self.run_s


def local_interview(root: Path, name: str, setting: str, model: str | None,
                    models: dict[str, dict[str, Any]], questions: int, max_tokens: int,
                    warm_up: bool) -> LocalLevel:
    from charforge.demo import demo_file
    from charforge.evaluate.api import interview
    from charforge.evaluate.questions import load_questions

    ws, slug = workspace(root / name, models, model)
    asked = load_questions(demo_file("interview_Beethoven.json"))[:questions]
    sampling = {"max_tokens": max_tokens, "temperature": TEMPERATURE}
    if warm_up:  # untimed: another agent label, so none of its answers is reused
        interview(ws, slug, agent=f"prompted:{model or 'smollm2'}", questions=asked[:2],
                  concurrency=2, sampling={**sampling, "max_tokens": 8}, show_progress=False)
    with Meter() as meter:
        summary = checked(interview(ws, slug, agent="prompted", questions=asked,
                                    concurrency=len(asked), sampling=sampling,
                                    show_progress=False), len(asked), setting)
    _, tokens = run_rows(ws, summary.run_id)
    max_batch = ws.config.entry(None)[1].options().get("max_batch")
    if max_batch is None:
        from charforge.llm.local import LocalConfig

        max_batch = LocalConfig().max_batch
    level = LocalLevel(setting, max_batch, len(asked), summary.elapsed_s,
                       summary.completion_tokens, sum(t >= max_tokens for t in tokens), meter)
    print(f"  {setting}: {level.answers} answers in {level.run_s:.1f} s ({meter.wall:.1f} s "
          f"the whole call, loading included): {level.rate:.2f} answers/s, "
          f"{level.tok_rate:.1f} tok/s", flush=True)
    return level


def interviewing(root: Path, questions: int, max_tokens: int, warm_up: bool) -> None:
    from charforge.llm.registry import BUILTIN_MODELS, DEFAULT_MODEL

    serial = {**BUILTIN_MODELS[DEFAULT_MODEL].options(), "backend": "local", "max_batch": 1}
    options = ", ".join(f"{key} {value}" for key, value in serial.items())
    print(f"\ninterviewing on the embedded SmolLM2-135M: agent `prompted`, {questions} of "
          f"Beethoven's questions, all in flight, max_tokens {max_tokens}, temperature "
          f"{TEMPERATURE}; built-in {DEFAULT_MODEL} vs smollm2-serial ({options}), each in a "
          "fresh workspace" + (" after an untimed warm-up" if warm_up else ""), flush=True)
    levels = [
        local_interview(root, "batched", f"batched ({DEFAULT_MODEL})", None, {}, questions,
                        max_tokens, warm_up),
        local_interview(root, "serial", "one at a time (smollm2-serial)", "smollm2-serial",
                        {"smollm2-serial": serial}, questions, max_tokens, False),
    ]
    head = (f"{'setting':<34}{'max_batch':>10}{'answers':>8}{'seconds':>9}{'call s':>8}"
            f"{'answers/s':>10}{'tokens':>8}{'tok/s':>8}{'at max':>8}{'CPU':>7}{'others':>8}")
    print("\n" + head + "\n" + "-" * len(head))
    for lv in levels:
        print(f"{lv.setting:<34}{lv.max_batch:>10}{lv.answers:>8}{lv.run_s:>9.1f}"
              f"{lv.meter.wall:>8.1f}{lv.rate:>10.2f}{lv.tokens:>8}{lv.tok_rate:>8.1f}"
              f"{lv.at_max:>5}/{lv.answers:<2}{lv.meter.cpu / lv.meter.wall:>6.2f}c"
              f"{lv.meter.others:>8.0%}")
    print("(seconds: the run alone, the model loaded; call s: the whole interview() call; "
          "at max: answers of max_tokens tokens; CPU: cores this process used over the call; "
          "others: share of the machine other processes took)")
    noisy(lv.setting for lv in levels if lv.meter.others > NOISY)
    batched, single = levels
    ratio, tok_ratio = batched.rate / single.rate, batched.tok_rate / single.tok_rate
    print(f"\ntargets\n  {questions} in flight, batched >= {TARGET_SPEEDUP:.0f}x one at a time: "
          f"{batched.rate:.2f} vs {single.rate:.2f} answers/s = {ratio:.2f}x  "
          f"{verdict(ratio >= TARGET_SPEEDUP)}")
    print(f"  (tokens/s: {batched.tok_rate:.1f} vs {single.tok_rate:.1f} = {tok_ratio:.2f}x)")


# -- main -----------------------------------------------------------------------------------
def noisy(labels: Any) -> None:
    """A warning naming the levels other processes slowed down, if any."""
    if named := list(labels):
        print(f"WARNING: other processes took more than {NOISY:.0%} of the machine during "
              f"{', '.join(named)}: those figures are low, and so may be the verdicts below "
              "(a one-row decoding step suffers most)")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interviews", type=int, default=600,
                        help=f"interviews to judge (x {DIMENSIONS} dimensions at c=64)")
    parser.add_argument("--c1-judgments", type=int, default=40, help="judgments at c=1")
    parser.add_argument("--questions", type=int, default=16,
                        help="interview questions on the embedded model, all in flight")
    parser.add_argument("--max-tokens", type=int, default=96,
                        help="max_tokens of an answer on the embedded model")
    parser.add_argument("--skip-judge", action="store_true", help="skip the judging runs")
    parser.add_argument("--skip-local", action="store_true",
                        help="skip the interviews on the embedded model")
    parser.add_argument("--smoke", action="store_true",
                        help="every path with a few tasks and tokens (seconds; the tests run "
                             "it): a check, not figures")
    parser.add_argument("--serve", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        return serve(args.serve)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"charforge evaluate bench · charforge {package_version('charforge')} · openai "
          f"{package_version('openai')} · torch {package_version('torch')} · python "
          f"{sys.version.split()[0]} · {cores} CPU cores, shared by the client and the judge "
          f"server (its own process) · judge server latency {LATENCY_S * 1000:.0f} ms")
    if (busy := others_now()) > 0.25:
        print(f"WARNING: other processes keep {busy:.1f} core(s) busy: the figures below are low")
    else:
        print(f"other processes: {busy:.2f} core(s) busy before the runs")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="charforge-bench-evaluate-") as tmp:
        if not args.skip_judge:
            judging(Path(tmp), args.interviews, args.c1_judgments)
        if not args.skip_local:
            interviewing(Path(tmp), args.questions, args.max_tokens, warm_up=not args.smoke)
    print(f"\nthe bench took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
