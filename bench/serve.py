"""Serving: throughput, time to first token, latency and memory of `charforge serve`.

    .venv/bin/python bench/serve.py [--levels 1,4,16] [--max-tokens 64] [--requests 3]
                                    [--max-batch 16] [--characters 7] [--temperature 0.7]
                                    [--skip-throughput] [--skip-memory] [--smoke]

The server is the real one (`charforge.serve.app.create_app` under uvicorn) in a process
of its own, so its RSS and CPU time are its own; the client is the official `openai`
SDK (`AsyncOpenAI`, `stream=True`) over HTTP. The model is the embedded SmolLM2-135M
(its safetensors copy, `charforge.llm.embedded`), dtype `auto` as the server picks it.

Characters: each trained with `charforge.train.sft.train_sft` (LoRA r=16 on q/k/v/o, one
step on a few rows), then its `lora_B` weights set to small random values so every
adapter answers differently (one step barely moves it from the base); one more character
has no run and is served prompted on the bare base (the workspace's default model, which the
server runs in the trained runs' engine when it is the same weights: the `engines` line says
which model ids each engine answers).

1. Throughput and latency. The served workspace holds two trained characters and the
   prompted one: requests go round-robin over the three model ids. For each server
   setting (batched: `--max-batch` rows decoded together; one at a time: max_batch=1)
   and each number of concurrent streams: the streams arrive over time (Poisson, mean gap
   ARRIVAL_GAP_S); each stream sends `--requests` requests one after the other (at least
   MIN_REQUESTS per level), with a random think time (exponential, mean THINK_S) between
   them. Every request asks for `--max-tokens` tokens of a long story (sampled, a seed per
   request); the tokens counted are the reply's own (`usage.completion_tokens`), and the
   table says how many replies reached max_tokens. Printed per level: aggregate tokens/s
   (all tokens / first request sent to last reply ended), p50/p95 time to first token (the
   first chunk with content or reasoning_content), p50/p95 latency (request to last
   chunk), decoding steps of each engine, CPU of the server and the client and the share
   of the machine other processes took meanwhile. Targets: at the top level (16 streams)
   batched throughput >= 6x one at a time, and batched p95 TTFT <= 5x that of one stream.
2. Memory: the server's RSS with one trained character and with `--characters` (7) on one
   base (no prompted character: it loads a base of its own), after loading and after a
   few requests, each also with the heap trimmed (gc, malloc_trim), and the prefix
   cache's bytes; each extra character's cost against its adapter file + 10%.

Percentiles are nearest-rank over the level's requests (p95 of 8 requests is their
maximum). The client and the server share this machine's cores: the output says how much
CPU each used. `--smoke` runs every path on a tiny random model (tests/tiny_models.py) in
well under a minute: a check that the bench works, not figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

QUESTION = ("Tell me the whole story of your life, from your childhood until today, with "
            "every place, person and work you remember, in as much detail as you can.")
TRAINED = [  # (name, short name, one line of profile)
    ("Ada Lovelace", "Ada", "a mathematician who wrote the first program for Babbage's "
     "Analytical Engine"),
    ("Hypatia of Alexandria", "Hypatia", "a philosopher and astronomer who taught in "
     "Alexandria"),
    ("Galileo Galilei", "Galileo", "an astronomer who turned a telescope to the moons of "
     "Jupiter"),
    ("Marie Curie", "Marie", "a physicist and chemist who studied radioactivity in Paris"),
    ("Leonardo da Vinci", "Leonardo", "a painter and engineer who filled notebooks with "
     "machines"),
    ("Mary Shelley", "Mary", "a novelist who wrote Frankenstein on the shore of Lake Geneva"),
    ("Nikola Tesla", "Tesla", "an inventor who built alternating-current motors in New York"),
]
PROMPTED = ("Diogenes of Sinope", "Diogenes", "a philosopher who lived in a jar in the "
            "market of Athens and mocked every custom")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
TRAIN_CHANGES = {"max_steps": 1, "precision": "fp32", "effective_batch": 1, "lora_r": 16,
                 "lora_target_modules": LORA_TARGETS}
LORA_B_STD = 0.02  # random lora_B: replies plainly differ from the base, activations stay sane
ARRIVAL_GAP_S = 0.25  # mean gap between two streams' first requests (Poisson arrivals)
THINK_S = 0.25  # mean think time between a stream's requests (exponential, capped at 4x)
MIN_REQUESTS = 8  # per level at least (one stream sends them all)
TARGET_SPEEDUP = 6.0  # batched vs one at a time, aggregate tokens/s at the top level
TARGET_TTFT = 5.0  # p95 TTFT at the top level vs one stream, batched
TARGET_MEMORY = 1.10  # an extra character's RSS vs its adapter file
SMOKE = dict(levels="1,16", max_tokens=8, requests=1, characters=2, min_requests=2,
             arrival_gap=0.02, think=0.02)
MIB = 2**20


# -- the served workspaces ------------------------------------------------------------------
def _quiet_training() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("transformers", "trl", "peft", "accelerate", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _randomise_lora_b(folder: Path, seed: int) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    path = folder / "adapter_model.safetensors"
    tensors = load_file(str(path))
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in tensors.items():
        if "lora_B" in name:
            tensors[name] = torch.randn(tensor.shape, generator=generator) * LORA_B_STD
    save_file(tensors, str(path), metadata={"format": "pt"})


def _import(ws: Any, root: Path, name: str, short_name: str, line: str) -> str:
    profile = root / f"{short_name}.txt"
    profile.write_text(f"# {name}\n\n{name} was {line}. {short_name} speaks plainly and at "
                       "length about a long life and its work.\n", encoding="utf-8")
    return ws.import_character(profile, short_name=short_name).slug


def _rows(short_name: str) -> list[dict[str, Any]]:
    return [{"messages": [
        {"role": "system", "content": f"You are {short_name}."},
        {"role": "user", "content": f"What did you do in year {i} of your work?"},
        {"role": "assistant", "content": f"In that year I worked from dawn to night, as "
                                         f"{short_name} always did, and wrote it all down."}]}
        for i in range(4)]


@dataclass
class Trained:
    workspace: Path
    trained: list[str]  # slugs, in order
    prompted: str
    base: str
    adapter_bytes: dict[str, int] = field(default_factory=dict)
    tokenizer_bytes: dict[str, int] = field(default_factory=dict)


def train_characters(root: Path, count: int, base: str, tiny: bool) -> Trained:
    """One workspace: `count` characters trained on `base` (adapters randomised), one
    prompted; the served workspaces are copies of parts of it."""
    import yaml
    from rich.console import Console

    from charforge.train.sft import train_sft
    from charforge.workspace import Workspace

    _quiet_training()
    ws = Workspace.init(root / "trained")
    if tiny:  # the prompted character's model: the same tiny base
        config = yaml.safe_load(ws.config_path.read_text())
        config["default_model"] = "tiny"
        config["models"] = {"tiny": {"backend": "local", "path": base, "dtype": "float32"}}
        ws.config_path.write_text(yaml.safe_dump(config))
        ws = Workspace(ws.root)
    result = Trained(ws.root, [], _import(ws, root, *PROMPTED), base)
    for seed, (name, short_name, line) in enumerate(TRAINED[:count]):
        started = time.perf_counter()
        slug = _import(ws, root, name, short_name, line)
        folder = ws.datasets_dir / slug
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(short_name)),
                                          encoding="utf-8")
        run = train_sft(ws, slug, base=base, changes=TRAIN_CHANGES, console=Console(quiet=True))
        _randomise_lora_b(run.folder, seed)
        result.trained.append(slug)
        result.adapter_bytes[slug] = (run.folder / "adapter_model.safetensors").stat().st_size
        result.tokenizer_bytes[slug] = sum(p.stat().st_size for p in run.folder.glob("tokenizer*"))
        print(f"  trained {slug}: {run.record.run}, adapter "
              f"{result.adapter_bytes[slug] / MIB:.2f} MiB ({time.perf_counter() - started:.0f} s)",
              flush=True)
    return result


def served_copy(trained: Trained, root: Path, name: str, slugs: list[str]) -> Path:
    """A workspace of its own holding only `slugs` (characters and their runs) and the
    trained workspace's config."""
    from charforge.train.runs import models_dir

    target = root / name
    (target / "characters").mkdir(parents=True)
    shutil.copy(trained.workspace / "charforge.yaml", target / "charforge.yaml")
    for slug in slugs:
        shutil.copytree(trained.workspace / "characters" / slug, target / "characters" / slug)
        runs = models_dir(trained.workspace) / slug
        if runs.is_dir():
            shutil.copytree(runs, models_dir(target) / slug)
    return target


