"""Experience Reconstruction data as a reader would judge it: the content rules, scene
windows that cover the profile, the character-llm recipe's scale, short scene answers
reported, a changed format superseding earlier work, and stages with nothing to do."""

from __future__ import annotations

import json
import random

import pytest

from charforge.character import Character, Passage
from charforge.dataset.export import build_dataset
from charforge.errors import CharforgeError
from charforge.generate import generate
from charforge.generate.scenes import plan_windows, random_windows
from charforge.parse import parse_dialogue_json
from charforge.recipes import RECIPES, get_recipe
from charforge.records import Rejected
from charforge.status import workspace_status
from charforge.testing import ScriptedOpenAIServer

from conftest import run, teacher_workspace
from scripted_teacher import answer

QUIET = {"show_progress": False}
LINE = "You will study, Karl, or you will answer to me for it."


def dialogue(*turns: tuple[str, str, str], background: str = "Vienna, a cold room, 1816."):
    return json.dumps({"background": background, "turns": [
        {"speaker": s, "action": a, "content": c} for s, a, c in turns]})


def strict(text: str):
    return parse_dialogue_json(text, main_character="Beethoven", min_turns=3, min_speakers=2,
                               min_median_words=8, main_speaks=True)


# -- the content rules -------------------------------------------------------------------
def test_a_good_dialogue_passes_the_rules():
    good = dialogue(("Karl", "speaking", "Uncle, I have studied all night and I am tired."),
                    ("Beethoven", "thinking", "He lies to me as his mother lied to me before."),
                    ("Beethoven", "speaking", LINE))
    assert len(strict(good).turns) == 3


@pytest.mark.parametrize(("text", "reason", "detail"), [
    (dialogue(("Beethoven", "speaking", LINE), ("Beethoven", "thinking", LINE + " Again."),
              ("Beethoven", "speaking", "And once more I say it to the empty room.")),
     "one_speaker", "nobody answers"),
    (dialogue(("Beethoven", "thinking", LINE), ("Karl", "speaking", LINE + " Yes."),
              ("Anna", "speaking", "How much does it cost, and who will pay for the room?")),
     "invalid", "only thinks and never speaks"),
    (dialogue(("Karl", "speaking", "Yes, uncle."), ("Beethoven", "speaking", "Go away now."),
              ("Karl", "speaking", "I will go.")), "too_short", "median turn of 3 words"),
    (dialogue(("Karl", "speaking", LINE), ("Beethoven", "speaking", LINE + " Now.")),
     "too_short", "fewer than 3"),
    (dialogue(("Karl", "speaking", "Aristotle"), ("Beethoven", "speaking", "Aphrodite."),
              ("Karl", "speaking", "Karl Holz"), ("Beethoven", "speaking", LINE)),
     "junk", "turns are junk"),
    (dialogue(*[("Karl" if i % 2 else "Beethoven", "speaking",
                 f"It was legal and he decided to decide the legal matter {i}.")
                for i in range(6)]), "junk", "repeats itself"),
])
def test_what_a_reader_would_reject_is_rejected(text, reason, detail):
    with pytest.raises(Rejected) as info:
        strict(text)
    assert info.value.reason == reason and detail in info.value.detail


def test_an_answer_copying_the_prompts_example_is_rejected(tmp_path):
    copied = dialogue(
        ("Karl", "speaking", "Master, the merchant comes today, so I finished the cello "
                             "before the light was gone."),
        ("Beethoven", "thinking", "The varnish is too thick on the left side, and she knows."),
        ("Beethoven", "speaking", LINE))

    def copier(request):
        prompt = request["messages"][-1]["content"]
        return copied if "screenplay" in prompt else answer(request)

    with ScriptedOpenAIServer(responder=copier) as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url, json_schema=True)
        generate(ws, "beethoven", "scenes", options={"prompts": 1, "scenes_per_prompt": 1},
                 **QUIET)
        result = generate(ws, "beethoven", "experiences", **QUIET)
    assert result.rejection_reasons == {"copied": 1}
    with ws.store() as store:
        [(_, _, detail)] = store.rejections("beethoven", "experiences")
    assert "the merchant comes today so i finished" in detail


