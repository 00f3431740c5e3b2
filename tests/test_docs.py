"""The generated reference docs match the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def fresh_reference() -> str:
    """The reference as a fresh `charforge` process sees the CLI (stages registered by
    other tests in this process must not leak into it)."""
    result = subprocess.run([sys.executable, "-m", "charforge.clidoc"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_cli_reference_is_up_to_date():
    actual = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert actual == fresh_reference(), \
        "docs/cli.md is stale: python -m charforge.clidoc > docs/cli.md"


def test_cli_reference_covers_every_command_and_stage_option():
    text = fresh_reference()
    for command in ("init", "character import", "character export", "generate", "status",
                    "models", "ask", "run"):
        assert f"## `charforge {command}`" in text
    for option in ("--prompts", "--scenes-per-prompt", "--min-words", "--count", "--rerun-stale"):
        assert f"`{option}`" in text, option


def test_training_settings_are_all_documented_with_their_defaults():
    from charforge.train.settings import TrainSettings

    text = (DOCS / "training.md").read_text(encoding="utf-8")
    for name, field in TrainSettings.model_fields.items():
        assert f"| `{name}` | `{field.default}` |" in text, name
