"""Tokens added to a base model's vocabulary (a trained agent's stage tokens), the same
way when it is trained and when it is loaded again under its adapter.

New embedding rows start as the mean of the existing rows (input and output), never at
random: a model loaded again must hold the very rows it was trained from, and an
adapter stores only the rows it trained (PEFT's `trainable_token_indices`).
"""

from __future__ import annotations

from typing import Any


def grow_vocabulary(model: Any, size: int) -> None:
    """Resize `model`'s embeddings to `size` rows, new rows set to the mean of the old.
    Under DeepSpeed ZeRO-3 (weights split across processes) the rows are gathered first."""
    import torch

    old = int(model.get_input_embeddings().num_embeddings)
    if size <= old:
        return
    model.resize_token_embeddings(size, mean_resizing=False)
    weights = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight is not weights[0]:
        weights.append(output.weight)
    with _gathered(weights), torch.no_grad():
        for weight in weights:
            weight[old:] = weight[:old].mean(dim=0, keepdim=True)


def _gathered(weights: list[Any]) -> Any:
    """Whole copies of `weights` under ZeRO-3 (written back from process 0), else nothing."""
    from contextlib import nullcontext

    try:
        from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
    except ImportError:
        return nullcontext()
    if not is_deepspeed_zero3_enabled():
        return nullcontext()
    from accelerate.utils import GatheredParameters  # DeepSpeed's, through accelerate

    return GatheredParameters(weights, modifier_rank=0)


def add_tokens(tokenizer: Any, tokens: list[str]) -> list[int]:
    """Add `tokens` to `tokenizer` as special tokens (never split; those already known
    are kept) and return their ids; `grow_vocabulary` then gives the model their rows."""
    missing = [token for token in tokens if token not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing},
                                     replace_extra_special_tokens=False)
    return [int(i) for i in tokenizer.convert_tokens_to_ids(tokens)]
