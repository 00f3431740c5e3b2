"""A workspace: a folder with `charforge.yaml`, one sub-folder per character,
and (later) the store. Everything charforge produces for a project lives here.

    my-project/
      charforge.yaml          models and defaults
      characters/<slug>/      character.yaml (+ avatar.png from a PNG card)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from charforge.character import Character, slugify
from charforge.errors import (
    CharacterExistsError,
    CharforgeError,
    UnknownCharacterError,
    WorkspaceError,
)
from charforge.files import folder_written_whole

if TYPE_CHECKING:
    from charforge.store import Store

CONFIG_NAME = "charforge.yaml"
CHARACTER_FILE = "character.yaml"
AVATAR_FILE = "avatar.png"
WORKSPACE_ENV = "CHARFORGE_WORKSPACE"


class WorkspaceConfig(BaseModel):
    """The contents of charforge.yaml."""

    version: int = 1
    default_model: str = Field(
        default="smollm2", description="model used when a command names none"
    )
    models: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="named models: {backend: openai|local, ...backend options}",
    )


_CONFIG_TEMPLATE = """\
# charforge workspace. Models are named here and chosen with --model NAME.
# The embedded SmolLM2-135M-Instruct is always available as 'smollm2'.
version: 1
default_model: smollm2
models: {}
# Example of a remote teacher (the key is read from the environment, never stored):
#   gpt4o-mini:
#     backend: openai
#     model: gpt-4o-mini
#     base_url: https://api.openai.com/v1
#     api_key_env: OPENAI_API_KEY     # or a list of variables to rotate keys
#     max_concurrency: 16
"""


class Workspace:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._config: WorkspaceConfig | None = None

    # -- finding and creating -------------------------------------------------
    @classmethod
    def init(cls, path: str | Path) -> Workspace:
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        config = root / CONFIG_NAME
        if not config.exists():
            config.write_text(_CONFIG_TEMPLATE, encoding="utf-8")
        (root / "characters").mkdir(exist_ok=True)
        return cls(root)

    @classmethod
    def find(cls, path: str | Path | None = None) -> Workspace:
        """The workspace at `path`, else $CHARFORGE_WORKSPACE, else the nearest
        folder holding charforge.yaml from the current directory upwards."""
        explicit = path or os.environ.get(WORKSPACE_ENV)
        if explicit:
            root = Path(explicit)
            if not (root / CONFIG_NAME).is_file():
                raise WorkspaceError(
                    f"{root} is not a charforge workspace (no {CONFIG_NAME}); "
                    f"run: charforge init {root}"
                )
            return cls(root)
        here = Path.cwd().resolve()
        for folder in (here, *here.parents):
            if (folder / CONFIG_NAME).is_file():
                return cls(folder)
        raise WorkspaceError(
            f"no {CONFIG_NAME} in {here} or its parents; run: charforge init "
            "(or pass --workspace DIR)"
        )

    # -- configuration -------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def config(self) -> WorkspaceConfig:
        if self._config is None:
            try:
                raw = yaml.safe_load(self.config_path.read_text(encoding="utf-8")) or {}
                self._config = WorkspaceConfig.model_validate(raw)
            except (yaml.YAMLError, ValidationError) as exc:
                first = str(exc).strip().splitlines()[0]
                raise WorkspaceError(
                    f"{self.config_path}: invalid configuration: {first}"
                ) from None
        return self._config

    # -- the store --------------------------------------------------------------
    def store(self) -> Store:
        """Open the workspace's SQLite store (charforge.db), creating it if needed."""
        from charforge.store import Store

        return Store.for_workspace(self.root)

    # -- characters ------------------------------------------------------------
    @property
    def characters_dir(self) -> Path:
        return self.root / "characters"

    def character_dir(self, character: Character) -> Path:
        return self.characters_dir / character.slug

    def characters(self) -> list[Character]:
        if not self.characters_dir.is_dir():
            return []
        found = []
        for file in sorted(self.characters_dir.glob(f"*/{CHARACTER_FILE}")):
            if file.parent.name.startswith("."):
                continue  # a folder being written, or left by a crash mid-write
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
            found.append(Character.model_validate(data))
        return found

    def load_character(self, name: str) -> Character:
        """Find a character by slug, short name or full name (any case)."""
        wanted = name.strip().lower()
        characters = self.characters()
        for character in characters:
            if wanted in (character.slug, character.short_name.lower(), character.name.lower()):
                return character
        slug = slugify(name)
        for character in characters:
            if character.slug == slug:
                return character
        raise UnknownCharacterError(name, [c.short_name for c in characters])

    def avatar_path(self, character: Character) -> Path | None:
        path = self.character_dir(character) / AVATAR_FILE
        return path if path.is_file() else None

    def save_character(
        self, character: Character, *, avatar: bytes | None = None, replace: bool = False
    ) -> Path:
        """Write the character's folder atomically: all of it or nothing."""
        target = self.character_dir(character)
        if not replace:
            for other in self.characters():
                if other.slug == character.slug or other.name.lower() == character.name.lower():
                    raise CharacterExistsError(
                        f"character {other.name!r} already exists in {self.characters_dir} "
                        "(pass --replace to overwrite it)"
                    )
        text = yaml.safe_dump(
            character.model_dump(mode="json"), allow_unicode=True, sort_keys=False, width=100
        )
        with folder_written_whole(target) as staging:
            (staging / CHARACTER_FILE).write_text(text, encoding="utf-8")
            if avatar is not None:
                (staging / AVATAR_FILE).write_bytes(avatar)
        return target

    # -- import and export -----------------------------------------------------
    def import_character(
        self,
        source: str | Path,
        *,
        style: str | Path | None = None,
        name: str | None = None,
        short_name: str | None = None,
        fmt: str = "auto",
        replace: bool = False,
    ) -> Character:
        """Read a character file (wiki profile, PersLLM files, Card V2 JSON/PNG)
        and save it here. Nothing is written unless the whole file is valid."""
        from charforge.character import load_character_file

        character, avatar = load_character_file(
            source, style=style, name=name, short_name=short_name, fmt=fmt
        )
        self.save_character(character, avatar=avatar, replace=replace)
        return character

    def export_character(self, name: str, path: str | Path, *, fmt: str = "auto") -> Path:
        """Write a character as a Character Card V2 (`card-json` or `card-png`)."""
        from charforge import cards

        character = self.load_character(name)
        path = Path(path)
        if fmt == "auto":
            fmt = {".png": "card-png", ".json": "card-json"}.get(path.suffix.lower(), "")
        if fmt not in ("card-json", "card-png"):
            raise CharforgeError(
                f"{path}: cannot tell the export format; use a .json or .png file name "
                "or pass --format card-json|card-png"
            )
        if not path.parent.is_dir():
            raise CharforgeError(f"{path}: folder {path.parent} does not exist")
        if fmt == "card-json":
            data = cards.card_json_bytes(character)
        else:
            avatar = self.avatar_path(character)
            data = cards.card_png_bytes(
                character, avatar.read_bytes() if avatar else None, avatar_label=str(avatar)
            )
        staging = path.with_name(f".{path.name}.partial")
        staging.write_bytes(data)
        staging.replace(path)
        return path
