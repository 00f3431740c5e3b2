"""A workspace: a folder with `charforge.yaml`, one sub-folder per character, the
store, datasets and (optionally) prompt overrides. Everything charforge produces
for a project lives here.

    my-project/
      charforge.yaml          models, defaults, limits
      characters/<id>/        character.yaml, summary.json (+ avatar.png from a PNG card)
      prompts/                optional: <name>.j2 files that override built-in prompts
      charforge.db            the store
      datasets/<id>/          training data
      models/<id>/<run>/      trained agents (adapters), each a named model

Characters are found without parsing them all: by folder name first, else through
each folder's small `summary.json`. Folders are written whole (`files.py`), and an
interrupted write is finished or undone when a workspace is next opened.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from charforge.character import Character, slugify
from charforge.errors import (
    CharacterExistsError,
    CharforgeError,
    UnknownCharacterError,
    WorkspaceError,
    first_problem,
)
from charforge.files import folder_written_whole, recover_folders
from charforge.llm.registry import BUILTIN_MODELS, ModelEntry, ModelsConfig
from charforge.train.runs import RunRecord, finished_runs, trained_model_entries

if TYPE_CHECKING:
    from charforge.prompts import Templates
    from charforge.store import Store

CONFIG_NAME = "charforge.yaml"
CHARACTER_FILE = "character.yaml"
SUMMARY_FILE = "summary.json"
AVATAR_FILE = "avatar.png"
PROMPTS_DIR = "prompts"
WORKSPACE_ENV = "CHARFORGE_WORKSPACE"


class Limits(BaseModel):
    """Sizes charforge refuses, so one bad file cannot make every command slow."""

    model_config = ConfigDict(extra="forbid")

    max_import_mb: float = Field(default=10.0, gt=0, description="largest character file")

    @property
    def max_import_bytes(self) -> int:
        return int(self.max_import_mb * 1024 * 1024)


class WorkspaceConfig(ModelsConfig):
    """The contents of charforge.yaml: the models (a `ModelsConfig`), and limits."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    limits: Limits = Field(default_factory=Limits)


