"""PersLLM's judges as stages (`charforge.evaluate.persllm_judges`): the ranking judge in
balanced rotations and the knowledge/attitude accuracy judge, run through the real
stage runner and store against a scripted OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable
from fractions import Fraction

import pytest
from rich.console import Console

from charforge.errors import StageOptionsError
from charforge.evaluate.api import interview
from charforge.evaluate.persllm_judges import (
    AccuracyJudge,
    RankJudge,
    ReferenceFileError,
    load_references,
    ranking_shares,
)
from charforge.evaluate.questions import item_id
from charforge.evaluate.records import Ranking
from charforge.llm.registry import load_chat_model
from charforge.runner import run_stage
from charforge.stages import build_stage, registered_stages
from charforge.testing import ScriptedOpenAIServer

QUESTIONS = [
    {"topic_id": "topic-1", "topic": "past experiences", "question": "Who taught you music?"},
    {"topic_id": "topic-1", "topic": "past experiences", "question": "Where did you grow up?"},
    {"topic_id": "topic-2", "topic": "relationships", "question": "What of your father?"},
    {"topic_id": "topic-3", "topic": "values", "question": "What is music for?"},
]
ONLY_PROMPTED = [{"topic_id": "topic-5", "topic": "travel", "question": "Did you see Paris?"}]
AGENTS = ("prompted:teacher", "model:teacher", "chatgpt-baseline:teacher")
# What each agent says, told apart by the system message it was given.
ANSWERS = {
    "prompted": "I write at dawn and walk the woods by noon.",
    "baseline": "Music is the one thing that never betrayed me, friend.",
    "model": "Christian Gottlob Neefe taught me in Bonn, and I played the court organ.",
}
ANSWER_BLOCK = re.compile(r"--- Answer ([A-Z]) ---\n(.*?)\n\n", re.DOTALL)


def role_of(request: dict) -> str:
    system = next((m["content"] for m in request["messages"] if m["role"] == "system"), "")
    if system.startswith("You compare role-play"):
        return "rank"
    if system.startswith("You check a role-play answer"):
        return "accuracy"
    if system.startswith("I want you to act like"):
        return "baseline"
    return "prompted" if system else "model"


def is_retry(request: dict) -> bool:
    return "Reply with one line only" in request["messages"][-1]["content"]


def shown_labels(request: dict) -> list[tuple[str, str]]:
    """(label, answer) in the order the ranking prompt lists them."""
    return ANSWER_BLOCK.findall(request["messages"][1]["content"])


def responder(judge: Callable[[dict], str]) -> Callable[[dict], str]:
    """Agents answer from ANSWERS; judges' requests go to `judge`."""
    def respond(request: dict) -> str:
        role = role_of(request)
        return judge(request) if role in ("rank", "accuracy") else ANSWERS[role]
    return respond


def interviewed(tmp_path, server):
    """A workspace where the three agents answered the four questions, and the prompted
    agent one more."""
    from conftest import teacher_workspace

    ws = teacher_workspace(tmp_path / "ws", server.base_url)
    for agent in AGENTS:
        interview(ws, "beethoven", agent=agent, questions=_questions(tmp_path, QUESTIONS),
                  show_progress=False)
    interview(ws, "beethoven", agent=AGENTS[0], questions=_questions(tmp_path, ONLY_PROMPTED),
              show_progress=False)
    return ws


def _questions(tmp_path, questions: list[dict]):
    path = tmp_path / f"questions-{len(questions)}.json"
    path.write_text(json.dumps(questions), encoding="utf-8")
    return path


def run_judge(ws, stage_cls, **options):
    """Run a judge stage as the evaluation API runs one: (summary, report lines)."""
    async def go():
        character = ws.load_character("beethoven")
        model = load_chat_model("teacher", config=ws.config)
        async with model:
            with ws.store() as store:
                stage = build_stage(stage_cls, character, store,
                                    options={"judge": model.name, **options},
                                    templates=ws.templates())
                assert stage.nothing_to_do() is None
                summary = await run_stage(store, stage, model,
                                          model_names={"judge": model.name}, retry="failed",
                                          console=Console(stderr=True), show_progress=False)
                return summary, stage.report()
    return asyncio.run(go())


