"""Teacher answers -> typed records, or `Rejected` with a reason.

Split by job: `schemas` (output models and their strict JSON schemas), `quality`
(content checks and cleaning shared by all formats), `text` (the seed's plain-text
layouts) and `json_answers` (JSON mode). Whatever the input string, the parsers
raise nothing but `Rejected`.
"""

from charforge.parse.json_answers import parse_dialogue_json, parse_scenes_json
from charforge.parse.quality import SceneScan, clean_content, junk_reason, truncation_check
from charforge.parse.schemas import (
    DIALOGUE_SCHEMA,
    SCENES_SCHEMA,
    DialogueAnswer,
    ScenesAnswer,
    response_format,
    response_format_for,
    strict_json_schema,
)
from charforge.parse.text import (
    parse_dialogue_text,
    parse_scenes_text,
    render_dialogue_text,
    scan_scenes_text,
)

__all__ = [
    "DIALOGUE_SCHEMA", "SCENES_SCHEMA", "DialogueAnswer", "SceneScan", "ScenesAnswer",
    "clean_content", "junk_reason", "parse_dialogue_json", "parse_dialogue_text",
    "parse_scenes_json", "parse_scenes_text", "render_dialogue_text", "response_format",
    "response_format_for", "scan_scenes_text", "strict_json_schema", "truncation_check",
]