# -- the server, in a child process -------------------------------------------------------
def serve_child() -> None:
    """Child: import the server's modules, then serve what stdin orders, one after the
    other: a JSON line (the workspace and max_batch) starts a server on a free port and
    prints its URL once models are loaded; "stats" prints the engines' counters; "stop"
    stops it (then "stopped"); the end of stdin ends the child."""
    import peft  # noqa: F401  (imported before the workspace comes: while the parent trains)
    import uvicorn

    from charforge.serve.app import ServeSettings, create_app
    from charforge.workspace import Workspace

    while line := sys.stdin.readline():
        order = json.loads(line)
        app = create_app(Workspace(Path(order["workspace"])),
                         ServeSettings(max_batch=order["max_batch"]))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                               timeout_graceful_shutdown=5))
        ended = threading.Event()  # stdin closed: no more orders

        def control(server: Any = server, app: Any = app, sock: Any = sock,
                    ended: threading.Event = ended) -> None:
            while not server.started:
                if server.should_exit:
                    return
                time.sleep(0.01)
            print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
            while command := sys.stdin.readline():
                if command.strip() == "stats":
                    print(json.dumps(engine_stats(app)), flush=True)
                elif command.strip() == "trim":
                    print(json.dumps(trim_heap()), flush=True)
                elif command.strip() == "stop":
                    break
            else:
                ended.set()
            server.should_exit = True

        thread = threading.Thread(target=control, daemon=True)
        thread.start()
        server.run(sockets=[sock])
        thread.join()
        sock.close()
        if ended.is_set():
            return
        print("stopped", flush=True)