def records(ws, kind):
    with ws.store() as store:
        return [r.data for r in store.records("beethoven", kind)]


def rankings(ws) -> list[Ranking]:
    return [Ranking.model_validate(data) for data in records(ws, "ranking")]


def test_stages_are_registered():
    stages = registered_stages()
    assert stages["judge-rank"] is RankJudge and stages["judge-accuracy"] is AccuracyJudge


def test_a_judge_that_prefers_the_first_answer_favours_no_agent(tmp_path):
    def first_shown(request: dict) -> str:
        labels = [label for label, _ in shown_labels(request)]
        return "All answers are in character.\nRanking: " + " > ".join(labels)

    with ScriptedOpenAIServer(responder=responder(first_shown)) as server:
        ws = interviewed(tmp_path, server)
        before = len(server.chat_requests)
        summary, report = run_judge(ws, RankJudge, agents=AGENTS)
        asked = server.chat_requests[before:]

    assert summary.done == 4 * 3 and len(asked) == 12  # 4 items x 3 rotations, no retry
    prompt = asked[0].json["messages"][1]["content"]
    assert not any(agent in prompt for agent in AGENTS)  # letters only, never names
    assert "Who taught you music?" in prompt or "What is music for?" in prompt
    assert [label for label, _ in shown_labels(asked[0].json)] == ["A", "B", "C"]
    assert any("items skipped, not answered by every agent: 1" in line for line in report)

    ranked = rankings(ws)
    assert len(ranked) == 12 and all(r.ranks is not None for r in ranked)
    for item in {r.item for r in ranked}:  # each agent shown first once per item
        firsts = sorted(r.shown[0] for r in ranked if r.item == item)
        assert firsts == sorted(AGENTS)
    shares = ranking_shares(ranked)
    assert set(shares) == set(AGENTS)
    for figures in shares.values():
        assert figures["first_place_share"] == float(Fraction(1, 3))
        assert figures["pairwise_win_rate"] == 0.5
        assert (figures["rankings"], figures["unreadable"]) == (12, 0)


def test_a_judge_that_recognises_an_answer_ranks_its_agent_first(tmp_path):
    def neefe_first(request: dict) -> str:
        shown = shown_labels(request)
        best = [label for label, text in shown if "Neefe" in text]
        rest = [label for label, _ in shown if label not in best]
        return f"Only one names his teacher.\n1. {best[0]}\n" + "".join(
            f"{rank}. {label}\n" for rank, label in enumerate(rest, start=2))

    with ScriptedOpenAIServer(responder=responder(neefe_first)) as server:
        ws = interviewed(tmp_path, server)
        summary, _ = run_judge(ws, RankJudge, agents=AGENTS)

    ranked = rankings(ws)
    assert summary.done == 12 and len(ranked) == 12
    assert all(r.ranks is not None and r.ranks["model:teacher"] == 1 for r in ranked)
    shares = ranking_shares(ranked)
    assert shares["model:teacher"]["first_place_share"] == 1.0
    assert shares["model:teacher"]["pairwise_win_rate"] == 1.0
    assert shares["prompted:teacher"]["first_place_share"] == 0.0
    from charforge.evaluate.reporting import collect

    _, rows, _, _ = collect(ws, ["beethoven"])  # the report's metrics carry the shares
    figures = {(r.agent, r.metric): r for r in rows}
    assert figures[("model:teacher", "rank_first_place_share")].value == 1.0
    assert figures[("model:teacher", "rank_pairwise_win_rate")].n == 12


def test_an_unreadable_ranking_is_asked_once_more_then_recorded_unranked(tmp_path):
    with ScriptedOpenAIServer(responder=responder(lambda r: "They are all fine.")) as server:
        ws = interviewed(tmp_path, server)
        before = len(server.chat_requests)
        summary, report = run_judge(ws, RankJudge, agents=AGENTS[:2], rounds=4)
        asked = [r.json for r in server.chat_requests[before:]]
        again, _ = run_judge(ws, RankJudge, agents=AGENTS[:2], rounds=4)
        assert len(server.chat_requests) == before + len(asked)

    # 4 items x 4 rotations of two agents; every task asked twice
    assert summary.done == 16 and again.done == 0
    assert len(asked) == 32 and sum(map(is_retry, asked)) == 16
    retry = next(r for r in asked if is_retry(r))["messages"][-1]["content"]
    assert "the labels A, B from best to worst" in retry
    ranked = rankings(ws)
    assert len(ranked) == 16 and all(r.ranks is None for r in ranked)
    assert all("[unranked:" in r.reasoning for r in ranked)
    assert "rankings that could not be read: 16 of 16" in report
    shares = ranking_shares(ranked)
    assert shares["model:teacher"]["unreadable"] == 16
    assert math.isnan(shares["model:teacher"]["first_place_share"])


