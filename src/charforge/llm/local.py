"""`LocalChatModel`: a transformers model in this process.

Loads a local folder, a hub id already in the local Hugging Face cache, or a
GGUF file; by default the embedded SmolLM2-135M-Instruct (no network). The
model's own chat template builds the prompt. Generation runs in the batched engine's
thread (`charforge.llm.engine`): concurrent requests are decoded together, and the
event loop stays free.
"""

from __future__ import annotations

import asyncio
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from charforge.errors import ConfigError, first_problem
from charforge.llm.base import (
    ChatMessage,
    ChatModelBase,
    Completion,
    MessagesLike,
    ModelStats,
    Sampling,
    Usage,
    as_messages,
)
from charforge.llm.engine import (
    BASE_ADAPTER,
    BatchEngine,
    Delta,
    EngineRequest,
    Event,
    Failed,
)
from charforge.llm.grammar import (
    HINTS_KEY,
    GrammarCompiler,
    StringPolicy,
    constrain_strings,
    schema_of,
)
from charforge.llm.mixed_lora import compact_adapters
from charforge.llm.prefixes import common_opening
from charforge.llm.turns import prompt_text
from charforge.llm.vocab import grow_vocabulary


class LocalConfig(BaseModel):
    """Options of the `local` backend in charforge.yaml."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(
        default=None,
        description="model folder, GGUF file, or hub id in the local cache; "
        "empty = the embedded SmolLM2-135M-Instruct",
    )
    gguf_file: str | None = Field(default=None, description="GGUF file name inside `path`")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="auto: bfloat16 on GPUs and AVX-512 CPUs, else float32"
    )
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:1, ...")
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads")
    repetition_penalty: float = Field(
        default=1.0, ge=1.0, le=2.0, description="> 1 discourages repeating tokens (1 = off)"
    )
    adapter: str | None = Field(
        default=None, description="a PEFT (LoRA) adapter folder applied on top of the model"
    )
    max_batch: int = Field(
        default=16, ge=1, le=1024,
        description="requests decoded together by the batched engine (rows of one step)",
    )
    prefix_cache_mib: int = Field(
        default=256, ge=0, le=1_000_000,
        description="memory for the states of prompt openings (system messages) read "
        "before, so each is read once; least recently used dropped first (0 = off)",
    )
    json_strings: StringPolicy = Field(
        default="prose",
        description="JSON answers: free strings decoded as prose (no markup, brackets or line "
        "breaks) or free",
    )


def _validated(name: str, options: Mapping[str, Any]) -> LocalConfig:
    settings = {k: v for k, v in dict(options or {}).items() if k != "backend"}
    try:
        return LocalConfig.model_validate(settings)
    except ValidationError as exc:
        where, what = first_problem(exc)
        raise ConfigError(f"model {name!r}: {where or 'options'}: {what}") from None


def _pick_device(requested: str) -> str:
    import torch

    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def _pick_dtype(requested: str, device: str) -> Any:
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    if device.startswith("cuda"):
        return torch.bfloat16
    # bf16 matmuls are native on AVX-512 CPUs (measured here: 21 vs 16 tok/s).
    return torch.bfloat16 if "AVX512" in torch.backends.cpu.get_cpu_capability() else torch.float32


def _resolve_source(config: LocalConfig) -> tuple[str, dict[str, Any]]:
    """Return (what to pass to from_pretrained, extra keyword arguments)."""
    if not config.path:
        from charforge.llm.embedded import smollm2_dir

        return str(smollm2_dir()), {}
    path = Path(config.path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return str(path.parent), {"gguf_file": path.name}
    if path.is_dir():
        return str(path), ({"gguf_file": config.gguf_file} if config.gguf_file else {})
    if path.exists() or config.path.startswith((".", "/", "~")):
        raise ConfigError(f"{config.path}: not a model folder or .gguf file")
    # A hub id: only what is already in the local cache, never a download.
    return config.path, {"local_files_only": True}


def same_weights(a: LocalConfig, b: LocalConfig) -> bool:
    """Whether two configs load the same model the same way (they may still differ in
    how they sample, e.g. the repetition penalty, which the engine applies per row)."""
    if a.adapter or b.adapter:
        return False
    try:
        sources = _resolve_source(a), _resolve_source(b)
    except ConfigError:
        return False
    devices = _pick_device(a.device), _pick_device(b.device)
    return (sources[0] == sources[1] and devices[0] == devices[1] and a.threads == b.threads
            and _pick_dtype(a.dtype, devices[0]) == _pick_dtype(b.dtype, devices[1]))


def _weights_identity(config: LocalConfig) -> dict[str, Any]:
    """The identity of the weights `config` names, read from the files (never loaded)."""
    from charforge.llm.weights import path_identity

    if not config.path:
        from charforge.llm.embedded import smollm2_gguf

        return {"embedded": path_identity(smollm2_gguf())}
    path = Path(config.path).expanduser()
    if path.exists():
        identity = path_identity(path)
        return {**identity, "gguf_file": config.gguf_file} if config.gguf_file else identity
    # A hub id: the snapshot already in the local cache (never a download).
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(config.path, local_files_only=True)
    except Exception:  # not cached: loading will say so in one line
        return {"hub_id": config.path, "snapshot": None}
    return {"hub_id": config.path, **path_identity(folder)}


def local_identity(config: LocalConfig) -> dict[str, Any]:
    """Weights, adapter content and the settings that change the answers."""
    from charforge.llm.weights import path_identity

    identity: dict[str, Any] = {"backend": "local", "weights": _weights_identity(config),
                                "dtype": config.dtype}
    if config.repetition_penalty != 1.0:
        identity["repetition_penalty"] = config.repetition_penalty
    if config.json_strings != "prose":
        identity["json_strings"] = config.json_strings
    if config.adapter:
        adapter = Path(config.adapter).expanduser()
        if not adapter.is_dir():
            raise ConfigError(f"adapter {config.adapter}: not a folder")
        identity["adapter"] = path_identity(adapter)
    return identity


DEFAULT_ADAPTER = "default"  # the name of `LocalConfig.adapter` inside the model


class LocalChatModel(ChatModelBase):
    """A transformers model in this process, answering through the batched engine
    (`charforge.llm.engine`): concurrent chats are decoded together. Besides the
    config's `adapter`, more LoRA adapters can be loaded on the same base
    (`adapters={name: folder}`) and picked per request (`adapter=`), so many
    characters share one base model in memory."""

    supports_json_schema = True
    require_chat_template = True  # False: a model asked in a prompted format (stream_ids)

    def __init__(self, config: LocalConfig | None = None, *, name: str = "local",
                 adapters: Mapping[str, str | Path] | None = None,
                 shared: LocalChatModel | None = None) -> None:
        self.config = config or LocalConfig()
        self.name = name
        # Another model of the same weights whose model, engine and tokenizers this one
        # uses (its bare base), with its own settings: one copy in memory, one batch.
        self._shared = shared
        if shared is not None and not same_weights(self.config, shared.config):
            raise ConfigError(f"model {name!r} cannot share {shared.name!r}: other weights")
        self.stats = ModelStats()
        self._extra_adapters = {key: Path(folder).expanduser()
                                for key, folder in dict(adapters or {}).items()}
        if DEFAULT_ADAPTER in self._extra_adapters or BASE_ADAPTER in self._extra_adapters:
            raise ConfigError(f"model {name!r}: adapter names {DEFAULT_ADAPTER!r} and "
                              f"{BASE_ADAPTER!r} are reserved")
        self._model: Any = None
        self._tokenizer: Any = None
        self._tokenizers: dict[str, Any] = {}
        self._engine: BatchEngine | None = None
        self._device = "cpu"
        self._load_lock = threading.Lock()
        self._identity: dict[str, Any] | None = None
        self._grammars: GrammarCompiler | None = None

    @classmethod
    def from_config(cls, name: str, options: Mapping[str, Any]) -> LocalChatModel:
        return cls(_validated(name, options), name=name)

    @classmethod
    def identity_from_config(cls, name: str, options: Mapping[str, Any]) -> dict[str, Any]:
        return local_identity(_validated(name, options))

    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            self._identity = local_identity(self.config)
        return self._identity

    # -- loading -----------------------------------------------------------------
    def adapter_folders(self) -> dict[str, Path]:
        """Every adapter this model loads, by name (the config's is `default`)."""
        folders = {DEFAULT_ADAPTER: Path(self.config.adapter).expanduser()} \
            if self.config.adapter else {}
        return {**folders, **self._extra_adapters}

    def load(self) -> None:
        """Load weights, tokenizers and adapters (idempotent; chat() calls it lazily)."""
        with self._load_lock:
            if self._model is not None:
                return
            if self._shared is not None:
                shared = self._shared
                shared.load()
                self._device, self._engine = shared._device, shared._engine
                base_tokenizer = shared._tokenizers[BASE_ADAPTER]
                self._tokenizers = {BASE_ADAPTER: base_tokenizer}
                self._tokenizer, self._model = base_tokenizer, shared._model
                return
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            if self.config.threads:
                torch.set_num_threads(self.config.threads)
            source, extra = _resolve_source(self.config)
            self._device = _pick_device(self.config.device)
            dtype = _pick_dtype(self.config.dtype, self._device)
            folders = self.adapter_folders()
            try:
                with quiet_progress_bars():
                    base_tokenizer = AutoTokenizer.from_pretrained(source, **extra)
                    tokenizers = _adapter_tokenizers(folders)
                    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **extra)
            except OSError as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ConfigError(
                    f"model {self.name!r}: cannot load {source!r} (only local folders, GGUF "
                    f"files and models already in the Hugging Face cache work): {first}"
                ) from None
            if base_tokenizer.chat_template is None and self.require_chat_template:
                raise ConfigError(f"model {self.name!r}: {source} has no chat template")
            if folders:
                # As they were trained (charforge.train): the base grown to the largest
                # tokenizer; each adapter's own rows for the tokens it added.
                grow_vocabulary(model, max(len(t) for t in [base_tokenizer,
                                                            *tokenizers.values()]))
                model = self._with_adapters(model, folders)
            model.to(self._device).eval()
            self._tokenizers = {name: tokenizers.get(name, base_tokenizer) for name in folders}
            self._tokenizers[BASE_ADAPTER] = base_tokenizer
            self._tokenizer = self._tokenizers.get(DEFAULT_ADAPTER, base_tokenizer)
            self._engine = BatchEngine(model, device=self._device,
                                       max_batch=self.config.max_batch, name=self.name,
                                       prefix_cache_bytes=self.config.prefix_cache_mib * 2**20)
            self._model = model

    def grammars(self) -> GrammarCompiler:
        """The compiled-grammar cache for this model's tokenizer (built on first use)."""
        with self._load_lock:
            if self._grammars is None:
                model, tokenizer = self._model, self._tokenizer
                vocab = int(model.get_output_embeddings().weight.shape[0])  # logits width
                self._grammars = GrammarCompiler(tokenizer, vocab)
            return self._grammars

    def _with_adapters(self, model: Any, folders: Mapping[str, Path]) -> Any:
        from peft import PeftModel

        for name, folder in folders.items():
            try:
                with warnings.catch_warnings():  # deprecations inside PEFT and transformers
                    warnings.simplefilter("ignore", FutureWarning)
                    if isinstance(model, PeftModel):
                        model.load_adapter(str(folder), adapter_name=name)
                    else:
                        model = PeftModel.from_pretrained(model, str(folder), adapter_name=name)
                compact_adapters(model)
            except (OSError, ValueError) as exc:
                first = (str(exc).strip().splitlines()[0] if str(exc).strip()
                         else type(exc).__name__)
                raise ConfigError(
                    f"model {self.name!r}: cannot load adapter {str(folder)!r}: {first}"
                ) from None
        return model

    @property
    def tokenizer(self) -> Any:
        self.load()
        return self._tokenizer

    @property
    def model(self) -> Any:
        self.load()
        return self._model

    @property
    def engine(self) -> BatchEngine:
        self.load()
        assert self._engine is not None
        return self._engine

    def tokenizer_for(self, adapter: str | None = None) -> Any:
        """The tokenizer of requests to `adapter` (None: the config's adapter, or the base)."""
        self.load()
        key = self._adapter_key(adapter)
        return self._tokenizers[key]

    def context_length(self) -> int | None:
        """The most tokens (prompt and reply) the model was built for, when it says."""
        config = getattr(self.model, "config", None)
        return getattr(config, "max_position_embeddings", None)

    def _adapter_key(self, adapter: str | None) -> str:
        if adapter is None:
            return DEFAULT_ADAPTER if self.config.adapter else BASE_ADAPTER
        if adapter not in self._tokenizers:
            known = ", ".join(sorted(self._tokenizers)) or "none"
            raise ConfigError(f"model {self.name!r}: no adapter {adapter!r} (loaded: {known})")
        return adapter

    # -- the ChatModel protocol ----------------------------------------------------
    async def chat(
        self,
        messages: MessagesLike,
        sampling: Sampling | None = None,
        *,
        response_format: Mapping[str, Any] | None = None,
        adapter: str | None = None,
    ) -> Completion:
        completion: Completion | None = None
        async for piece in self.stream(messages, sampling, response_format=response_format,
                                       adapter=adapter):
            if isinstance(piece, Completion):
                completion = piece
        assert completion is not None
        return completion

    async def stream(
        self,
        messages: MessagesLike,
        sampling: Sampling | None = None,
        *,
        response_format: Mapping[str, Any] | None = None,
        adapter: str | None = None,
    ) -> AsyncIterator[str | Completion]:
        """The answer as it is written: pieces of text, then the whole `Completion`.
        Leaving the loop early (or cancelling) takes the request out of the batch."""
        schema = self._grammar_schema(response_format) if response_format else None
        chat = as_messages(messages)
        sampling = sampling or Sampling()
        started = time.perf_counter()
        if self._model is None:  # loading takes seconds: not on the event loop
            await _off_the_loop(f"charforge-{self.name}-load", self.load)
        key = self._adapter_key(adapter)
        grammar = None
        if schema is not None:
            # Seconds of native code no stop flag reaches: in a thread of its own.
            grammar = await _off_the_loop(f"charforge-{self.name}-grammar",
                                          lambda: self.grammars().compile(schema))
        request = self.engine_request(chat, sampling, adapter=key, grammar=grammar)
        async for piece in self._run(request, started):
            yield piece

    async def stream_ids(self, prompt_ids: list[int], sampling: Sampling, *,
                         adapter: str | None = None) -> AsyncIterator[str | Completion]:
        """Like `stream`, for a prompt already tokenised (a prompted format, no chat
        template)."""
        started = time.perf_counter()
        if self._model is None:  # loading takes seconds: not on the event loop
            await _off_the_loop(f"charforge-{self.name}-load", self.load)
        key = self._adapter_key(adapter)
        request = self.engine_request([], sampling, adapter=key, prompt_ids=prompt_ids)
        async for piece in self._run(request, started):
            yield piece

    async def _run(self, request: EngineRequest,
                   started: float) -> AsyncIterator[str | Completion]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()

        def sink(event: Event) -> None:
            with suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(events.put_nowait, event)

        job = self.engine.submit(request, sink)
        ended = False
        try:
            while True:
                event = await events.get()
                if isinstance(event, Delta):
                    yield event.text
                    continue
                ended = True
                if isinstance(event, Failed):
                    raise event.error
                if event.reason == "cancelled":
                    raise ConfigError(f"model {self.name!r}: the engine was closed")
                break
        finally:
            if not ended:
                job.cancel()
        completion = Completion(
            text=event.text.strip(), finish_reason=event.reason,
            usage=Usage(prompt_tokens=event.prompt_tokens,
                        completion_tokens=event.completion_tokens),
            model=self.name, latency_s=time.perf_counter() - started)
        self.stats.record(completion)
        yield completion

    def engine_request(self, chat: list[ChatMessage], sampling: Sampling, *,
                       adapter: str | None = None, grammar: Any = None,
                       prompt_ids: list[int] | None = None) -> EngineRequest:
        """The engine's request for `chat` (the prompt rendered as in training), or for
        `prompt_ids` as they are."""
        key = self._adapter_key(adapter)
        tokenizer = self._tokenizers[key]
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        eos_ids = frozenset(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        opening = 0
        if prompt_ids is None:
            text = prompt_text(tokenizer, as_messages(chat))
            prompt_ids = _ids(tokenizer, text)
            opening = _system_opening(tokenizer, chat, text, prompt_ids)
        return EngineRequest(
            prompt_ids=prompt_ids, prefix=opening,
            tokenizer=tokenizer,
            adapter=None if key == BASE_ADAPTER else key,
            temperature=sampling.temperature, top_p=sampling.top_p,
            max_tokens=sampling.max_tokens, seed=sampling.seed, stop=tuple(sampling.stop),
            eos_ids=eos_ids, repetition_penalty=self.config.repetition_penalty,
            grammar=grammar)

    def prompt_ids(self, chat: MessagesLike, *, adapter: str | None = None) -> list[int]:
        """The token ids the model continues to answer `chat`: the one rendering of a
        conversation, shared with training (names in the text, earlier thoughts
        dropped, roles alternating; see charforge.llm.turns)."""
        tokenizer = self.tokenizer_for(adapter)
        return _ids(tokenizer, prompt_text(tokenizer, as_messages(chat)))

    async def check(self) -> str:
        await asyncio.to_thread(self.load)
        params = sum(p.numel() for p in self._model.parameters())
        return f"loaded: {params / 1e6:.0f}M parameters on {self._device}"

    async def aclose(self) -> None:
        return None

    def shutdown(self) -> None:
        """Stop the engine (requests still running end as cancelled); the model stays
        loaded but answers no more (nor does a model sharing it)."""
        if self._engine is not None:
            self._engine.close()

    def _grammar_schema(self, response_format: Mapping[str, Any]) -> dict[str, Any] | None:
        try:
            schema = schema_of(response_format)
        except ValueError as exc:
            raise ConfigError(f"model {self.name!r}: {exc}") from None
        if schema is None or self.config.json_strings == "free":
            return schema
        hints = response_format.get(HINTS_KEY) or {}
        return constrain_strings(schema, hints.get("words"), items=hints.get("items"),
                                leads=hints.get("leads"), mentions=hints.get("mentions"),
                                sequence=hints.get("sequence"))


@contextmanager
def quiet_progress_bars() -> Iterator[None]:
    """Hide transformers' per-tensor loading bars (callers show their own)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "chat_template.jinja", "vocab.json", "merges.txt",
                   "tokenizer.model")


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _system_opening(tokenizer: Any, chat: list[ChatMessage], text: str,
                    ids: list[int]) -> int:
    """How many leading tokens of the prompt `ids` (rendered as `text`) run up to the
    end of its system message: the part the engine keeps to start the character's
    next prompts from (0 when the rendering does not open with it verbatim)."""
    if not chat or chat[0].role != "system" or not chat[0].content:
        return 0
    where = text.find(chat[0].content)
    if where < 0:
        return 0
    head = _ids(tokenizer, text[:where + len(chat[0].content)])
    return common_opening(head, ids)


def _adapter_tokenizers(folders: Mapping[str, Path]) -> dict[str, Any]:
    """The tokenizer beside each adapter that has one (a trained agent's: stage tokens
    added). Adapters whose tokenizer files are the same share one tokenizer object: runs
    of one base save the same files, and a loaded tokenizer costs ~11 MB (bench/serve.py)."""
    import hashlib

    from transformers import AutoTokenizer

    loaded: dict[str, Any] = {}
    tokenizers: dict[str, Any] = {}
    for name, folder in folders.items():
        if not (folder / "tokenizer_config.json").is_file():
            continue
        digest = hashlib.sha256()
        for file in TOKENIZER_FILES:
            if (folder / file).is_file():
                digest.update(file.encode() + b"\0" + (folder / file).read_bytes())
        key = digest.hexdigest()
        if key not in loaded:
            loaded[key] = AutoTokenizer.from_pretrained(str(folder))
        tokenizers[name] = loaded[key]
    return tokenizers


async def _off_the_loop(name: str, function: Any) -> Any:
    """`function()` in a daemon thread of its own, awaited.

    Not the loop's executor: `asyncio.run` waits for its threads, and a step nothing can
    interrupt (loading weights, a grammar compile in native code, seconds long) would
    hold up an interrupted run that long. An abandoned thread ends on its own."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def deliver(result: Any, error: BaseException | None) -> None:
        if future.done():  # cancelled: nobody waits for it any more
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    def work() -> None:
        try:
            result, error = function(), None
        except BaseException as exc:
            result, error = None, exc
        with suppress(RuntimeError):  # the loop is closed: its caller left long ago
            loop.call_soon_threadsafe(deliver, result, error)

    threading.Thread(target=work, name=name, daemon=True).start()
    return await future
