"""`LocalChatModel`: a transformers model in this process.

Loads a local folder, a hub id already in the local Hugging Face cache, or a
GGUF file; by default the embedded SmolLM2-135M-Instruct (no network). The
model's own chat template builds the prompt. Generation runs in a worker
thread, one request at a time, so the event loop stays free.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
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
from charforge.llm.grammar import (
    HINTS_KEY,
    GrammarCompiler,
    StringPolicy,
    constrain_strings,
    schema_of,
)
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


class GenerationStopped(Exception):
    """Raised inside the model's forward pass when the caller gave up on the answer."""


class LocalChatModel(ChatModelBase):
    supports_json_schema = True

    def __init__(self, config: LocalConfig | None = None, *, name: str = "local") -> None:
        self.config = config or LocalConfig()
        self.name = name
        self.stats = ModelStats()
        self._model: Any = None
        self._tokenizer: Any = None
        self._device = "cpu"
        self._load_lock = threading.Lock()
        self._generate_lock = threading.Lock()
        self._identity: dict[str, Any] | None = None
        self._grammars: GrammarCompiler | None = None
        # The stop flag of the generation running now (one at a time), checked before
        # every module of the decoder layers: a cancelled request ends within one, prefill too.
        self._stop: threading.Event | None = None

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
    def load(self) -> None:
        """Load weights and tokenizer (idempotent; chat() calls it lazily)."""
        with self._load_lock:
            if self._model is not None:
                return
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            if self.config.threads:
                torch.set_num_threads(self.config.threads)
            source, extra = _resolve_source(self.config)
            self._device = _pick_device(self.config.device)
            dtype = _pick_dtype(self.config.dtype, self._device)
            try:
                with quiet_progress_bars():
                    # A trained agent's tokenizer (stage tokens added) lives beside its adapter.
                    tokenizer = (AutoTokenizer.from_pretrained(self._adapter_tokenizer())
                                 if self._adapter_tokenizer()
                                 else AutoTokenizer.from_pretrained(source, **extra))
                    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **extra)
            except OSError as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ConfigError(
                    f"model {self.name!r}: cannot load {source!r} (only local folders, GGUF "
                    f"files and models already in the Hugging Face cache work): {first}"
                ) from None
            if tokenizer.chat_template is None:
                raise ConfigError(f"model {self.name!r}: {source} has no chat template")
            if self.config.adapter:
                grow_vocabulary(model, len(tokenizer))  # as it was trained: charforge.train
                model = self._with_adapter(model)
            model.to(self._device).eval()
            _hook_layers(model, self._check_stop)
            self._tokenizer, self._model = tokenizer, model

    def _check_stop(self, _module: Any, _args: Any) -> None:
        stop = self._stop
        if stop is not None and stop.is_set():
            raise GenerationStopped

    def grammars(self) -> GrammarCompiler:
        """The compiled-grammar cache for this model's tokenizer (built on first use)."""
        with self._load_lock:
            if self._grammars is None:
                model, tokenizer = self._model, self._tokenizer
                vocab = int(model.get_output_embeddings().weight.shape[0])  # logits width
                self._grammars = GrammarCompiler(tokenizer, vocab)
            return self._grammars

    def _adapter_tokenizer(self) -> str | None:
        """The adapter's own tokenizer folder, when it has one."""
        if not self.config.adapter:
            return None
        folder = Path(self.config.adapter).expanduser()
        return str(folder) if (folder / "tokenizer_config.json").is_file() else None

    def _with_adapter(self, model: Any) -> Any:
        from peft import PeftModel

        adapter = str(Path(self.config.adapter or "").expanduser())
        try:
            with warnings.catch_warnings():  # deprecations inside PEFT and transformers
                warnings.simplefilter("ignore", FutureWarning)
                return PeftModel.from_pretrained(model, adapter)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"model {self.name!r}: cannot load adapter {adapter!r}: {first}"
            ) from None

    @property
    def tokenizer(self) -> Any:
        self.load()
        return self._tokenizer

    @property
    def model(self) -> Any:
        self.load()
        return self._model

    # -- the ChatModel protocol ----------------------------------------------------
    async def chat(
        self,
        messages: MessagesLike,
        sampling: Sampling | None = None,
        *,
        response_format: Mapping[str, Any] | None = None,
    ) -> Completion:
        schema = self._grammar_schema(response_format) if response_format else None
        chat = as_messages(messages)
        sampling = sampling or Sampling()
        started = time.perf_counter()
        stop = threading.Event()
        try:
            text, finish, usage = await _in_daemon_thread(
                f"charforge-{self.name}", stop, self._generate, chat, sampling, schema, stop)
        except asyncio.CancelledError:
            stop.set()  # the worker thread ends within one module of the model
            raise
        completion = Completion(
            text=text,
            finish_reason=finish,
            usage=usage,
            model=self.name,
            latency_s=time.perf_counter() - started,
        )
        self.stats.record(completion)
        return completion

    async def check(self) -> str:
        await asyncio.to_thread(self.load)
        params = sum(p.numel() for p in self._model.parameters())
        return f"loaded: {params / 1e6:.0f}M parameters on {self._device}"

    def _grammar_schema(self, response_format: Mapping[str, Any]) -> dict[str, Any] | None:
        try:
            schema = schema_of(response_format)
        except ValueError as exc:
            raise ConfigError(f"model {self.name!r}: {exc}") from None
        if schema is None or self.config.json_strings == "free":
            return schema
        hints = response_format.get(HINTS_KEY) or {}
        return constrain_strings(schema, hints.get("words"), items=hints.get("items"),
                                leads=hints.get("leads"))

    # -- generation (worker thread) -------------------------------------------------
    def _prompt_ids(self, chat: list[ChatMessage]) -> Any:
        # The one rendering of a conversation, shared with training (names in the text,
        # earlier thoughts dropped, roles alternating): see charforge.llm.turns.
        text = prompt_text(self.tokenizer, chat)
        encoded = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")
        return encoded["input_ids"].to(self._device)

    def _generate(self, chat: list[ChatMessage], sampling: Sampling,
                  schema: dict[str, Any] | None = None,
                  stop_flag: threading.Event | None = None) -> tuple[str, str, Usage]:
        import torch
        from transformers import GenerationConfig

        tokenizer, model = self.tokenizer, self.model
        temperature, top_p, max_tokens = sampling.temperature, sampling.top_p, sampling.max_tokens
        stop, seed = list(sampling.stop), sampling.seed
        input_ids = self._prompt_ids(chat)
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        sampling = temperature > 0
        config = GenerationConfig(
            max_new_tokens=max_tokens,
            do_sample=sampling,
            temperature=temperature if sampling else None,
            top_p=top_p if sampling else None,
            top_k=None,
            eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
            stop_strings=stop or None,
            repetition_penalty=self.config.repetition_penalty,
        )
        with self._generate_lock, torch.inference_mode():
            self._stop = stop_flag or threading.Event()
            try:
                if self._stop.is_set():
                    raise GenerationStopped
                # Compiled here, one request at a time (a queued copy of the same schema then
                # finds it cached): seconds of native code no stop flag reaches.
                processors = ([self.grammars().logits_processor(schema)]
                              if schema is not None else None)
                if self._stop.is_set():
                    raise GenerationStopped
                if seed is not None:
                    torch.manual_seed(seed)
                output = model.generate(
                    input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    generation_config=config,
                    tokenizer=tokenizer if stop else None,
                    logits_processor=processors,
                )
            finally:
                self._stop = None
        new_ids = output[0, input_ids.shape[1] :].tolist()
        text = tokenizer.decode(new_ids, skip_special_tokens=True)
        finish = "length" if len(new_ids) >= max_tokens else "stop"
        for marker in stop:
            cut = text.find(marker)
            if cut != -1:
                text, finish = text[:cut], "stop"
        if new_ids and _ends_with_eos(new_ids[-1], eos):
            finish = "stop"
        usage = Usage(prompt_tokens=int(input_ids.shape[1]), completion_tokens=len(new_ids))
        return text.strip(), finish, usage


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


