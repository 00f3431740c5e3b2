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
{property: [least, most]}, "leads": {property: "first words"}, "mentions": {property:
"name"}, "sequence": {array property: [item, ...]}}`. A grammar holds a small model to
the prompt's lengths and subject this way where a portable schema cannot say so.

- `mentions`: the string names `name` within its first words (a scene's background
  names the character without having to start with it).
- `sequence`: the array's items one by one (JSON schema's `prefixItems`), each a
  mapping of the item's properties to a value (`const`), a list of values (`enum`) or
  prose options (`{"words": [least, most], "lead": ... (or a list of leads to choose
  from), "mention": ..., "question": true}` (it ends with "?"), or `{"name_except":
  [names]}`: a person's name that is none of those); items past the sequence are not
  allowed. A dialogue's speakers are made to alternate this way, its character
  speaking every other turn."""

# A word is written the way prose writes words: an optional capital then lower-case
# letters ("Vienna", "the", "Beethoven's", "well-known"), "I" or a Roman numeral
# ("Louis XVI"), or a number ("1770", "19th", "1800s"); then at most one punctuation
# mark. Letters are Latin, Greek and Cyrillic. No quotes, backslashes, markup, brackets,
# slashes or line breaks, so no URL, tag or JSON escape, no CamelCase run such as
# "ArtsAndCultureBoysOfMay" and no run of capitals ("DEBU DEBT DEBF", SmolLM2's
# escape once a scene went wrong). Scripts written without spaces (Chinese, Japanese)
# need `json_strings: free`.
_UPPER = "A-Z\u00C0-\u00D6\u00D8-\u00DE\u0391-\u03A9\u0400-\u042F"
_LOWER = "a-z\u00DF-\u00F6\u00F8-\u00FF\u0100-\u017F\u03AC-\u03CE\u0430-\u045F"
_BARE = (f"([{_UPPER}]?[{_LOWER}]{{1,15}}(['’-][{_LOWER}]{{1,12}})?|I|[IVXLC]{{2,5}}"
         f"|[0-9]{{1,4}}(st|nd|rd|th|s)?)")
_BARE_FIRST = (f"([{_UPPER}][{_LOWER}]{{0,15}}(['’-][{_LOWER}]{{1,12}})?|[IVXLC]{{2,5}}"
               f"|[0-9]{{1,4}}(st|nd|rd|th|s)?)")
_WORD = f"{_BARE}[,.;:!?]?"
_FIRST_WORD = f"{_BARE_FIRST}[,.;:!?]?"
# How many words may come before the name a `mention` asks for.
MENTION_WITHIN = 5


def _literal(words: str) -> str:
    return "".join(f"\\{c}" if c in _REGEX_SPECIAL else c for c in " ".join(words.split()))


def prose_pattern(min_words: int = 1, max_words: int | None = None,
                  lead: str | list[str] | None = None, *, mention: str | None = None,
                  question: bool = False) -> str:
    """A regular expression for prose of `min_words` to `max_words` words (no upper
    bound when None), the first starting with a letter; with `lead`, the prose starts
    with those words (e.g. the character's name; a list: one of them); with `mention`,
    it names `mention` (a possessive "'s" allowed) within its first `MENTION_WITHIN`
    words; with `question`, it ends with a question mark (other sentences may come
    before)."""
    first = _FIRST_WORD
    least = max(1, min_words) - 1
    head_words = 1
    if lead:
        leads = [lead] if isinstance(lead, str) else list(lead)
        first = "(" + "|".join(_literal(one) for one in leads) + ")"
        head_words = min(len(one.split()) for one in leads)
        least = max(0, least - head_words + 1)
    elif mention:
        name = f"{_literal(mention)}(['’]s)?[,.;:!?]?"
        head_words = MENTION_WITHIN + len(mention.split())
        first = f"({name}|{_FIRST_WORD}( {_WORD}){{0,{MENTION_WITHIN - 1}}} {name})"
        least = max(0, least - len(mention.split()) - 1)
    most = "" if max_words is None else str(max(max_words - head_words, least))
    if question:
        fewer = "" if not most else str(max(int(most) - 1, 0))
        return f"{first}( {_WORD}){{{max(least - 1, 0)},{fewer}}} {_BARE}\\?"
    return f"{first}( {_WORD}){{{least},{most}}}"


def name_pattern(excluded: list[str] | tuple[str, ...], max_words: int = 2) -> str:
    """A person's name of 1 to `max_words` capitalised words, none of them one of
    `excluded` (e.g. the main character's names, so that another speaker is not the
    main character under another slot)."""
    word = _word_except(sorted({w for w in excluded if w}))
    return f"{word}( {word}){{0,{max(0, max_words - 1)}}}"


def _word_except(excluded: list[str]) -> str:
    """A capitalised word (a capital, then 1 to 15 lower-case letters) that is none of
    `excluded`: it follows the excluded words letter by letter (a trie) and may leave
    them at any letter, or stop where none of them stops."""
    if not excluded:
        return f"[{_UPPER}][{_LOWER}]{{1,15}}"
    longest = 16

    def rest(depth: int) -> str:  # any letters after `depth` read, up to the longest
        return f"[{_LOWER}]{{0,{max(0, longest - depth)}}}"

    def branch(words: list[str], depth: int) -> str:
        cls = _UPPER if depth == 0 else _LOWER
        longer = [w for w in words if len(w) > depth]
        letters = sorted({w[depth] for w in longer})
        options = []
        if depth >= 2 and not any(len(w) == depth for w in words):
            options.append("")  # a word that stops where no excluded word does
        other = _class_minus(cls, letters)
        if other:
            options.append(f"[{other}]" + (rest(depth + 1) if depth else f"[{_LOWER}]{rest(2)}"))
        for letter in letters:
            options.append(_literal(letter)
                           + f"({branch([w for w in longer if w[depth] == letter], depth + 1)})")
        return "|".join(options)

    return f"({branch(excluded, 0)})"


def _class_minus(cls: str, letters: list[str]) -> str:
    """The body of a character class (ranges like `a-z` and single characters) less
    `letters`."""
    spans, i = [], 0
    while i < len(cls):
        if i + 2 < len(cls) and cls[i + 1] == "-":
            spans.append((ord(cls[i]), ord(cls[i + 2])))
            i += 3
        else:
            spans.append((ord(cls[i]), ord(cls[i])))
            i += 1
    cut = sorted(ord(c) for c in letters)
    kept = []
    for lo, hi in spans:
        for c in cut:
            if lo <= c <= hi:
                if lo < c:
                    kept.append((lo, c - 1))
                lo = c + 1
        if lo <= hi:
            kept.append((lo, hi))
    return "".join(chr(a) if a == b else f"{chr(a)}-{chr(b)}" for a, b in kept)


_REGEX_SPECIAL = frozenset(".^$*+?()[]{}|\\")


def constrain_strings(schema: Mapping[str, Any], words: Mapping[str, Any] | None = None, *,
                      items: Mapping[str, Any] | None = None,
                      leads: Mapping[str, str | list[str]] | None = None,
                      mentions: Mapping[str, str] | None = None,
                      sequence: Mapping[str, list[Mapping[str, Any]]] | None = None,
                      ) -> dict[str, Any]:
    """`schema` with every free string given the prose pattern. `words` maps a
    property name to its [least, most] words (most may be null), `items` an array
    property to its [least, most] number of items, `leads` a property to the words
    its strings start with, `mentions` a property to a name its strings name early,
    `sequence` an array property to its items one by one (see `HINTS_KEY`)."""
    limits = {name: tuple(bounds) for name, bounds in dict(words or {}).items()}
    starts = dict(leads or {})
    named = dict(mentions or {})
    counts = dict(items or {})
    ordered = {name: list(entries) for name, entries in dict(sequence or {}).items()}
    out = copy.deepcopy(dict(schema))

    def visit(node: Any, name: str | None) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item, name)
            return
        if not isinstance(node, dict):
            return
        if node.get("type") == "string" and not {"enum", "const", "pattern", "format"} & set(node):
            node["pattern"] = _string_pattern(
                {"words": limits.get(name or ""), "lead": starts.get(name or ""),
                 "mention": named.get(name or "")})
        if node.get("type") == "array" and name in counts:
            least, most = counts[name]
            node["minItems"], node["maxItems"] = int(least), int(most)
        if node.get("type") == "array" and name in ordered and isinstance(node.get("items"), dict):
            entries = ordered[name]
            node["prefixItems"] = [_item_at(node["items"], entry, limits) for entry in entries]
            node["items"] = False
            node["minItems"] = min(int(node.get("minItems", len(entries))), len(entries))
            node["maxItems"] = min(int(node.get("maxItems", len(entries))), len(entries))
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


def _string_pattern(rule: Mapping[str, Any]) -> str:
    """The pattern of one string: prose of `words` [least, most] words, with its
    `lead`, `mention` or `question`."""
    least, most = rule.get("words") or (1, None)
    return prose_pattern(least, most, rule.get("lead"), mention=rule.get("mention"),
                         question=bool(rule.get("question")))


def _item_at(item: Mapping[str, Any], entry: Mapping[str, Any],
             limits: Mapping[str, tuple[Any, ...]]) -> dict[str, Any]:
    """One position of a `sequence`: the array's item schema with some properties fixed
    (a value), limited (a list of values) or given their own prose pattern (a dict)."""
    out = copy.deepcopy(dict(item))
    props = out.get("properties", {})
    for prop, rule in entry.items():
        if prop not in props:
            raise ValueError(f"sequence names {prop!r}, not a property of the item")
        if isinstance(rule, str):
            props[prop] = {"type": "string", "enum": [rule]}
        elif isinstance(rule, (list, tuple)):
            props[prop] = {"type": "string", "enum": [str(value) for value in rule]}
        elif isinstance(rule, Mapping):
            if rule.get("name_except") is not None:
                pattern = name_pattern(list(rule["name_except"]))
            else:
                pattern = _string_pattern({"words": limits.get(prop), **rule})
            props[prop] = {"type": "string", "pattern": pattern}
        else:
            raise ValueError(f"sequence rule for {prop!r} must be a string, a list or a mapping")
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
