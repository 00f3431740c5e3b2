"""Task identity covers everything that changes an answer: the endpoint and model id
behind a model's name, an adapter's content, every template a stage renders (included
ones too). A change redoes exactly the work that used it; nothing else; an unchanged
rerun asks nothing; and a store written before any of this keeps working."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from charforge.dataset.export import build_dataset
from charforge.generate import generate
from charforge.llm.registry import load_chat_model
from charforge.runner import task_config, task_specs
from charforge.stages import build_stage
from charforge.status import LEGACY, workspace_status
from charforge.testing import ScriptedOpenAIServer
from charforge.workspace import Workspace

import custom_stage
from conftest import teacher_workspace
from scripted_teacher import answer
from tiny_models import build_tiny_adapter

DATA = Path(__file__).parent / "data"
QUIET = {"show_progress": False}
# (stage, model name): the work this test watches.
WATCHED = [("scenes", "teacher"), ("experiences", "teacher"), ("riddles", "teacher"),
           ("protective", "helper"), ("protective", "tiny")]


def edit_config(ws: Workspace, change) -> Workspace:
    config = yaml.safe_load(ws.config_path.read_text())
    change(config["models"])
    ws.config_path.write_text(yaml.safe_dump(config))
    return Workspace(ws.root)


def planned_ids(ws: Workspace) -> dict[tuple[str, str], set[str]]:
    character = ws.load_character("beethoven")
    found = {}
    with ws.store() as store:
        for stage_name, model_name in WATCHED:
            model = load_chat_model(model_name, config=ws.config)
            stage = build_stage(stage_name, character, store, templates=ws.templates(),
                                options={"count": 2} if stage_name == "protective" else None)
            config = task_config(stage, {stage.roles[0]: model}, {stage.roles[0]: model_name})
            found[(stage_name, model_name)] = {spec.id for spec in task_specs(stage, config)}
    return found


def changed_by(ws: Workspace, before: dict) -> set[tuple[str, str]]:
    after = planned_ids(ws)
    for key in after:
        assert not after[key] or after[key] == before[key] or not after[key] & before[key]
    return {key for key in after if after[key] != before[key]}


def override_prompt(ws: Workspace, name: str, edit) -> None:
    """Put an edited copy of a prompt in the workspace's prompts/ folder (no version bump)."""
    folder = ws.root / "prompts"
    folder.mkdir(exist_ok=True)
    source = next(p for p in (folder / name, custom_stage.PROMPTS / name,
                              Path(ws.templates().folders[-1]) / name) if p.is_file())
    (folder / name).write_text(edit(source.read_text()))


def test_a_change_redoes_exactly_the_work_that_used_it(tmp_path, tiny_model_dir):
    adapter = build_tiny_adapter(tiny_model_dir, tmp_path / "adapter", seed=1)
    with ScriptedOpenAIServer(responder=answer) as a, ScriptedOpenAIServer(responder=answer) as b:
        ws = teacher_workspace(tmp_path / "ws", a.base_url)

        def models(entries):
            entries["helper"] = {**entries["teacher"], "model": "helper-model"}
            entries["tiny"] = {"backend": "local", "path": str(tiny_model_dir),
                               "adapter": str(adapter)}

        ws = edit_config(ws, models)
        generate(ws, "beethoven", "scenes", options={"prompts": 2, "scenes_per_prompt": 2},
                 **QUIET)
        ids = planned_ids(ws)
        assert all(ids.values()) and len(ids[("experiences", "teacher")]) == 4
        every = set(WATCHED)
        teacher = {("scenes", "teacher"), ("experiences", "teacher"), ("riddles", "teacher")}
        ours = {k for k in WATCHED if k[0] != "riddles"}  # stages rendering teacher_system.j2

        steps = [
            ("the alias points at another endpoint", teacher,
             lambda: edit_config(ws, lambda m: m["teacher"].update(base_url=b.base_url))),
            ("the alias names another model id", teacher,
             lambda: edit_config(ws, lambda m: m["teacher"].update(model="scripted-v2"))),
            ("the alias pins a revision", teacher,
             lambda: edit_config(ws, lambda m: m["teacher"].update(revision="2026-12-01"))),
            ("the adapter is retrained under the same name", {("protective", "tiny")},
             lambda: build_tiny_adapter(tiny_model_dir, adapter, seed=2)),
            ("the shared system prompt is edited", ours,
             lambda: override_prompt(ws, "teacher_system.j2", lambda t: t + " Be brief.")),
            ("the repair prompt is edited", ours,
             lambda: override_prompt(ws, "repair_json.j2", lambda t: t + " Thank you.")),
            ("the experience prompt is edited", {("experiences", "teacher")},
             lambda: override_prompt(ws, "experience.j2", lambda t: t + "\nKeep it warm.")),
            ("a template included by another is edited", {("riddles", "teacher")},
             lambda: override_prompt(ws, "riddle_footer.j2", lambda t: "Only the riddle.\n")),
            ("nothing", set(), lambda: None),
        ]
        for what, expected, change in steps:
            before = planned_ids(ws)
            change()
            ws = Workspace(ws.root)
            assert changed_by(ws, before) == expected, what
            assert expected <= every

        # The scenes already made are stale now: kept, listed, asked again only on request.
        rerun = generate(ws, "beethoven", "scenes", options={"prompts": 2, "scenes_per_prompt": 2},
                         **QUIET)
        assert rerun.finished == 0 and rerun.plan.stale == 2
        [scenes] = [row for row in workspace_status(ws) if row.stage == "scenes"]
        assert scenes.stale == 2 and scenes.done == 2
        assert scenes.stale_reasons == ["model 'teacher' changed", "prompts changed"]
        sent = len(b.chat_requests)
        again = generate(ws, "beethoven", "scenes", rerun_stale=True,
                         options={"prompts": 2, "scenes_per_prompt": 2}, **QUIET)
        assert again.done == 2 and len(b.chat_requests) == sent + 2
        [scenes] = [row for row in workspace_status(ws) if row.stage == "scenes"]
        assert (scenes.stale, scenes.done, scenes.superseded) == (0, 2, 2)
        unchanged = generate(ws, "beethoven", "scenes",
                             options={"prompts": 2, "scenes_per_prompt": 2}, **QUIET)
        assert unchanged.finished == 0 and len(b.chat_requests) == sent + 2


