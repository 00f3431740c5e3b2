"""Rows of one batch through different LoRA adapters, with less Python per step.

PEFT runs a mixed-adapter batch when the forward pass gets `adapter_names`: it then
registers a hook on every module for that call (the model's whole module tree is
walked, ~15 ms a step for SmolLM2) and, in each LoRA layer, groups the rows by adapter
again from the list of names (another ~35 ms a step at 16 rows, 120 LoRA layers).
Measured here on SmolLM2-135M, 16 rows over two adapters and the base: 224 ms a
decoding step against 179 ms with one adapter simply active.

`MixedLoRA` does the same arithmetic with the grouping done once a step: the engine
sets `rows` (the row indices of each adapter, as tensors) and calls the model without
`adapter_names`; each LoRA layer's forward, replaced on the instance, adds every
adapter's `B(A(x)) * scaling` to its own rows. A step whose rows all share one adapter
skips the row selection. It applies only to models whose every PEFT layer is a plain
LoRA `Linear` (no DoRA or other variant, no bias, no `modules_to_save` or trainable
tokens: those keep PEFT's own path), in eval mode.

Adapters are kept in the base's precision and computed in float32. PEFT keeps them in
float32 beside a bfloat16 base (its `autocast_adapter_dtype`): an r=16 adapter on
SmolLM2's attention is 7.0 MiB, the most of what each extra character costs a server.
Kept in bfloat16 it is half that; each call casts the two small matrices back to
float32 (~5 us a layer here, and float32 is the faster arithmetic on a CPU for such
small products: 14 us against 46 us in bfloat16, one row). What changes is each
weight's rounding to bfloat16, well under the base's own bfloat16 arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

COMPUTE = "float32"  # the dtype of the LoRA arithmetic, whatever the weights are kept in


class MixedLoRA:
    """The replaced forwards of a PEFT model's LoRA layers; `rows` None = PEFT's own."""

    def __init__(self, layers: list[Any]) -> None:
        self.rows: list[tuple[str, Any]] | None = None
        self.whole = False  # one adapter for every row of the step: no row selection
        self._layers = layers
        for layer in layers:
            layer.forward = self._forward_of(layer)

    @classmethod
    def install(cls, model: Any) -> MixedLoRA | None:
        """Replace the forwards of `model`'s LoRA layers (their adapters compact), or
        None when it has a layer this does not cover."""
        layers = plain_lora_layers(model)
        if not layers:
            return None
        for layer in layers:
            compact(layer)
        return cls(layers)

    def plan(self, adapters: Sequence[str], base: str, device: str) -> None:
        """Group the rows of the next forward pass by adapter (`base` rows get none)."""
        import torch

        groups: dict[str, list[int]] = {}
        for row, name in enumerate(adapters):
            if name != base:
                groups.setdefault(name, []).append(row)
        self.whole = len(groups) == 1 and len(next(iter(groups.values()))) == len(adapters)
        self.rows = [(name, torch.tensor(rows, device=device)) for name, rows in groups.items()]

    def remove(self) -> None:
        """Give the layers their own forwards back (the adapters stay compact)."""
        for layer in self._layers:
            layer.__dict__.pop("forward", None)
        self._layers = []

    def _forward_of(self, layer: Any) -> Any:
        import torch
        from torch.nn.functional import linear

        own = type(layer).forward.__get__(layer)
        compute = getattr(torch, COMPUTE)

        def forward(x: Any, *args: Any, **kwargs: Any) -> Any:
            rows = self.rows
            if rows is None or layer.disable_adapters or layer.merged or layer.training:
                return own(x, *args, **kwargs)
            result = layer.base_layer(x, *args, **kwargs)
            kept = result.dtype
            for name, index in rows:
                if name not in layer.lora_A:
                    continue
                part = x.to(compute) if self.whole else x.index_select(0, index).to(compute)
                change = linear(linear(part, layer.lora_A[name].weight.to(compute)),
                                layer.lora_B[name].weight.to(compute)) * layer.scaling[name]
                if self.whole:  # as PEFT adds one active adapter: in float32, then cast
                    result = (result + change).to(kept)
                else:
                    result.index_add_(0, index, change.to(kept))
            return result

        return forward


def plain_lora_layers(model: Any) -> list[Any] | None:
    """`model`'s LoRA layers when every one of them is a plain LoRA `Linear` (the
    layers `MixedLoRA` covers), else None."""
    try:
        from peft.tuners.lora.layer import Linear
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:
        return None
    if not hasattr(model, "peft_config"):
        return None
    layers = []
    for module in model.modules():
        kind = type(module).__name__
        if kind in ("ModulesToSaveWrapper", "TrainableTokensWrapper", "TrainableTokensLayer"):
            return None
        if not isinstance(module, BaseTunerLayer):
            continue
        if type(module) is not Linear or any(module.use_dora.values()) or \
                getattr(module, "lora_variant", {}) or \
                any(getattr(module, "lora_bias", {}).values()):
            return None
        layers.append(module)
    return layers or None


def compact_adapters(model: Any) -> None:
    """Keep the adapters of `model` in its base's precision now, where `MixedLoRA` will
    compute them (called after each adapter loads: the float32 copies then never pile
    up, and a server's peak memory stays at one adapter's float32 copy)."""
    for layer in plain_lora_layers(model) or []:
        compact(layer)


def compact(layer: Any) -> None:
    """Keep `layer`'s LoRA matrices in its base weight's dtype where that is narrower
    than theirs (a bfloat16 or float16 base beside float32 adapters)."""
    target = layer.base_layer.weight.dtype
    if not target.is_floating_point:  # a quantised base: leave the adapters as they are
        return
    for modules in (layer.lora_A, layer.lora_B):
        for module in modules.values():
            weight = module.weight
            if weight.dtype.is_floating_point and weight.dtype.itemsize > target.itemsize:
                weight.data = weight.data.to(target)
