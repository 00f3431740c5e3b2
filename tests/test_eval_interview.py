"""Interviews and the rubric judge as stages: `charforge.evaluate.interview` and
`charforge.evaluate.judges`, against scripted OpenAI-compatible servers (real HTTP) and
the tiny local model with trained adapters."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from charforge.errors import CharforgeError
from charforge.evaluate.api import interview, judge
from charforge.evaluate.questions import item_id
from charforge.evaluate.records import RUBRIC_DIMENSIONS
from charforge.testing import ScriptedOpenAIServer
from charforge.workspace import Workspace

QUESTIONS = [
    {"topic_id": "topic-1", "topic": "past experiences", "question": "Who taught you music?"},
    {"topic_id": "topic-2", "topic": "relationships", "question": "What of your father?"},
    {"topic_id": "topic-4", "topic": "difficult to answer without breaking character",
     "question": "Do you use a smartphone?"},
]


def role_of(request: dict) -> str:
    system = next((m["content"] for m in request["messages"] if m["role"] == "system"), "")
    if "You are interviewing" in system:
        return "interviewer"
    if "judge of role-play" in system or "Evaluation Steps" in request["messages"][0]["content"]:
        return "judge"
    return "agent"


def scripted(request: dict) -> str:
    """Agent: a long answer, except a short one to the father question; interviewer: the
    next question; judge: a reasoned score from the dimension's name."""
    role = role_of(request)
    last = request["messages"][-1]["content"]
    if role == "interviewer":
        number = re.search(r"question (\d+) of", last).group(1)
        return f"Interviewer: And what happened next, in year {number}?"
    if role == "judge":
        if "Reply with one line only" in last:
            return "I cannot decide."  # the retry: still no score
        if "Stability" in last:
            return "The answers wander; nothing to score."
        score = 3 + len(re.findall(r"Ludwig|Bonn|Vienna", last)) % 4
        return f"The answers recall Bonn.\nScore: {score}"
    if "father" in last:
        return "He drank."
    return ("<think>I must answer plainly.</think>Christian Gottlob Neefe taught me in "
            "Bonn, and I played the organ at the court when I was still a boy.")


@pytest.fixture
def questions_file(tmp_path):
    path = tmp_path / "questions.json"
    path.write_text(json.dumps(QUESTIONS), encoding="utf-8")
    return path


def records(ws, kind):
    with ws.store() as store:
        return [r.data for r in store.records("beethoven", kind)]


def test_single_interview_pairs_items_and_is_never_repeated(tmp_path, questions_file):
    from conftest import teacher_workspace

    with ScriptedOpenAIServer(responder=scripted) as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url)
        first = interview(ws, "beethoven", agent="prompted:teacher", questions=questions_file,
                          show_progress=False)
        asked = len(server.chat_requests)
        again = interview(ws, "beethoven", agent="prompted:teacher",
                          questions=questions_file, show_progress=False)
        assert (first.done, again.done, len(server.chat_requests)) == (3, 0, asked)
        other = interview(ws, "beethoven", agent="model:teacher", questions=questions_file,
                          show_progress=False)
        assert other.done == 3
        system = server.chat_requests[0].json["messages"][0]
        assert system["role"] == "system" and "Beethoven" in system["content"]
        assert all(m["role"] != "system" for m in server.chat_requests[-1].json["messages"])
        sampled = server.chat_requests[0].json
        assert sampled["temperature"] == 0.2 and isinstance(sampled["seed"], int)

    done = records(ws, "interview")
    assert len(done) == 6
    by_agent = {}
    for record in done:
        by_agent.setdefault(record["agent"], set()).add(record["item"])
    assert set(by_agent) == {"prompted:teacher", "model:teacher"}
    assert by_agent["prompted:teacher"] == by_agent["model:teacher"] == {
        item_id(q["topic_id"], q["question"]) for q in QUESTIONS}
    neefe = next(r for r in done if "taught" in r["turns"][0]["question"])
    assert neefe["turns"][0]["answer"].startswith("Christian Gottlob Neefe")
    assert neefe["turns"][0]["thinking"] == "I must answer plainly."
    assert neefe["temperature"] == 0.2 and isinstance(neefe["seed"], int)


