"""Workspaces with a character and a hand-written dataset, for the training tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from charforge.workspace import Workspace

PROFILE = "# Ludwig van Beethoven\n\nLudwig van Beethoven was a composer born in Bonn.\n"

# Three templates of the styles the field uses, on the tiny tokenizer's special tokens.
LLAMA2_STYLE = (
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set loop_messages = messages[1:] %}{% else %}{% set system = '' %}"
    "{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}"
    "{% if loop.index0 == 0 and system %}"
    "{{ '<|im_start|>[INST] <<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' + message['content']"
    " + ' [/INST]' }}"
    "{% else %}{{ '<|im_start|>[INST] ' + message['content'] + ' [/INST]' }}{% endif %}"
    "{% else %}{{ ' ' + message['content'] + ' <|im_end|>' }}{% endif %}"
    "{% endfor %}"
)
DROPS_EARLIER_THOUGHTS = (  # like Qwen3's: earlier replies lose their <think> block
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' and not loop.last %}"
    "{% set content = message['content'].split('</think>')[-1].lstrip('\\n') %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

SCENE = [
    {"role": "system", "content": "You are Beethoven in Vienna."},
    {"role": "assistant", "content": "<think>Who knocks so early?</think>\nCome in, come in!"},
    {"role": "user", "name": "Lily", "content": "Good morning, master."},
    {"role": "user", "name": "Tom", "content": "We brought bread and milk."},
    {"role": "assistant", "content": "Put it on the table, child."},
    {"role": "user", "name": "Lily", "content": "Will you play for us today?"},
    {"role": "assistant", "content": "<think>My ears ache.</think>\nPerhaps later, after work."},
]


def workspace_with_data(root: Path, rows: list[dict[str, Any]],
                        name: str = "ws") -> Workspace:
    """A workspace holding Beethoven and `rows` as his sft.jsonl."""
    ws = Workspace.init(root / name)
    profile = root / f"{name}-profile.txt"
    profile.write_text(PROFILE, encoding="utf-8")
    character = ws.import_character(profile, short_name="Beethoven")
    folder = ws.datasets_dir / character.slug
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sft.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows),
                                      encoding="utf-8")
    return ws


def scene_rows(count: int, *, stage_token: str | None = None,
               test_every: int = 0) -> list[dict[str, Any]]:
    """`count` short scenes: other speakers say varied things, Beethoven says the same."""
    words = ["bread", "milk", "rain", "coach", "letter", "candle", "market", "river"]
    rows = []
    for i in range(count):
        system = "You are Beethoven in Vienna."
        if stage_token:
            system = f"{stage_token}\n{system}"
        a, b = words[i % len(words)], words[(3 * i + 1) % len(words)]
        rows.append({"messages": [
            {"role": "system", "content": system},
            {"role": "user", "name": "Lily", "content": f"Master, the {a} and the {b} {i}?"},
            {"role": "assistant", "content": "I was born in Bonn and moved to Vienna."},
            {"role": "user", "name": "Tom", "content": f"A {b} came by the {a} today."},
            {"role": "assistant", "content": "Music was my refuge and my work."},
        ], "source": "experience", "task_id": f"t{i}",
            "split": "test" if test_every and i % test_every == 0 else "train"})
    return rows
