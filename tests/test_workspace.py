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


def test_recovery_keeps_the_staging_folder_of_a_live_writer(tmp_path):
    import os
    import socket

    from charforge.files import recover_folders

    host = socket.gethostname().replace("-", "_")
    live = tmp_path / f".ada.staging-{host}-{os.getpid()}-abc"
    dead = tmp_path / f".ada.staging-{host}-999999999-def"
    for folder in (live, dead):
        folder.mkdir()
    assert recover_folders(tmp_path) == [f"removed an unfinished write ({dead.name})"]
    assert live.is_dir() and not dead.exists()
