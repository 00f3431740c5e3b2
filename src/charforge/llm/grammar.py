"""Grammar-constrained JSON for the local backend (xgrammar, CPU or GPU).

A `json_schema` response_format is compiled into a grammar over the model's
vocabulary, and a logits processor masks every token that would leave it, so the
answer is schema-valid JSON by construction. Compiled grammars are cached per
tokenizer and schema (compiling takes about a second).

Small models fill free strings with markup and fragments (FIELD-NOTES), so by
default the local backend reads every free string of the schema as *prose*: it
starts with a letter and contains no markup, brackets, quotes, backslashes or line
breaks; a stage may bound its words and a list's items (`HINTS_KEY`). Strings with
an `enum`, a `const` or their own `pattern` are left as they are. The portable
schema sent to endpoints is never changed; this is how the local backend decodes it.
"""

from __future__ import annotations

import copy
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Literal

StringPolicy = Literal["prose", "free"]

HINTS_KEY = "x-charforge-hints"
"""A key of a `response_format` that only charforge's backends read (the endpoint
backend drops it before sending): `{"words": {property: [least, most]}, "items":
{property: [least, most]}, "leads": {property: "first words"}}`. A grammar holds a
small model to the prompt's lengths and subject this way where a portable schema
cannot say so."""

# A word is written the way prose writes words: an optional capital then lower-case
# letters ("Vienna", "the", "Beethoven's", "well-known"), a short all-capital word ("I",
# "USA"), or a number ("1770", "19th", "1800s"); then at most one punctuation mark.
# Letters are Latin, Greek and Cyrillic. No quotes, backslashes, markup, brackets,
# slashes or line breaks, so no URL, tag or JSON escape, and no CamelCase run such as
# "ArtsAndCultureBoysOfMay". Scripts written without spaces (Chinese, Japanese) need
# `json_strings: free`.
_UPPER = "A-Z\u00C0-\u00D6\u00D8-\u00DE\u0391-\u03A9\u0400-\u042F"
_LOWER = "a-z\u00DF-\u00F6\u00F8-\u00FF\u0100-\u017F\u03AC-\u03CE\u0430-\u045F"
_WORD = (f"([{_UPPER}]?[{_LOWER}]{{1,17}}(['’-][{_LOWER}]{{1,12}})?|[{_UPPER}]{{1,4}}"
         f"|[0-9]{{1,4}}(st|nd|rd|th|s)?)[,.;:!?]?")
_FIRST_WORD = (f"([{_UPPER}][{_LOWER}]{{0,17}}(['’-][{_LOWER}]{{1,12}})?|[{_UPPER}]{{1,4}}"
               f"|[0-9]{{1,4}}(st|nd|rd|th|s)?)[,.;:!?]?")


def prose_pattern(min_words: int = 1, max_words: int | None = None,
                  lead: str | None = None) -> str:
    """A regular expression for prose of `min_words` to `max_words` words (no upper
    bound when None), the first starting with a letter; with `lead`, the prose starts
    with those words (e.g. the character's name)."""
    first = _FIRST_WORD
    least = max(1, min_words) - 1
    if lead:
        first = "".join(f"\\{c}" if c in _REGEX_SPECIAL else c for c in " ".join(lead.split()))
        least = max(0, least - len(lead.split()) + 1)
    most = "" if max_words is None else str(max(max_words - len((lead or "x").split()),
                                                least))
    return f"{first}( {_WORD}){{{least},{most}}}"


_REGEX_SPECIAL = frozenset(".^$*+?()[]{}|\\")


def constrain_strings(schema: Mapping[str, Any], words: Mapping[str, Any] | None = None, *,
                      items: Mapping[str, Any] | None = None,
                      leads: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`schema` with every free string given the prose pattern. `words` maps a
    property name to its [least, most] words (most may be null), `items` an array
    property to its [least, most] number of items, `leads` a property to the words
    its strings start with."""
    limits = {name: tuple(bounds) for name, bounds in dict(words or {}).items()}
    starts = dict(leads or {})
    counts = dict(items or {})
    out = copy.deepcopy(dict(schema))

    def visit(node: Any, name: str | None) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item, name)
            return
        if not isinstance(node, dict):
            return
        if node.get("type") == "string" and not {"enum", "const", "pattern", "format"} & set(node):
            node["pattern"] = prose_pattern(*limits.get(name or "", (1, None)),
                                            lead=starts.get(name or ""))
        if node.get("type") == "array" and name in counts:
            least, most = counts[name]
            node["minItems"], node["maxItems"] = int(least), int(most)
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                for prop, sub in value.items():
                    visit(sub, prop)
            elif key in ("items", "anyOf", "oneOf", "allOf", "prefixItems"):
                visit(value, name)
            elif key == "$defs" and isinstance(value, dict):
                visit(list(value.values()), None)

    visit(out, None)
    return out


class GrammarCompiler:
    """Compiled JSON-schema grammars for one tokenizer, cached by schema text."""

    def __init__(self, tokenizer: Any, vocab_size: int, cache_size: int = 64) -> None:
        import xgrammar

        info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self._compiler = xgrammar.GrammarCompiler(info)
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._size = cache_size

    def compile(self, schema: Mapping[str, Any]) -> Any:
        text = json.dumps(schema)  # key order kept: it is the order of generation
        with self._lock:
            if text in self._cache:
                self._cache.move_to_end(text)
                return self._cache[text]
        compiled = self._compiler.compile_json_schema(text, any_whitespace=False,
                                                      strict_mode=True)
        with self._lock:
            self._cache[text] = compiled
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return compiled

    def logits_processor(self, schema: Mapping[str, Any]) -> Any:
        """A fresh processor (each is good for one `generate` call)."""
        from xgrammar.contrib.hf import LogitsProcessor

        return LogitsProcessor(self.compile(schema))


def schema_of(response_format: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a response_format asks for; None for plain text. `json_object`
    asks for any JSON object."""
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema")
        if isinstance(schema, Mapping):
            return dict(schema)
    raise ValueError(f"unsupported response_format {kind!r}; use text, json_object or "
                     "json_schema with a schema")
