"""Our prompt templates: one Jinja2 file per task, each with a version.

A template starts with `{# version: N #}`; the version is part of every task
id built from it, so editing a prompt (and bumping N) never reuses old work.
Templates render in a sandbox: they are our files, but the values poured into
them are user data.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any

from jinja2 import StrictUndefined, Template
from jinja2.sandbox import SandboxedEnvironment

_VERSION = re.compile(r"\{#\s*version:\s*(\d+)\s*#\}")


@cache
def _environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(
        undefined=StrictUndefined, keep_trailing_newline=False, trim_blocks=True, lstrip_blocks=True
    )


@cache
def template_source(name: str) -> str:
    return resources.files(__package__).joinpath(f"{name}.j2").read_text(encoding="utf-8")


def template_version(name: str) -> int:
    match = _VERSION.search(template_source(name))
    if match is None:
        raise ValueError(f"prompt template {name}.j2 has no '{{# version: N #}}' line")
    return int(match.group(1))


@cache
def _compiled(name: str) -> Template:
    return _environment().from_string(template_source(name))


def render_prompt(name: str, /, **values: Any) -> str:
    """Render prompts/<name>.j2 with `values`; surrounding blank lines removed.
    Each template is compiled once per process (this runs once per task)."""
    return _compiled(name).render(**values).strip()