def trim_heap() -> bool:
    """Collect garbage and hand the C heap's free pages back to the system (glibc's
    malloc_trim): what RSS keeps only because the allocator holds freed memory goes."""
    import ctypes
    import gc

    gc.collect()
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def engine_stats(app: Any) -> dict[str, Any]:
    """Per engine (one per model in memory; models sharing a base share it): steps run,
    largest batch, the model ids it answers."""
    from charforge.llm.local import LocalChatModel

    engines: dict[int, dict[str, Any]] = {}
    for model_id, served in app.state.catalogue.models.items():
        backend = served.backend
        if not isinstance(backend, LocalChatModel):
            continue
        engine = backend.engine
        entry = engines.setdefault(id(engine), {
            "names": [], "steps": engine.steps, "largest": engine.largest_batch,
            "hits": engine.prefixes.hits, "kept_bytes": engine.prefixes.nbytes,
            "admitted": engine.admitted, "timings": list(engine.timings),
            "max_batch": engine.max_batch, "ids": [],
            "dtype": str(next(backend.model.parameters()).dtype).removeprefix("torch."),
            "threads": _torch_threads()})
        if backend.name not in entry["names"]:
            entry["names"].append(backend.name)
        if "/" not in model_id:
            entry["ids"].append(model_id)
    return {"+".join(entry["names"]): entry for entry in engines.values()}


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


class ServerProcess:
    """A server child, launched early (its imports overlap the parent's work) and told
    what to serve by `start` (or, with role --tokenizer-child, `tokenizer_cost`'s)."""

    def __init__(self, role: str = "--serve-child") -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, role],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ps = psutil.Process(self.proc.pid)
        self.url = ""
        self.ready_s = float("nan")

    def start(self, workspace: Path, max_batch: int | None) -> ServerProcess:
        """Serve `workspace`; return once its models are loaded (ready_s: from the order,
        the imports mostly done before)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        started = time.perf_counter()
        self.proc.stdin.write(json.dumps({"workspace": str(workspace),
                                          "max_batch": max_batch}) + "\n")
        self.proc.stdin.flush()
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            self.close()
            raise SystemExit("the bench server did not start (its error is above)")
        self.ready_s = time.perf_counter() - started
        return self

    def stop(self) -> None:
        """Stop serving (models closed); the child waits for its next order."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        if self.proc.stdout.readline().strip() != "stopped":
            raise SystemExit("the bench server did not stop (its error is above)")

    def trim(self) -> bool:
        """`trim_heap()` in the server."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("trim\n")
        self.proc.stdin.flush()
        return bool(json.loads(self.proc.stdout.readline()))

    def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def rss_mib(self, samples: int = 5) -> float:
        """Median of a few samples, 0.2 s apart."""
        values = []
        for _ in range(samples):
            values.append(self.ps.memory_info().rss / MIB)
            time.sleep(0.2)
        return statistics.median(values)

    def status_mib(self, key: str) -> float:
        """A line of /proc/PID/status (VmHWM: peak RSS; RssAnon: RSS less file pages)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_s(self) -> float:
        times = self.ps.cpu_times()
        return times.user + times.system

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- the client ------------------------------------------------------------------------
@dataclass
class Reply:
    model: str
    sent: float
    first: float | None = None
    ended: float = 0.0
    tokens: int = 0
    prompt_tokens: int = 0
    finish: str | None = None
    error: str | None = None


