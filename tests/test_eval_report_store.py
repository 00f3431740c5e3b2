"""The evaluation report from the store: a trained agent and its prompted base (the tiny
local model) interviewed on the same questions, judged by a scripted judge (real HTTP),
reported with the judge-free metrics (perplexity of the test dialogues included)."""

from __future__ import annotations

import json

import pytest
import yaml

from charforge.evaluate.api import interview, judge
from charforge.evaluate.reporting import evaluation_report, workspace_metrics
from charforge.testing import ScriptedOpenAIServer
from charforge.workspace import Workspace

from serve_fixtures import served_workspace

QUESTIONS = [{"topic_id": "topic-1", "topic": "past", "question": f"Question {n} of Bonn?"}
             for n in range(4)] + [
    {"topic_id": "topic-4", "topic": "difficult to answer without breaking character",
     "question": "Do you use a smartphone?"}]


def judged(request: dict) -> str:
    text = request["messages"][-1]["content"]
    return f"Reasoned.\nScore: {2 + len(text) % 5}"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("report")
    ws = served_workspace(root / "ws", tiny_model_dir)
    questions = root / "questions.json"
    questions.write_text(json.dumps(QUESTIONS))
    sft = ws.datasets_dir / "beethoven" / "sft.jsonl"  # two rows held out as the test split
    rows = [json.loads(line) for line in sft.read_text().splitlines()]
    sft.write_text("".join(json.dumps({**row, "split": "test"}) + "\n" for row in rows))
    greedy = {"temperature": 0.0, "max_tokens": 6}
    for agent in ("trained", "prompted"):
        result = interview(ws, "beethoven", agent=agent, questions=questions,
                           sampling=greedy, show_progress=False)
        assert result.done == len(QUESTIONS)
    with ScriptedOpenAIServer(responder=judged) as server:
        config = yaml.safe_load(ws.config_path.read_text())
        config["models"]["judge"] = {"backend": "openai", "model": "scripted-judge",
                                     "base_url": server.base_url, "api_key_env": None}
        ws.config_path.write_text(yaml.safe_dump(config))
        ws = Workspace(ws.root)
        result = judge(ws, "beethoven", judge="judge", dimensions=["memorization", "values"],
                       show_progress=False)
        assert result.done == 2 * 2 * len(QUESTIONS)
    report, files = evaluation_report(ws, root / "out", characters=["beethoven"],
                                      metrics=workspace_metrics, resamples=2000)
    return ws, report, files


def test_trained_and_prompted_compared_on_the_same_items(evaluated):
    ws, report, files = evaluated
    with ws.store() as store:
        stored = [r.data for r in store.records("beethoven", "judgment")]
    assert {m.agent for m in report.means} == {"trained", "prompted"}
    for mean in report.means:
        scores = [j["score"] for j in stored
                  if (j["agent"], j["dimension"]) == (mean.agent, mean.dimension)]
        assert mean.n == len(QUESTIONS)
        assert mean.mean == pytest.approx(round(sum(scores) / len(scores), 2))
    pairs = [c for c in report.comparisons if c.character == "beethoven"]
    assert len(pairs) == 2 and all(c.pairs == len(QUESTIONS) for c in pairs)
    data = json.loads(files["report.json"].read_text())
    assert data["means"][0]["n"] == len(QUESTIONS)
    assert "beethoven: 10 interviews (prompted, trained)" in data["notes"]


def test_judge_free_metrics_in_the_report(evaluated):
    _, report, files = evaluated
    metrics = {(m.agent, m.metric): m for m in report.metrics}
    for agent in ("trained", "prompted"):
        assert metrics[(agent, "profile_similarity")].n == len(QUESTIONS)
        assert metrics[(agent, "protective_refusal_rate")].n == 1
        perplexity = metrics[(agent, "perplexity")]
        assert perplexity.n == 2 and perplexity.value > 1
        assert "in-distribution fit" in perplexity.note
    assert metrics[("trained", "perplexity")].value != metrics[("prompted", "perplexity")].value
    markdown = files["report.md"].read_text()
    assert "| perplexity |" in markdown and "profile\\_similarity" in markdown


def sampled_judge(request: dict) -> str:
    """Scores that vary with the seed, as a judge sampled above temperature 0 does."""
    if "Write them as a numbered list" in request["messages"][-1]["content"]:
        return "1. Who taught you in Bonn?\n2. Why Vienna?"
    return f"Reasoned.\nScore: {1 + request['seed'] % 7}"


def test_warnings_and_agreement_of_a_sampled_judge(tmp_path):
    from charforge.errors import StageOptionsError
    from charforge.evaluate.api import questions

    from conftest import teacher_workspace

    with ScriptedOpenAIServer(responder=sampled_judge) as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url)
        questions(ws, "beethoven", teacher="teacher", per_topic=2, topics=["topic-1"],
                  show_progress=False)
        asked = tmp_path / "q.json"
        asked.write_text(json.dumps(QUESTIONS[:3]))
        interview(ws, "beethoven", agent="prompted:teacher", questions=asked,
                  show_progress=False)
        with pytest.raises(StageOptionsError, match="temperature 0 are one answer repeated"):
            judge(ws, "beethoven", judge="teacher", samples=3, show_progress=False)
        result = judge(ws, "beethoven", judge="teacher", samples=3, dimensions=["values"],
                       sampling={"temperature": 0.7}, show_progress=False)
        assert result.done == 3 * 3
    report, files = evaluation_report(ws, tmp_path / "out", resamples=2000)
    assert any("the judge teacher is also the model behind prompted:teacher" in w
               for w in report.warnings)
    assert any("the judge teacher is also this character's teacher" in w
               for w in report.warnings)
    assert report.agreement_meaningful
    [values] = [a for a in report.agreement if a.dimension == "values"]
    assert values.units == 3 and values.ratings == 9
    assert "Krippendorff" in files["report.md"].read_text()
