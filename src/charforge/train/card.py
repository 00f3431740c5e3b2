"""A trained run's model card (README.md beside the adapter)."""

from __future__ import annotations

import json

from charforge.train.runs import RunRecord


def model_card(record: RunRecord) -> str:
    settings, data, metrics = record.settings, record.data, record.metrics
    method = "LoRA adapter" if settings.get("method") == "lora" else "full fine-tune"
    losses = ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in metrics.items()
                       if key.endswith("loss") or key.endswith("loss_before"))
    length = data.get("length", {})
    kind = "DPO on preference pairs" if record.kind == "dpo" else "supervised fine-tuning"
    parent = f"\n- Starts from SFT run `{record.parent}` (also the DPO reference)." \
        if record.parent else ""
    return f"""---
base_model: {record.base.get("name")}
library_name: {"peft" if settings.get("method") == "lora" else "transformers"}
tags: [charforge, role-play, character, {record.kind}]
---

# {record.character}: {record.run}

A role-playing agent trained by charforge ({kind}, {method}) from recipe
`{record.recipe}`, on base `{record.base.get("name")}` ({record.base.get("source")}).{parent}

- Use it by name: `charforge ask -m {record.character}/{record.run} -c {record.character} "..."`
  (`{record.character}` names the latest run).
- Data: {data.get("samples")} samples from {data.get("records")} records, {data.get("tokens")}
  tokens ({data.get("learned_tokens")} learned); mean length {length.get("mean")}, max
  {length.get("max")}; truncated to {settings.get("max_length")} tokens:
  {data.get("truncated")}; dropped (nothing left to learn): {data.get("dropped")}.
- Mix: {json.dumps(data.get("mix", {}), sort_keys=True)}
- Dataset: {", ".join(record.dataset.get("files", []))} (content {record.dataset.get("content")}).
- Losses: {losses or "none recorded"}; steps {metrics.get("steps")}; {metrics.get("tokens_per_s")}
  real tokens/s.
- Trained {record.started} to {record.finished}.

## Settings

```json
{json.dumps(settings, indent=2, sort_keys=True)}
```
"""