def test_multi_turn_interviewer_follows_up_and_reasks(tmp_path, questions_file):
    from conftest import teacher_workspace

    with ScriptedOpenAIServer(responder=scripted) as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url)
        summary = interview(ws, "beethoven", agent="prompted:teacher", mode="multi",
                            questions=questions_file, interviewer="teacher", limit=2,
                            show_progress=False)
        prompts = [r.json["messages"][-1]["content"] for r in server.chat_requests
                   if role_of(r.json) == "interviewer"]
    assert summary.done == 2
    done = records(ws, "interview")
    assert {len(r["turns"]) for r in done} == {5}
    father = next(r for r in done if "father" in r["turns"][0]["question"])
    assert father["turns"][1]["question"] == "And what happened next, in year 2?"
    # a vague first answer ("He drank.") earns a follow-up; question 4 of 5 re-asks the first
    assert any("last answer was vague" in p and "question 2 of 5" in p for p in prompts)
    reasks = [p for p in prompts if "question 4 of 5" in p]
    assert len(reasks) == 2 and all("ask again, in other words" in p for p in reasks)
    assert any('"What of your father?"' in p for p in reasks)


def test_rubric_judge_scores_retries_once_and_records_unscored(tmp_path, questions_file):
    from conftest import teacher_workspace

    with ScriptedOpenAIServer(responder=scripted) as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url)
        interview(ws, "beethoven", agent="prompted:teacher", questions=questions_file,
                  show_progress=False)
        before = len(server.chat_requests)
        result = judge(ws, "beethoven", judge="teacher", show_progress=False)
        judge_requests = server.chat_requests[before:]
        again = judge(ws, "beethoven", judge="teacher", show_progress=False)
    assert result.done == 3 * len(RUBRIC_DIMENSIONS) and again.done == 0
    # stability has no score: asked once more, so 3 extra requests in all
    assert len(judge_requests) == 3 * len(RUBRIC_DIMENSIONS) + 3
    judged = records(ws, "judgment")
    unscored = [j for j in judged if j["score"] is None]
    assert {j["dimension"] for j in unscored} == {"stability"} and len(unscored) == 3
    assert all("[unscored:" in j["reasoning"] for j in unscored)
    assert all(1 <= j["score"] <= 7 for j in judged if j["score"] is not None)


def json_judge(request: dict) -> str:
    """A judge that answers the schema it is sent; agents as in `scripted`."""
    if role_of(request) != "judge":
        return scripted(request)
    last = request["messages"][-1]["content"]
    if "Stability" in last:
        return '{"reasoning": "no schema here", "verdict": 2}'  # off the schema: read as text
    return json.dumps({"reasoning": "The answers recall Bonn and Neefe.", "score": 6})