async def ask(client: Any, model: str, max_tokens: int, temperature: float,
              seed: int) -> Reply:
    import openai

    reply = Reply(model, time.perf_counter())
    try:
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": QUESTION}], stream=True,
            stream_options={"include_usage": True}, max_tokens=max_tokens,
            temperature=temperature, seed=seed)
        async for event in stream:
            if event.usage:
                reply.tokens = event.usage.completion_tokens
                reply.prompt_tokens = event.usage.prompt_tokens
            for choice in event.choices:
                delta = choice.delta
                if reply.first is None and (delta.content
                                            or getattr(delta, "reasoning_content", None)):
                    reply.first = time.perf_counter()
                if choice.finish_reason:
                    reply.finish = choice.finish_reason
    except openai.APIError as exc:
        reply.error = f"{type(exc).__name__}: {exc}"
    reply.ended = time.perf_counter()
    if reply.error is None and (reply.finish is None or reply.tokens == 0):
        reply.error = f"no finish_reason or usage (finish {reply.finish}, {reply.tokens} tokens)"
    return reply


async def load(url: str, models: list[str], streams: int, per_stream: int, max_tokens: int,
               temperature: float, arrival_gap: float, think: float, seed: int) -> list[Reply]:
    """`streams` clients arriving over time, each sending `per_stream` requests one after
    the other with a random think time between them."""
    import openai

    rng = random.Random(seed)
    arrivals = [0.0]
    for _ in range(streams - 1):
        arrivals.append(arrivals[-1] + rng.expovariate(1 / arrival_gap))
    thinks = [[min(4 * think, rng.expovariate(1 / think)) for _ in range(per_stream)]
              for _ in range(streams)]
    replies: list[Reply] = []

    async def stream(i: int, client: Any) -> None:
        await asyncio.sleep(arrivals[i])
        for j in range(per_stream):
            if j:
                await asyncio.sleep(thinks[i][j])
            replies.append(await ask(client, models[(i + j) % len(models)], max_tokens,
                                     temperature, seed * 100_000 + i * 1000 + j))

    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0,
                                  timeout=3600) as client:
        await asyncio.gather(*(stream(i, client) for i in range(streams)))
    return replies


# -- figures ------------------------------------------------------------------------------
def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else float("nan")