# Generation threads still running, with their stop flags (see _in_daemon_thread).
_WORKERS: dict[threading.Thread, threading.Event] = {}
_WORKERS_LOCK = threading.Lock()


def _in_daemon_thread(name: str, stop: threading.Event, function: Any,
                      *args: Any) -> asyncio.Future[Any]:
    """`function(*args)` in a daemon thread of its own, as a future of this loop.

    Not the loop's executor: `asyncio.run` waits for its threads, and a step the stop
    flag cannot reach (a grammar compile in native code, seconds long) would hold up an
    interrupted run that long. The thread is left to end on its own: `stop` ends its
    generation within one module of the model; an interpreter that exits waits for it
    (`_join_workers`), unless it leaves at once like the CLI on Ctrl-C."""
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
            result, error = function(*args), None
        except BaseException as exc:
            result, error = None, exc
        finally:
            with _WORKERS_LOCK:
                _WORKERS.pop(threading.current_thread(), None)
        with suppress(RuntimeError):  # the loop is closed: its caller left long ago
            loop.call_soon_threadsafe(deliver, result, error)

    thread = threading.Thread(target=work, name=name, daemon=True)
    with _WORKERS_LOCK:
        _WORKERS[thread] = stop
    thread.start()
    return future


@atexit.register
def _join_workers() -> None:
    """At exit, stop the generations still running and wait for them: torch or xgrammar
    torn down under a running thread aborts the process."""
    with _WORKERS_LOCK:
        workers = list(_WORKERS.items())
    for _, stop in workers:
        stop.set()
    for thread, _ in workers:
        thread.join()


def _hook_layers(model: Any, hook: Any) -> None:
    """Call `hook` before every block of the model's largest layer list (its decoder
    layers) and every module inside them: the places a long prefill can be
    interrupted. Per module, not per layer: on a busy CPU one layer of a 1.5k-token
    prefill took up to 2.8 s, one module at most 0.2 s (~400 checks a token, noise)."""
    import torch

    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        return
    for layer in max(lists, key=len):
        for module in layer.modules():
            module.register_forward_pre_hook(hook)


def _ends_with_eos(token: int, eos: int | list[int] | None) -> bool:
    if eos is None:
        return False
    return token in eos if isinstance(eos, list) else token == eos
