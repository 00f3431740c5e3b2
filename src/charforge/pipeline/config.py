"""The run configuration: one YAML file that declares the whole main job.

`charforge run CONFIG.yaml` reads it into `RunConfig` (pydantic, every mapping
closed: an unknown key is an error naming the valid ones). Paths in the file are
relative to the file's own folder. A configuration names:

- `character`: where the character comes from (a profile, a card, PersLLM files or
  a stage folder; `builtin:` names a file shipped with charforge);
- `teacher`, `judge` and any extra `models` (entries as in charforge.yaml: keys stay in
  the environment);
- `recipe`: `character-llm`, `persllm`, or both (a list): which data is made, and the
  named recipe whose settings lie under everything the file says;
- `stages`: each generation stage's counts, options and sampling;
- `dataset`, `training` and `evaluation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from charforge.errors import CharforgeError
from charforge.llm.base import Sampling
from charforge.train.settings import TrainSettings

Pipeline = Literal["character-llm", "persllm"]

# Generation stages of each recipe, in order.
RECIPE_STAGES: dict[str, tuple[str, ...]] = {
    "character-llm": ("scenes", "experiences", "protective"),
    "persllm": ("questions", "answers"),
}
# Every step of a run, in the order they run; `--from` and `--until` name these.
STEPS: tuple[str, ...] = ("scenes", "experiences", "protective", "questions", "answers",
                          "dataset", "train", "dpo", "interview", "judge", "report")
# Keys a stage entry may hold besides its stage's options and the sampling settings.
RUN_KEYS = {"limit": "run at most this many new tasks of the stage",
            "retry_rejected": "ask the rejected tasks again (each rerun of the config)"}
PATTERNS_KEY = "patterns"  # questions: one run per pattern
ALWAYS_ASKED = ("trained", "prompted")  # agents every evaluation interviews


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CharacterSource(_Closed):
    source: str = Field(description="a wiki profile (.txt), a Character Card (.png/.json), a "
                        "PersLLM knowledge file or a folder of stage files; builtin:NAME is a "
                        "file shipped with charforge (builtin:wiki_Beethoven.txt)")
    style: str | None = Field(default=None, description="PersLLM speech-style file")
    name: str | None = Field(default=None, description="the character's full name")


class DatasetConfig(_Closed):
    dedup: bool = True
    dedup_threshold: float = Field(default=0.95, gt=0, le=1)
    dialogue_threshold: float = Field(default=0.5, gt=0, le=1)
    test_fraction: float = Field(default=0.2, ge=0, lt=1)
    dpo: bool = Field(default=False, description="mine preference pairs (dpo.jsonl)")
    with_analysis: bool = False
    seed: int = 0


class TrainingConfig(TrainSettings):
    """The training settings (every field of `charforge train`'s settings), the base
    model, and whether DPO follows SFT."""

    base: str = Field(default="smollm2", description="a local model's name, a model folder "
                      "or a cached hub id")
    dpo: bool = Field(default=False, description="preference-tune after SFT (needs "
                      "dataset.dpo)")

    def settings_changes(self) -> dict[str, Any]:
        """Only the settings the file gave (the recipe's fill the rest)."""
        return {key: value for key, value in self.model_dump(exclude_unset=True).items()
                if key not in ("base", "dpo")}


class EvaluationConfig(_Closed):
    questions: str | None = Field(default=None, description="a question file in "
                                  "Character-LLM's format (default: the character's own)")
    limit: int | None = Field(default=None, ge=1, description="ask each agent the first N "
                              "questions of the set (the same N on every run)")
    modes: list[Literal["single", "multi"]] = Field(default=["single"])
    turns: int = Field(default=5, ge=2, le=20, description="turns of a multi-turn interview")
    interviewer: str | None = Field(default=None, description="model asking the multi-turn "
                                    "follow-ups (default: the judge)")
    agents: list[str] = Field(default=[], description="more agents to compare (the trained "
                              "agent and the base prompted with the character always run)")
    max_tokens: int = Field(default=160, ge=1, le=100_000)
    temperature: float = Field(default=0.2, ge=0, le=2)
    judge_max_tokens: int = Field(default=400, ge=16, le=100_000)
    judges: list[Literal["rubric", "rank"]] | None = Field(
        default=None, description="rubric: Character-LLM's five dimensions, 1-7; rank: "
        "PersLLM's ranking of the agents' answers side by side (default: rubric, and rank "
        "too in the persllm recipe)")
    preset: Literal["charforge", "character-llm"] | None = Field(
        default=None, description="judge prompts (default: the recipe's)")
    concurrency: int = Field(default=16, ge=1, le=1024)


class Price(_Closed):
    input: float = Field(ge=0, description="per million prompt tokens")
    output: float = Field(ge=0, description="per million completion tokens")


class RunConfig(_Closed):
    character: CharacterSource
    workspace: str = Field(default="charforge-workspace", description="the workspace folder "
                           "(made if missing), relative to this file")
    recipe: Pipeline | list[Pipeline] = "character-llm"
    preset: str | None = Field(default=None, description="the named recipe whose settings "
                               "lie under this file's (default: the first recipe named)")
    teacher: str = "smollm2"
    judge: str | None = Field(default=None, description="default: the teacher")
    models: dict[str, dict[str, Any]] = Field(default={}, description="model entries added "
                                              "to the workspace's charforge.yaml")
    prices: dict[str, Price] = Field(default={}, description="per model name, for the dry "
                                     "run's cost estimate")
    concurrency: int = Field(default=16, ge=1, le=1024, description="teacher requests at once")
    stages: dict[str, dict[str, Any]] = {}
    dataset: DatasetConfig = DatasetConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()

    @field_validator("recipe")
    @classmethod
    def _no_repeats(cls, value: Any) -> Any:
        if isinstance(value, list) and (not value or len(set(value)) != len(value)):
            raise ValueError("name character-llm, persllm, or both once each")
        return value

    @field_validator("models")
    @classmethod
    def _no_secrets(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, entry in value.items():
            found = _secret_key(entry)
            if found:
                raise ValueError(f"{name}: {found!r} looks like a secret; keys stay in the "
                                 "environment: name the variable with api_key_env")
        return value

    @property
    def pipelines(self) -> list[str]:
        return [self.recipe] if isinstance(self.recipe, str) else list(self.recipe)

    @property
    def recipe_name(self) -> str:
        return self.preset or self.pipelines[0]

    @property
    def judge_model(self) -> str:
        return self.judge or self.teacher

    @property
    def agents(self) -> list[str]:
        """The agents interviewed: the trained one, the same base prompted, then the
        file's other agents."""
        extra = [agent for agent in self.evaluation.agents if agent not in ALWAYS_ASKED]
        return [*ALWAYS_ASKED, *extra]

    @property
    def judges(self) -> list[str]:
        if self.evaluation.judges is not None:
            return list(self.evaluation.judges)
        return ["rubric", *(["rank"] if "persllm" in self.pipelines else [])]

    def generation_stages(self) -> list[str]:
        return [stage for pipeline in self.pipelines for stage in RECIPE_STAGES[pipeline]]

    def steps(self) -> list[str]:
        """The steps this configuration runs, in order."""
        gen = set(self.generation_stages())
        return [step for step in STEPS if step in gen or step not in _GENERATION_STEPS
                if step != "dpo" or self.training.dpo]


_GENERATION_STEPS = {stage for stages in RECIPE_STAGES.values() for stage in stages}


SECRET_NAMES = {"api_key", "apikey", "key", "secret", "password", "token", "authorization",
                "bearer", "access_token"}


def _secret_key(value: Any) -> str | None:
    """The first key of a model entry (at any depth) named like a secret."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if str(key).lower().replace("-", "_") in SECRET_NAMES:
                return str(key)
            found = _secret_key(inner)
            if found:
                return found
    return None


class StagePlan(BaseModel):
    """One generation stage's entry, split into what each part of the core takes."""

    options: dict[str, Any]
    sampling: dict[str, Any]
    limit: int | None = None
    retry_rejected: bool = False
    patterns: list[str] = []


def _closed_keys_error(where: str, key: str, valid: list[str]) -> CharforgeError:
    return CharforgeError(f"{where}: unknown key {key!r}; valid keys: {', '.join(valid)}")


def stage_plan(stage: str, entry: dict[str, Any]) -> StagePlan:
    """Check one `stages:` entry against its stage's options and the sampling settings."""
    from charforge.stages import stage_class

    option_fields = list(stage_class(stage).Options.model_fields)
    sampling_fields = list(Sampling.model_fields)
    extra = [PATTERNS_KEY] if stage == "questions" else []
    valid = [*option_fields, *sampling_fields, *RUN_KEYS, *extra]
    for key in entry:
        if key not in valid:
            raise _closed_keys_error(f"stages.{stage}", key, valid)
    # A name that is both (scenes' `seed`: the order paragraphs are visited) is the stage's.
    options = {k: v for k, v in entry.items() if k in option_fields}
    sampling = {k: v for k, v in entry.items() if k in sampling_fields and k not in options}
    try:
        stage_class(stage).parse_options(options)
        Sampling.parse(sampling)
        plan = StagePlan(options=options, sampling=sampling, limit=entry.get("limit"),
                         retry_rejected=entry.get("retry_rejected", False),
                         patterns=entry.get(PATTERNS_KEY, []))
    except (ValueError, ValidationError, CharforgeError) as exc:
        raise CharforgeError(f"stages.{stage}: {_first_line(exc)}") from None
    if plan.limit is not None and plan.limit < 1:
        raise CharforgeError(f"stages.{stage}.limit: must be at least 1")
    return plan


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"{where}: {first['msg']}" if where else str(first["msg"])
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _model_of(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model an error location points into (for naming its valid keys)."""
    model: type[BaseModel] = RunConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def config_error(path: Path | str, exc: ValidationError) -> CharforgeError:
    """One line for the first problem of a configuration."""
    first = exc.errors()[0]
    # pydantic names each member of a union it tried ("literal['a','b']"): not a key
    loc = tuple(part for part in first["loc"] if not (isinstance(part, str) and "[" in part))
    where = ".".join(str(part) for part in loc)
    if first["type"] == "extra_forbidden":
        model = _model_of(loc)
        valid = sorted(model.model_fields) if model else []
        parent = ".".join(str(part) for part in loc[:-1]) or "top level"
        return CharforgeError(f"{path}: unknown key {loc[-1]!r} in {parent}; valid keys: "
                              f"{', '.join(valid)}")
    if first["type"] == "missing":
        return CharforgeError(f"{path}: {where} is required")
    message = str(first["msg"]).removeprefix("Value error, ")
    return CharforgeError(f"{path}: {where or 'configuration'}: {message}")


def load_config(path: str | Path) -> RunConfig:
    """Read and check a run configuration; every problem is one line naming the file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CharforgeError(f"{path}: no such configuration file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CharforgeError(f"{path}: cannot read it: {_first_line(exc)}") from None
    except yaml.YAMLError as exc:
        raise CharforgeError(f"{path}: not valid YAML: {_first_line(exc)}") from None
    if not isinstance(raw, dict):
        raise CharforgeError(f"{path}: expected a mapping (key: value) at the top level")
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise config_error(path, exc) from None
    gen = config.generation_stages()
    for stage, entry in config.stages.items():
        if stage not in gen:
            raise CharforgeError(f"{path}: stages.{stage}: not a stage of the recipe "
                                 f"{'+'.join(config.pipelines)}; its stages: {', '.join(gen)}")
        if not isinstance(entry, dict):
            raise CharforgeError(f"{path}: stages.{stage}: expected a mapping of settings")
        try:
            stage_plan(stage, entry)
        except CharforgeError as exc:
            raise CharforgeError(f"{path}: {exc}") from None
    if config.training.dpo and not config.dataset.dpo:
        raise CharforgeError(f"{path}: training.dpo needs dataset.dpo: true (the pairs)")
    return config