def test_a_store_from_before_task_keys_keeps_working(tmp_path):
    """The store and the data written by the previous release (tests/data, made by commit
    e17a0c1 with the scripted teacher): upgraded in place with the same dataset bytes,
    work kept from before never asked again unasked, stale work listed and redone on
    request."""
    import sqlite3

    with ScriptedOpenAIServer(responder=answer) as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url)
        with sqlite3.connect(ws.root / "charforge.db") as conn:
            conn.executescript((DATA / "store-0001.sql").read_text())
        # The upgrade alone changes no byte. That release's scripted dialogues were one set
        # of lines with the names changed, near-duplicates by design: dedup off here.
        build = build_dataset(ws, "beethoven", dedup=False)
        for name in ("sft", "prompted"):
            assert (build.folder / f"{name}.jsonl").read_bytes() == \
                (DATA / f"{name}-0001.jsonl").read_bytes(), name
        rows = {row.stage: row for row in workspace_status(ws)}
        assert {s: (r.stale, r.done) for s, r in rows.items()} == {
            "scenes": (4, 4), "experiences": (12, 11), "protective": (3, 2)}
        assert rows["scenes"].stale_reasons == [LEGACY]

        # That release drew scene windows at random, as the seed does (`windows: random`).
        old_scenes = {"prompts": 4, "scenes_per_prompt": 3, "windows": "random"}
        asked = {}
        for stage, options in (("scenes", old_scenes),
                               ("experiences", {}), ("protective", {"count": 3})):
            summary = generate(ws, "beethoven", stage, options=options, **QUIET)
            asked[stage] = summary.finished
        # Work kept from before is not asked again; the experience rejected and the
        # protective scene failed then had nothing to keep, so they are asked anew.
        assert asked == {"scenes": 0, "experiences": 1, "protective": 1}
        assert len(server.chat_requests) == 2
        assert summary.plan.stale == 2  # protective: the 2 done before
        rows = {row.stage: row for row in workspace_status(ws)}
        assert {s: (r.stale, r.superseded) for s, r in rows.items()} == {
            "scenes": (4, 0), "experiences": (11, 1), "protective": (2, 1)}

        redo = generate(ws, "beethoven", "scenes", rerun_stale=True, options=old_scenes,
                        **QUIET)
        assert redo.done == 4 and len(server.chat_requests) == 6
        url = server.base_url
    rows = {row.stage: row for row in workspace_status(ws)}
    assert (rows["scenes"].stale, rows["scenes"].superseded) == (0, 4)
    with ws.store() as store:
        settings = store.run_settings(redo.run_id)
    assert settings["models"]["teacher"]["identity"]["base_url"] == url
    assert settings["options"] == {**old_scenes, "context_words": 300, "seed": 0}
    assert "api_key" not in json.dumps(settings)


def test_status_groups_by_what_made_the_work(tmp_path):
    with ScriptedOpenAIServer(responder=answer) as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url)
        generate(ws, "beethoven", "protective", options={"count": 2}, **QUIET)
        ws = edit_config(ws, lambda m: m.pop("teacher"))  # the model's name is gone
    [row] = workspace_status(ws)
    assert (row.done, row.stale, row.stale_reasons) == (2, 2, ["model 'teacher' changed"])
    shutil.rmtree(ws.root / "characters")  # status needs no character to report
    assert workspace_status(ws)[0].stale == 2
