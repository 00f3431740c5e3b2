"""What a server offers: every character of a workspace as model ids, and how each
one is asked.

- `<character>/<run>`: a trained run, its adapter on the shared base (all runs on one
  base share one model in memory and one batched engine), asked under the meta prompt
  its recipe serves with (`charforge.render`), the stage token first;
- `<character>`: the latest trained run, or, for a character with none, the serving
  model prompted with the character (`charforge.roleplay`): `serving` says which;
- `<character>/character-llm`: a released Character-LLM checkpoint (`checkpoints=`),
  asked in its own prompted format (meta prompt, `Name (speaking): ...<|eot|>`).

The scene (location, status, stage) comes with each request; a client's own system
message replaces the built one.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from charforge.character import Character
from charforge.errors import CharforgeError, ConfigError
from charforge.llm.base import ChatMessage, ChatModel, Completion, Sampling
from charforge.llm.local import LocalChatModel, LocalConfig, same_weights
from charforge.llm.registry import load_chat_model
from charforge.recipes import RECIPES
from charforge.render import EOT, MetaPreset, meta_prompt, stage_marked
from charforge.roleplay import roleplay_system_prompt
from charforge.serve.thoughts import BlockReader, Part, ThoughtSplitter

Serving = Literal["adapter", "full", "prompted", "character-llm"]
COMPAT_SUFFIX = "character-llm"
INTERVIEWER = "Man"  # who speaks to a Character-LLM checkpoint when the client names no one


class UnknownModel(CharforgeError):
    """No served model has that id."""


class Scene(BaseModel):
    """Where and when the character is; all optional (request `metadata`)."""

    model_config = ConfigDict(extra="ignore")

    location: str = Field(default="", max_length=2000)
    status: str = Field(default="", max_length=2000)
    stage: str | None = Field(default=None, max_length=100, description="a label or token")


@dataclass
class ServedModel:
    """One model id and how it answers."""

    id: str
    character: Character
    serving: Serving
    backend: ChatModel
    run: str | None = None
    adapter: str | None = None  # the engine's adapter name (local backends)
    preset: MetaPreset = "charforge"

    def stage_token(self, scene: Scene) -> str | None:
        """The token of the scene's stage (by label or token); None without one."""
        if not scene.stage:
            return None
        for stage in self.character.stages:
            if scene.stage in (stage.label, stage.token):
                return stage.token
        known = ", ".join(s.label for s in self.character.stages) or "none"
        raise ValueError(f"{self.character.short_name} has no stage {scene.stage!r} "
                         f"(stages: {known})")

    def messages(self, messages: list[ChatMessage], scene: Scene) -> list[ChatMessage]:
        """The conversation as the model is asked it: the character's system message
        (or the client's own), then the client's turns."""
        own = [m.content for m in messages if m.role == "system"]
        turns = [m for m in messages if m.role != "system"]
        token = self.stage_token(scene)
        if own:
            system = "\n\n".join(own)
        elif self.serving == "prompted":
            question = next((m.content for m in reversed(turns) if m.role == "user"), None)
            system = roleplay_system_prompt(self.character, question=question,
                                            location=scene.location or None,
                                            status=scene.status or None)
        else:
            system = meta_prompt(self.character, scene.location, scene.status, self.preset)
        if self.serving != "prompted":
            system = stage_marked(system, token)
        return [ChatMessage(role="system", content=system), *turns]

    async def stream(self, messages: list[ChatMessage], scene: Scene,
                     sampling: Sampling) -> AsyncIterator[Part | Completion]:
        """The reply in parts (reasoning apart from content), then its `Completion`."""
        if self.serving == COMPAT_SUFFIX:
            async for piece in self._stream_blocks(messages, scene, sampling):
                yield piece
            return
        reader = ThoughtSplitter()
        asked = self.messages(messages, scene)
        if isinstance(self.backend, LocalChatModel):
            pieces = self.backend.stream(asked, sampling, adapter=self.adapter)
        else:
            pieces = _whole(self.backend, asked, sampling)
        async for piece in pieces:
            if isinstance(piece, Completion):
                for part in reader.close():
                    yield part
                yield piece
            else:
                for part in reader.feed(piece):
                    yield part

    async def _stream_blocks(self, messages: list[ChatMessage], scene: Scene,
                             sampling: Sampling) -> AsyncIterator[Part | Completion]:
        assert isinstance(self.backend, LocalChatModel)
        reader = BlockReader(self.character.short_name, f"{self.character.short_name} (")
        prompt = character_llm_prompt(self.character, messages, scene)
        tokenizer = self.backend.tokenizer_for(self.adapter)
        ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        pieces = self.backend.stream_ids(ids, sampling, adapter=self.adapter)
        async for piece in pieces:
            if isinstance(piece, Completion):
                for part in reader.close():
                    yield part
                yield piece
                return
            for part in reader.feed(piece):
                yield part
            if reader.ended:
                await pieces.aclose()
                yield Completion(text="", finish_reason="stop", model=self.id)
                return


