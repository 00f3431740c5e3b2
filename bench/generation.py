"""Throughput and memory of the generation runner against a local OpenAI-compatible server.

    .venv/bin/python bench/generation.py [--quick] [--smoke] [--skip-memory] [--levels 1,16,64,256]

1. tasks/s through `Runner` (store + OpenAIChatModel) against a server answering after a
   fixed 100 ms, at each concurrency, beside the latency bound (concurrency / 0.1 s);
2. the seed's approach as a baseline: 16 threads, each with the synchronous `openai.OpenAI`
   client, appending one JSON line per answer to a shared file;
3. peak memory of the runner over a small and a large task count, each in a fresh process.

The server runs in its own process, so CPU and memory figures are the client's alone; but
this machine's cores are shared by both, which the output states.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai

from charforge.character import Character
from charforge.llm.base import ChatMessage, Sampling
from charforge.llm.openai_api import OpenAIChatModel, OpenAIConfig
from charforge.runner import Runner, RunSummary, task_config, task_specs
from charforge.stages import PlannedTask, Records, TaskStage, build_stage
from charforge.store import Store
from charforge.tasks import TaskRow

LATENCY_S = 0.1
ANSWER = "A short, fixed answer from the bench server."
TASKS_AT = {1: 50, 16: 800, 64: 3000, 256: 6000}  # about 5-15 s per level at 100 ms
BASELINE_THREADS = 16
BASELINE_TASKS = 1600
SMOKE_TASKS = 40  # --smoke: every path of the bench, a few seconds in all


# -- the server, in a child process ------------------------------------------------
def serve(latency_s: float) -> None:
    """Child: start the scripted server, print its URL; answer "cpu" lines with this
    process's CPU seconds; exit when stdin closes."""
    from charforge.testing import ScriptedOpenAIServer

    with ScriptedOpenAIServer(latency_s=latency_s, responder=lambda _request: ANSWER) as server:
        print(server.base_url, flush=True)
        for line in sys.stdin:
            if line.strip() == "cpu":
                print(f"{time.process_time():.6f}", flush=True)


class ServerProcess:
    def __init__(self, latency_s: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(latency_s)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            self.close()
            raise RuntimeError("the bench server did not start")

    def overhead_ms(self, latency_s: float) -> float:
        """Median round trip of 10 sequential requests, less the server's latency."""
        body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "hi"}]})
        times = []
        for _ in range(11):  # the standard library's client: nothing to install, no pool
            request = urllib.request.Request(
                self.url + "/chat/completions", data=body.encode(), method="POST",
                headers={"content-type": "application/json"})
            t0 = time.perf_counter()
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
            times.append(time.perf_counter() - t0)
        return 1000 * (sorted(times[1:])[5] - latency_s)

    def cpu_s(self) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("cpu\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- our runner -------------------------------------------------------------------------
class BenchStage(TaskStage):
    """A stage like any other (the stage contract, the store, the runner): one short
    question per item, the answer kept as a record."""

    name = "bench"
    system_template = None
    user_template = "scenes"  # fingerprinted like any stage's; the prompt itself is ours
    repair_template = None
    sampling = Sampling(temperature=0.0, max_tokens=16)

    def plan(self) -> Iterator[PlannedTask]:
        for n in range(self.count):
            yield PlannedTask({"n": n})

    def messages(self, task: TaskRow) -> list[ChatMessage]:
        return [ChatMessage(role="user", content=f"Say one line about item {task.inputs['n']}.")]

    def parse_answer(self, task: TaskRow, text: str) -> Records:
        return [("item", {"text": text})]


def bench_stage(store: Store, count: int) -> BenchStage:
    stage = build_stage(BenchStage, Character(name="Bench", short_name="bench"), store)
    assert isinstance(stage, BenchStage)
    stage.count = count
    return stage


async def run_and_close(runner: Runner, model: OpenAIChatModel) -> RunSummary:
    """As `charforge generate` does: run, then close the model's clients in the same loop."""
    async with model:
        return await runner.run_async()


def busy_cores(seconds: float = 1.0) -> float:
    """Cores kept busy by whatever else runs on this machine, sampled from /proc/stat."""
    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # all, idle + iowait

    try:
        (all0, idle0), _, (all1, idle1) = sample(), time.sleep(seconds), sample()
    except (OSError, ValueError):
        return 0.0
    return (1 - (idle1 - idle0) / max(1, all1 - all0)) * (os.cpu_count() or 1)


def run_tasks(db: Path, url: str, concurrency: int, count: int) -> dict[str, float]:
    """Store `count` tasks (streamed from a generator), then run them; the wall and CPU
    seconds are those of the run alone."""
    t0 = time.perf_counter()
    store = Store(db)
    model = OpenAIChatModel(OpenAIConfig(
        model="bench", base_url=url, api_key_env=None, max_concurrency=concurrency,
        max_retries=2, timeout_s=30,  # as in real use, a transient error is retried (counted)
    ))
    stage = bench_stage(store, count)
    config = task_config(stage, {"teacher": model})
    added = store.plan(task_specs(stage, config)).added
    add_s = time.perf_counter() - t0
    runner = Runner(store, stage, {"teacher": model}, config=config.fingerprint,
                    concurrency=concurrency, show_progress=False)
    cpu0, t0 = time.process_time(), time.perf_counter()
    summary = asyncio.run(run_and_close(runner, model))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    done = store.count("bench", "bench", "done")
    store.close()
    with sqlite3.connect(db) as conn:
        retried = conn.execute("SELECT COUNT(*) FROM attempts WHERE state = 'failed'"
                               ).fetchone()[0]
        errors = conn.execute("SELECT error, COUNT(*) FROM tasks WHERE status = 'failed' "
                              "GROUP BY error").fetchall()
    if added != count or done != count or summary.failed:
        raise SystemExit(f"c={concurrency}: added {added}, done {done} of {count}, "
                         f"failed {summary.failed}: {errors}")
    return {"tasks": count, "add_s": add_s, "wall": wall, "cpu": cpu, "retried": retried}


# -- the seed's approach: threads appending JSON lines -------------------------------
def run_baseline(url: str, count: int, out: Path) -> dict[str, float]:
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(k: int) -> None:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=30)
        try:
            for n in range(k, count, BASELINE_THREADS):
                reply = client.chat.completions.create(
                    model="bench", max_tokens=16, temperature=0.0,
                    messages=[{"role": "user", "content": f"Say one line about item {n}."}],
                )
                usage = reply.usage.model_dump() if reply.usage else {}
                result = {"n": n, "text": reply.choices[0].message.content, "usage": usage}
                with lock, out.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(result) + "\n")
        except BaseException as exc:  # reported below, not swallowed
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(BASELINE_THREADS)]
    cpu0, t0 = time.process_time(), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    lines = sum(1 for _ in out.open(encoding="utf-8"))
    if errors or lines != count:
        raise SystemExit(f"baseline: {lines} lines of {count}; errors: {errors[:3]}")
    return {"tasks": count, "wall": wall, "cpu": cpu}


