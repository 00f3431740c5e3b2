"""Asking a character: the answer figures, the retrieval that feeds the system
message, and `charforge ask` with the shared sampling defaults."""

from __future__ import annotations

import pytest
import yaml

from charforge.character import Character, Passage
from charforge.demo import demo_file
from charforge.importers import load_character_file
from charforge.roleplay import (
    ASK_SAMPLING,
    IN_CHARACTER_STOP,
    ask,
    ask_sampling,
    chunks,
    question_messages,
    relevant_passages,
    roleplay_system_prompt,
    style_samples,
)
from charforge.textstats import (
    claims_to_be_a_machine,
    distinct_n,
    max_ngram_repeats,
    median_words,
    names_used,
    words,
)

from conftest import run

LOOPING = "I love the music of my father. " * 8
PLAIN = ("My father Johann drank too much, yet he taught me the keyboard before I could "
         "read. I owe him my trade, and little else.")


# -- figures ---------------------------------------------------------------------------
def test_words_are_lower_case_runs_of_letters_and_apostrophes():
    assert words("Don’t stop—I'm in Vienna_now, 1792!") == [
        "don't", "stop", "i'm", "in", "vienna", "now", "1792"]


def test_a_loop_shows_as_a_repeated_four_word_run():
    assert max_ngram_repeats(LOOPING) == 8  # "i love the music" once per sentence
    assert max_ngram_repeats(PLAIN) == 1
    assert max_ngram_repeats("Bonn, on the") == 0  # fewer than four words


def test_distinct_two_per_text_and_pooled():
    assert distinct_n("the cat sat on the cat") == pytest.approx(4 / 5)
    assert distinct_n(LOOPING) < 0.2 < 0.9 < distinct_n(PLAIN) <= 1.0
    # Pooled over texts: a bigram shared between two answers counts once.
    assert distinct_n(["a b c", "a b d"]) == pytest.approx(3 / 4)
    assert distinct_n("Bonn") is None and distinct_n([]) is None


@pytest.mark.parametrize("text", [
    "As an AI language model, I cannot have a father.",
    "I am just an AI and do not remember my childhood.",
    "I'm a helpful assistant. How can I help you today?",
    "I am a large language model trained to answer questions.",
    "I am SmolLM, made by Hugging Face.",
    "Being a computer program, I have no mother.",
])
def test_an_answer_that_says_it_is_a_machine_is_caught(text):
    assert claims_to_be_a_machine(text)


@pytest.mark.parametrize("text", [
    PLAIN,
    "At fourteen I was the assistant organist at the court in Bonn.",
    "I am not a machine, sir, I am a composer.",
    "I am a musician, not an AI.",
    "The piano is a machine of wood and wire; I wore out several.",
])
def test_a_person_speaking_is_not_flagged(text):
    assert not claims_to_be_a_machine(text)


def test_names_used_are_the_sources_proper_names_the_answer_repeats():
    source = ("Beethoven was born in Bonn. He was taught by his father, Johann van Beethoven. "
              "However, Neefe taught him more. In Vienna he met Haydn.")
    answer = "However, my father Johann was harsh. In Bonn Neefe taught me, and Haydn. Mozart!"
    assert names_used(answer, source, besides="What of Haydn, Ludwig van Beethoven?") == {
        "Johann", "Bonn", "Neefe"}  # not "However" nor "In": sentence starts in the source
    assert names_used("I do not know.", source) == set()


def test_median_answer_length_in_words():
    assert median_words(["one two", "one two three four", "one two three"]) == 3
    assert median_words(["one", "one two"]) == 1.5
    assert median_words([]) == 0


# -- retrieval -------------------------------------------------------------------------
TOPICS = Character(
    name="Ludwig van Beethoven", short_name="Beethoven",
    profile=[
        "Ludwig van Beethoven was a German composer and pianist.",
        "His father Johann was a singer at the court of Bonn. Johann drank heavily and taught "
        "his son harshly at the keyboard.",
        "In Vienna he studied counterpoint with Haydn and met the aristocrats who would pay "
        "for his symphonies.",
        "His hearing began to fail before he was thirty; by the end he was almost deaf and "
        "spoke to visitors through conversation books.",
    ],
)