def test_accuracy_scores_against_references_and_records_unscored(tmp_path):
    knowledge_item = item_id("topic-1", "Who taught you music?")
    attitude_item = item_id("topic-3", "What is music for?")

    def judge(request: dict) -> str:
        if "Compare the facts" in request["messages"][1]["content"]:
            return "Score: 9"  # out of the 0-5 scale, in the retry as well
        return "The stance matches the reference closely.\nScore: 4"

    with ScriptedOpenAIServer(responder=responder(judge)) as server:
        ws = interviewed(tmp_path, server)
        references = _questions(tmp_path, [
            {"item": knowledge_item, "kind": "knowledge",
             "reference": "Neefe taught me the organ and Bach's preludes in Bonn."},
            {"topic_id": "topic-3", "question": "What is music for?", "kind": "attitude",
             "reference": "Music lifts the spirit higher than any philosophy."},
        ])
        before = len(server.chat_requests)
        summary, report = run_judge(ws, AccuracyJudge, references=load_references(references))
        asked = [r.json for r in server.chat_requests[before:]]

    assert summary.done == 6  # three agents x two referenced items
    assert len(asked) == 6 + 3 and sum(map(is_retry, asked)) == 3
    first = asked[0]["messages"][1]["content"]
    assert "The reference answer:" in first and "The answer to check:" in first
    judged = records(ws, "judgment")
    assert {j["item"] for j in judged} == {knowledge_item, attitude_item}
    assert all((j["low"], j["high"]) == (0, 5) for j in judged)
    by_dimension = {d: [j["score"] for j in judged if j["dimension"] == d]
                    for d in ("knowledge", "attitude")}
    assert by_dimension == {"knowledge": [None] * 3, "attitude": [4] * 3}
    assert all("[unscored: out of range: 9]" in j["reasoning"]
               for j in judged if j["score"] is None)
    assert "judgments that could not be scored: 3 of 6" in report


def test_bad_options_and_references_are_one_line(tmp_path):
    with pytest.raises(StageOptionsError, match="agents"):
        RankJudge.parse_options({"judge": "j", "agents": ("a",)})
    with pytest.raises(StageOptionsError, match="multiple of the number of agents"):
        RankJudge.parse_options({"judge": "j", "agents": ("a", "b", "c"), "rounds": 4})
    with pytest.raises(StageOptionsError, match="distinct"):
        RankJudge.parse_options({"judge": "j", "agents": ("a", "a")})
    twice = [{"item": "t/1", "kind": "knowledge", "reference": "x"},
             {"item": "t/1", "kind": "attitude", "reference": "y"}]
    with pytest.raises(StageOptionsError, match="more than one reference"):
        AccuracyJudge.parse_options({"judge": "j", "references": tuple(twice)})
    path = tmp_path / "refs.json"
    path.write_text(json.dumps([{"item": "t/1", "kind": "style", "reference": "x"}]))
    with pytest.raises(ReferenceFileError, match="entry 1, kind"):
        load_references(path)
    path.write_text(json.dumps({"item": "t/1"}))
    with pytest.raises(ReferenceFileError, match="non-empty JSON list"):
        load_references(path)


def test_ranking_shares_ignore_unread_rankings_and_count_them():
    read = Ranking(item="i", judge="j", rotation=0, shown=["a", "b"], ranks={"b": 1, "a": 2})
    unread = Ranking(item="i", judge="j", rotation=1, shown=["b", "a"], ranks=None)
    shares = ranking_shares([read, unread, read])
    assert shares["b"] == {"first_place_share": 1.0, "pairwise_win_rate": 1.0,
                           "rankings": 2.0, "unreadable": 1.0}
    assert shares["a"]["first_place_share"] == 0.0 and shares["a"]["unreadable"] == 1.0
