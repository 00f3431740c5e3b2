"""docs/cli.md, generated from the CLI itself so it cannot drift.

    python -m charforge.clidoc > docs/cli.md

A test compares the file with this output and fails when it is stale.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

HEADER = """\
# charforge command reference

Generated from the CLI by `python -m charforge.clidoc > docs/cli.md`; do not edit by hand.
Every command accepts `--help`. Errors are one line on stderr with exit code 2 for input
problems and 1 for failures of a model or endpoint.
"""


def _walk(command: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
    subcommands = getattr(command, "commands", None)
    if subcommands:
        for name in sorted(subcommands):
            yield from _walk(subcommands[name], [*path, name])
    else:
        yield path, command


def _describe_param(param: Any) -> tuple[str, str]:
    if param.param_type_name == "argument":
        name = param.name.upper()
        return (name if param.required else f"[{name}]"), (getattr(param, "help", None) or "")
    opts = ", ".join(f"`{o}`" for o in [*param.opts, *getattr(param, "secondary_opts", [])])
    help_text = getattr(param, "help", None) or ""
    default = param.default
    if default not in (None, False, ()) and not getattr(param, "required", False):
        help_text = f"{help_text} (default: {default})".strip()
    if getattr(param, "required", False):
        help_text = f"{help_text} (required)".strip()
    return opts, help_text


def render_cli_reference() -> str:
    import typer

    from charforge.cli import app

    root = typer.main.get_command(app)
    parts = [HEADER]
    for path, command in _walk(root, ["charforge"]):
        parts.append(f"## `{' '.join(path)}`\n")
        parts.append(f"{(command.help or '').strip()}\n")
        rows = [_describe_param(p) for p in command.params if p.name != "help"]
        if rows:
            parts.append("| argument or option | meaning |\n| --- | --- |")
            parts.extend(f"| {name} | {text.replace('|', '/')} |" for name, text in rows)
            parts.append("")
    return "\n".join(parts).rstrip() + "\n"


if __name__ == "__main__":
    print(render_cli_reference(), end="")
