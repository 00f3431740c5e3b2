"""Recipes: one named set of settings for every step, so that `character-llm` means
one thing everywhere (generation, dataset, training, serving, evaluation).

A recipe never overrides what a user asks for explicitly: its values are the
defaults laid under the command's own options (and, for training, under a
`--config` file). Steps that have not landed yet (serving, evaluation) read their part
of the recipe when they do; their values are the published ones, kept here so that the
preset is whole.

Character-LLM's scale (its paper and code): each scene prompt asks for 20 scenes,
about 1,600 scenes a character are kept, each experience runs past 1,200 words,
fewer than 100 protective scenes a character suffice; a 7B model is fine-tuned for
10 epochs at a learning rate of 2e-5 with 2,048-token sequences, and served and
judged under its meta prompt.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from charforge.errors import CharforgeError
from charforge.train.settings import TrainSettings


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageRecipe(_Frozen):
    """A generation stage's options and sampling (both as the stage names them)."""

    options: dict[str, Any] = Field(default_factory=dict)
    sampling: dict[str, Any] = Field(default_factory=dict)


class DatasetRecipe(_Frozen):
    meta_prompt: Literal["charforge", "character-llm"] = "charforge"
    test_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)


class ServingRecipe(_Frozen):
    meta_prompt: Literal["charforge", "character-llm"] = "charforge"


class EvaluationRecipe(_Frozen):
    judge_prompts: Literal["charforge", "character-llm"] = "charforge"
    interview_turns: int = Field(default=1, ge=1, description="turns per multi-turn interview")


class Recipe(_Frozen):
    name: str
    description: str
    cost: str = Field(description="what running it takes, in words")
    generation: dict[str, StageRecipe] = Field(default_factory=dict)
    dataset: DatasetRecipe = DatasetRecipe()
    training: TrainSettings = TrainSettings()
    serving: ServingRecipe = ServingRecipe()
    evaluation: EvaluationRecipe = EvaluationRecipe()

    def stage(self, name: str) -> StageRecipe:
        return self.generation.get(name, StageRecipe())


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe for recipe in (
        Recipe(
            name="character-llm",
            description="Character-LLM's published scale and settings: 80 scene prompts of "
                        "20 scenes (1,600 scenes), experiences of 1,200+ words, 100 protective "
                        "scenes; its meta prompt for data, serving and judging; full "
                        "fine-tuning for 10 epochs at 2e-5 on 2,048-token sequences",
            cost="about 1,600 experience requests of ~2,000 output tokens each plus 80 scene "
                 "requests: roughly 3.5M output and 1.5M prompt tokens per character; days "
                 "on the embedded model (~15 tokens/s), so use a real teacher",
            generation={
                "scenes": StageRecipe(options={"prompts": 80, "scenes_per_prompt": 20},
                                      sampling={"max_tokens": 4096}),
                "experiences": StageRecipe(options={"min_words": 1200},
                                           sampling={"max_tokens": 4096}),
                "protective": StageRecipe(options={"count": 100}),
            },
            dataset=DatasetRecipe(meta_prompt="character-llm"),
            # Its training: full fine-tune at 2e-5 (LoRA at 2e-4), cosine, 4% warmup,
            # weight decay 0.1, 2,048 tokens, 64 sequences a step, 10 epochs, the whole
            # scene learned (other speakers too).
            training=TrainSettings(method="full", full_learning_rate=2e-5,
                                   lora_learning_rate=2e-4, scheduler="cosine",
                                   warmup_ratio=0.04, weight_decay=0.1, max_length=2048,
                                   effective_batch=64, epochs=10, loss="output"),
            serving=ServingRecipe(meta_prompt="character-llm"),
            evaluation=EvaluationRecipe(judge_prompts="character-llm", interview_turns=5),
        ),
        Recipe(
            name="persllm",
            description="PersLLM's training: lr 5e-5, 50 warmup steps, weight decay 0.1, "
                        "3,000-token samples, 16 a step; the personified data repeated 5 "
                        "times and mixed with general instruction data (--mix) for one epoch",
            cost="one epoch over 5 copies of the character's data plus the mix: PersLLM "
                 "ran ~3,500 steps of 16 samples per model; use a GPU",
            # PersLLM trained every weight (MiniCPM-2.4B); a LoRA run keeps LoRA's rate.
            training=TrainSettings(method="full", full_learning_rate=5e-5,
                                   lora_learning_rate=2e-4, warmup_steps=50,
                                   weight_decay=0.1, max_length=3000, effective_batch=16,
                                   repeat=5, epochs=1),
        ),
        Recipe(
            name="default",
            description="charforge's defaults: 20 scene prompts of 5 scenes, experiences of "
                        "600+ words, 50 protective scenes; LoRA (2e-4) for 3 epochs on the "
                        "character's own turns",
            cost="about 100 experience requests of ~1,000 output tokens: ~0.15M output tokens "
                 "per character",
        ),
        Recipe(
            name="demo",
            description="a taste on the embedded model: 8 scene prompts of 4 scenes, short "
                        "experiences, 24 protective scenes",
            cost="a few minutes on a laptop CPU with the embedded model",
            # A 135M teacher keeps to the point at a low temperature (0.7 wanders off).
            generation={
                "scenes": StageRecipe(options={"prompts": 8, "scenes_per_prompt": 4},
                                      sampling={"max_tokens": 900, "temperature": 0.4,
                                                "top_p": 0.8}),
                "experiences": StageRecipe(options={"min_words": 150},
                                           sampling={"max_tokens": 800, "temperature": 0.4,
                                                     "top_p": 0.8}),
                "protective": StageRecipe(options={"count": 24},
                                          sampling={"max_tokens": 800, "temperature": 0.4,
                                                    "top_p": 0.8}),
            },
            training=TrainSettings(epochs=1, effective_batch=4, save_steps=10),
        ),
    )
}


def get_recipe(name: str | Recipe | None) -> Recipe:
    """A recipe by name (None: `default`); an unknown name is an error naming them all."""
    if isinstance(name, Recipe):
        return name
    if name is None:
        return RECIPES["default"]
    if name not in RECIPES:
        raise CharforgeError(f"unknown recipe {name!r}; recipes: {', '.join(RECIPES)}")
    return RECIPES[name]