def test_a_judge_that_takes_a_schema_answers_in_json_and_is_never_asked_twice(
        tmp_path, questions_file, tiny_model_dir):
    from conftest import teacher_workspace

    with ScriptedOpenAIServer(responder=json_judge) as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url, json_schema=True)
        interview(ws, "beethoven", agent="prompted:teacher", questions=questions_file,
                  show_progress=False)
        before = len(server.chat_requests)
        judge(ws, "beethoven", judge="teacher", show_progress=False)
        judge_requests = server.chat_requests[before:]
    sent = judge_requests[0].json["response_format"]["json_schema"]["schema"]
    assert sent["properties"]["score"]["enum"] == [1, 2, 3, 4, 5, 6, 7]
    assert "JSON object" in judge_requests[0].json["messages"][-1]["content"]
    # four dimensions read from JSON at once; stability's answer missed the schema, so it
    # was read as text, found no score and was asked once more (as text)
    assert len(judge_requests) == 3 * len(RUBRIC_DIMENSIONS) + 3
    assert "response_format" not in judge_requests[-1].json
    judged = records(ws, "judgment")
    assert {j["score"] for j in judged if j["dimension"] != "stability"} == {6}
    assert all(j["score"] is None for j in judged if j["dimension"] == "stability")

    # A tiny random model as the judge: under the grammar every judgment has a score.
    config = yaml.safe_load(ws.config_path.read_text())
    config["models"]["tiny"] = {"backend": "local", "path": str(tiny_model_dir),
                                "dtype": "float32"}
    ws.config_path.write_text(yaml.safe_dump(config))
    ws = Workspace(ws.root)
    result = judge(ws, "beethoven", judge="tiny", dimensions=["values"],
                   sampling={"max_tokens": 1500}, show_progress=False)
    assert result.done == 3
    tiny = [j for j in records(ws, "judgment") if j["judge"] == "tiny"]
    assert len(tiny) == 3 and all(1 <= j["score"] <= 7 for j in tiny)


def test_character_llm_preset_uses_the_seed_prompts(tmp_path, questions_file):
    from conftest import teacher_workspace

    with ScriptedOpenAIServer(responder=lambda r: "Fine facts.\n5\n5") as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url)
        interview(ws, "beethoven", agent="chatgpt-baseline:teacher", questions=questions_file,
                  show_progress=False)
        agent_system = server.chat_requests[0].json["messages"][0]["content"]
        judge(ws, "beethoven", judge="teacher", preset="character-llm",
              dimensions=["memorization"], show_progress=False)
        judge_prompts = [r.json["messages"][0]["content"] for r in server.chat_requests[3:]]
    assert agent_system.startswith("I want you to act like Ludwig van Beethoven.")
    assert len(judge_prompts) == 3
    assert all("Factual Correctness (1-7)" in p for p in judge_prompts)
    assert any("Man (speaking): Who taught you music?" in p for p in judge_prompts)
    assert {j["score"] for j in records(ws, "judgment")} == {5}


def test_bad_input_is_one_line(tmp_path):
    from conftest import teacher_workspace

    ws = teacher_workspace(tmp_path / "ws", "http://127.0.0.1:9")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"questions": ["a"]}))
    with pytest.raises(CharforgeError, match="expected a JSON list"):
        interview(ws, "beethoven", agent="prompted", questions=wrong)
    wrong.write_text(json.dumps([{"topic": "x", "question": "y"}]))
    with pytest.raises(CharforgeError, match="entry 1, topic_id"):
        interview(ws, "beethoven", agent="prompted", questions=wrong)
    with pytest.raises(CharforgeError, match="unknown agent 'robot'"):
        interview(ws, "beethoven", agent="robot")
    with pytest.raises(CharforgeError, match="no trained run"):
        interview(ws, "beethoven", agent="trained")
    with pytest.raises(CharforgeError, match="no interviews to judge"):
        judge(ws, "beethoven", judge="teacher")


def teacher_questions(request: dict) -> str:
    """Numbered questions on the prompt's topic; the anachronism topic asks of later things."""
    prompt = request["messages"][-1]["content"]
    if "could not answer without stepping out" in prompt:
        return "1. Do you use a smartphone to write your music?\n2. What is Python to you?"
    return ("1. What do you remember of your father's lessons in Bonn?\n"
            "2. Why did you leave Bonn for Vienna?\n"
            "Here are more thoughts.")


