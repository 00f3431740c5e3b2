"""The `accelerate launch` configs charforge ships for training on many GPUs.

    accelerate launch --config_file "$(python -m charforge.train.launch ddp)" \\
        --num_processes 4 -m charforge.cli train sft CHARACTER ...

ddp: data parallel (every GPU holds the whole model); fsdp: fully sharded (weights,
gradients and optimizer state split over the GPUs); zero3: DeepSpeed ZeRO-3 (needs
`pip install deepspeed`). See docs/training.md, "Many GPUs (accelerate)".

No torch here: printing a config's path is instant.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from charforge.errors import CharforgeError

CONFIGS = ("ddp", "fsdp", "zero3")


def accelerate_config(name: str) -> Path:
    """The path of the shipped accelerate config `name` (ddp, fsdp or zero3)."""
    if name not in CONFIGS:
        raise CharforgeError(f"unknown accelerate config {name!r}; shipped: "
                             f"{', '.join(CONFIGS)}")
    return Path(str(resources.files("charforge.train").joinpath("configs", f"{name}.yaml")))


def main(argv: list[str] | None = None) -> int:
    """`python -m charforge.train.launch NAME`: print the config's path (for
    `accelerate launch --config_file`)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"usage: python -m charforge.train.launch {{{','.join(CONFIGS)}}}",
              file=sys.stderr)
        return 2
    try:
        print(accelerate_config(args[0]))
    except CharforgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