@pytest.mark.parametrize("question, about", [
    ("What do you think of your father?", "Johann was a singer"),
    ("How did your deafness affect your life?", "conversation books"),
    ("Tell me about Haydn.", "counterpoint with Haydn"),
])
def test_a_question_about_x_brings_the_paragraph_about_x(question, about):
    picked = relevant_passages(TOPICS, question, max_words=40)
    assert picked[0] == TOPICS.profile[0], "who they are always comes first"
    assert any(about in passage for passage in picked)
    others = [p for p in TOPICS.profile[1:] if about not in p]
    assert not any(passage in others for passage in picked)
    assert sum(len(p.split()) for p in picked) <= 40


def test_a_question_about_nothing_known_brings_only_who_they_are():
    assert relevant_passages(TOPICS, "What is your favourite movie?") == [TOPICS.profile[0]]


def test_knowledge_passages_are_searched_too():
    persllm = Character(name="Harry Potter", short_name="Harry", knowledge=[
        Passage(text="Harry lives with the Dursleys in a cupboard under the stairs."),
        Passage(text="Hogwarts is a school of witchcraft and wizardry in Scotland."),
        Passage(text="Quidditch is played on broomsticks with four balls."),
    ])
    picked = relevant_passages(persllm, "What is Quidditch like?", max_words=25)
    assert picked == [persllm.knowledge[0].text, persllm.knowledge[2].text]


def test_the_real_profile_answers_a_question_about_the_mother():
    beethoven = load_character_file(demo_file("wiki_Beethoven.txt"))[0]
    picked = relevant_passages(beethoven, "What do you think of your mother?")
    assert any("His mother died in 1787" in passage for passage in picked)
    assert sum(len(p.split()) for p in picked) <= 200
    # Section headings of the wiki text are not memories.
    assert not any(p.startswith("1792–1802: Vienna") for p in
                   relevant_passages(beethoven, "Tell me about your first years in Vienna."))


def test_chunks_keep_whole_sentences_and_drop_headings():
    text = "Early life\nOne two three. Four five six seven. Eight nine."
    assert chunks(text, max_words=4) == ["One two three.", "Four five six seven.", "Eight nine."]
    assert chunks(text, max_words=7) == ["One two three. Four five six seven.", "Eight nine."]


def test_style_samples_closest_to_the_question_first():
    persllm = Character(name="Harry Potter", short_name="Harry", style=[
        Passage(text='"I\'m Harry," said Harry.'),
        Passage(text='"Quidditch is brilliant," Harry said, grinning.'),
        Passage(text='"Scar hurts," Harry muttered. ' + "word " * 80),
    ])
    assert style_samples(persllm, "Do you like Quidditch?", count=2) == [
        persllm.style[1].text, persllm.style[0].text]
    assert len(style_samples(persllm, "", count=3)[2].split()) == 50
    assert style_samples(TOPICS, "anything") == []


def test_question_messages_hold_what_bears_on_the_question_and_how_they_speak():
    harry = Character(
        name="Harry Potter", short_name="Harry",
        knowledge=[Passage(text="Harry's owl is a snowy owl called Hedwig."),
                   Passage(text="Harry lives with the Dursleys on Privet Drive.")],
        style=[Passage(text='"Blimey," said Ron.'), Passage(text='"Hedwig!" Harry called.')],
    )
    system, user = question_messages(harry, "Tell me about Hedwig, your owl.")
    assert user.role == "user" and user.content == "Tell me about Hedwig, your owl."
    assert system.role == "system" and system.content.startswith("You are Harry Potter.")
    assert "Hedwig." in system.content and "How you speak" in system.content
    assert system.content.index('"Hedwig!" Harry called.') < system.content.index('"Blimey,"')
    wiki = question_messages(TOPICS, "Tell me about Haydn.")[0].content
    assert "counterpoint with Haydn" in wiki and "conversation books" not in wiki
    assert "How you speak" not in wiki


def test_without_a_question_the_profile_opening_is_used():
    system = roleplay_system_prompt(TOPICS, max_profile_words=31)
    assert TOPICS.profile[0] in system and TOPICS.profile[1] in system
    assert TOPICS.profile[3] not in system


