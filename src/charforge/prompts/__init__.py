"""Our prompt templates: Jinja2 files, found along a search path, fingerprinted.

`Templates(*folders)` looks for `<name>.j2` in each folder in turn, then in this
package: a workspace's `prompts/` folder overrides a built-in prompt by file name,
and a stage written outside the package brings its own folder. A template may
`{% include %}`, `{% import %}` or `{% extends %}` others.

A task's id holds the fingerprint of every template its stage renders, includes
and macros counted (`Templates.fingerprint`), so editing a prompt redoes exactly
the work that used it, with or without a `{# version: N #}` bump. Templates render
in a sandbox: they are our files, but the values poured into them are user data.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, TemplateNotFound, meta
from jinja2.sandbox import SandboxedEnvironment

PACKAGE_DIR = Path(str(resources.files(__package__)))
SUFFIX = ".j2"
_VERSION = re.compile(r"\{#\s*version:\s*(\d+)\s*#\}")


def _file_name(name: str) -> str:
    return name if name.endswith(SUFFIX) else name + SUFFIX


class Templates:
    """Prompt templates along a search path: `folders` first, the package's last."""

    def __init__(self, *folders: str | Path) -> None:
        extra = tuple(Path(f).resolve() for f in folders)
        self.folders: tuple[Path, ...] = (*dict.fromkeys(extra), PACKAGE_DIR)
        self._env = SandboxedEnvironment(
            loader=FileSystemLoader([str(f) for f in self.folders]),
            undefined=StrictUndefined, keep_trailing_newline=False, trim_blocks=True,
            lstrip_blocks=True, auto_reload=True,  # an edited file is read again
        )

    def __repr__(self) -> str:
        return f"Templates({', '.join(str(f) for f in self.folders)})"

    def source(self, name: str) -> str:
        try:
            source, _, _ = self._env.loader.get_source(self._env, _file_name(name))  # type: ignore[union-attr]
        except TemplateNotFound:
            raise ValueError(
                f"no prompt template {_file_name(name)} in {', '.join(map(str, self.folders))}"
            ) from None
        return source

    def version(self, name: str) -> int:
        """The `{# version: N #}` of a template, 0 when it has none."""
        match = _VERSION.search(self.source(name))
        return int(match.group(1)) if match else 0

    def render(self, name: str, /, **values: Any) -> str:
        """Render `<name>.j2` with `values`; surrounding blank lines removed. Each
        template is compiled once per `Templates` (this runs once per task)."""
        return self._env.get_template(_file_name(name)).render(**values).strip()

    def closure(self, names: Iterable[str]) -> list[str]:
        """The file names of `names` and of every template they include, import or
        extend, recursively, sorted."""
        seen: set[str] = set()
        todo = [_file_name(n) for n in names]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            for used in meta.find_referenced_templates(self._env.parse(self.source(name))):
                if used is None:
                    raise ValueError(f"{name} includes a template chosen at run time; name "
                                     "included templates literally so they can be fingerprinted")
                todo.append(used)
        return sorted(seen)

    def fingerprint(self, names: Iterable[str]) -> str:
        """A hash of the source of `names` and everything they use, as the files are now
        (read again at each call: a prompt edited in a long-lived process counts too)."""
        digest = hashlib.sha256()
        for name in self.closure(names):
            digest.update(f"{name}\0{self.source(name)}\0".encode())
        return digest.hexdigest()[:24]


@cache
def templates_for(*folders: str | Path) -> Templates:
    """One `Templates` per search path in a process (each compiles its templates once)."""
    return Templates(*folders)


PROMPTS = templates_for()


def render_prompt(name: str, /, **values: Any) -> str:
    """Render one of the package's own templates."""
    return PROMPTS.render(name, **values)
