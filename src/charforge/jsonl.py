"""JSON Lines files a user hands charforge: each line one JSON object; a bad line is one
error naming the file and the line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from charforge.errors import CharforgeError


def json_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of `path` (UTF-8, a BOM allowed)."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise CharforgeError(f"{path}: cannot read it as UTF-8 text ({error})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise CharforgeError(f"{path}:{number}: not JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise CharforgeError(f"{path}:{number}: not a JSON object")
        yield number, row
