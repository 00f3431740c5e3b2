"""Scenes: profile passages -> short outlines of moments in the character's life.

Like the seed, each prompt shows the teacher a window of the profile (a paragraph
and those after it, up to a word budget) and asks for N scenes. Unlike the seed's
random draw (20 random windows covered 26 of Socrates' 50 paragraphs), windows are
planned so that every paragraph is shown once before any is shown again: a cycle
visits the uncovered paragraphs in a seeded random order, each window covering its
start and the paragraphs that fit after it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from charforge import parse
from charforge.character import paragraphs_within
from charforge.generate.base import MIN_KNOWN_SHARE, ExampleStage, teacher_sampling
from charforge.parse.quality import WORD, MainNames, known_share
from charforge.parse.schemas import ScenesAnswer
from charforge.records import Rejected
from charforge.stages import PlannedTask, RecordReader, Records, StageOptions, register_stage
from charforge.tasks import TaskRow


class SceneOptions(StageOptions):
    prompts: int = Field(default=20, ge=1, le=100_000, description="prompts to send")
    scenes_per_prompt: int = Field(default=5, ge=1, le=50, description="scenes asked per prompt")
    context_words: int = Field(default=300, ge=20, le=5_000,
                               description="profile words per prompt")
    seed: int = Field(default=0, description="the order in which paragraphs are visited")
    windows: Literal["cover", "random"] = Field(
        default="cover", description="cover: every paragraph once before any repeats; "
        "random: the seed's draw, weighted by length")


def plan_windows(lengths: list[int], prompts: int, context_words: int,
                 seed: int) -> list[tuple[int, int]]:
    """`prompts` windows (first, last paragraph) over paragraphs of `lengths` words. A
    cycle visits the paragraphs not yet shown in a seeded random order; a window runs on
    from its start while the next paragraph is unshown and fits, so no paragraph is
    shown twice before every one has been shown once."""
    rng = random.Random(seed)
    windows: list[tuple[int, int]] = []
    shown: set[int] = set()
    order: list[int] = []
    while len(windows) < prompts and lengths:
        if not order:
            shown.clear()
            order = list(range(len(lengths)))
            rng.shuffle(order)
        start = order[0]
        used, last = lengths[start], start
        while (last + 1 < len(lengths) and last + 1 not in shown
               and used + lengths[last + 1] <= context_words):
            last += 1
            used += lengths[last]
        windows.append((start, last))
        shown.update(range(start, last + 1))
        order = [index for index in order if index not in shown]
    return windows


def random_windows(lengths: list[int], prompts: int, seed: int) -> list[int]:
    """The seed's way: each prompt starts at a paragraph drawn in proportion to its
    length (so some are never shown)."""
    rng = random.Random(seed)
    weights = [max(1, n) for n in lengths]
    return [rng.choices(range(len(lengths)), weights=weights)[0] for _ in range(prompts)]


@register_stage
class SceneStage(ExampleStage):
    name = "scenes"
    description = "profile -> scene outlines"
    user_template = "scenes"
    example_template = "example_scene"
    Output = ScenesAnswer
    Options = SceneOptions
    sampling = teacher_sampling(1024)

    def plan(self) -> Iterator[PlannedTask]:
        options: SceneOptions = self.options
        paragraphs = self.character.profile_or_knowledge()
        lengths = [len(p.split()) for p in paragraphs]
        if not paragraphs:
            return
        budget = options.context_words
        if options.windows == "random":
            windows = [(first, paragraphs_within(paragraphs, first, budget))
                       for first in random_windows(lengths, options.prompts, options.seed)]
        else:  # a paragraph longer than the budget is cut at a word boundary
            windows = [(first, paragraphs[first : last + 1] if last > first
                        else paragraphs_within(paragraphs, first, budget))
                       for first, last in plan_windows(lengths, options.prompts, budget,
                                                       options.seed)]
        for sample, (first, shown) in enumerate(windows):
            yield PlannedTask({
                "context": "\n\n".join(shown),
                "paragraph": first,
                "sample": sample,
                "n_scenes": options.scenes_per_prompt,
            })

    def nothing_to_do(self) -> str | None:
        if self.character.profile_or_knowledge():
            return None
        return (f"{self.character.short_name} has no profile paragraphs or knowledge passages "
                "to draw scenes from; import a profile (charforge character import)")

    def report(self) -> list[str]:
        paragraphs = len(self.character.profile_or_knowledge())
        got = scene_yield(self.context.reader, self.character.slug, paragraphs)
        lines = [f"profile coverage: {len(got.covered)} of {paragraphs} paragraphs shown in "
                 f"accepted prompts; {got.kept} scenes kept of {got.asked} asked"]
        if got.short_answers:
            lines.append(f"{got.short_answers} of {got.answers} answers held fewer scenes "
                         "than asked")
        return lines

    def usable_scene(self, scene: Any, names: MainNames) -> bool:
        text = f"{scene.location} {scene.background}"
        if not any(names.is_main(re.split("['’]", word)[0]) for word in WORD.findall(text)):
            return False
        known = self.known_words
        return known is None or all(known_share(field, known) >= MIN_KNOWN_SHARE
                                    for field in (scene.location, scene.background))

    def decoding_hints(self, inputs: Mapping[str, Any]) -> dict[str, Any] | None:
        # Each background names the character early (a scene that does not is
        # rejected); words bounded so that n scenes close well before max_tokens.
        n = int(inputs["n_scenes"])
        return {"words": {"type": [1, 2], "location": [2, 12], "background": [12, 60]},
                "items": {"scenes": [n, n]},
                "mentions": {"background": str(inputs["short_name"])}}

    def parse_answer(self, task: TaskRow, text: str) -> Records:
        read = parse.parse_scenes_json if task.mode == "json" else parse.parse_scenes_text
        scenes = read(text)
        self.check_copy(task, "\n".join(f"{s.location}\n{s.background}" for s in scenes))
        # A scene from the character's life names the character (a small teacher drifts to
        # invented people), and its location and background are in the profile's language.
        names = MainNames(task.inputs["short_name"], [task.inputs["name"]])
        kept = [scene for scene in scenes if self.usable_scene(scene, names)]
        asked = int(task.inputs.get("n_scenes", len(scenes)))
        if not kept:
            raise Rejected("junk", f"none of the {len(scenes)} scenes names "
                           f"{task.inputs['short_name']} in the profile's language")
        if len(kept) * 2 < asked:
            raise Rejected("too_short", f"{len(kept)} usable scenes of {asked} asked: the "
                           "answer went off the rails")
        return [("scene", scene.model_dump()) for scene in kept]


@dataclass
class SceneYield:
    """What the scene prompts gave: scenes asked and kept, answers that held fewer
    scenes than asked, and which profile paragraphs the accepted answers covered."""

    paragraphs: int
    answers: int = 0
    asked: int = 0
    kept: int = 0
    short_answers: int = 0
    covered: set[int] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        share = len(self.covered) / self.paragraphs if self.paragraphs else 0.0
        return {"answers": self.answers, "scenes_asked": self.asked, "scenes_kept": self.kept,
                "short_answers": self.short_answers, "paragraphs": self.paragraphs,
                "paragraphs_covered": len(self.covered), "coverage": round(share, 4)}


def scene_yield(reader: RecordReader, character: str, paragraphs: int) -> SceneYield:
    """Count, from the stored scene records, what the accepted answers gave."""
    per_task: dict[str, tuple[dict[str, Any], int]] = {}
    for record in reader.records(character, "scene"):
        inputs, count = per_task.get(record.task_id, (record.inputs, 0))
        per_task[record.task_id] = (inputs, count + 1)
    result = SceneYield(paragraphs=paragraphs, answers=len(per_task))
    for inputs, count in per_task.values():
        asked = int(inputs.get("n_scenes", count))
        result.asked += asked
        result.kept += count
        result.short_answers += count < asked
        first = int(inputs.get("paragraph", 0))
        shown = str(inputs.get("context", "")).count("\n\n") + 1  # paragraphs in the window
        result.covered.update(range(first, min(first + shown, paragraphs)))
    return result
