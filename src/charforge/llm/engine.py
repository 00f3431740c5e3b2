"""The batched engine: one model in memory, many requests decoded together.

A worker thread owns the model. Between two decoding steps it admits the requests
that arrived meanwhile (their prompts are read in one left-padded forward pass, and
their key/value cache joins the running batch), so a newcomer never waits for a
running batch to finish. Every row keeps its own settings: LoRA adapter (rows of
several adapters in one step, `charforge.llm.mixed_lora`, which also keeps adapters
in the base's precision), temperature, top-p, seed, repetition penalty, stop
strings, end-of-turn tokens and JSON grammar (an xgrammar matcher per row). A prompt
that opens like one read before, with the same adapter, starts from the states kept
of that opening (the prefix cache, `charforge.llm.prefixes`), so a character's system
message is read once.
Each row streams its text as it grows (`Delta` events) and ends with one `Finished`;
a cancelled row leaves the batch at the next step, and a forward pass whose rows are
all cancelled stops within one module of the model.

The cache is transformers' `DynamicCache`, joined and trimmed layer by layer. A model
whose cache is not made of plain full-attention layers (sliding windows, for
instance) is run one request at a time instead: still streamed and cancellable.
"""

from __future__ import annotations

import atexit
import collections
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from charforge.llm.kvcache import plain, seed, with_room
from charforge.llm.mixed_lora import MixedLoRA
from charforge.llm.model_hooks import packed_head_rows, stop_checks
from charforge.llm.prefixes import Prefix, PrefixCache
from charforge.llm.sampling import choose

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed batch


@dataclass(frozen=True)
class EngineRequest:
    """One generation: the prompt's token ids and how to continue it."""

    prompt_ids: Sequence[int]
    tokenizer: Any  # decodes this row's tokens into text
    adapter: str | None = None  # a loaded adapter's name; None = the bare base
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None
    stop: tuple[str, ...] = ()
    eos_ids: frozenset[int] = frozenset()
    repetition_penalty: float = 1.0
    grammar: Any = None  # an xgrammar CompiledGrammar
    skip_special_tokens: bool = True
    prefix: int = 0  # leading prompt tokens other requests will share (kept when read)


@dataclass(frozen=True)
class Delta:
    """More text of a reply."""

    text: str


@dataclass(frozen=True)
class Finished:
    """The end of a reply: why it ended ("stop", "length" or "cancelled"), its whole
    text and its token counts."""

    reason: str
    text: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    """The reply could not be generated."""

    error: BaseException


Event = Delta | Finished | Failed
Sink = Callable[[Event], None]


class GenerationStopped(Exception):
    """Raised inside the model's forward pass when every row of it was cancelled."""


@dataclass
class EngineJob:
    """A submitted request; `cancel()` takes it out of the batch at the next step."""

    request: EngineRequest
    sink: Sink
    _engine: BatchEngine
    cancelled: bool = False
    submitted: float = field(default_factory=time.monotonic)

    def cancel(self) -> None:
        self.cancelled = True
        self._engine._wake()


@dataclass
class _Row:
    job: EngineJob
    seen: Any  # bool tensor over the vocabulary (repetition penalty), or None
    generator: Any  # torch.Generator when sampling
    matcher: Any  # xgrammar GrammarMatcher, or None
    length: int  # real tokens in the cache (positions)
    last: int = -1  # the token sampled but not yet fed
    generated: list[int] = field(default_factory=list)
    emitted: int = 0  # characters of text already sent


_ENGINES: weakref.WeakSet[BatchEngine] = weakref.WeakSet()


PREFIX_CACHE_BYTES = 256 * 2**20  # default budget of the prefix cache