def machine_ticks() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine since boot."""
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    total = sum(t)
    return total - idle, total


@dataclass
class Level:
    setting: str
    streams: int
    replies: list[Reply]
    wall: float
    server_cpu: float
    client_cpu: float
    others: float  # share of the machine other processes used meanwhile
    steps: dict[str, int]
    hits: int = 0  # prompts started from a kept opening (the engines' prefix caches)
    # per request, in the engine: (seconds queued before its prefill, seconds of the prefill)
    timings: list[tuple[float, float]] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(r.tokens for r in self.replies)

    @property
    def rate(self) -> float:
        return self.tokens / self.wall

    def ttft(self, q: float) -> float:
        return nearest_rank([r.first - r.sent for r in self.replies if r.first], q)

    def latency(self, q: float) -> float:
        return nearest_rank([r.ended - r.sent for r in self.replies], q)


def run_level(server: ServerProcess, setting: str, models: list[str], streams: int,
              args: argparse.Namespace) -> Level:
    per_stream = max(args.requests, math.ceil(args.min_requests / streams))
    before = server.stats()
    cpu0, me0, (busy0, all0) = server.cpu_s(), time.process_time(), machine_ticks()
    replies = asyncio.run(load(server.url, models, streams, per_stream, args.max_tokens,
                               args.temperature, args.arrival_gap, args.think, seed=streams))
    cpu1, me1, (busy1, all1) = server.cpu_s(), time.process_time(), machine_ticks()
    after = server.stats()
    failed = [r for r in replies if r.error]
    if failed:
        raise SystemExit(f"{len(failed)} of {len(replies)} requests failed; the first: "
                         f"{failed[0].model}: {failed[0].error}")
    ours = (cpu1 - cpu0) + (me1 - me0)
    others = max(0.0, (busy1 - busy0) - ours) / (all1 - all0) if all1 > all0 else float("nan")
    wall = max(r.ended for r in replies) - min(r.sent for r in replies)
    steps = {name: after[name]["steps"] - before[name]["steps"] for name in after}
    hits = sum(after[name]["hits"] - before[name]["hits"] for name in after)
    timings = [t for name in after for t in
               after[name]["timings"][len(after[name]["timings"]) - (
                   after[name]["admitted"] - before[name]["admitted"]):]]
    return Level(setting, streams, replies, wall, cpu1 - cpu0, me1 - me0, others, steps, hits,
                 timings)


def print_levels(levels: list[Level], max_tokens: int) -> None:
    head = (f"{'setting':<28}{'streams':>8}{'reqs':>6}{'tokens':>8}{'tok/s':>8}"
            f"{'TTFT p50':>10}{'p95':>8}{'latency p50':>13}{'p95':>8}{'tok/reply':>11}"
            f"{'at max':>8}{'steps':>7}{'tok/step':>9}{'srv CPU':>9}{'cli CPU':>9}"
            f"{'others':>8}{'kept':>8}")
    print("\n" + head + "\n" + "-" * len(head))
    for lv in levels:
        steps = sum(lv.steps.values())
        at_max = sum(r.tokens >= max_tokens for r in lv.replies)
        print(f"{lv.setting:<28}{lv.streams:>8}{len(lv.replies):>6}{lv.tokens:>8}"
              f"{lv.rate:>8.1f}{lv.ttft(0.5):>9.2f}s{lv.ttft(0.95):>7.2f}s"
              f"{lv.latency(0.5):>12.2f}s{lv.latency(0.95):>7.2f}s"
              f"{lv.tokens / len(lv.replies):>11.1f}{at_max:>5}/{len(lv.replies):<2}"
              f"{steps:>7}{lv.tokens / max(1, steps):>9.2f}"
              f"{lv.server_cpu / lv.wall:>8.2f}c{lv.client_cpu / lv.wall:>8.2f}c"
              f"{lv.others:>8.0%}{lv.hits:>5}/{len(lv.replies):<2}")
    print("(tok/s: completion tokens / first request sent to last reply ended; TTFT: first "
          "chunk with content or reasoning_content; p95 nearest-rank; at max: replies of "
          "max_tokens tokens; steps: decoding steps of all engines, tok/step ≈ rows a step; "
          "CPU: cores used by the server and the client process; others: share of the "
          "machine other processes took; kept: prompts started from a kept system-message "
          "opening, the prefix cache)")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def throughput(trained: Trained, root: Path, args: argparse.Namespace,
               children: list[ServerProcess]) -> None:
    slugs = [*trained.trained[:2], trained.prompted]
    workspace = served_copy(trained, root, "served", slugs)
    levels_wanted = [int(x) for x in args.levels.split(",") if x.strip()]
    settings = [(f"batched (max_batch {args.max_batch})", args.max_batch),
                ("one at a time (max_batch 1)", 1)]
    levels: list[Level] = []
    child = children.pop(0)  # one process, one server after the other
    try:
        for setting, max_batch in settings:
            server = child.start(workspace, max_batch)
            stats = server.stats()
            engines = "; ".join(f"{name} ({s['dtype']}, max_batch {s['max_batch']}, "
                                f"{s['threads']} torch threads): {', '.join(s['ids'])}"
                                for name, s in stats.items())
            print(f"\n{setting}: models loaded in {server.ready_s:.1f} s; engines: {engines}",
                  flush=True)
            warm = asyncio.run(load(server.url, slugs, 1, len(slugs), min(8, args.max_tokens),
                                    args.temperature, 0.01, 0.01, seed=0))  # untimed
            print("  prompt tokens (system message built by the server + the question): "
                  + ", ".join(f"{r.model} {r.prompt_tokens}" for r in warm), flush=True)
            for streams in levels_wanted:
                level = run_level(server, setting, slugs, streams, args)
                levels.append(level)
                print(f"  {streams:>2} streams: {len(level.replies)} requests, "
                      f"{level.rate:.1f} tok/s, TTFT p95 {level.ttft(0.95):.2f} s, "
                      f"{level.wall:.0f} s; in the engine: queued p50 "
                      f"{nearest_rank([q for q, _ in level.timings], 0.5):.2f} s p95 "
                      f"{nearest_rank([q for q, _ in level.timings], 0.95):.2f} s, prefill p50 "
                      f"{nearest_rank([p for _, p in level.timings], 0.5):.2f} s p95 "
                      f"{nearest_rank([p for _, p in level.timings], 0.95):.2f} s", flush=True)
            server.stop()
    finally:
        child.close()
    print_levels(levels, args.max_tokens)
    batched = {lv.streams: lv for lv in levels if lv.setting == settings[0][0]}
    single = {lv.streams: lv for lv in levels if lv.setting == settings[1][0]}
    top, low = max(levels_wanted), min(levels_wanted)
    print("\ntargets")
    ratio = batched[top].rate / single[top].rate
    print(f"  {top} streams, batched >= {TARGET_SPEEDUP:.0f}x one at a time: "
          f"{batched[top].rate:.1f} vs {single[top].rate:.1f} tok/s = {ratio:.2f}x  "
          f"{verdict(ratio >= TARGET_SPEEDUP)}")
    print(f"  (one at a time at {top} streams vs batched at {low}: {single[top].rate:.1f} vs "
          f"{batched[low].rate:.1f} tok/s = {single[top].rate / batched[low].rate:.2f}x)")
    ttft_ratio = batched[top].ttft(0.95) / batched[low].ttft(0.95)
    print(f"  {top} streams, batched p95 TTFT <= {TARGET_TTFT:.0f}x {low} stream: "
          f"{batched[top].ttft(0.95):.2f} s vs {batched[low].ttft(0.95):.2f} s = "
          f"{ttft_ratio:.2f}x  {verdict(ttft_ratio <= TARGET_TTFT)}")


def memory(trained: Trained, root: Path, args: argparse.Namespace,
           children: list[ServerProcess]) -> None:
    counts = [1, len(trained.trained)]
    print(f"\nmemory: the server's RSS with 1 and {counts[1]} trained characters on one base "
          f"(max_batch {args.max_batch}), after loading and after {counts[1]} requests of "
          f"{args.max_tokens} tokens, one at a time over the characters")
    rows = []
    for count in counts:
        slugs = trained.trained[:count]
        workspace = served_copy(trained, root, f"memory-{count}", slugs)
        server = children.pop(0).start(workspace, args.max_batch)
        try:
            time.sleep(1.0)
            row = {"count": count, "load_s": server.ready_s, "rss_loaded": server.rss_mib(),
                   "anon_loaded": server.status_mib("RssAnon")}
            row["trimmed"] = server.trim()
            row.update(rss_trimmed=server.rss_mib(), anon_trimmed=server.status_mib("RssAnon"))
            for i in range(counts[1]):
                asyncio.run(load(server.url, [slugs[i % count]], 1, 1, args.max_tokens,
                                 args.temperature, 0.01, 0.01, seed=1000 + i))
            time.sleep(0.5)
            row.update(rss_after=server.rss_mib(), anon_after=server.status_mib("RssAnon"),
                       peak=server.status_mib("VmHWM"))
            server.trim()
            row.update(rss_used=server.rss_mib(), anon_used=server.status_mib("RssAnon"),
                       kept=sum(e["kept_bytes"] for e in server.stats().values()) / MIB)
            rows.append(row)
        finally:
            server.close()
    print(f"{'characters':>11}{'load s':>8}{'RSS loaded':>12}{'of it anon':>12}"
          f"{'trimmed':>9}{'RSS after':>11}{'of it anon':>12}{'trimmed':>9}{'kept':>6}"
          f"{'peak RSS':>10}   (MiB)")
    for r in rows:
        print(f"{r['count']:>11}{r['load_s']:>8.1f}{r['rss_loaded']:>12.1f}"
              f"{r['anon_loaded']:>12.1f}{r['rss_trimmed']:>9.1f}{r['rss_after']:>11.1f}"
              f"{r['anon_after']:>12.1f}{r['rss_used']:>9.1f}{r['kept']:>6.1f}"
              f"{r['peak']:>10.1f}")
    print("(anon: RSS less file pages: the base's weights are read from a memory-mapped file "
          "and come into RSS as they are read; trimmed: after gc and malloc_trim(0) in the "
          "server, once loaded (before the requests) and after the requests; after: after the "
          "requests; kept: the prefix cache's states of system messages, within its budget)")
    extra = counts[1] - counts[0]
    adapter = statistics.mean(trained.adapter_bytes[s] for s in trained.trained[1:]) / MIB
    tokenizer = statistics.mean(trained.tokenizer_bytes[s] for s in trained.trained[1:]) / MIB
    allowed = TARGET_MEMORY * adapter
    print(f"adapter file (adapter_model.safetensors) {adapter:.2f} MiB a character; "
          f"tokenizer files beside it {tokenizer:.2f} MiB")
    trimmed_any = rows[0]["trimmed"] or rows[1]["trimmed"]
    kept = (rows[1]["kept"] - rows[0]["kept"]) / extra
    used = "used" if trimmed_any else "after"

    def line(label: str, cost: float, anon: float | None) -> None:
        of_anon = f" ({anon:.2f} anon)" if anon is not None else ""
        print(f"  each extra character, {label}: {cost:.2f} MiB of RSS{of_anon} vs adapter + "
              f"10% = {allowed:.2f} MiB ({cost / adapter:.2f}x the file)  "
              f"{verdict(cost <= allowed)}")

    for label, key in (("after loading", "loaded"), ("after requests", "after"),
                       ("after requests, trimmed", "used")):
        if key == "used" and not trimmed_any:
            continue
        cost = (rows[1][f"rss_{key}"] - rows[0][f"rss_{key}"]) / extra
        anon = (rows[1][f"anon_{key}"] - rows[0][f"anon_{key}"]) / extra
        line(label, cost, anon)
    cost = (rows[1][f"rss_{used}"] - rows[0][f"rss_{used}"]) / extra - kept
    line(f"after requests{', trimmed,' if trimmed_any else ''} less the prefix cache", cost,
         None)
    print(f"  (the prefix cache's kept system messages: {kept:.2f} MiB a character here. It is "
          "one cache for the whole server, bounded by prefix_cache_mib (256 by default; 0 "
          "turns it off), and fills with any new opening: one character in many scenes "
          "fills it as well as many characters do" + ("; untrimmed, RSS also holds memory "
          "the allocator was given back and keeps for reuse: the trimmed figures are what "
          "the server still uses)" if trimmed_any else ")"))
    trimmed = (rows[1]["rss_trimmed"] - rows[0]["rss_trimmed"]) / extra
    print(f"  (diagnosis: once loaded and trimmed, each extra character costs {trimmed:.2f} MiB "
          f"({trimmed / adapter:.2f}x the file); what trimming takes off is freed memory the "
          "allocator held)" if rows[0]["trimmed"] or rows[1]["trimmed"]
          else "  (malloc_trim is not available here: no trimmed figures)")
    per_tokenizer = tokenizer_cost(trained, children.pop(0))
    cost = (rows[1]["rss_loaded"] - rows[0]["rss_loaded"]) / extra
    print(f"  (the adapter file and a tokenizer: {adapter:.2f} + {per_tokenizer:.2f} = "
          f"{adapter + per_tokenizer:.2f} MiB, beside the {cost:.2f} MiB measured after loading)")


def tokenizer_cost(trained: Trained, child: ServerProcess) -> float:
    """What one run folder's tokenizer costs (the server loads one per adapter folder
    that holds one, `LocalChatModel.load`), measured in a fresh process."""
    from charforge.train.runs import finished_runs

    folders = [str(folder) for folder, _ in finished_runs(trained.workspace)]
    assert child.proc.stdin is not None and child.proc.stdout is not None
    child.proc.stdin.write(json.dumps(folders) + "\n")
    child.proc.stdin.flush()
    cost = json.loads(child.proc.stdout.readline())
    print(f"  (diagnosis: a run folder's tokenizer costs {cost:.2f} MiB of RSS once loaded, "
          f"mean of {len(folders) - 1} loads in a fresh process after one warm-up load)")
    return float(cost)


def tokenizer_child() -> None:
    """Child: read a JSON list of folders; load the first one's tokenizer (warm-up), then
    the others', and print the RSS (anon, after gc and malloc_trim) each one added."""
    from transformers import AutoTokenizer

    def anon() -> float:
        trim_heap()
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    line = sys.stdin.readline()
    if not line:
        return
    first, *others = json.loads(line)
    kept = [AutoTokenizer.from_pretrained(first)]
    before = anon()
    kept += [AutoTokenizer.from_pretrained(folder) for folder in others]
    print(json.dumps((anon() - before) / max(1, len(others))), flush=True)


