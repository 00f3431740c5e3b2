"""The Character-LLM interview outputs read as records: the released folder in full
(counts checked against the files by hand), items that pair across the four models and
with the seed's question sets, thoughts kept apart from answers, the interviewer's words
kept out of an answer, Hermonie read as Hermione, and a damaged copy whose three bad
files are reported while the rest still reads."""

from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from charforge.errors import CharforgeError
from charforge.evaluate.characterllm import (
    ImportReport,
    canonical_name,
    match_character,
    read_results,
)
from charforge.evaluate.questions import item_id, load_questions
from charforge.evaluate.records import InterviewRecord

DATA = Path(__file__).resolve().parents[2] / "shared/data/character-llm"
GEN = DATA / "gen_results"
QUESTIONS = DATA / "seed_data/questions"
MODELS = ("alpaca-7b", "chatgpt", "sft", "vicuna-7b")
# Entries per single-turn file (the same for all four models), counted in the files and
# equal to the length of each generated_agent_interview_<Name>.json.
SINGLE = {"Beethoven": 82, "Caesar": 92, "Cleopatra": 98, "Hermione": 123, "Martin": 97,
          "Newton": 95, "Voldemort": 82}
MULTI = 50  # lines per multi-turn file, every character and model, five turns each
# Character turns where ChatGPT went on as the interviewer ("Man"): Beethoven 18,
# Cleopatra 5, Hermione 3, Martin 16.
FOREIGN_PARTS = 42

pytestmark = pytest.mark.skipif(not GEN.is_dir(), reason="the shared Character-LLM data "
                                "is absent")


@pytest.fixture(scope="module")
def released() -> ImportReport:
    return read_results(GEN)


def from_file(report: ImportReport, source: str) -> list[InterviewRecord]:
    """A file's records, in the file's order."""
    return [record for _, record in report.interviews if record.source == source]


def test_reads_every_released_interview(released: ImportReport) -> None:
    assert released.problems == []
    counts = Counter((name, record.mode, record.agent) for name, record in released.interviews)
    expected = {(name, "single", model): n for name, n in SINGLE.items() for model in MODELS}
    expected |= {(name, "multi", model): MULTI for name in SINGLE for model in MODELS}
    assert dict(counts) == expected
    assert len(released.interviews) == 4 * sum(SINGLE.values()) + 4 * 7 * MULTI == 4076
    for name, record in released.interviews:
        assert record.model == record.agent
        assert record.topic and record.topic_id.startswith("topic-")
        assert len(record.turns) == (1 if record.mode == "single" else 5)
        assert all(turn.question for turn in record.turns)
        parts = record.source.split("/")
        assert parts[0] == ("interview_single" if record.mode == "single" else "interview_turns")
        assert (GEN / record.source).is_file()
        assert canonical_name(parts[1]) == name
    assert released.foreign_parts == FOREIGN_PARTS


def test_order_is_fixed(released: ImportReport) -> None:
    keys = [(name, record.mode != "single", record.agent, record.source)
            for name, record in released.interviews]
    assert keys == sorted(keys)
    again = read_results(GEN)
    assert again.interviews == released.interviews
    # within a file, the file's order
    first = from_file(released, "interview_single/Beethoven_sft_result/2023-00-00-00-00-00.json")
    entries = json.loads((GEN / first[0].source).read_text(encoding="utf-8"))
    assert [record.turns[0].question for record in first] == [
        entry["question"].strip() for entry in entries]


def test_items_pair_across_models_and_with_the_question_sets(released: ImportReport) -> None:
    items: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for name, record in released.interviews:
        items[(name, record.mode, record.agent)].append(record.item)
    for name in SINGLE:
        for mode, file in (("single", "generated_agent_interview_{}.json"),
                           ("multi", "generated_agent_interview_for_multiturn_{}.json")):
            asked = {question.item for question in load_questions(QUESTIONS / file.format(name))}
            for model in MODELS:
                found = items[(name, mode, model)]
                assert len(set(found)) == len(found), (name, mode, model)
                # the same ids for every model, and those charforge gives the question set
                assert set(found) == asked, (name, mode, model)


def test_single_items_are_the_question_ids(released: ImportReport) -> None:
    record = from_file(released, "interview_single/Newton_chatgpt_result/"
                       "2023-00-00-00-00-00.json")[0]
    question = record.turns[0].question
    assert record.item == item_id(record.topic_id, question)
    seed = json.loads((QUESTIONS / "generated_agent_interview_Newton.json")
                      .read_text(encoding="utf-8"))[0]
    assert (seed["question"], seed["topic_id"], seed["topic"]) == (
        question, record.topic_id, record.topic)