class CharacterSummary(BaseModel):
    """What listing and finding characters need, kept beside each character.yaml."""

    slug: str
    name: str
    short_name: str
    profile: int
    knowledge: int
    style: int
    stages: list[str]
    source_format: str

    @classmethod
    def of(cls, character: Character) -> CharacterSummary:
        return cls(slug=character.slug, name=character.name, short_name=character.short_name,
                   profile=len(character.profile), knowledge=len(character.knowledge),
                   style=len(character.style), stages=[s.label for s in character.stages],
                   source_format=str(character.metadata.get("source_format", "-")))


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
# limits:
#   max_import_mb: 10                 # larger character files are refused
"""


class Workspace:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._config: WorkspaceConfig | None = None
        for folder in (self.characters_dir, self.datasets_dir):
            recover_folders(folder)

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
                config = WorkspaceConfig.model_validate(raw)
                trained = {name: ModelEntry.model_validate(entry) for name, entry
                           in trained_model_entries(self.root).items()
                           if name not in BUILTIN_MODELS}
                # Trained agents are models by name; a built-in name or one in
                # charforge.yaml wins.
                self._config = config.model_copy(update={"models": {**trained,
                                                                    **config.models}})
            except (yaml.YAMLError, ValidationError, UnicodeDecodeError, OSError) as exc:
                first = _first_problem(exc)
                raise WorkspaceError(
                    f"{self.config_path}: invalid configuration: {first}"
                ) from None
        return self._config

    def reload_config(self) -> None:
        """Read charforge.yaml and the trained models again at the next use."""
        self._config = None

    def trained_runs(self, character: str | None = None) -> list[tuple[Path, RunRecord]]:
        """Every finished training run (of `character`), oldest first: its folder and
        what its run.json says."""
        return finished_runs(self.root, character)

    def templates(self) -> Templates:
        """The prompt templates: the workspace's `prompts/` folder first, then the
        built-in ones. A prompt edited there changes the id of every task using it."""
        from charforge.prompts import PROMPTS, templates_for

        folder = self.root / PROMPTS_DIR
        return templates_for(folder) if folder.is_dir() else PROMPTS

    # -- the store --------------------------------------------------------------
    def store(self) -> Store:
        """Open the workspace's SQLite store (charforge.db), creating it if needed."""
        from charforge.store import Store

        return Store.for_workspace(self.root)

    # -- characters ------------------------------------------------------------
    @property
    def characters_dir(self) -> Path:
        return self.root / "characters"

    @property
    def datasets_dir(self) -> Path:
        return self.root / "datasets"

    def character_dir(self, character: Character | str) -> Path:
        slug = character if isinstance(character, str) else character.slug
        return self.characters_dir / slug

    def _folders(self) -> list[Path]:
        if not self.characters_dir.is_dir():
            return []
        return sorted(p for p in self.characters_dir.iterdir()
                      if p.is_dir() and not p.name.startswith(".")
                      and (p / CHARACTER_FILE).is_file())

    def _read_character(self, folder: Path) -> Character:
        path = folder / CHARACTER_FILE
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            return Character.model_validate(data)
        except (yaml.YAMLError, ValidationError, UnicodeDecodeError, OSError) as exc:
            raise WorkspaceError(f"{path}: unreadable character file: {_first_problem(exc)}; "
                                 "fix it or import the character again with --replace") from None

    def _summary(self, folder: Path) -> CharacterSummary:
        """The folder's summary.json; written from character.yaml when missing (folders
        written before summaries existed)."""
        path = folder / SUMMARY_FILE
        try:
            return CharacterSummary.model_validate_json(path.read_bytes())
        except (OSError, ValidationError):
            summary = CharacterSummary.of(self._read_character(folder))
            staging = path.with_name(f".{SUMMARY_FILE}.{os.getpid()}")
            try:
                staging.write_text(summary.model_dump_json(), encoding="utf-8")
                staging.replace(path)
            except OSError:
                staging.unlink(missing_ok=True)  # a read-only workspace still reads
            return summary

    def character_summaries(self) -> list[CharacterSummary]:
        """Every character, cheaply (no profile is parsed)."""
        return [self._summary(folder) for folder in self._folders()]

    def characters(self) -> list[Character]:
        """Every character, in full."""
        return [self._read_character(folder) for folder in self._folders()]

    def load_character(self, name: str) -> Character:
        """Find a character by id, short name or full name (any case): by its folder
        when the name gives it, else through the summaries."""
        folder = self.character_dir(slugify(name))
        if (folder / CHARACTER_FILE).is_file():
            return self._read_character(folder)
        wanted = " ".join(name.split()).lower()
        summaries = self.character_summaries()
        for summary in summaries:
            if wanted in (summary.slug, summary.short_name.lower(), summary.name.lower()):
                return self._read_character(self.character_dir(summary.slug))
        raise UnknownCharacterError(name, [s.short_name for s in summaries])

    def avatar_path(self, character: Character) -> Path | None:
        path = self.character_dir(character) / AVATAR_FILE
        return path if path.is_file() else None

    def save_character(
        self, character: Character, *, avatar: bytes | None = None, replace: bool = False
    ) -> Path:
        """Write the character's folder atomically: all of it or nothing."""
        target = self.character_dir(character)
        if not replace:
            for other in self.character_summaries():
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
            (staging / SUMMARY_FILE).write_text(
                CharacterSummary.of(character).model_dump_json(), encoding="utf-8")
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
        and save it here. Nothing is written unless the whole file is valid; files over
        `limits.max_import_mb` are refused before they are read."""
        from charforge.importers import load_character_file

        character, avatar = load_character_file(
            source, style=style, name=name, short_name=short_name, fmt=fmt,
            max_bytes=self.config.limits.max_import_bytes,
        )
        self.save_character(character, avatar=avatar, replace=replace)
        return character

    def export_character(self, name: str, path: str | Path, *, fmt: str = "auto") -> Path:
        """Write a character as a Character Card V2 (`card-json` or `card-png`)."""
        from charforge.importers import card

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
            data = card.card_json_bytes(character)
        else:
            avatar = self.avatar_path(character)
            data = card.card_png_bytes(
                character, avatar.read_bytes() if avatar else None, avatar_label=str(avatar)
            )
        staging = path.with_name(f".{path.name}.partial")
        staging.write_bytes(data)
        staging.replace(path)
        return path


def _first_problem(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        where, what = first_problem(exc)
        return f"{where}: {what}" if where else what
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