# -- scene windows -------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_windows_show_every_paragraph_before_any_twice(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(5, 400) for _ in range(rng.randint(1, 60))]
    windows = plan_windows(lengths, 3 * len(lengths), 300, seed)
    shown: list[int] = []
    for first, last in windows:
        shown.extend(range(first, last + 1))
        assert sum(lengths[first + 1 : last + 1]) + lengths[first] <= max(300, lengths[first])
    cycle = shown[: len(lengths)]
    assert sorted(cycle) == list(range(len(lengths)))  # once each, then again


def test_twenty_prompts_cover_a_fifty_paragraph_profile_and_stats_say_so(tmp_path):
    """The seed's random draw covered 26 of Socrates' 50 paragraphs with 20 prompts."""
    from charforge.demo import demo_file
    from charforge.importers import load_character_file

    profile = load_character_file(demo_file("wiki_Beethoven.txt"))[0].profile
    paragraphs = [f"In {1770 + i}: " + " ".join(profile[i].split()[:60]) for i in range(50)]
    seeds_way = {i for first in random_windows([62] * 50, 20, 0) for i in range(first, first + 4)}
    assert len(seeds_way & set(range(50))) < 50  # the random draw leaves paragraphs unseen
    with ScriptedOpenAIServer(responder=answer) as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url)
        ws.save_character(Character(name="Socrates", short_name="Socrates",
                                    profile=paragraphs))
        result = generate(ws, "socrates", "scenes", options={"prompts": 20,
                                                             "scenes_per_prompt": 1}, **QUIET)
        build = ws.store()
        windows = [task for task in build.records("socrates", "scene")]
        build.close()
    assert result.done == 20 and "profile coverage: 50 of 50 paragraphs" in result.notes[0]
    firsts = [record.inputs["paragraph"] for record in windows]
    assert len(set(firsts)) == len(firsts)
    with ws.store() as store:
        from charforge.generate.scenes import scene_yield

        got = scene_yield(store, "socrates", 50).as_dict()
    assert (got["paragraphs_covered"], got["coverage"], got["short_answers"]) == (50, 1.0, 0)


# -- the character-llm recipe --------------------------------------------------------------
def test_the_character_llm_recipe_plans_the_seeds_scale(tmp_path):
    recipe = get_recipe("character-llm")
    assert recipe.stage("scenes").options == {"prompts": 80, "scenes_per_prompt": 20}
    assert recipe.stage("experiences").options["min_words"] >= 1200
    assert recipe.dataset.meta_prompt == recipe.serving.meta_prompt == "character-llm"
    assert recipe.training.epochs == 10 and recipe.training.learning_rate == 2e-5
    assert recipe.training.method == "full" and recipe.training.effective_batch == 64
    with ScriptedOpenAIServer(responder=answer) as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url)
        plan = generate(ws, "beethoven", "scenes", recipe="character-llm", dry_run=True,
                        **QUIET)
        assert plan.tasks == 80 and "Imagine 20 different scenes" in \
            plan.first_messages[-1].content
        mine = generate(ws, "beethoven", "scenes", recipe="character-llm", dry_run=True,
                        options={"prompts": 3}, **QUIET)  # what is given wins
        assert mine.tasks == 3
        generate(ws, "beethoven", "scenes", options={"prompts": 1, "scenes_per_prompt": 2},
                 **QUIET)
        exp = generate(ws, "beethoven", "experiences", recipe="character-llm", dry_run=True,
                       **QUIET)
        assert "At least 1200 words" in exp.first_messages[-1].content
    assert set(RECIPES) >= {"character-llm", "default", "demo"}
    with pytest.raises(CharforgeError, match="unknown recipe 'seed'; recipes: character-llm"):
        get_recipe("seed")


