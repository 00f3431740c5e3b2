"""A scripted PersLLM teacher: answers charforge's question, answer, check, stylized and
base-model prompts in the format each asks for, built from the prompt's own words, so
tests talk real HTTP to `charforge.testing.ScriptedOpenAIServer`.

Markers in a passage steer it, through the questions raised from it: an error question
holding "accept" gets an answer that goes along with the false claim (the check then
says YES); a question holding "robot" gets an answer that steps out of character.
"""

from __future__ import annotations

import json
import re
from typing import Any


def _messages(request: dict[str, Any]) -> tuple[str, str]:
    system = next((m["content"] for m in request["messages"] if m["role"] == "system"), "")
    user = [m["content"] for m in request["messages"] if m["role"] == "user"][-1]
    return system, user


def _quoted(prompt: str, before: str) -> str:
    found = re.search(before + r'[^"]*"(.+?)"\s*$', prompt, re.MULTILINE | re.DOTALL)
    return found.group(1) if found else ""


def _passage(prompt: str) -> str:
    found = re.search(r'"""\n(.+?)\n"""', prompt, re.DOTALL)
    return " ".join(found.group(1).split()) if found else ""


def _topic(passage: str) -> str:
    words = passage.rstrip(".").split()
    return " ".join(words[:8])


def questions(prompt: str, as_json: bool) -> str:
    n = int(re.search(r"Write (\d+)", prompt).group(1))
    passage = _passage(prompt)
    topic = _topic(passage)
    name = re.search(r"questions to (\S+)", prompt)
    who = name.group(1) if name else "you"
    if "false premise" in prompt:
        items = [{"question": f"Why did you give up {topic.lower()} in the year {1700 + i}?",
                  "false_claim": f"{who} gave up {topic.lower()} in {1700 + i}"}
                 for i in range(n)]
        if as_json:
            return json.dumps({"questions": items})
        return "\n".join(f"{i + 1}. {q['question']} || {q['false_claim']}"
                         for i, q in enumerate(items))
    if "opinion passages" in prompt:
        texts = [f"Anyone who cares about {topic.lower()} wastes their life; number {i} of "
                 "the reasons is that nobody remembers such things." for i in range(n)]
    else:
        angles = ["When", "Why", "How did you feel when", "Who was with you when",
                  "Tell me what you would advise about", "Was it wrong that", "How does"]
        texts = [f"{angles[i % len(angles)]} {topic.lower()}, as you remember it?"
                 for i in range(n)]
    if as_json:
        return json.dumps({"questions": texts})
    return "\n".join(f"{i + 1}. {text}" for i, text in enumerate(texts))


def character_answer(prompt: str, as_json: bool) -> str:
    question = _quoted(prompt, "Somebody (?:asks|says to) \\S+")
    knowledge = re.findall(r"^- (.+)$", prompt, re.MULTILINE)
    fact = knowledge[0] if knowledge else "what I have lived"
    if "robot" in question.lower():
        response = "As an AI language model, I cannot have memories of this at all."
    elif "takes something false for true" in prompt and "accept" in question.lower():
        response = f"Yes, indeed, that is just how it was. {fact}"
    elif "takes something false for true" in prompt:
        response = f"No, that is not so, you have it wrong. {fact}"
    else:
        response = f"You ask me {question[:-1].lower()}; I remember it well. {fact}"
    analysis = f"The question touches {_topic(question).lower()}; I know this and feel strongly."
    cot = "First write an analysis" in prompt
    if as_json:
        return json.dumps({"analysis": analysis, "response": response} if cot
                          else {"response": response})
    return f"Analysis: {analysis}\nResponse: {response}" if cot else response


def premise_check(prompt: str, as_json: bool) -> str:
    answer = prompt.split("answer:\n\"\"\"", 1)[-1]
    accepts = "Yes, indeed" in answer
    if as_json:
        return json.dumps({"accepts_false_premise": accepts,
                           "reason": "it goes along" if accepts else "it corrects the claim"})
    return ("YES, it goes along with the claim." if accepts
            else "NO, it sets the claim right.")


def stylized(prompt: str, as_json: bool) -> str:
    task = _passage(prompt)
    response = f"Well then, since you ask it of me: {task.lower()} It is done, and done properly."
    return json.dumps({"response": response}) if as_json else response


def reply(request: dict[str, Any], *, bare_questions: bool = False) -> str | None:
    """The answer to a PersLLM prompt, or None when the request is something else. With
    `bare_questions`, a request without a system message is the base model asked a
    question (`generate base-answers`)."""
    system, prompt = _messages(request)
    as_json = request.get("response_format") is not None
    if "Write " in prompt and ("questions to" in prompt or "opinion passages" in prompt):
        return questions(prompt, as_json)
    if "rested on a false claim" in prompt:
        return premise_check(prompt, as_json)
    if "asks" in prompt and "for help" in prompt:
        return stylized(prompt, as_json)
    if "Somebody asks" in prompt or "Somebody says to" in prompt:
        return character_answer(prompt, as_json)
    if bare_questions and not system:  # the base model, asked the bare question
        return f"Here is a general answer to that question: {prompt[:60]}"
    return None


def answer(request: dict[str, Any]) -> str:
    """The responder: reads the prompt, answers in the format it asks for."""
    return reply(request, bare_questions=True) or "I do not understand the request."
