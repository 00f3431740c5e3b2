"""PersLLM data as a user builds it: questions of every pattern per time stage, answers
from retrieved passages with and without analysis, the false-premise check, review
feedback, stylized instructions, and `dataset build` with dedup, a leakage-free split,
DPO pairs and distinctiveness; all against a scripted teacher over real HTTP, with the
real embedded MiniLM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import persllm_teacher
from charforge.dataset.export import build_dataset
from charforge.errors import CharforgeError
from charforge.generate import generate
from charforge.review import add_feedback
from charforge.testing import ScriptedOpenAIServer

from conftest import assert_one_line_error, files_under, run, teacher_workspace

QUIET = {"show_progress": False}
EARLY_KNOWLEDGE = [
    "Ada studied mathematics with Mary Somerville in London when she was a girl of seventeen.",
    "Ada designed a flying machine at twelve, with wings of paper and feathers and a steam "
    "engine in her plans.",
    "Ada studied mathematics with Mary Somerville in London, long lessons on geometry and "
    "the motion of the planets.",
]
EARLY_STYLE = ["Oh Mama, how I long to fly like the birds over the garden!"]
LATE_KNOWLEDGE = [
    "Ada wrote the notes on the Analytical Engine of Babbage in 1843, longer than the paper "
    "they annotated.",
    "Ada bet on horses at Epsom and Ascot and lost a fortune, hidden from her husband.",
    "Ada was told by her ROBOT doctors that the illness of her final year could not be cured.",
]
LATE_STYLE = ["The Engine weaves algebraic patterns just as the Jacquard loom weaves flowers."]


def write_lovelace(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in (("early_knowledge", EARLY_KNOWLEDGE), ("early_style", EARLY_STYLE),
                        ("late_knowledge", LATE_KNOWLEDGE), ("late_style", LATE_STYLE)):
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


class Teacher:
    """The scripted teacher, stepping out of character the first time only a ROBOT
    question is answered (so a retry is accepted and the rejected answer is kept)."""

    def __init__(self) -> None:
        self.robot_asked: set[str] = set()

    def __call__(self, request: dict) -> str:
        text = persllm_teacher.answer(request)
        prompt = request["messages"][-1]["content"]
        if "As an AI" in text:
            question = persllm_teacher._quoted(prompt, "Somebody (?:asks|says to) \\S+")
            if question in self.robot_asked:
                return text.replace("As an AI language model, I cannot have memories of this "
                                    "at all.", "My doctors gave me little hope, and I bore it.")
            self.robot_asked.add(question)
        return text


@pytest.fixture(scope="module")
def server():
    with ScriptedOpenAIServer(responder=Teacher()) as running:
        yield running


def workspace(root: Path, server: ScriptedOpenAIServer, *, json_schema: bool = True):
    ws = teacher_workspace(root / "ws", server.base_url, json_schema=json_schema)
    ws.import_character(write_lovelace(root / "lovelace"), name="Ada Lovelace",
                        short_name="Ada")
    return ws


def prompts_since(server: ScriptedOpenAIServer, start: int) -> list[str]:
    return [request.json["messages"][-1]["content"] for request in server.chat_requests[start:]]


def records(ws, character: str, kind: str) -> list[dict]:
    with ws.store() as store:
        return [record.data for record in store.records(character, kind)]


# -- questions ---------------------------------------------------------------------------
@pytest.mark.parametrize("json_schema", [True, False], ids=["json", "text"])
def test_each_pattern_per_stage_with_its_passage_and_stage_stated(tmp_path, server,
                                                                 json_schema):
    ws = workspace(tmp_path, server, json_schema=json_schema)
    start = len(server.chat_requests)
    for pattern in ("ordinary", "error", "thought"):
        result = generate(ws, "ada", "questions", options={"pattern": pattern,
                                                            "per_passage": 2}, **QUIET)
        assert result.rejected == result.failed == 0
    questions = records(ws, "ada", "question")
    by = {(q["pattern"], q["stage"]): 0 for q in questions}
    for q in questions:
        by[(q["pattern"], q["stage"])] += 1
    # ordinary: knowledge and style passages of each stage; error, thought: knowledge only
    assert by == {("ordinary", "early"): 8, ("ordinary", "late"): 8, ("error", "early"): 6,
                  ("error", "late"): 6, ("thought", "early"): 6, ("thought", "late"): 6}
    for q in questions:
        assert q["passage"] in (EARLY_KNOWLEDGE + EARLY_STYLE if q["stage"] == "early"
                                else LATE_KNOWLEDGE + LATE_STYLE)
        assert (q["false_claim"] is not None) == (q["pattern"] == "error")
    prompts = prompts_since(server, start)
    assert all("Now it is the early period of Ada's life" in p or
               "Now it is the late period of Ada's life" in p for p in prompts)
    early = [p for p in prompts if "early period" in p]
    assert not any(text in p for p in early for text in LATE_KNOWLEDGE)


def test_count_asks_more_passes_and_one_stage_only(tmp_path, server):
    ws = workspace(tmp_path, server)
    plan = generate(ws, "ada", "questions", options={"stage": "late", "count": 20,
                                                      "per_passage": 3}, dry_run=True, **QUIET)
    assert plan.tasks == 7  # ceil(20 / 3) passes over late's 4 passages
    assert "Now it is the late period" in plan.first_messages[-1].content


# -- answers -------------------------------------------------------------------------------
def test_answers_with_and_without_analysis_see_only_their_stage(tmp_path, server):
    ws = workspace(tmp_path, server)
    generate(ws, "ada", "questions", options={"per_passage": 1}, **QUIET)
    start = len(server.chat_requests)
    generate(ws, "ada", "answers", options={"stage": "early", "cot": True}, **QUIET)
    generate(ws, "ada", "answers", options={"stage": "late"}, **QUIET)
    answers = records(ws, "ada", "answer")
    early = [a for a in answers if a["stage"] == "early"]
    late = [a for a in answers if a["stage"] == "late"]
    assert early and late
    assert all(a["analysis"] and a["stage_token"] == "<TIME-I>" for a in early)
    assert all(a["analysis"] is None and a["stage_token"] == "<TIME-II>" for a in late)
    for prompt in prompts_since(server, start):
        if "Now it is the early period" in prompt:  # never the late stage's knowledge
            assert not any(text in prompt for text in LATE_KNOWLEDGE + LATE_STYLE)
            assert "First write an analysis" in prompt
    # the retrieval index was built once, in the workspace, and reused by the second run
    assert len(list((ws.root / "cache" / "retrieval").glob("*.npz"))) == 1
    # resuming plans nothing new: every question keeps the analysis it was asked with and
    # the passages retrieved for it, so no query is encoded again
    from charforge.retrieval import default_embedder

    encoded = default_embedder().texts_encoded
    again = generate(ws, "ada", "answers", dry_run=True, **QUIET)
    assert again.tasks == 0 and default_embedder().texts_encoded == encoded

    # the character edited: a question's passage moved; its answer still starts from it
    from charforge.stages import build_stage

    moved = tmp_path / "lovelace" / "early_knowledge.txt"
    moved.write_text("\n".join(reversed(EARLY_KNOWLEDGE)) + "\n")
    ws.import_character(tmp_path / "lovelace", name="Ada Lovelace", short_name="Ada",
                        replace=True)
    with ws.store() as store:
        stage = build_stage("answers", ws.load_character("ada"), store)
        question = next(q for q in store.records("ada", "question")
                        if q.data["passage"] == EARLY_KNOWLEDGE[0])
    ref = stage.source_ref(question.data["source"], question.data["passage"], "early")
    assert question.data["source"]["index"] == 0 and ref.index == 2
    assert stage.source_ref(question.data["source"], "a passage since deleted") is None

    built = build_dataset(ws, "ada")
    rows = [json.loads(line) for line in (built.folder / "sft.jsonl").read_text().splitlines()]
    for row in rows:
        system, user, reply = row["messages"]
        token = "<TIME-I>" if row["stage"] == "early" else "<TIME-II>"
        assert system["content"].split("\n", 1)[0] == token  # the one position
        assert not any(text in system["content"] + user["content"]
                       for text in EARLY_KNOWLEDGE + LATE_KNOWLEDGE)  # no retrieved text
        assert "<think>" not in reply["content"]
    assert built.stats.stage_tokens == ["<TIME-I>", "<TIME-II>"]
    with_analysis = build_dataset(ws, "ada", with_analysis=True)
    replies = [json.loads(line)["messages"][-1]["content"]
               for line in (with_analysis.folder / "sft.jsonl").read_text().splitlines()]
    early_rows = sum(row["stage"] == "early" for row in rows)  # after dedup
    assert early_rows and sum(r.startswith("<think>") for r in replies) == early_rows


def test_an_answer_accepting_a_false_premise_is_rejected_by_a_recorded_check(tmp_path,
                                                                           server):
    ws = workspace(tmp_path, server, json_schema=False)
    (tmp_path / "lovelace" / "early_knowledge.txt").write_text(
        "Ada ACCEPT studied mathematics with Mary Somerville in London at seventeen.\n"
        "Ada designed a flying machine at twelve, with wings of paper and feathers.\n")
    ws.import_character(tmp_path / "lovelace", name="Ada Lovelace", short_name="Ada",
                        replace=True)
    generate(ws, "ada", "questions", options={"pattern": "error", "per_passage": 1,
                                              "stage": "early"}, **QUIET)
    result = generate(ws, "ada", "answers", **QUIET)
    assert result.done == 1 and result.rejection_reasons == {"accepted_false_premise": 1}
    with ws.store() as store:
        (task_id, reason, detail), = store.rejections("ada", "answers")
        turns = [t["turn"] for t in store.tries(task_id)]
    assert reason == "accepted_false_premise" and "false claim" in detail
    assert turns == [0, 1]  # the answer, then the check: both recorded


# -- review feedback -----------------------------------------------------------------------
def test_feedback_applies_to_answers_planned_after_it(tmp_path, server):
    ws = workspace(tmp_path, server)
    generate(ws, "ada", "questions", options={"per_passage": 1}, **QUIET)
    start = len(server.chat_requests)
    generate(ws, "ada", "answers", options={"stage": "early"}, **QUIET)
    before = prompts_since(server, start)
    assert before and not any("reviewer" in p for p in before)
    add_feedback(ws, "ada", "Shorter answers, and more exclamations.")
    start = len(server.chat_requests)
    generate(ws, "ada", "answers", **QUIET)  # only the late questions are new
    after = prompts_since(server, start)
    assert after and all("Now it is the late period" in p for p in after)
    assert all("Shorter answers, and more exclamations." in p for p in after)
    # --rerun-older asks the early answers again, now with the note
    start = len(server.chat_requests)
    run("review", "ada", "--rerun-older", "--feedback", "Mention Babbage by name.",
        cwd=ws.root)
    rerun = prompts_since(server, start)
    assert len(rerun) == len(before) + len(after)
    assert all("Mention Babbage by name." in p for p in rerun)
    listed = run("review", "ada", "--list", cwd=ws.root)
    assert listed.returncode == 0
    assert "#1" in listed.stdout and "Shorter answers" in listed.stdout
    assert "#2" in listed.stdout and "Babbage" in listed.stdout
    answers = records(ws, "ada", "answer")
    assert {a["feedback_id"] for a in answers} == {0, 1, 2}
    built = build_dataset(ws, "ada")  # the latest answer to each question, once
    removed = built.stats.dedup["questions"]["removed"]  # the crafted near-duplicate
    assert built.stats.qa_records == {"ordinary": len(before) + len(after) - removed}


# -- stylized instructions -----------------------------------------------------------------
def test_stylized_instructions_from_jsonl_join_the_dataset(tmp_path, server):
    ws = workspace(tmp_path, server)
    instructions = tmp_path / "general.jsonl"
    instructions.write_text("\n".join(json.dumps(row) for row in [
        {"instruction": "Give three tips for staying healthy."},
        {"instruction": "Translate this sentence.", "input": "The engine computes numbers."},
        {"messages": [{"role": "user", "content": "Write a short poem about the sea."}]},
    ]) + "\n")
    result = generate(ws, "ada", "stylized", options={"instructions": str(instructions)},
                      **QUIET)
    assert result.done == 3
    got = records(ws, "ada", "stylized")
    assert [r["index"] for r in got] == [0, 1, 2]
    assert "The engine computes numbers." in got[1]["instruction"]
    built = build_dataset(ws, "ada")
    assert built.stats.qa_records == {"stylized": 3}
    from datasets import Dataset

    saved = tmp_path / "saved"  # a saved `datasets` folder works the same way
    Dataset.from_list([{"instruction": "Describe a good morning routine."}]).save_to_disk(
        str(saved))
    again = generate(ws, "ada", "stylized", options={"instructions": str(saved)}, **QUIET)
    assert again.done == 1
    assert any(r["instruction"] == "Describe a good morning routine."
               for r in records(ws, "ada", "stylized"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "fine"}\n{"text": "no instruction here"}\n')
    with pytest.raises(CharforgeError, match="row 2 has no instruction"):
        generate(ws, "ada", "stylized", options={"instructions": str(bad)}, **QUIET)


# -- dedup, split, DPO, distinctiveness ------------------------------------------------------
def test_dedup_split_and_dpo_pairs_from_every_source(tmp_path):
    with ScriptedOpenAIServer(responder=Teacher()) as server:  # its own out-of-character memory
        check_dedup_split_and_dpo(tmp_path, server)


def check_dedup_split_and_dpo(tmp_path, server):
    ws = workspace(tmp_path, server)
    babbage = tmp_path / "babbage"
    babbage.mkdir()
    (babbage / "knowledge.txt").write_text(
        "Babbage designed the Difference Engine to compute tables of logarithms.\n"
        "Babbage hated the street musicians of London and fought them for years.\n"
        "Babbage held the Lucasian chair of mathematics at Cambridge without lecturing.\n"
        "Babbage picked locks and deciphered codes for amusement in the evenings.\n"
        "Babbage studied the postal system and proposed the uniform penny rate.\n"
        "Babbage held famous Saturday soirees in his house on Dorset Street.\n")
    (babbage / "style.txt").write_text("Errors using inadequate data are much less than "
                                       "those using no data at all.\n")
    ws.import_character(babbage, name="Charles Babbage", short_name="Babbage")
    for who in ("ada", "babbage"):
        generate(ws, who, "questions", options={"per_passage": 3}, **QUIET)
        generate(ws, who, "answers", **QUIET)
    rejected = generate(ws, "ada", "answers", retry="rejected", **QUIET)
    assert rejected.done >= 1  # the ROBOT answers, asked again, now in character
    generate(ws, "ada", "base-answers", **QUIET)

    built = build_dataset(ws, "ada", test_fraction=0.4, dpo=True)
    stats = built.stats
    # crafted near-duplicates: two early passages open with the same eight words, so
    # their questions are the same text; dedup keeps one of each
    assert stats.dedup["questions"]["removed"] >= 3
    rows = [json.loads(line) for line in (built.folder / "sft.jsonl").read_text().splitlines()]
    questions = [row["messages"][1]["content"] for row in rows]
    from charforge.retrieval import default_embedder

    vectors = default_embedder().encode(questions)
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, 0.0)
    assert similarity.max() < 0.95 + 1e-6  # the threshold honoured
    train = [i for i, row in enumerate(rows) if row["split"] == "train"]
    test = [i for i, row in enumerate(rows) if row["split"] == "test"]
    assert train and test
    assert similarity[np.ix_(test, train)].max() <= 0.85 + 1e-6  # every pair checked
    closest = stats.split["questions"]["closest"]
    assert closest["similarity"] == pytest.approx(similarity[np.ix_(test, train)].max(),
                                                  abs=1e-3)

    pairs = [json.loads(line) for line in (built.folder / "dpo.jsonl").read_text().splitlines()]
    sources = {pair["source"] for pair in pairs}
    assert sources == {"other_character", "other_stage", "base_model", "rejected_content"}
    split_of = {row["task_id"]: row["split"] for row in rows}
    babbage_rows = build_dataset(ws, "babbage", test_fraction=0.4).folder / "sft.jsonl"
    split_of_text = {json.loads(line)["messages"][-1]["content"]: json.loads(line)["split"]
                     for line in babbage_rows.read_text().splitlines()}
    split_of_text |= {row["messages"][-1]["content"]: row["split"] for row in rows}
    for pair in pairs:
        chosen, rejected_text = pair["chosen"][0]["content"], pair["rejected"][0]["content"]
        assert chosen != rejected_text
        assert pair["split"] == split_of[pair["task_id"]]
        if pair["source"] in ("other_character", "other_stage"):
            assert split_of_text[rejected_text] == pair["split"]  # never across the split
        assert [m["role"] for m in pair["prompt"]] == ["system", "user"]
    for source, part in stats.dpo["sources"].items():
        assert part["pairs"] == sum(p["source"] == source for p in pairs)
        assert part["chosen_words"] > 0 and part["rejected_words"] > 0
    assert "As an AI" in next(p["rejected"][0]["content"] for p in pairs
                              if p["source"] == "rejected_content")
    d = stats.distinctiveness
    assert set(d["personas"]) == {"ada", "babbage"}
    card = (built.folder / "README.md").read_text()
    assert "dpo.jsonl" in card and "Distinctiveness" in card


def test_the_chain_works_for_a_character_llm_profile_beside_its_experiences(tmp_path):
    from scripted_teacher import answer  # answers both kinds of prompts

    with ScriptedOpenAIServer(responder=answer) as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url, json_schema=True)
        generate(ws, "beethoven", "scenes", options={"prompts": 1, "scenes_per_prompt": 2},
                 **QUIET)
        generate(ws, "beethoven", "experiences", **QUIET)
        generate(ws, "beethoven", "questions", options={"count": 6, "per_passage": 2},
                 **QUIET)
        generate(ws, "beethoven", "answers", **QUIET)
    questions = records(ws, "beethoven", "question")
    assert len(questions) == 6 and all(q["stage"] is None for q in questions)
    profile = ws.load_character("beethoven").profile
    assert all(q["passage"] in profile for q in questions)
    built = build_dataset(ws, "beethoven", test_fraction=0.3)
    stats = built.stats
    assert stats.dialogues["experience"] == 2 and stats.stage_tokens == []
    assert sum(stats.qa_records.values()) + stats.dedup["questions"]["removed"] == 6
    rows = [json.loads(line) for line in (built.folder / "sft.jsonl").read_text().splitlines()]
    assert {row["source"] for row in rows} == {"experience", "answer"}  # one dataset, both
    assert all(row["messages"][0]["content"].startswith("You are Ludwig van Beethoven")
               for row in rows)
    from datasets import load_from_disk

    hf = load_from_disk(str(built.folder / "hf"))
    assert sum(len(split) for split in hf.values()) == len(rows)


def test_a_cards_lorebook_and_description_are_its_knowledge(tmp_path, server):
    ws = teacher_workspace(tmp_path / "ws", server.base_url, json_schema=True)
    card = ws.import_character(Path(__file__).parents[1] / "examples" / "wren.png")
    plan = generate(ws, card.slug, "questions", options={"per_passage": 1}, dry_run=True,
                    **QUIET)
    # one task per lorebook entry, description paragraph and example message
    assert plan.tasks == len(card.knowledge) + len(card.profile) + len(card.style) == 8
    generate(ws, card.slug, "questions", options={"per_passage": 1, "count": 8}, **QUIET)
    sources = {(q["source"]["kind"], q["passage"]) for q in records(ws, card.slug, "question")}
    assert {text for kind, text in sources if kind == "knowledge"} == {
        *(p.text for p in card.knowledge), *card.profile}


# -- bad input ---------------------------------------------------------------------------
def test_bad_input_is_one_line_and_changes_nothing(tmp_path, server):
    ws = workspace(tmp_path, server)
    generate(ws, "ada", "questions", options={"per_passage": 1, "stage": "early"}, **QUIET)
    generate(ws, "ada", "answers", **QUIET)
    build_dataset(ws, "ada")
    dataset = ws.root / "datasets" / "ada"
    before = {path: (dataset / path).read_bytes() for path in files_under(dataset)
              if (dataset / path).is_file()}
    db_before = (ws.root / "charforge.db").read_bytes()

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "knowledge.txt").write_text("\n\n")
    (empty / "style.txt").write_text("Some style line here.\n")
    assert_one_line_error(run("character", "import", empty, "--name", "Nobody", cwd=ws.root),
                          "no passages in knowledge.txt")
    (empty / "style.txt").unlink()
    (empty / "knowledge.txt").write_text("A fact about somebody.\n")
    assert_one_line_error(run("character", "import", empty, "--name", "Nobody", cwd=ws.root),
                          "no style.txt")
    assert_one_line_error(run("generate", "questions", "ada", "--stage", "middle",
                              cwd=ws.root), "no stage 'middle'", "early, late")
    assert_one_line_error(run("generate", "questions", "ada", "--pattern", "gossip",
                              cwd=ws.root), "'gossip' is not one of 'ordinary', 'error'")
    for threshold in ("0", "1.5", "-0.2"):
        assert_one_line_error(run("dataset", "build", "ada", "--dedup-threshold", threshold,
                                  cwd=ws.root), "--dedup-threshold must be above 0")
    assert_one_line_error(run("dataset", "build", "ada", "--dpo", cwd=ws.root),
                          "no DPO pairs for Ada")
    after = {path: (dataset / path).read_bytes() for path in files_under(dataset)
             if (dataset / path).is_file()}
    assert after == before and (ws.root / "charforge.db").read_bytes() == db_before


# -- reading the teacher's answers -----------------------------------------------------------
def test_question_lists_and_answers_are_read_in_either_format():
    from charforge.parse.persona import (
        parse_character_answer,
        parse_premise_verdict,
        parse_questions,
    )
    from charforge.records import Rejected

    text = ("Here they are:\n1. Why did you sail on the Beagle at twenty-two?\n"
            "2) Why did you sail on the Beagle at twenty-two?\n3. Ok?\n"
            "- Tell me about the finches of the Galapagos islands.\n")
    asked = parse_questions(text, json_mode=False, with_claims=False)
    assert [q.text for q in asked] == ["Why did you sail on the Beagle at twenty-two?",
                                       "Tell me about the finches of the Galapagos islands."]
    claims = parse_questions('{"questions": [{"question": "Why did you study law in Paris?", '
                             '"false_claim": "He studied law in Paris"}, {"question": '
                             '"What made you leave Cambridge early?", "false_claim": ""}]}',
                             json_mode=True, with_claims=True)
    assert [(q.text, q.false_claim) for q in claims] == [
        ("Why did you study law in Paris?", "He studied law in Paris")]  # no claim: no check
    with pytest.raises(Rejected, match="junk"):
        parse_questions("1. zzkq xxvt qqpl rrmn\n", json_mode=False, with_claims=False)
    both = parse_character_answer("Analysis: He knows it well and is proud.\n"
                                  "Response: I sailed for five years, and I was sick for most "
                                  "of them.", json_mode=False, with_analysis=True)
    assert both.analysis == "He knows it well and is proud."
    assert both.response.startswith("I sailed for five years")
    with pytest.raises(Rejected, match="no analysis"):
        parse_character_answer("I sailed for five years and was often sick.",
                               json_mode=False, with_analysis=True)
    with pytest.raises(Rejected, match="out_of_character"):
        parse_character_answer('{"response": "As an AI, I have no memories of any voyage."}',
                               json_mode=True, with_analysis=False)
    with pytest.raises(Rejected, match="too_short"):
        parse_character_answer('{"response": "Yes."}', json_mode=True, with_analysis=False)
    assert parse_premise_verdict("YES. It goes along.", json_mode=False) == (True, "It goes along.")
    assert parse_premise_verdict('{"accepts_false_premise": false, "reason": "corrects it"}',
                                 json_mode=True) == (False, "corrects it")
    with pytest.raises(Rejected, match="neither YES nor NO"):
        parse_premise_verdict("Perhaps.", json_mode=False)
    from charforge.parse.persona import touches

    voyage = "他乘贝格尔号航行五年。"  # scripts without spaces: character pairs
    assert touches("你在贝格尔号上航行了多少年？", voyage)
    assert not touches("你喜欢什么？", voyage)


def test_the_embedded_teachers_persllm_answers_are_rejected_for_what_a_reader_sees():
    """tests/data/smollm2-persllm.jsonl: every question and answer SmolLM2-135M wrote for
    Darwin (examples/darwin) in one session, each labelled unusable by reading it: questions
    about nothing in their passage ("What was that you said?"), answers to something else
    ("I'd like to modify the provided input again"). The checks must agree."""
    from charforge.parse.persona import parse_character_answer, touches
    from charforge.records import Rejected

    rows = [json.loads(line) for line in
            (Path(__file__).parent / "data" / "smollm2-persllm.jsonl").read_text().splitlines()]
    names = ("Charles Darwin", "Darwin")
    home = ("In 1839 he married his cousin Emma Wedgwood, and in 1842 they moved to Down House "
            "in Kent, where he lived and worked for the rest of his life.")
    assert touches("Why did you marry your cousin?", home, names)  # what a reader accepts
    assert touches("Tell me about Down House.", home, names)  # common words, as a name
    assert not touches("Is there any truth to Mr. Darwin?", home, names)  # only the name
    assert len(rows) >= 10 and all(row["label"].startswith("unusable") for row in rows)
    for row in rows:
        if row["kind"] == "question":
            assert not touches(f"{row['text']} {row['false_claim'] or ''}", row["passage"],
                               names), row["text"]
            continue
        grounds = "\n".join([row["question"], *row["knowledge"][:1]])
        try:
            parse_character_answer(json.dumps({"response": row["text"]}), json_mode=True,
                                   with_analysis=False)
        except Rejected:
            continue
        assert not touches(row["text"], grounds, names), row["text"]
