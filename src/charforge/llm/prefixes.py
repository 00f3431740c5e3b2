"""The prefix cache: the key/value states of prompt openings the engine has read.

Most of a character's prompt is the same from one request to the next: the system
message (profile, scene, meta prompt) comes first and only the conversation after it
changes. Reading that opening again costs most of a request's prefill (on a CPU, about
0.4 s of SmolLM2's ~110-token system message against ~0.05 s for a 15-token question).
The engine keeps the states of the openings requests mark as shared (`EngineRequest.
prefix`) and starts a later prompt that begins with the same tokens from them.

States depend on the adapter (LoRA changes the keys and values), so an entry belongs
to one adapter. Entries are kept most recently used first within a budget of bytes;
an entry larger than the whole budget is not kept.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MIN_TOKENS = 16  # a shorter common opening is not worth a lookup's bookkeeping


@dataclass(frozen=True)
class Prefix:
    """The states of `ids` read with `adapter`: per layer (keys, values), each
    [1, heads, len(ids), head size]."""

    adapter: str
    ids: tuple[int, ...]
    layers: tuple[tuple[Any, Any], ...]

    @property
    def nbytes(self) -> int:
        return sum(k.element_size() * k.nelement() + v.element_size() * v.nelement()
                   for k, v in self.layers)


class PrefixCache:
    """Prompt openings' states by adapter, least recently used out first."""

    def __init__(self, budget_bytes: int, *, min_tokens: int = MIN_TOKENS) -> None:
        self.budget_bytes = max(0, budget_bytes)
        self.min_tokens = max(1, min_tokens)
        self._entries: collections.OrderedDict[tuple[str, tuple[int, ...]], Prefix] = \
            collections.OrderedDict()
        self._bytes = 0
        self.hits = 0  # prompts started from an entry
        self.tokens_saved = 0  # prompt tokens not read again thanks to them

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def longest(self, adapter: str, prompt: Sequence[int]) -> tuple[Prefix, int] | None:
        """The entry sharing the longest opening with `prompt` and how many tokens of
        it can be used (at least `min_tokens`, and never the prompt's last token: its
        logits are still to be computed)."""
        best: tuple[Prefix, int] | None = None
        for (owner, _), entry in self._entries.items():
            if owner != adapter:
                continue
            shared = common_opening(entry.ids, prompt)
            if best is None or shared > best[1]:
                best = (entry, shared)
        if best is None:
            return None
        entry, shared = best
        usable = min(shared, len(prompt) - 1)
        if usable < self.min_tokens:
            return None
        self._entries.move_to_end((entry.adapter, entry.ids))
        self.hits += 1
        self.tokens_saved += usable
        return entry, usable

    def wants(self, adapter: str, ids: Sequence[int]) -> bool:
        """Whether storing these states would add anything."""
        return (self.budget_bytes > 0 and len(ids) >= self.min_tokens
                and (adapter, tuple(ids)) not in self._entries)

    def store(self, entry: Prefix) -> None:
        size = entry.nbytes
        if size > self.budget_bytes:
            return
        key = (entry.adapter, entry.ids)
        if key in self._entries:
            self._bytes -= self._entries.pop(key).nbytes
        self._entries[key] = entry
        self._bytes += size
        while self._bytes > self.budget_bytes:
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= dropped.nbytes

    def forget(self, adapter: str | None = None) -> None:
        """Drop every entry (of one adapter, when named)."""
        for key in [key for key in self._entries if adapter is None or key[0] == adapter]:
            self._bytes -= self._entries.pop(key).nbytes


def common_opening(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the longest common opening of two id sequences."""
    size = min(len(a), len(b))
    for i in range(size):
        if a[i] != b[i]:
            return i
    return size