def test_a_thought_goes_to_thinking(released: ImportReport) -> None:
    # Line 12 of Caesar's sft interviews: the second character turn is a thought only.
    record = from_file(released, "interview_turns/multiturn_Caesar_sft_result/"
                       "2023-00-00-00-00-00.jsonl")[11]
    turn = record.turns[1]
    assert turn.thinking.startswith("He is testing me. I must be careful with my words.")
    assert turn.answer == ""
    assert record.turns[0].answer and not record.turns[0].thinking
    thoughts = [turn for _, r in released.interviews for turn in r.turns if turn.thinking]
    assert len(thoughts) == 5
    assert all("(thinking)" not in turn.answer for _, r in released.interviews
               for turn in r.turns)


def test_multi_turns_pair_questions_and_answers(released: ImportReport) -> None:
    source = "interview_turns/multiturn_Newton_chatgpt_result/2023-00-00-00-00-00.jsonl"
    lines = (GEN / source).read_text(encoding="utf-8").splitlines()
    raw = json.loads(lines[2])["content"]
    record = from_file(released, source)[2]
    assert [turn.question for turn in record.turns] == [
        t["turn_content"][0]["content"].strip() for t in raw if t["turn_role"] == "interviewer"]
    # "((speaking)", ChatGPT's typo, is speech
    assert raw[7]["turn_content"][0]["action"] == "((speaking)"
    assert record.turns[3].answer == raw[7]["turn_content"][0]["content"].strip()
    assert record.item == item_id(record.topic_id, json.loads(lines[2])["topic"])


def test_the_interviewer_inside_an_answer_is_left_out(released: ImportReport) -> None:
    source = "interview_turns/multiturn_Beethoven_chatgpt_result/2023-00-00-00-00-00.jsonl"
    said = json.loads((GEN / source).read_text(encoding="utf-8").splitlines()[3])
    parts = said["content"][7]["turn_content"]
    assert [part["role"] for part in parts] == ["Beethoven", "Man"]
    turn = from_file(released, source)[3].turns[3]
    assert turn.answer == parts[0]["content"].strip()
    assert "honor to converse with you" not in turn.answer


def test_hermonie_is_hermione(released: ImportReport) -> None:
    assert canonical_name("Hermonie") == "Hermione"
    assert canonical_name("Hermonie_sft_result") == "Hermione"
    assert canonical_name("multiturn_Hermione_sft_result") == "Hermione"
    assert canonical_name("Beethoven") == "Beethoven"
    hermione = [r for name, r in released.interviews if name == "Hermione"]
    assert {r.source.split("/")[1].split("_")[0] for r in hermione if r.mode == "single"} == {
        "Hermonie"}
    assert all(r.topic for r in hermione)  # her question files are spelled right
    characters = {c.name: c for c in released.characters()}
    assert sorted(characters) == sorted(SINGLE)
    assert characters["Hermione"].spellings == ("Hermonie", "Hermione")
    assert len(characters["Hermione"].records) == 4 * (123 + MULTI)
    assert characters["Beethoven"].spellings == ("Beethoven",)


def test_any_of_the_folders_around_the_results(released: ImportReport) -> None:
    assert read_results(DATA).interviews == released.interviews
    single = read_results(GEN / "interview_single")
    assert {r.mode for _, r in single.interviews} == {"single"}
    assert len(single.interviews) == 4 * sum(SINGLE.values())
    assert single.interviews[0][1].source.startswith("interview_single/")
    turns = read_results(GEN / "interview_turns")
    assert len(turns.interviews) == 4 * 7 * MULTI and turns.problems == []


def test_missing_or_wrong_folder_is_one_clear_error(tmp_path: Path) -> None:
    for folder in (tmp_path / "nowhere", tmp_path):
        with pytest.raises(CharforgeError) as error:
            read_results(folder)
        message = str(error.value)
        assert str(folder) in message and "interview_single" in message
        assert "\n" not in message


