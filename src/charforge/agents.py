"""Characters as chat models: `ServedCharacter` plays one character, in one scene, the
way `charforge serve` would (its latest trained run's adapter, or its base prompted with
it), so conversations, interviews and judges ask every kind of agent alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from charforge.llm.base import ChatMessage, Completion, MessagesLike, ModelStats, Sampling
from charforge.llm.turns import THINK_CLOSE, THINK_OPEN
from charforge.serve.catalogue import Scene, ServedModel
from charforge.serve.thoughts import Part, ThoughtSplitter
from charforge.tasks import canonical

PartSink = Callable[[str, Part], None]  # (role, part)
# What a served character samples with when its caller gives nothing.
DEFAULT_SAMPLING = Sampling(temperature=0.7, max_tokens=256)


def _hash(value: Any, size: int = 16) -> str:
    return hashlib.sha256(canonical(value).encode("utf-8")).hexdigest()[:size]


class ServedCharacter:
    """A served character, in one scene, as a `ChatModel`: its answer streamed through
    the catalogue (system prompt built from the scene), its thinking apart. Its identity
    is the served model's (base, adapter, character, meta prompt) and the scene's."""

    supports_json_schema = False

    def __init__(self, served: ServedModel, scene: Scene, role: str,
                 on_part: PartSink | None = None) -> None:
        self.served, self.scene, self.role = served, scene, role
        self.name = model_id(served)
        self.stats = ModelStats()
        self.on_part = on_part
        self._identity: dict[str, Any] | None = None

    def identity(self) -> dict[str, Any]:
        if self._identity is None:  # adapter weights are read once, not at every turn
            self._identity = self._read_identity()
        return self._identity

    def _read_identity(self) -> dict[str, Any]:
        served = self.served
        backend = getattr(served.backend, "identity", None)
        adapter = None
        if served.adapter:
            folders = getattr(served.backend, "adapter_folders", dict)()
            adapter = _folder_hash(folders.get(served.adapter))
        return {"kind": "served-character", "serving": served.serving,
                "character": _hash(served.character.model_dump(mode="json"), 24),
                "preset": served.preset, "adapter": adapter,
                "backend": backend() if backend else served.backend.name,
                "scene": self.scene.model_dump(mode="json")}

    async def chat(self, messages: MessagesLike, sampling: Sampling | None = None, *,
                   response_format: Mapping[str, Any] | None = None) -> Completion:
        turns = [m if isinstance(m, ChatMessage) else ChatMessage.model_validate(m)
                 for m in messages]
        reasoning: list[str] = []
        content: list[str] = []
        final: Completion | None = None
        async for piece in self.served.stream(turns, self.scene, sampling or DEFAULT_SAMPLING):
            if isinstance(piece, Completion):
                final = piece
                continue
            (reasoning if piece.kind == "reasoning" else content).append(piece.text)
            if self.on_part is not None:
                self.on_part(self.role, piece)
        assert final is not None
        self.stats.requests += 1
        self.stats.attempts += 1
        text = "".join(content)
        if reasoning:  # kept in the stored answer, split again when it becomes a record
            text = f"{THINK_OPEN}{''.join(reasoning)}{THINK_CLOSE}{text}"
        return final.model_copy(update={"text": text, "model": self.name})

    async def check(self) -> str:
        check = getattr(self.served.backend, "check", None)
        return await check() if check is not None else self.name

    async def aclose(self) -> None:  # the catalogue owns the backends
        return None

    async def __aenter__(self) -> ServedCharacter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _folder_hash(folder: Path | None) -> str | None:
    """The content of an adapter folder (its weights and config), hashed."""
    if folder is None or not Path(folder).is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(Path(folder).iterdir()):
        if path.is_file() and path.suffix in (".safetensors", ".json", ".bin"):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:24]


def model_id(served: ServedModel) -> str:
    """What answered: `<character>/<run>` for a trained run, else `<character>` on its
    base (`beethoven/run-1`, `diogenes@smollm2`)."""
    if served.run:
        return f"{served.character.slug}/{served.run}"
    return f"{served.id}@{served.backend.name}"


def split_thoughts(text: str) -> tuple[str, str]:
    """(reasoning, content) of a stored answer."""
    splitter = ThoughtSplitter()
    parts = [*splitter.feed(text), *splitter.close()]
    return ("".join(p.text for p in parts if p.kind == "reasoning"),
            "".join(p.text for p in parts if p.kind == "content"))