def test_questions_written_per_topic_feed_the_interview(tmp_path, monkeypatch):
    from charforge.evaluate.api import questions

    from conftest import teacher_workspace

    with ScriptedOpenAIServer(responder=teacher_questions) as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url)
        (ws.root / "characters" / "beethoven").mkdir(parents=True, exist_ok=True)
        written = questions(ws, "beethoven", teacher="teacher", per_topic=2,
                            topics=["topic-1", "topic-4"], show_progress=False)
        assert written.done == 2 and written.rejected == 0
        again = questions(ws, "beethoven", teacher="teacher", per_topic=2,
                          topics=["topic-1", "topic-4"], show_progress=False)
        assert again.done == 0
        asked = records(ws, "interview_question")
        assert {(q["topic_id"], q["question"]) for q in asked} == {
            ("topic-1", "What do you remember of your father's lessons in Bonn?"),
            ("topic-1", "Why did you leave Bonn for Vienna?"),
            ("topic-4", "Do you use a smartphone to write your music?"),
            ("topic-4", "What is Python to you?")}
        assert all(q["topic"] for q in asked)
        # Beethoven has a shipped question set; without it the written ones are used
        from charforge.evaluate import api

        monkeypatch.setattr(api, "BUNDLED_QUESTIONS", tmp_path / "none")
        result = interview(ws, "beethoven", agent="model:teacher", show_progress=False)
    assert result.done == 4


def test_time_stages_are_asked_recorded_and_compared_apart(tmp_path, questions_file):
    from charforge.evaluate.reporting import evaluation_report

    from conftest import teacher_workspace

    darwin = Path(__file__).resolve().parents[1] / "examples" / "darwin"
    with ScriptedOpenAIServer(responder=scripted) as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url)
        ws.import_character(darwin, name="Charles Darwin")
        labels = [s.label for s in ws.load_character("darwin").stages]
        assert len(labels) == 2
        with pytest.raises(CharforgeError, match="has no stage 'middle'"):
            interview(ws, "darwin", agent="model:teacher", stage="middle")
        for label in labels:
            done = interview(ws, "darwin", agent="model:teacher", stage=label,
                             questions=questions_file, show_progress=False)
            assert done.done == 3
        judge(ws, "darwin", judge="teacher", dimensions=["values"], show_progress=False)
    with ws.store() as store:
        stages = sorted({r.data["stage"] for r in store.records("darwin", "interview")})
    assert stages == sorted(labels)
    report, _ = evaluation_report(ws, tmp_path / "out", characters=["darwin"], resamples=500)
    assert {m.agent for m in report.means} == {f"model:teacher [{label}]" for label in labels}
    [pair] = report.comparisons
    assert pair.pairs == 3  # the same three items, asked in each stage


def test_the_eval_verbs_from_the_command_line(tmp_path, questions_file):
    from conftest import run, teacher_workspace

    with ScriptedOpenAIServer(responder=scripted) as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url)
        asked = run("eval", "interview", "beethoven", "--agent", "model:teacher",
                    "--and-prompted", "--questions", questions_file, cwd=ws.root)
        assert asked.returncode == 0, asked.stderr
        assert "interview (model:teacher): 3 done" in asked.stdout
        assert "interview (prompted): 3 done" in asked.stdout
        judged = run("eval", "judge", "beethoven", "--judge", "teacher", "--dimension",
                     "memorization", cwd=ws.root)
        assert judged.returncode == 0 and "judge: 6 done" in judged.stdout, judged.stderr
    reported = run("eval", "report", "--no-metrics", "-o", tmp_path / "out", cwd=ws.root)
    assert reported.returncode == 0, reported.stderr
    assert "beethoven · memorization · prompted:" in reported.stdout
    assert "the judge teacher is also the model behind" in reported.stderr
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {c["agent_b"] for c in data["comparisons"]} | {c["agent_a"] for c in
                                                         data["comparisons"]} == {
        "model:teacher", "prompted"}
    measured = run("eval", "metrics", "beethoven", cwd=ws.root)  # the judge-free ones
    assert measured.returncode == 0, measured.stderr
    assert "beethoven · prompted · protective_refusal_rate: 0.000 (n=1)" in measured.stdout