class BatchEngine:
    """Decodes many requests together on one model (a transformers model, or a PEFT
    model with adapters loaded). Thread-safe: `submit` from any thread."""

    def __init__(self, model: Any, *, device: str = "cpu", max_batch: int = 16,
                 name: str = "engine", prefix_cache_bytes: int = PREFIX_CACHE_BYTES) -> None:
        self.model = model
        self.device = device
        self.max_batch = max(1, max_batch)
        self.name = name
        self._peft = hasattr(model, "peft_config")
        self._vocab = int(model.get_output_embeddings().weight.shape[0])
        self._cache_keyword = _cache_keyword(model)
        self._cv = threading.Condition()
        self._queue: collections.deque[EngineJob] = collections.deque()
        self._rows: list[_Row] = []
        self._cache: Any = None
        self._mask: Any = None  # [rows, cache length] 1 = real token, 0 = padding
        self._in_forward: list[EngineJob] = []
        self._working = False  # an iteration of the loop is under way
        self._joinable = True  # False once the cache proves not to be plain layers
        self._closed = False
        self._thread: threading.Thread | None = None
        self.steps = 0  # decoding steps run (for tests and benches)
        self.largest_batch = 0
        self.admitted = 0  # requests prefilled so far
        # (seconds queued, seconds of the prefill that gave the first token) of the
        # latest requests: where a time to first token went
        self.timings: collections.deque[tuple[float, float]] = collections.deque(maxlen=4096)
        self.prefixes = PrefixCache(prefix_cache_bytes)
        self._hooks = [*stop_checks(model, self._check_stop), packed_head_rows(model)]
        self._mixed = MixedLoRA.install(model) if self._peft else None
        _ENGINES.add(self)

    # -- the caller's side -----------------------------------------------------------
    def submit(self, request: EngineRequest, sink: Sink) -> EngineJob:
        """Queue `request`; `sink` gets its events, on the engine's thread."""
        if request.adapter is not None and not self._peft:
            raise ValueError(f"no adapter {request.adapter!r}: the model has no adapters")
        if request.adapter is not None and request.adapter not in self.model.peft_config:
            raise ValueError(f"no adapter {request.adapter!r} is loaded")
        if not request.prompt_ids:
            raise ValueError("an empty prompt")
        job = EngineJob(request, sink, self)
        with self._cv:
            if self._closed:
                raise RuntimeError(f"{self.name}: the engine is closed")
            self._queue.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"charforge-{self.name}",
                                                daemon=True)
                self._thread.start()
            self._cv.notify()
        return job

    def close(self) -> None:
        """Stop: running and queued requests end as cancelled; waits for the thread."""
        with self._cv:
            self._closed = True
            self._cv.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        for hook in self._hooks:  # the model may outlive this engine
            hook.remove()
        self._hooks = []
        if self._mixed is not None:
            self._mixed.remove()
            self._mixed = None

    @property
    def idle(self) -> bool:
        """Nothing queued, running or being computed."""
        with self._cv:
            return not self._queue and not self._rows and not self._working

    def _wake(self) -> None:
        with self._cv:
            self._cv.notify()

    def _check_stop(self, _module: Any, _args: Any) -> None:
        jobs = self._in_forward
        if self._closed or (jobs and all(job.cancelled for job in jobs)):
            raise GenerationStopped

    # -- the engine's thread ---------------------------------------------------------
    def _loop(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                with self._cv:
                    while not self._queue and not self._rows and not self._closed:
                        self._cv.wait()
                    if self._closed:
                        break
                    self._working = True
                    room = self.max_batch - len(self._rows) if self._joinable else (
                        0 if self._rows else 1)
                    newcomers = [self._queue.popleft()
                                 for _ in range(min(room, len(self._queue)))]
                try:
                    self._drop_cancelled()
                    newcomers = [job for job in newcomers if not _ended_if_cancelled(job)]
                    if newcomers:
                        self._guarded(newcomers, self._prefill, newcomers)
                    if self._rows:
                        self._guarded([row.job for row in self._rows], self._decode)
                except Exception as exc:
                    # Outside a guarded step (trimming the batch, a sink): end what this
                    # iteration held rather than let the thread die with callers waiting.
                    self._abandon([*newcomers, *(row.job for row in self._rows)], exc)
                    self._rows, self._cache, self._mask = [], None, None
                finally:
                    with self._cv:
                        self._working = False
        self._end_all()

    def _guarded(self, jobs: list[EngineJob], step: Callable[..., None], *args: Any) -> None:
        """Run one forward step; a stop or an error ends the rows it concerned."""
        self._in_forward = jobs
        try:
            step(*args)
        except GenerationStopped:
            self._abandon(jobs, None)
        except Exception as exc:  # one bad request must not take the engine down
            self._abandon(jobs, exc)
        finally:
            self._in_forward = []

    def _abandon(self, jobs: list[EngineJob], error: BaseException | None) -> None:
        ids = {id(job) for job in jobs}
        if any(id(row.job) in ids for row in self._rows):  # the running batch: its cache
            self._rows, self._cache, self._mask = [], None, None  # may be half-updated
        for job in jobs:
            if error is None:
                _end(job, "cancelled", "", 0)
            else:
                job.sink(Failed(error))

    def _end_all(self) -> None:
        with self._cv:
            queued, self._queue = list(self._queue), collections.deque()
        for job in [*(row.job for row in self._rows), *queued]:
            _end(job, "cancelled", "", 0)
        self._rows, self._cache, self._mask = [], None, None

    def _drop_cancelled(self) -> None:
        keep = [i for i, row in enumerate(self._rows) if not row.job.cancelled]
        if len(keep) == len(self._rows):
            return
        for row in self._rows:
            if row.job.cancelled:
                _end(row.job, "cancelled", _text(row), len(row.generated))
        self._keep(keep)

    def _forward(self, ids: Any, mask: Any, positions: Any, cache: Any,
                 adapters: list[str]) -> Any:
        """The next-token logits of every row; `cache` grows in place."""
        extra: dict[str, Any] = {}
        if self._mixed is not None:
            self._mixed.plan(adapters, BASE_ADAPTER, self.device)
        elif self._peft:
            only = adapters[0]
            if only != BASE_ADAPTER and all(name == only for name in adapters):
                if self.model.active_adapter != only:  # ~20 ms on SmolLM2: only on a change
                    self.model.set_adapter(only)
            else:
                extra["adapter_names"] = adapters
        extra[self._cache_keyword] = cache
        try:
            output = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                use_cache=True, logits_to_keep=1, **extra)
        finally:
            if self._mixed is not None:
                self._mixed.rows = None
        return output.logits[:, -1, :].float()

    def _prefill(self, jobs: list[EngineJob]) -> None:
        """Read the newcomers' prompts in one forward pass, each from the longest kept
        opening it starts with, and join them to the batch. Layout per row: left
        padding, the kept opening's states, padding, the rest of the prompt."""
        import torch
        from transformers import DynamicCache

        started = time.monotonic()
        hits = [self._lookup(job) for job in jobs]
        used = [hit[1] if hit else 0 for hit in hits]
        past = max(used)
        tails = [list(job.request.prompt_ids)[n:] for job, n in zip(jobs, used, strict=True)]
        longest = max(len(tail) for tail in tails)
        width = past + longest
        ids = torch.zeros((len(jobs), longest), dtype=torch.long)
        mask = torch.zeros((len(jobs), width), dtype=torch.long)
        positions = torch.zeros((len(jobs), longest), dtype=torch.long)
        for i, (tail, n) in enumerate(zip(tails, used, strict=True)):
            ids[i, longest - len(tail):] = torch.tensor(tail)
            mask[i, past - n:past] = 1
            mask[i, width - len(tail):] = 1
            positions[i, longest - len(tail):] = torch.arange(n, n + len(tail))
        cache = with_room(DynamicCache(config=self._config()))
        if past:
            seed(cache, [(hit[0], n) if hit else None for hit, n in zip(hits, used, strict=True)],
                  past)
        mask = mask.to(self.device)
        logits = self._forward(ids.to(self.device), mask, positions.to(self.device), cache,
                               [_adapter(job) for job in jobs])
        self._remember(jobs, used, cache, mask)
        rows = [self._new_row(job) for job in jobs]
        tokens = self._pick(rows, logits)
        ended = time.monotonic()
        self.admitted += len(jobs)
        self.timings.extend((started - job.submitted, ended - started) for job in jobs)
        keep = [i for i, row in enumerate(rows) if self._advance(row, tokens[i])]
        if not keep:
            return
        index = torch.tensor(keep, device=self.device)
        cache.batch_select_indices(index)
        self._join([rows[i] for i in keep], cache, mask[index])

    def _lookup(self, job: EngineJob) -> tuple[Prefix, int] | None:
        if not self._joinable or not len(self.prefixes):
            return None
        return self.prefixes.longest(_adapter(job), job.request.prompt_ids)

    def _remember(self, jobs: list[EngineJob], used: list[int], cache: Any, mask: Any) -> None:
        """Keep the states of the openings the requests mark as shared, when no kept
        entry covered them."""
        if not plain(cache):
            return
        for i, (job, n) in enumerate(zip(jobs, used, strict=True)):
            prompt = job.request.prompt_ids
            size = min(job.request.prefix, len(prompt))
            opening = tuple(prompt[:size])
            if n >= size or not self.prefixes.wants(_adapter(job), opening):
                continue
            columns = mask[i].nonzero().squeeze(1)[:size]  # the row's real tokens, in order
            layers = tuple((layer.keys[i:i + 1].index_select(2, columns),
                            layer.values[i:i + 1].index_select(2, columns))
                           for layer in cache.layers)
            self.prefixes.store(Prefix(_adapter(job), opening, layers))

    def _decode(self) -> None:
        import torch

        rows = self._rows
        ids = torch.tensor([[row.last] for row in rows], device=self.device)
        mask = torch.cat([self._mask, torch.ones((len(rows), 1), dtype=self._mask.dtype,
                                                 device=self.device)], dim=1)
        positions = torch.tensor([[row.length] for row in rows], device=self.device)
        logits = self._forward(ids, mask, positions, self._cache,
                               [_adapter(row.job) for row in rows])
        self._mask = mask
        self.steps += 1
        self.largest_batch = max(self.largest_batch, len(rows))
        keep = []
        for i, (row, token) in enumerate(zip(rows, self._pick(rows, logits), strict=True)):
            row.length += 1
            if self._advance(row, token):
                keep.append(i)
        if len(keep) != len(rows):
            self._keep(keep)

    def _config(self) -> Any:
        return getattr(self.model, "config", None)

    # -- rows ------------------------------------------------------------------------
    def _new_row(self, job: EngineJob) -> _Row:
        import torch

        request = job.request
        seen = None
        if request.repetition_penalty != 1.0:
            seen = torch.zeros(self._vocab, dtype=torch.bool, device=self.device)
            seen[torch.tensor(list(request.prompt_ids), device=self.device)] = True
        generator = None
        if request.temperature > 0:
            generator = torch.Generator(device=self.device)
            if request.seed is not None:
                generator.manual_seed(request.seed)
            else:
                generator.seed()
        matcher = None
        if request.grammar is not None:
            import xgrammar

            matcher = xgrammar.GrammarMatcher(request.grammar)
        return _Row(job, seen, generator, matcher, length=len(request.prompt_ids))

    def _advance(self, row: _Row, token: int) -> bool:
        """Add the row's next token, send its new text; False once the row has ended
        (and been told so)."""
        request = row.job.request
        if row.matcher is not None:
            row.matcher.accept_token(token)
        if token in request.eos_ids or (row.matcher is not None and row.matcher.is_terminated()):
            _finish(row, "stop", _text(row), len(row.generated) + 1)
            return False
        row.generated.append(token)
        row.last = token
        text = _decoded(row)
        for marker in request.stop:
            cut = text.find(marker)
            if cut != -1:
                _finish(row, "stop", text[:cut], len(row.generated))
                return False
        if len(row.generated) >= request.max_tokens:
            _finish(row, "length", text, len(row.generated))
            return False
        _send(row, _safe_prefix(text, request.stop))
        return True

    def _pick(self, rows: list[_Row], logits: Any) -> list[int]:
        """The next token of every row, from its logits [rows, vocabulary], each by its
        own settings; the work is done for all rows at once where it can be (on a CPU,
        a sort of the vocabulary row by row cost more than the forward pass)."""
        import torch

        requests = [row.job.request for row in rows]
        penalised = [i for i, row in enumerate(rows) if row.seen is not None]
        if penalised:
            index = torch.tensor(penalised, device=self.device)
            penalty = torch.tensor([requests[i].repetition_penalty for i in penalised],
                                   device=self.device).unsqueeze(1)
            part = logits[index]
            seen = torch.stack([rows[i].seen for i in penalised])
            part = torch.where(seen, torch.where(part > 0, part / penalty, part * penalty), part)
            logits[index] = part
        for i, row in enumerate(rows):
            if row.matcher is not None:
                logits[i] = self._constrained(row, logits[i])
        tokens = choose(logits, [(r.temperature, r.top_p) for r in requests],
                        [row.generator for row in rows])
        for row, token in zip(rows, tokens, strict=True):
            if row.seen is not None:
                row.seen[token] = True
        return tokens

    def _constrained(self, row: _Row, logits: Any) -> Any:
        """`logits` with every token the row's grammar forbids masked out."""
        import xgrammar

        bitmask = xgrammar.allocate_token_bitmask(1, self._vocab)
        row.matcher.fill_next_token_bitmask(bitmask, 0)
        masked = logits.unsqueeze(0).cpu()
        xgrammar.apply_token_bitmask_inplace(masked, bitmask)
        return masked[0].to(self.device)

    # -- the batch's cache -----------------------------------------------------------
    def _join(self, rows: list[_Row], cache: Any, mask: Any) -> None:
        """Add prefilled rows (their cache and mask) to the running batch."""
        import torch
        from torch.nn.functional import pad

        if not plain(cache):
            self._joinable = False
        if self._cache is None:
            self._rows, self._cache, self._mask = rows, cache, mask
            return
        if not self._joinable:  # one request at a time: the loop admits none meanwhile
            raise RuntimeError("the engine cannot join caches of this model")
        old, new = self._mask.shape[1], mask.shape[1]
        width = max(old, new)
        for mine, theirs in zip(self._cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([pad(mine.keys, (0, 0, width - old, 0)),
                                   pad(theirs.keys, (0, 0, width - new, 0))], dim=0)
            mine.values = torch.cat([pad(mine.values, (0, 0, width - old, 0)),
                                     pad(theirs.values, (0, 0, width - new, 0))], dim=0)
        self._mask = torch.cat([pad(self._mask, (width - old, 0)), pad(mask, (width - new, 0))])
        self._rows = self._rows + rows

    def _keep(self, keep: list[int]) -> None:
        """Keep only the rows at `keep`; drop cache columns no row uses any more."""
        import torch

        if not keep:
            self._rows, self._cache, self._mask = [], None, None
            return
        index = torch.tensor(keep, device=self.device)
        self._rows = [self._rows[i] for i in keep]
        self._cache.batch_select_indices(index)
        self._mask = self._mask[index]
        used = self._mask.any(dim=0).nonzero()
        first = int(used[0]) if len(used) else 0
        if first > 0:
            for layer in self._cache.layers:
                layer.keys = layer.keys[..., first:, :]
                layer.values = layer.values[..., first:, :]
            self._mask = self._mask[:, first:]


def _cache_keyword(model: Any) -> str:
    """The forward argument that takes the cache: `cache` since transformers 5.24,
    `past_key_values` before."""
    import inspect

    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(core.forward).parameters else "past_key_values"


def _adapter(job: EngineJob) -> str:
    return job.request.adapter or BASE_ADAPTER


def _decoded(row: _Row) -> str:
    request = row.job.request
    return request.tokenizer.decode(row.generated,
                                    skip_special_tokens=request.skip_special_tokens)


def _text(row: _Row) -> str:
    return _decoded(row) if row.generated else ""


def _safe_prefix(text: str, stops: tuple[str, ...]) -> str:
    """`text` without what may still change: a character cut in the middle of its
    bytes, or an ending that could be the start of a stop string."""
    text = text.rstrip("\ufffd")
    held = 0
    for marker in stops:
        for size in range(min(len(marker) - 1, len(text)), 0, -1):
            if text.endswith(marker[:size]):
                held = max(held, size)
                break
    return text[: len(text) - held]


def _send(row: _Row, text: str) -> None:
    if len(text) > row.emitted:
        row.job.sink(Delta(text[row.emitted:]))
        row.emitted = len(text)


def _finish(row: _Row, reason: str, text: str, completion_tokens: int) -> None:
    """Send what is left of the row's text, then its end."""
    _send(row, text)
    _end(row.job, reason, text, completion_tokens)


def _end(job: EngineJob, reason: str, text: str, completion_tokens: int) -> None:
    job.sink(Finished(reason, text, len(job.request.prompt_ids), completion_tokens))


def _ended_if_cancelled(job: EngineJob) -> bool:
    if job.cancelled:
        _end(job, "cancelled", "", 0)
    return job.cancelled


@atexit.register
def _close_engines() -> None:
    """At exit, stop every engine and wait for it: torch or xgrammar torn down under a
    running thread aborts the process."""
    for engine in list(_ENGINES):
        engine.close()