# -- memory: a fresh process per task count ---------------------------------------------
def peak_rss_mib() -> float:
    """Peak RSS of this process. VmHWM where there is one: ru_maxrss survives exec, so in a
    child it starts at the parent's peak."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def memory_child(count: int, url: str, folder: Path) -> None:
    start = peak_rss_mib()  # after imports, before any task
    result = run_tasks(folder / "charforge.db", url, 64, count)
    size = sum(p.stat().st_size for p in folder.glob("charforge.db*"))
    print(json.dumps({**result, "start_mib": start, "peak_mib": peak_rss_mib(),
                      "db_mib": size / 2**20}))


# -- main ---------------------------------------------------------------------------------
def throughput(levels: list[int], folder: Path, cores: int, smoke: bool = False) -> None:
    server = ServerProcess(LATENCY_S)
    results: dict[str, tuple[int, dict[str, float]]] = {}
    try:
        extra = server.overhead_ms(LATENCY_S)
        print(f"server round trip at c=1: {LATENCY_S * 1000:.0f} ms + {extra:.1f} ms")
        if extra > 10:
            print("  WARNING: more than 10 ms of overhead per round trip: check TCP_NODELAY "
                  "on the scripted server's socket (Nagle + delayed ACK cost ~40 ms)")
        for c in levels:
            cpu0 = server.cpu_s()
            count = min(SMOKE_TASKS, 8 * c) if smoke else TASKS_AT.get(c, max(50, c * 40))
            results[f"runner c={c}"] = c, run_tasks(folder / f"c{c}.db", server.url, c, count)
            results[f"runner c={c}"][1]["server_cpu"] = server.cpu_s() - cpu0
        cpu0 = server.cpu_s()
        base = run_baseline(server.url, SMOKE_TASKS if smoke else BASELINE_TASKS,
                            folder / "baseline.jsonl")
        base["server_cpu"] = server.cpu_s() - cpu0
        results[f"baseline {BASELINE_THREADS} threads"] = BASELINE_THREADS, base
    finally:
        server.close()

    head = (f"{'':<20}{'tasks':>6}{'seconds':>9}{'tasks/s':>9}{'bound/s':>9}{'% bound':>9}"
            f"{'client CPU':>12}{'server CPU':>12}")
    print("\n" + head + "\n" + "-" * len(head))
    rate = {}
    for label, (c, r) in results.items():
        rate[label], bound = r["tasks"] / r["wall"], c / LATENCY_S
        print(f"{label:<20}{r['tasks']:>6.0f}{r['wall']:>9.2f}{rate[label]:>9.1f}{bound:>9.0f}"
              f"{100 * rate[label] / bound:>8.0f}%{1000 * r['cpu'] / r['tasks']:>9.2f} ms"
              f"{1000 * r['server_cpu'] / r['tasks']:>9.2f} ms")
    print("(bound: concurrency / latency; CPU: CPU time per task of the client process and of "
          "the server process)\n\ntargets")
    base_rate = rate[f"baseline {BASELINE_THREADS} threads"]
    if "runner c=64" in rate:
        got, need = rate["runner c=64"], 0.8 * 64 / LATENCY_S
        print(f"  c=64 >= 80% of the bound: {got:.0f}/s vs {need:.0f}/s  {verdict(got >= need)}")
    if "runner c=256" in rate:
        got, need = rate["runner c=256"], 5 * base_rate
        print(f"  c=256 >= 5x baseline: {got:.0f}/s vs 5 x {base_rate:.0f} = {need:.0f}/s "
              f"({got / base_rate:.1f}x)  {verdict(got >= need)}")
    top = max((k for k in rate if k.startswith("runner")), key=rate.__getitem__)
    r = results[top][1]
    client_ms, server_ms = 1000 * r["cpu"] / r["tasks"], 1000 * r["server_cpu"] / r["tasks"]
    cap = min(1000 / client_ms, cores * 1000 / (client_ms + server_ms))
    print(f"  CPU cap: the runner is one asyncio process; at {top} it used "
          f"{r['cpu'] / r['wall']:.0%} of a core, {client_ms:.2f} ms of CPU per task (openai SDK, "
          f"httpx, store), and the server {server_ms:.2f} ms on the same {cores} cores: "
          f"at most ~{cap:.0f} tasks/s whatever the latency")
    if "runner c=256" in rate and 5 * base_rate > cap:
        print(f"  5x baseline ({5 * base_rate:.0f}/s) is above that cap: out of reach for one "
              "client process on this machine")


def memory(counts: list[int], folder: Path) -> None:
    print("\nmemory (runner at c=64 against a 0 ms server; each count in a fresh process)")
    server, mem = ServerProcess(0.0), []
    try:
        for count in counts:
            print(f"  {count:,} tasks ...", flush=True)
            (folder / f"memory-{count}").mkdir()
            proc = subprocess.run(
                [sys.executable, __file__, "--memory-child", str(count), "--url", server.url,
                 "--dir", str(folder / f"memory-{count}")], capture_output=True, text=True,
            )
            if proc.returncode:
                raise SystemExit(f"memory child failed:\n{proc.stderr[-2000:]}")
            mem.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    finally:
        server.close()
    print(f"{'tasks':>9}{'add s':>8}{'run s':>8}{'tasks/s':>9}{'RSS start MiB':>15}"
          f"{'peak RSS MiB':>14}{'store MiB':>11}{'retried':>9}")
    for m in mem:
        print(f"{m['tasks']:>9,}{m['add_s']:>8.1f}{m['wall']:>8.1f}{m['tasks'] / m['wall']:>9.0f}"
              f"{m['start_mib']:>15.1f}{m['peak_mib']:>14.1f}{m['db_mib']:>11.1f}"
              f"{m['retried']:>9}")
    grow, extra = mem[-1]["peak_mib"] - mem[0]["peak_mib"], mem[-1]["tasks"] - mem[0]["tasks"]
    print(f"  peak RSS grows {grow:+.1f} MiB for {extra:,} more tasks "
          f"({1024 * grow / extra:.3f} KiB per extra task)")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="memory: 10k vs 30k tasks")
    parser.add_argument("--smoke", action="store_true",
                        help="every path with a few tasks (seconds): a check, not figures")
    parser.add_argument("--skip-memory", action="store_true", help="skip the memory runs")
    parser.add_argument("--levels", default="1,16,64,256", help="concurrency levels")
    parser.add_argument("--serve", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        return serve(args.serve)
    if args.memory_child is not None:
        return memory_child(args.memory_child, args.url, Path(args.dir))

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"charforge generation bench · openai {openai.__version__} · python "
          f"{sys.version.split()[0]} · {cores} CPU cores, shared by the client and the server "
          f"(its own process) · server latency {LATENCY_S * 1000:.0f} ms")
    if (busy := busy_cores()) > 0.25:
        print(f"WARNING: other processes keep {busy:.1f} core(s) busy: the figures below are low")
    with tempfile.TemporaryDirectory(prefix="charforge-bench-") as tmp:
        levels = [1, 16] if args.smoke else [int(x) for x in args.levels.split(",") if x.strip()]
        throughput(levels, Path(tmp), cores or 1, smoke=args.smoke)
        if not args.skip_memory:
            counts = ([200, 400] if args.smoke else [10_000, 30_000] if args.quick
                      else [10_000, 100_000])
            memory(counts, Path(tmp))


if __name__ == "__main__":
    main()
