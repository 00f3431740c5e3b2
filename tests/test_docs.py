"""The generated reference docs match the code."""

from __future__ import annotations

from pathlib import Path

from charforge.clidoc import render_cli_reference

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_cli_reference_is_up_to_date():
    expected = render_cli_reference()
    actual = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert actual == expected, "docs/cli.md is stale: python -m charforge.clidoc > docs/cli.md"


def test_cli_reference_covers_every_command():
    text = render_cli_reference()
    for command in ("init", "character import", "character export", "models", "ask", "demo"):
        assert f"## `charforge {command}`" in text