# -- `charforge ask` -------------------------------------------------------------------
def test_ask_sends_the_relevant_profile_with_the_shared_defaults(tmp_path):
    from charforge.testing import Reply, ScriptedOpenAIServer

    from conftest import teacher_workspace

    replies = [Reply(text="She was kind; she died too soon."), Reply(text="1. Sort...")]
    with ScriptedOpenAIServer(replies) as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url)
        in_character = run("ask", "-c", "beethoven", "What do you think of your mother?",
                           cwd=ws.root)
        plain = run("ask", "How do I sort a list?", cwd=ws.root)
        sent, sent_plain = (request.json for request in server.chat_requests)
    assert in_character.returncode == 0, in_character.stderr
    assert in_character.stdout.strip() == "She was kind; she died too soon."
    assert "His mother died in 1787" in sent["messages"][0]["content"]
    assert sent["max_tokens"] == ASK_SAMPLING.max_tokens
    assert sent["temperature"] == ASK_SAMPLING.temperature
    assert sent["stop"] == list(IN_CHARACTER_STOP), "in character: one paragraph"
    assert plain.returncode == 0, plain.stderr
    assert sent_plain["messages"] == [{"role": "user", "content": "How do I sort a list?"}]
    assert sent_plain["max_tokens"] == ASK_SAMPLING.max_tokens
    assert not sent_plain.get("stop"), "a plain question may take several paragraphs"


def test_the_python_ask_uses_the_same_defaults(tmp_path):
    from charforge.llm.registry import load_chat_model
    from charforge.testing import Reply, ScriptedOpenAIServer

    from conftest import teacher_workspace

    with ScriptedOpenAIServer([Reply(text="In Bonn."), Reply(text="Hello.")]) as server:
        ws = teacher_workspace(tmp_path / "ws", server.base_url)
        beethoven = ws.load_character("beethoven")
        assert ask("Where were you born?", load_chat_model(config=ws.config),
                   character=beethoven).text == "In Bonn."
        assert ask("Hi", load_chat_model(config=ws.config)).text == "Hello."
        in_character, plain = (request.json for request in server.chat_requests)
    assert in_character["stop"] == list(IN_CHARACTER_STOP)
    assert in_character["max_tokens"] == plain["max_tokens"] == ASK_SAMPLING.max_tokens
    assert not plain.get("stop")


def test_ask_sampling_is_the_one_set_of_defaults():
    assert ask_sampling() == ASK_SAMPLING.but(stop=IN_CHARACTER_STOP)
    assert ask_sampling(in_character=False) == ASK_SAMPLING
    changed = ask_sampling(max_tokens=120, seed=0, temperature=None)
    assert (changed.max_tokens, changed.seed, changed.temperature) == (
        120, 0, ASK_SAMPLING.temperature)


def test_ask_on_a_tiny_local_model_end_to_end(tmp_path, tiny_model_dir):
    from charforge.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws")
    ws.import_character(demo_file("wiki_Beethoven.txt"))
    config = yaml.safe_load(ws.config_path.read_text())
    config["models"]["tiny"] = {"backend": "local", "path": str(tiny_model_dir),
                                "dtype": "float32", "repetition_penalty": 1.2}
    ws.config_path.write_text(yaml.safe_dump(config))

    result = run("ask", "-m", "tiny", "-c", "beethoven", "Where do you come from?",
                 "--seed", "1", cwd=ws.root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "the random model still says something"
    # A random model rarely stops by itself (the end-of-text token is 1 of 400, so about
    # half of all seeds draw it within 256 tokens): with this seed the reply runs to the
    # shared default and is cut there. Seed 0 stopped early once sampling changed.
    assert f"cut at --max-tokens {ASK_SAMPLING.max_tokens}" in result.stderr


@pytest.mark.integration
def test_the_embedded_model_answers_in_character_without_looping():
    """The built-in smollm2 entry as `charforge ask` builds it, on one torch thread
    (threads change no answer, and one stays quick when another process keeps a core
    busy: two then ran ~4x slower here). Without the entry's repetition penalty this
    answer repeats "I'm a composer of music" 11 times in 96 tokens."""
    import torch

    from charforge.llm.registry import BUILTIN_MODELS, DEFAULT_MODEL, ModelEntry, build_chat_model

    entry = BUILTIN_MODELS[DEFAULT_MODEL]
    beethoven = load_character_file(demo_file("wiki_Beethoven.txt"))[0]
    threads = torch.get_num_threads()
    try:
        model = build_chat_model(DEFAULT_MODEL, ModelEntry(**{**entry.model_dump(), "threads": 1}))
        completion = ask("Do you prefer to compose music for orchestras or solo instruments?",
                         model, character=beethoven, sampling=ask_sampling(max_tokens=96, seed=0))
    finally:
        torch.set_num_threads(threads)
    text = completion.text
    assert len(words(text)) >= 10, text
    assert max_ngram_repeats(text) <= 2, text
    assert not claims_to_be_a_machine(text), text