def test_recipes_from_the_cli(tmp_path):
    listing = run("recipes", cwd=tmp_path)
    assert listing.returncode == 0 and "character-llm:" in listing.stdout
    assert "cost:" in listing.stdout
    one = run("recipes", "character-llm", cwd=tmp_path)
    assert json.loads(one.stdout)["generation"]["scenes"]["options"]["prompts"] == 80


# -- short scene answers ------------------------------------------------------------------
def test_a_scene_answer_with_fewer_scenes_than_asked_is_counted(tmp_path):
    def short(request):
        text = answer(request)
        if "Imagine" in request["messages"][-1]["content"]:
            blocks = text.split("\n\n")
            return "\n\n".join(blocks[:2])  # 2 of the 3 asked
        return text

    with ScriptedOpenAIServer(responder=short) as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url)
        result = generate(ws, "beethoven", "scenes",
                          options={"prompts": 2, "scenes_per_prompt": 3}, **QUIET)
        assert result.done == 2
        assert "2 of 2 answers held fewer scenes than asked" in result.notes
        assert "4 scenes kept of 6 asked" in result.notes[0]
        generate(ws, "beethoven", "experiences", **QUIET)
        stats = build_dataset(ws, "beethoven").stats
    assert stats.scenes["short_answers"] == 2 and stats.scenes["scenes_asked"] == 6
    assert stats.acceptance["scenes"] == {"accepted": 2, "tries": 2}


# -- a changed setting supersedes earlier work ------------------------------------------------
def test_a_new_format_supersedes_the_earlier_rejections(tmp_path):
    def junk_in_text(request):
        return "nonsense" if request.get("response_format") is None else answer(request)

    with ScriptedOpenAIServer(responder=junk_in_text) as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url, json_schema=True)
        first = generate(ws, "beethoven", "protective", options={"count": 2},
                         output_format="text", **QUIET)
        assert first.rejected == 2
        again = generate(ws, "beethoven", "protective", options={"count": 2},
                         output_format="json", **QUIET)
        assert again.done == 2  # asked again without --rerun-stale: nothing was kept
        [row] = workspace_status(ws)
    assert (row.done, row.rejected, row.superseded, row.stale) == (2, 0, 2, 0)
    with ws.store() as store:
        assert store.rejection_counts("beethoven", "protective") == {}
        assert store.acceptance("beethoven", "protective") == (2, 4)  # history: 2 of 4 tries


# -- nothing to do ---------------------------------------------------------------------------
def test_a_persllm_character_draws_scenes_from_its_knowledge(tmp_path):
    knowledge = [Passage(text=f"Fact {i}: the character built a loom in the year {1800 + i}.")
                 for i in range(3)]
    with ScriptedOpenAIServer(responder=answer) as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url)
        ws.save_character(Character(name="Ada Lovelace", short_name="Ada",
                                    knowledge=knowledge))
        plan = generate(ws, "ada", "scenes", options={"prompts": 3}, dry_run=True, **QUIET)
    assert plan.tasks == 3 and "built a loom" in plan.first_messages[-1].content


def test_stages_with_nothing_to_do_say_why_and_fail(tmp_path):
    with ScriptedOpenAIServer(responder=answer) as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url)
        ws.save_character(Character(name="Nobody Known", short_name="Nobody"))
        for stage in ("scenes", "protective"):
            result = run("generate", stage, "nobody", cwd=ws.root)
            assert result.returncode == 2
            assert result.stderr.count("\n") == 1, result.stderr
            assert result.stderr.startswith("error: nothing to do: Nobody has no profile "
                                            "paragraphs or knowledge passages")
        early = run("generate", "experiences", "beethoven", cwd=ws.root)
    assert early.returncode == 2
    assert "no accepted scenes yet; run charforge generate scenes beethoven first" in \
        early.stderr
    assert "Traceback" not in early.stderr