def test_bad_files_are_reported_and_the_rest_is_read(tmp_path: Path) -> None:
    data = tmp_path / "character-llm"
    shutil.copytree(GEN, data / "gen_results")
    shutil.copytree(QUESTIONS, data / "seed_data/questions")
    gen = data / "gen_results"
    broken = gen / "interview_single/Caesar_sft_result/2023-00-00-00-00-00.json"
    broken.write_text(broken.read_text(encoding="utf-8")[:-40], encoding="utf-8")
    odd = gen / "interview_single/Newton_vicuna-7b_result/2023-00-00-00-00-00.json"
    odd.write_text(json.dumps({"answers": ["a list under a key nobody reads"]}),
                   encoding="utf-8")
    empty = gen / "interview_turns/multiturn_Martin_alpaca-7b_result/2023-00-00-00-00-00.jsonl"
    empty.write_text("", encoding="utf-8")

    report = read_results(gen)
    reasons = dict(report.problems)
    assert sorted(reasons) == sorted([broken, odd, empty])
    assert reasons[broken].startswith("invalid JSON")
    assert "found an object" in reasons[odd]
    assert reasons[empty] == "empty file"
    assert all("\n" not in reason for reason in reasons.values())
    assert len(report.interviews) == 4076 - SINGLE["Caesar"] - SINGLE["Newton"] - MULTI
    sources = {record.source for _, record in report.interviews}
    assert not sources & {path.relative_to(gen).as_posix() for path in (broken, odd, empty)}


def test_entries_in_other_shapes(tmp_path: Path) -> None:
    folder = tmp_path / "interview_single/Ada_sft_result"
    folder.mkdir(parents=True)
    entries = [
        {"topic_id": "topic-1", "question": "Who taught you?", "reply": "Mary Somerville."},
        {"topic_id": "topic-1", "question": "And then?", "reply": [
            {"role": "Ada", "action": "(thinking)", "content": "He asks a lot."},
            {"role": "Ada", "action": "(speaking)", "content": "Babbage, later."}]},
        {"topic_id": "topic-2", "question": "Your horses?", "reply": 7},
    ]
    (folder / "run.json").write_text(json.dumps(entries), encoding="utf-8")
    (folder / "notes.txt").write_text("not an interview", encoding="utf-8")
    report = read_results(tmp_path)
    records = [record for _, record in report.interviews]
    assert [(t.answer, t.thinking) for r in records for t in r.turns] == [
        ("Mary Somerville.", ""), ("Babbage, later.", "He asks a lot.")]
    assert all(record.topic == "" for record in records)  # no question files here
    assert dict(report.problems) == {
        folder / "notes.txt": "not a .json file",
        folder / "run.json": "1 of 3 entries left out; entry 3: a reply is int, not parts "
                             "or text"}


def test_a_broken_line_leaves_the_other_lines(tmp_path: Path) -> None:
    source = GEN / "interview_turns/multiturn_Voldemort_sft_result/2023-00-00-00-00-00.jsonl"
    folder = tmp_path / "interview_turns/multiturn_Voldemort_sft_result"
    folder.mkdir(parents=True)
    lines = source.read_text(encoding="utf-8").splitlines()
    damaged = folder / "run.jsonl"
    damaged.write_text("\n".join(["{not json", *lines[1:3]]) + "\n", encoding="utf-8")
    (tmp_path / "interview_turns/stray.json").write_text("[]", encoding="utf-8")
    report = read_results(tmp_path)
    assert len(report.interviews) == 2
    assert [turn.answer for turn in report.interviews[0][1].turns] == [
        part["content"].strip() for turn in json.loads(lines[1])["content"]
        if turn["turn_role"] == "character" for part in turn["turn_content"]]
    reasons = dict(report.problems)
    assert reasons[damaged].startswith("1 of 3 entries left out; entry 1: invalid JSON")
    assert reasons[tmp_path / "interview_turns/stray.json"].startswith("not a result folder")


def test_workspace_slug_of_a_name() -> None:
    workspace = [("beethoven", "Ludwig van Beethoven", "Ludwig"),
                 ("mlk", "Martin Luther King Jr.", "MLK"),
                 ("hermione-granger", "Hermione Granger", "Hermione"),
                 ("cleopatra", "Cleopatra", "Cleopatra"),
                 ("isaac", "Isaac Newton", "Isaac"),
                 ("john-newton", "John Newton", "John")]
    assert match_character("Beethoven", workspace) == "beethoven"
    assert match_character("beethoven", workspace) == "beethoven"
    assert match_character("Martin", workspace) == "mlk"
    assert match_character("Hermonie", workspace) == "hermione-granger"
    assert match_character("Cleopatra", workspace) == "cleopatra"
    assert match_character("Caesar", workspace) is None
    assert match_character("Newton", workspace) is None  # two Newtons: no guess
    assert match_character("Newton", workspace[:5]) == "isaac"
