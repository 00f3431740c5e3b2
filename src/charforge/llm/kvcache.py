"""The engine's key/value cache: layers that grow in place, and caches started from kept
prompt openings (`charforge.llm.prefixes`)."""

from __future__ import annotations

from typing import Any

from charforge.llm.prefixes import Prefix


def plain(cache: Any) -> bool:
    """Whether every layer of `cache` is a plain full-attention `DynamicLayer` (the
    only kind the engine joins, trims and keeps openings of)."""
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) in (DynamicLayer, _roomy()) for layer in cache.layers)


ROOM = 32  # token slots a layer keeps spare, so a step writes in place


def _roomy_layer_class() -> type:
    """`DynamicLayer` that appends into spare slots instead of concatenating: transformers'
    layer copies the whole cache at every step (`torch.cat`), ~6% of a 16-row step
    here. The keys and values it shows are views of the first slots; when the engine
    replaces them (joining, selecting or trimming rows) the next append starts a new
    buffer from them."""
    import torch
    from transformers.cache_utils import DynamicLayer

    class RoomyLayer(DynamicLayer):
        _keys_buffer: Any = None
        _values_buffer: Any = None

        def update(self, key_states: Any, value_states: Any, *args: Any,
                   **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            size = self.keys.shape[-2] if self.keys.dim() == 4 else 0
            new = key_states.shape[-2]
            buffer = self._keys_buffer
            if (buffer is None or size + new > buffer.shape[-2]
                    or buffer.shape[0] != key_states.shape[0]
                    or (size and self.keys.data_ptr() != buffer.data_ptr())):
                shape = list(key_states.shape)
                shape[-2] = size + new + ROOM
                keys = torch.empty(shape, dtype=key_states.dtype, device=key_states.device)
                shape[1], shape[-1] = value_states.shape[1], value_states.shape[-1]
                values = torch.empty(shape, dtype=value_states.dtype, device=value_states.device)
                if size:
                    keys[..., :size, :] = self.keys
                    values[..., :size, :] = self.values
                self._keys_buffer, self._values_buffer = keys, values
            self._keys_buffer[..., size:size + new, :] = key_states
            self._values_buffer[..., size:size + new, :] = value_states
            self.keys = self._keys_buffer[..., :size + new, :]
            self.values = self._values_buffer[..., :size + new, :]
            return self.keys, self.values

    return RoomyLayer


_ROOMY: list[type] = []


def _roomy() -> type:
    if not _ROOMY:
        _ROOMY.append(_roomy_layer_class())
    return _ROOMY[0]


def with_room(cache: Any) -> Any:
    """`cache` with its plain layers appending in place (others left as they are)."""
    from transformers.cache_utils import DynamicLayer

    if all(type(layer) is DynamicLayer for layer in cache.layers):
        cache.layers = [_roomy()() for _ in cache.layers]
    return cache


def seed(cache: Any, openings: list[tuple[Prefix, int] | None], width: int) -> None:
    """Fill an empty cache with each row's kept opening (its first n tokens' states),
    left-padded to `width`; a row with none is all padding."""
    import torch
    from torch.nn.functional import pad

    some = next(opening for opening in openings if opening is not None)[0]
    for number, layer in enumerate(cache.layers):
        keys, values = [], []
        for opening in openings:
            entry, n = opening if opening is not None else (some, 0)
            k, v = entry.layers[number]
            keys.append(pad(k[..., :n, :], (0, 0, width - n, 0)))
            values.append(pad(v[..., :n, :], (0, 0, width - n, 0)))
        layer.update(torch.cat(keys), torch.cat(values))