# -- main ---------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,4,16", help="concurrent streams")
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens of a request")
    parser.add_argument("--requests", type=int, default=3,
                        help=f"requests per stream (at least {MIN_REQUESTS} per level)")
    parser.add_argument("--max-batch", type=int, default=16, help="the batched setting")
    parser.add_argument("--characters", type=int, default=7, choices=range(2, len(TRAINED) + 1),
                        metavar="N", help="trained characters of the memory run (2-7)")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--smoke", "--quick", action="store_true",
                        help="every path on a tiny random model, in well under a minute "
                             "(the tests run it): a check, not figures")
    parser.add_argument("--serve-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_child:
        return serve_child()
    if args.tokenizer_child:
        return tokenizer_child()
    args.min_requests, args.arrival_gap, args.think = MIN_REQUESTS, ARRIVAL_GAP_S, THINK_S
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    busy0, all0 = machine_ticks()
    time.sleep(1.0)
    busy1, all1 = machine_ticks()
    others = (busy1 - busy0) / (all1 - all0) * (cores or 1)
    # The server children import now, while this process builds and trains.
    children = [ServerProcess() for _ in range((not args.skip_throughput)
                                                + 2 * (not args.skip_memory))]
    if not args.skip_memory:
        children.append(ServerProcess("--tokenizer-child"))
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="charforge-bench-serve-") as tmp:
            bench(Path(tmp), args, cores or 1, others, children)
        print(f"\nthe bench took {time.perf_counter() - started:.0f} s")
    finally:
        for child in children:
            child.close()


