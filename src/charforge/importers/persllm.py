"""PersLLM knowledge and speech-style files: one passage a line, optionally one pair
of files per time stage (early, middle, late, ...), each stage marked by its token."""

from __future__ import annotations

import re
from pathlib import Path

from charforge.character import Character, Passage, Stage
from charforge.errors import CharacterFormatError
from charforge.importers.common import (
    build_character,
    default_short_name,
    given_text,
    read_text_file,
    stage_token,
)

PERSLLM_FORMAT = "persllm"
KNOWN_STAGE_ORDER = ("early", "middle", "late")
_PERSLLM_TAG = re.compile(r"^【[^】]*】\s*")
_PERSLLM_FILE = re.compile(r"(.+)_(knowledge|style)\.txt")


def read_persllm(
    knowledge_path: str | Path,
    style_path: str | Path,
    *,
    name: str,
    short_name: str | None = None,
    stage: str | None = None,
) -> Character:
    """PersLLM's two files, one passage a line, optionally all of one stage."""
    knowledge_path, style_path = Path(knowledge_path), Path(style_path)
    full_name = _required_name(name, knowledge_path)
    label = given_text(stage)
    knowledge = _read_passages(knowledge_path, label)
    style = _read_passages(style_path, label)
    if not knowledge and not style:
        raise CharacterFormatError(
            knowledge_path, f"no passages in knowledge or style file (style file: {style_path})"
        )
    return build_character(
        knowledge_path, name=full_name,
        short_name=given_text(short_name) or default_short_name(full_name),
        knowledge=knowledge, style=style,
        stages=[Stage(label=label, token=stage_token(1))] if label else [],
        metadata={"source_format": PERSLLM_FORMAT},
    )


def read_persllm_folder(
    folder: str | Path, *, name: str, short_name: str | None = None
) -> Character:
    """A folder of knowledge.txt + style.txt, or LABEL_knowledge.txt + LABEL_style.txt
    per stage (stages ordered early, middle, late, then others alphabetically)."""
    folder = Path(folder)
    full_name = _required_name(name, folder)
    if not folder.is_dir():
        problem = "is a file, expected a folder" if folder.exists() else "folder not found"
        raise CharacterFormatError(folder, problem)
    stages: list[Stage] = []
    knowledge: list[Passage] = []
    style: list[Passage] = []
    for position, (label, knowledge_path, style_path) in enumerate(_persllm_pairs(folder), 1):
        if label is not None:
            stages.append(Stage(label=label, token=stage_token(position, folder)))
        knowledge += _read_passages(knowledge_path, label)
        style += _read_passages(style_path, label)
    if not knowledge and not style:
        raise CharacterFormatError(folder, "no passages in any knowledge or style file")
    return build_character(
        folder, name=full_name,
        short_name=given_text(short_name) or default_short_name(full_name),
        knowledge=knowledge, style=style, stages=stages,
        metadata={"source_format": PERSLLM_FORMAT},
    )


def _required_name(name: str | None, path: Path) -> str:
    full_name = given_text(name)
    if full_name is None:
        raise CharacterFormatError(path, "PersLLM files carry no name; pass --name")
    return full_name


def _read_passages(path: Path, stage: str | None) -> list[Passage]:
    """One passage a line; a leading 【tag】 and blank lines dropped. A knowledge file
    without a passage is an error: questions and answers are drawn from it."""
    passages = []
    for line in read_text_file(path).split("\n"):
        text = _PERSLLM_TAG.sub("", line.strip()).strip()
        if text:
            passages.append(Passage(text=text, stage=stage))
    if not passages and path.name.endswith("knowledge.txt"):
        raise CharacterFormatError(path, f"no passages in {path.name} (one passage a line)")
    return passages


def _persllm_pairs(folder: Path) -> list[tuple[str | None, Path, Path]]:
    """(stage label or None, knowledge file, style file) for each stage, in order."""
    files = {path.name: path for path in folder.iterdir() if path.is_file()}
    plain = sorted({"knowledge.txt", "style.txt"} & files.keys())
    staged: dict[str, dict[str, Path]] = {}
    for file_name, path in files.items():
        match = _PERSLLM_FILE.fullmatch(file_name)
        if match:
            staged.setdefault(match.group(1), {})[match.group(2)] = path
    if plain and staged:
        raise CharacterFormatError(
            folder, "mixes knowledge.txt/style.txt with per-stage LABEL_knowledge.txt files; "
            "keep one layout"
        )
    if plain:
        if len(plain) < 2:
            missing = "style.txt" if plain == ["knowledge.txt"] else "knowledge.txt"
            raise CharacterFormatError(folder, f"has {plain[0]} but no {missing}")
        return [(None, files["knowledge.txt"], files["style.txt"])]
    if not staged:
        raise CharacterFormatError(
            folder, "no PersLLM files (expected knowledge.txt + style.txt, "
            "or LABEL_knowledge.txt + LABEL_style.txt for each stage)"
        )
    pairs = []
    for label in sorted(staged, key=_stage_order):
        for kind in ("knowledge", "style"):
            if kind not in staged[label]:
                raise CharacterFormatError(folder, f"stage {label!r} has no {label}_{kind}.txt")
        pairs.append((label, staged[label]["knowledge"], staged[label]["style"]))
    return pairs


def _stage_order(label: str) -> tuple[int, str]:
    lowered = label.lower()
    known = KNOWN_STAGE_ORDER.index(lowered) if lowered in KNOWN_STAGE_ORDER else None
    return (known, "") if known is not None else (len(KNOWN_STAGE_ORDER), lowered)