def character_llm_prompt(character: Character, messages: list[ChatMessage],
                         scene: Scene) -> str:
    """Character-LLM's prompted format as its checkpoints were trained: the meta prompt,
    a blank line, each turn as `Name (speaking): text<|eot|>`, then the character's
    turn opened."""
    own = [m.content for m in messages if m.role == "system"]
    status = scene.status or f"{character.short_name} is talking with {INTERVIEWER}."
    head = "\n\n".join(own) if own else meta_prompt(character, scene.location, status,
                                                    "character-llm")
    blocks = []
    for message in messages:
        if message.role == "system":
            continue
        speaker = character.short_name if message.role == "assistant" else (
            message.name or INTERVIEWER)
        blocks.append(f"{speaker} (speaking): {message.content}{EOT}\n")
    return head + "\n\n" + "".join(blocks) + f"{character.short_name} ("


async def _whole(model: ChatModel, messages: list[ChatMessage],
                 sampling: Sampling) -> AsyncIterator[str | Completion]:
    """A backend that cannot stream: its whole answer as one piece."""
    completion = await model.chat(messages, sampling)
    yield completion.text
    yield completion


def _adapter_name(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", model_id)


class Catalogue:
    """Every served model of a workspace, by id; the local bases they share."""

    def __init__(self, models: Mapping[str, ServedModel], backends: list[ChatModel]) -> None:
        self.models = dict(models)
        self._backends = backends

    def get(self, model_id: str) -> ServedModel:
        served = self.models.get(model_id)
        if served is None:
            raise UnknownModel(f"the model {model_id!r} does not exist")
        return served

    def characters(self) -> list[dict[str, Any]]:
        """What `/v1/characters` lists: each character, its stages and its models."""
        listed: dict[str, dict[str, Any]] = {}
        for served in self.models.values():
            character = served.character
            entry = listed.setdefault(character.slug, {
                "id": character.slug, "name": character.name,
                "short_name": character.short_name,
                "summary": " ".join(" ".join(character.profile_or_knowledge()).split()[:60]),
                "stages": [{"label": s.label, "token": s.token,
                            "description": s.description} for s in character.stages],
                "models": []})
            entry["models"].append({"id": served.id, "serving": served.serving,
                                    "run": served.run})
        return list(listed.values())

    async def load(self) -> None:
        """Load every local model now (a server does, before its first request)."""
        for backend in self._backends:
            check = getattr(backend, "check", None)
            if check is not None:
                await check()

    async def aclose(self) -> None:
        for backend in self._backends:
            await backend.aclose()
        for backend in self._backends:
            shutdown = getattr(backend, "shutdown", None)
            if shutdown is not None:
                shutdown()

    @classmethod
    def from_workspace(cls, workspace: Any, *, model: str | None = None,
                       checkpoints: Mapping[str, str | Path] | None = None,
                       max_batch: int | None = None) -> Catalogue:
        """The workspace's characters: trained runs on shared bases, the others prompted
        through `model` (default: the workspace's default model), and released
        Character-LLM checkpoints (`{character: folder}`)."""
        characters = {c.slug: c for c in workspace.characters()}
        models, backends = _trained(workspace, characters, max_batch)
        untrained = [c for slug, c in characters.items() if slug not in models]
        if untrained:
            prompted = _prompted_model(load_chat_model(model, config=workspace.config),
                                       backends, max_batch)
            backends.append(prompted)
            for character in untrained:
                models[character.slug] = ServedModel(character.slug, character, "prompted",
                                                     prompted)
        for slug, folder in dict(checkpoints or {}).items():
            served = _checkpoint(characters, slug, folder)
            models[served.id] = served
            backends.append(served.backend)
        return cls(models, backends)


def _trained(workspace: Any, characters: Mapping[str, Character],
             max_batch: int | None) -> tuple[dict[str, ServedModel], list[ChatModel]]:
    """A model id per finished chat run, and the character's own id for its latest. LoRA
    runs on one base (same loading options) share one `LocalChatModel`: one copy of the
    base, one engine, each run an adapter of it."""
    groups: dict[str, tuple[dict[str, Any], dict[str, Path]]] = {}
    planned: list[tuple[str, Character, str, str, str | None, MetaPreset]] = []
    for folder, record in workspace.trained_runs():
        character = characters.get(record.character)
        entry = dict(record.model)
        if character is None or entry.get("backend") != "local":
            continue  # a deleted character, or the prompted format (not a chat model)
        recipe = RECIPES.get(record.recipe)
        preset: MetaPreset = recipe.serving.meta_prompt if recipe else "charforge"
        model_id = f"{character.slug}/{record.run}"
        adapter = _adapter_name(model_id) if "adapter" in entry else None
        if adapter:
            entry.pop("adapter")
        else:  # a full fine-tune: a model of its own
            entry["path"] = str(folder)
        key = repr(sorted(entry.items()))
        adapters = groups.setdefault(key, (entry, {}))[1]
        if adapter:
            adapters[adapter] = folder
        planned.append((model_id, character, record.run, key, adapter, preset))
    backends: dict[str, LocalChatModel] = {}
    for key, (entry, adapters) in groups.items():
        options = {k: v for k, v in entry.items() if k != "backend"}
        if max_batch:
            options["max_batch"] = max_batch
        backends[key] = LocalChatModel(LocalConfig.model_validate(options),
                                       name=f"base-{len(backends) + 1}", adapters=adapters)
    models: dict[str, ServedModel] = {}
    for model_id, character, run, key, adapter, preset in planned:  # oldest run first
        for served_id in (model_id, character.slug):  # the slug ends on the latest
            models[served_id] = ServedModel(served_id, character,
                                            "adapter" if adapter else "full", backends[key],
                                            run=run, adapter=adapter, preset=preset)
    return models, list(backends.values())


def _prompted_model(model: ChatModel, backends: list[ChatModel],
                    max_batch: int | None) -> ChatModel:
    """The model that plays untrained characters: when it is the bare base of trained
    runs already served, it shares their model and engine (its rows `__base__` in their
    batches), keeping its own settings."""
    if not isinstance(model, LocalChatModel):
        return model
    if max_batch:
        model.config = model.config.model_copy(update={"max_batch": max_batch})
    for backend in backends:
        if isinstance(backend, LocalChatModel) and same_weights(model.config, backend.config):
            return LocalChatModel(model.config, name=model.name, shared=backend)
    return model


def _checkpoint(characters: Mapping[str, Character], slug: str,
                folder: str | Path) -> ServedModel:
    """A released Character-LLM checkpoint of `slug`, asked in its own format."""
    if slug not in characters:
        raise ConfigError(f"--checkpoint {slug}: no such character in the workspace")
    path = Path(folder).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(f"--checkpoint {slug}: {path} is not a model folder")
    backend = LocalChatModel(LocalConfig(path=str(path)), name=f"{slug}-character-llm")
    backend.require_chat_template = False
    model_id = f"{slug}/{COMPAT_SUFFIX}"
    return ServedModel(model_id, characters[slug], COMPAT_SUFFIX, backend,
                       preset="character-llm")