def bench(root: Path, args: argparse.Namespace, cores: int, others: float,
          children: list[ServerProcess]) -> None:
    import openai
    import torch

    if args.smoke:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from tiny_models import build_tiny_chat_model

        base, model = str(build_tiny_chat_model(root / "tiny")), "a tiny random Llama"
    else:
        from charforge.llm.embedded import smollm2_dir

        base, model = str(smollm2_dir()), "SmolLM2-135M-Instruct (embedded)"
    print(f"charforge serve bench · {model} · openai {openai.__version__} · torch "
          f"{torch.__version__} ({torch.backends.cpu.get_cpu_capability()}) · python "
          f"{sys.version.split()[0]} · {cores} CPU cores shared by the server and the "
          f"client · max_tokens {args.max_tokens}, temperature {args.temperature}")
    if others > 0.25:
        print(f"WARNING: other processes keep {others:.1f} core(s) busy: the figures below "
              "are low")
    count = 2 if args.skip_memory else args.characters
    print(f"training {count} characters (LoRA r=16 on {', '.join(LORA_TARGETS)}, one step; "
          f"lora_B then random, std {LORA_B_STD}) ...", flush=True)
    trained = train_characters(root, count, base, tiny=args.smoke)
    if not args.skip_throughput:
        print(f"\nthroughput: model ids {trained.trained[0]}, {trained.trained[1]} (LoRA "
              f"adapters) and {trained.prompted} (prompted, bare base), round-robin; "
              f"streams arrive ~{args.arrival_gap} s apart (Poisson), think time ~"
              f"{args.think} s (exponential); {args.requests} requests a stream, at least "
              f"{args.min_requests} a level")
        throughput(trained, root, args, children)
    if not args.skip_memory:
        memory(trained, root, args, children)


if __name__ == "__main__":
    main()
