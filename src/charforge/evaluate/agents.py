"""Agents by name: what `--agent` accepts, resolved to a `ChatModel` that plays the
character, with the label the report gives it.

- `trained`: the character's latest trained run (its adapter on its base), asked as
  `charforge serve` asks it (meta prompt, scene);
- `run:<run>` (or `<character>/<run>`): one trained run;
- `prompted`: the base model of the latest trained run prompted with the character
  (the fair baseline of a trained agent: same weights, no training); for a character
  with no trained run, the workspace's default model prompted;
- `prompted:<model>`: any model of the workspace config prompted with the character;
- `chatgpt-baseline[:<model>]`: the Character-LLM paper's ChatGPT baseline prompt
  (compatibility preset) on a model (default: the workspace's default model);
- `model:<model>`: a model asked as it is, with no prompt of ours: an endpoint that
  plays the character itself, such as `charforge serve` elsewhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from charforge.agents import DEFAULT_SAMPLING, ServedCharacter
from charforge.character import Character
from charforge.errors import CharforgeError
from charforge.llm.base import (
    ChatMessage,
    ChatModel,
    Completion,
    MessagesLike,
    ModelStats,
    Sampling,
)
from charforge.llm.registry import load_chat_model
from charforge.serve.catalogue import Catalogue, Scene, ServedModel, UnknownModel
from charforge.tasks import canonical

from .compat import baseline_system

FORMS = ("trained", "run:<run>", "prompted", "prompted:<model>",
         "chatgpt-baseline[:<model>]", "model:<model>")


class UnknownAgent(CharforgeError):
    """An --agent that names nothing known."""


def _hash(value: Any) -> str:
    return hashlib.sha256(canonical(value).encode("utf-8")).hexdigest()[:24]


class PlainAgent:
    """A model asked as it is, or under Character-LLM's ChatGPT baseline prompt."""

    supports_json_schema = False

    def __init__(self, model: ChatModel, character: Character, scene: Scene,
                 baseline: bool) -> None:
        self.model, self.character, self.scene, self.baseline = model, character, scene, baseline
        self.name = f"{'chatgpt-baseline' if baseline else 'model'}:{model.name}"
        self.stats = ModelStats()

    def identity(self) -> dict[str, Any]:
        inner = getattr(self.model, "identity", None)
        return {"kind": "chatgpt-baseline" if self.baseline else "plain",
                "model": inner() if inner else self.model.name,
                "character": _hash(self.character.model_dump(mode="json")) if self.baseline
                else None, "scene": self.scene.model_dump(mode="json")}

    async def chat(self, messages: MessagesLike, sampling: Sampling | None = None, *,
                   response_format: Mapping[str, Any] | None = None) -> Completion:
        turns = [m if isinstance(m, ChatMessage) else ChatMessage.model_validate(m)
                 for m in messages]
        if self.baseline:
            system = baseline_system(self.character, self.scene.location, self.scene.status)
            turns = [ChatMessage(role="system", content=system),
                     *(m for m in turns if m.role != "system")]
        self.stats.requests += 1
        return await self.model.chat(turns, sampling or DEFAULT_SAMPLING)

    async def check(self) -> str:
        return await self.model.check()

    async def aclose(self) -> None:
        return None

    async def __aenter__(self) -> PlainAgent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


@dataclass
class Agents:
    """Resolved agents of one workspace; owns the models it had to load."""

    workspace: Any
    catalogue: Catalogue
    owned: list[ChatModel] = field(default_factory=list)

    @classmethod
    def of(cls, workspace: Any) -> Agents:
        return cls(workspace, Catalogue.from_workspace(workspace))

    def resolve(self, spec: str, character: Character, scene: Scene | None = None
                ) -> tuple[str, ChatModel]:
        """(label, model) of `spec` for `character`; an unknown form or name is one line."""
        scene = scene or Scene()
        kind, _, name = spec.strip().partition(":")
        if "/" in spec and not name:
            kind, name = "run", spec.split("/", 1)[1]
        if kind == "trained" and not name:
            served = self._served(character.slug)
            if served.serving not in ("adapter", "full"):
                raise UnknownAgent(f"{character.short_name} has no trained run; train one "
                                   f"(charforge train sft {character.slug}) or use --agent "
                                   "prompted")
            return "trained", ServedCharacter(served, scene, "agent")
        if kind == "run" and name:
            return name, ServedCharacter(self._served(f"{character.slug}/{name}"), scene, "agent")
        if kind == "prompted":
            return ("prompted" if not name else f"prompted:{name}",
                    ServedCharacter(self._prompted(character, name), scene, "agent"))
        if kind == "chatgpt-baseline":
            return spec.strip(), PlainAgent(self._load(name or None), character, scene, True)
        if kind == "model" and name:
            return spec.strip(), PlainAgent(self._load(name), character, scene, False)
        raise UnknownAgent(f"unknown agent {spec!r}; agents: {', '.join(FORMS)}")

    def _served(self, model_id: str) -> ServedModel:
        try:
            return self.catalogue.get(model_id)
        except UnknownModel:
            known = ", ".join(sorted(self.catalogue.models)) or "none"
            raise UnknownAgent(f"no trained run or character {model_id!r}; known: "
                               f"{known}") from None

    def _prompted(self, character: Character, name: str) -> ServedModel:
        served = self._served(character.slug)
        if not name:
            if served.serving == "prompted":
                return served
            if served.serving == "adapter":  # the same base, its rows without the adapter
                return ServedModel(character.slug, character, "prompted", served.backend)
            name = ""  # a full fine-tune: its base is not loaded; the default model
        return ServedModel(character.slug, character, "prompted", self._load(name or None))

    def _load(self, name: str | None) -> ChatModel:
        try:
            model = load_chat_model(name, config=self.workspace.config)
        except CharforgeError as exc:
            raise UnknownAgent(f"agent model: {exc}") from None
        self.owned.append(model)
        return model

    async def aclose(self) -> None:
        for model in self.owned:
            await model.aclose()
            shutdown = getattr(model, "shutdown", None)
            if shutdown is not None:
                shutdown()
        await self.catalogue.aclose()
