"""Workspace folders: written whole or not at all."""

from __future__ import annotations

import pytest

from charforge.character import Character
from charforge.files import LOCK_NAME, folder_written_whole
from charforge.workspace import Workspace


def test_a_failed_write_leaves_the_old_folder_and_no_debris(tmp_path):
    target = tmp_path / "out"
    with folder_written_whole(target) as staging:
        (staging / "a.txt").write_text("first")
    with pytest.raises(RuntimeError), folder_written_whole(target) as staging:
        (staging / "a.txt").write_text("second")
        raise RuntimeError("crash mid-write")
    assert (target / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != LOCK_NAME) == ["out"]


def test_a_folder_left_by_a_crash_is_not_a_character(tmp_path):
    ws = Workspace.init(tmp_path)
    ws.save_character(Character(name="Ada Lovelace", short_name="Ada", profile=["Maths."]))
    debris = ws.characters_dir / ".ada-x1y2"
    debris.mkdir()
    (debris / "character.yaml").write_text((ws.characters_dir / "ada/character.yaml").read_text())
    assert [c.short_name for c in ws.characters()] == ["Ada"]
