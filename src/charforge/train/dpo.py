"""`charforge train dpo`: preference tuning (DPO) of a character agent with TRL's
`DPOTrainer`, on the pairs `charforge dataset build --dpo` wrote (`dpo.jsonl`), starting
from one of the character's finished SFT runs.

The reference model is the SFT model, never the bare base:
- LoRA SFT run: the base (vocabulary grown to the SFT tokenizer, `grow_vocabulary`) with
  the SFT adapter loaded as the trainable PEFT model (adapter "default"). TRL 1.16, given
  a `PeftModel` and no `ref_model` (and no `peft_config`), adds an adapter "ref" with the
  same config, copies the weights whose names contain ".default." into it, and computes
  the reference with `use_adapter(model, "ref")`; only without a "ref" adapter (a fresh
  adapter from `peft_config`, or PEFT < 0.20 with `target_parameters`) does it disable
  the adapters, i.e. use the base. Its copy misses PEFT's trainable-token rows (the
  stage tokens: `...trainable_tokens_delta.default`, no dot after the name), which would
  leave the reference with the base's rows for them; so charforge loads the SFT
  adapter's saved weights into "ref" again and checks, before the first step, that
  every "ref" weight equals its "default" twin. "ref" is dropped before the run is
  saved: the run folder holds the DPO adapter alone, which continues the SFT adapter
  (base + DPO adapter is the whole agent).
- Full fine-tune SFT run: the SFT folder is a whole model. It is loaded twice: one copy
  is trained, the other is passed as `ref_model` (frozen, never stepped).

The text trained on is rendered by `charforge.llm.turns`, as SFT and serving render it:
a prompt is `prompt_text` (the generation prompt included); a reply is what the chat
template adds to it for the assistant turn (its end-of-turn marker included), checked
to extend the prompt. charforge tokenises both itself, each without special tokens (the
template already wrote them), and hands TRL token ids: TRL's own preparation of string
pairs appends the eos token to every reply that does not end with it (ChatML's replies
end with "<|im_end|>\\n", which would get a second one) and tokenises with special
tokens (a second BOS under some templates).

A run's identity holds its SFT run (a new SFT run means a new DPO run), the pairs'
content, the base and the settings; the identical run again trains nothing. Pairs of
the test split are the evaluation set (before and after training). `effective_batch` is
pairs per optimizer step. The finished run is a named local model (`<slug>/dpo-...`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from charforge.errors import CharforgeError
from charforge.llm.turns import prompt_text, render_turns, template_turns
from charforge.train.base import expose_head_bias
from charforge.train.data import PairRow, TemplateError, TokenStats, read_jsonl
from charforge.train.runs import LOG_FILE, RunRecord, finished_runs, now
from charforge.train.sft import (
    RunPlan,
    TrainResult,
    batch_shape,
    finish_run,
    plan_run,
    run_trainer,
    trainer_arguments,
    world_size,
)

REFERENCE_ADAPTER = "ref"  # the name TRL gives the frozen copy of the SFT adapter
POLICY_ADAPTER = "default"


def dpo_files(_settings: Any) -> list[str]:
    return ["dpo.jsonl"]


def find_sft_run(workspace: Any, character: Any, run: str | None = None) -> tuple[Path, RunRecord]:
    """The character's finished SFT run named `run` (`sft-…` or `<slug>/sft-…`), else its
    latest; a one-line error when there is none."""
    slug = character.slug
    runs = [(folder, record) for folder, record in finished_runs(workspace.root, slug)
            if record.kind == "sft"]
    if run is None:
        if not runs:
            raise CharforgeError(f"no SFT run for {character.short_name}: run charforge train "
                                 f"sft {slug} first")
        return runs[-1]
    owner, _, name = run.rpartition("/")
    if owner and owner != slug:
        raise CharforgeError(f"--sft {run}: a run of {owner}, not of {slug}")
    for folder, record in runs:
        if record.run == name:
            return folder, record
    known = ", ".join(record.run for _, record in runs) or "none (run charforge train sft "\
        f"{slug} first)"
    raise CharforgeError(f"--sft {run}: no finished SFT run of {slug} so named; SFT runs: {known}")


# -- the pairs ---------------------------------------------------------------------------
def pair_texts(tokenizer: Any, row: dict[str, Any]) -> tuple[str, str, str]:
    """(prompt, chosen reply, rejected reply) of a dpo.jsonl row as the chat template
    renders them: the prompt with its generation prompt, each reply as what the template
    adds after it (end-of-turn marker included)."""
    prompt = list(row["prompt"])
    rendered = prompt_text(tokenizer, prompt)
    replies = []
    for side in ("chosen", "rejected"):
        full = render_turns(tokenizer, template_turns(prompt + list(row[side])),
                            generation_prompt=False)
        if not full.startswith(rendered):
            raise TemplateError(
                "the chat template renders a prompt differently once a reply follows it, so "
                "the reply tokens cannot be found; use a base whose template keeps earlier "
                "turns as they are")
        replies.append(full[len(rendered):])
    return rendered, replies[0], replies[1]


def tokenized_pair(tokenizer: Any, row: dict[str, Any]) -> dict[str, list[int]]:
    """A row as TRL's token columns: `prompt_ids`, `chosen_ids`, `rejected_ids`; each text
    tokenised alone (a served agent sees its prompt tokenised alone and continues it)."""
    prompt, chosen, rejected = pair_texts(tokenizer, row)

    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    return {"prompt_ids": ids(prompt), "chosen_ids": ids(chosen), "rejected_ids": ids(rejected)}


def preference_pairs(tokenizer: Any, rows: Sequence[dict[str, Any]], max_length: int,
                     stats: TokenStats) -> list[dict[str, list[int]]]:
    """The rows tokenised; a pair whose prompt alone fills `max_length` is dropped (nothing
    of its replies would be left), a longer one is cut by TRL's collator (counted)."""
    pairs = []
    for row in rows:
        pair = tokenized_pair(tokenizer, row)
        prompt = len(pair["prompt_ids"])
        if prompt >= max_length or not pair["chosen_ids"] or not pair["rejected_ids"]:
            stats.dropped += 1
            continue
        chosen = min(len(pair["chosen_ids"]), max_length - prompt)
        rejected = min(len(pair["rejected_ids"]), max_length - prompt)
        if chosen < len(pair["chosen_ids"]) or rejected < len(pair["rejected_ids"]):
            stats.truncated += 1
        stats.samples += 1
        stats.tokens += 2 * prompt + chosen + rejected
        stats.learned_tokens += chosen + rejected
        stats.lengths.append(2 * prompt + chosen + rejected)
        pairs.append(pair)
    return pairs


def _as_dataset(pairs: Sequence[dict[str, list[int]]]) -> Any:
    from datasets import Dataset

    return Dataset.from_dict({key: [pair[key] for pair in pairs]
                              for key in ("prompt_ids", "chosen_ids", "rejected_ids")})


# -- the run -----------------------------------------------------------------------------
def train_dpo(workspace: Any, character_name: str, *, sft_run: str | None = None,
              recipe: str | None = None, config_file: str | Path | None = None,
              changes: dict[str, Any] | None = None, callbacks: Sequence[Any] = (),
              console: Console | None = None) -> TrainResult:
    """Tune a character agent on its preference pairs, from its SFT run `sft_run`
    (default: its latest), against the SFT model as the reference (see the module's
    text). An identical run already finished trains nothing; an interrupted one resumes
    from its last checkpoint."""
    character = workspace.load_character(character_name)
    sft_folder, sft = find_sft_run(workspace, character, sft_run)
    method = sft.settings.get("method", "lora")
    asked = (changes or {}).get("method")
    if asked is not None and asked != method:
        kind = "a LoRA adapter" if method == "lora" else "a full fine-tune"
        raise CharforgeError(f"method {asked}: SFT run {sft.run} is {kind}, and DPO goes on "
                             f"the same way; leave the method out, or train SFT with --{asked} "
                             "first")
    plan = plan_run(workspace, character.slug, "dpo", base=sft.base.get("name"), recipe=recipe,
                    config_file=config_file, changes={**(changes or {}), "method": method},
                    data_files=dpo_files, parent=(sft.run, sft_folder))
    if method == "lora" and _normal(plan.base.identity) != _normal(sft.base.get("identity")):
        raise CharforgeError(f"the base {plan.base.name} of SFT run {sft.run} is not the one it "
                             f"was trained on any more; train SFT again: charforge train sft "
                             f"{character.slug}")
    if (done := plan.finished) is not None:
        return TrainResult(plan.folder, done, trained=False)
    started = now()
    rows = read_jsonl(plan.data_files[0], shape=PairRow)
    train_rows = [row for row in rows if row.get("split", "train") != "test"]
    test_rows = [row for row in rows if row.get("split", "train") == "test"]
    if not train_rows:
        raise CharforgeError(f"no training pair in {plan.data_files[0]} ({len(rows)} pairs, "
                             f"{len(test_rows)} in the test split); rebuild: charforge dataset "
                             f"build {character.slug} --dpo")
    model, tokenizer, ref_model = load_policy(plan, sft_folder)
    stats = TokenStats(records=len(train_rows))
    train = preference_pairs(tokenizer, train_rows, plan.settings.max_length, stats)
    if not train:
        raise CharforgeError(f"no training pair left in {plan.data_files[0]} (every prompt "
                             f"fills max_length {plan.settings.max_length}, or every pair is "
                             f"in the test split); rebuild: charforge dataset build "
                             f"{character.slug} --dpo")
    eval_stats = TokenStats(records=len(test_rows))
    test = preference_pairs(tokenizer, test_rows, plan.settings.max_length, eval_stats)
    micro, accumulation = batch_shape(plan.settings, stats, world_size())
    result = _fit_dpo(plan, sft_folder, model, ref_model, tokenizer, train, test, micro,
                      accumulation, callbacks, console)
    trainer = result.pop("trainer")
    if method == "lora":
        trainer.model.delete_adapter(REFERENCE_ADAPTER)  # the run keeps the DPO adapter alone
    data = {**stats.summary(), "pairs": len(train), "eval": eval_stats.summary(),
            "sft_run": sft.run, "beta": plan.settings.dpo_beta, "reference": "the SFT model",
            "micro_batch": micro, "accumulation": accumulation, "world_size": world_size(),
            "pairs_per_step": micro * accumulation * world_size()}
    record = finish_run(plan, tokenizer, trainer, data=data, metrics=result, started=started)
    workspace.reload_config()
    return TrainResult(plan.folder, record, trained=True)


def _normal(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def load_policy(plan: RunPlan, sft_folder: Path) -> tuple[Any, Any, Any]:
    """(policy, tokenizer, reference model or None) of the SFT run in `sft_folder`: LoRA,
    the base grown to the run's tokenizer under its adapter (trainable; TRL makes the
    reference adapter); full, the run's model and a frozen second copy."""
    from transformers import AutoTokenizer

    from charforge.llm.local import quiet_progress_bars
    from charforge.train.base import Base, load_for_training

    if plan.settings.method != "lora":
        whole = Base(name=f"{plan.character.slug}/{plan.parent}", source=str(sft_folder))
        model, tokenizer = load_for_training(whole, plan.settings)
        reference, _ = load_for_training(whole, plan.settings)
        reference.eval()
        reference.requires_grad_(False)
        return model, tokenizer, reference
    from peft import PeftModel

    from charforge.llm.vocab import grow_vocabulary

    model, _ = load_for_training(plan.base, plan.settings)
    with quiet_progress_bars():
        tokenizer = AutoTokenizer.from_pretrained(str(sft_folder))  # stage tokens, when used
    grow_vocabulary(model, len(tokenizer))  # as SFT trained it, and as serving loads it
    try:
        policy = PeftModel.from_pretrained(model, str(sft_folder), adapter_name=POLICY_ADAPTER,
                                           is_trainable=True)
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CharforgeError(f"SFT run {plan.parent}: cannot load its adapter from "
                             f"{sft_folder}: {first}") from None
    return policy, tokenizer, None


def _make_reference_the_sft_adapter(model: Any, sft_folder: Path) -> None:
    """The "ref" adapter TRL added, loaded with the SFT adapter's saved weights (its own
    copy misses trainable-token rows), then checked weight by weight against the policy,
    which is the SFT adapter too before the first step."""
    import torch

    if REFERENCE_ADAPTER not in model.peft_config:
        raise CharforgeError("TRL made no reference adapter (it would compare against the bare "
                             "base); upgrade peft to 0.20 or later")
    model.load_adapter(str(sft_folder), adapter_name=REFERENCE_ADAPTER, is_trainable=False)
    weights = dict(model.named_parameters())
    twins = 0
    for name, weight in weights.items():
        parts = name.split(".")
        if REFERENCE_ADAPTER not in parts:
            continue
        twin = ".".join(POLICY_ADAPTER if part == REFERENCE_ADAPTER else part for part in parts)
        if twin not in weights or not torch.equal(weight, weights[twin]):
            raise CharforgeError(f"the DPO reference is not the SFT model: {name} differs from "
                                 "the SFT adapter")
        twins += 1
    if not twins:
        raise CharforgeError("the DPO reference adapter holds no weight")


def _fit_dpo(plan: RunPlan, sft_folder: Path, model: Any, ref_model: Any, tokenizer: Any,
             train: list[dict[str, list[int]]], test: list[dict[str, list[int]]], micro: int,
             accumulation: int, callbacks: Sequence[Any],
             console: Console | None) -> dict[str, Any]:
    from trl import DPOConfig, DPOTrainer

    from charforge.train.progress import CharforgeTrainerMixin, RichProgress, RunLog

    class CharforgeDPOTrainer(CharforgeTrainerMixin, DPOTrainer):
        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any,
                             dataset_name: str) -> Any:
            if "prompt_ids" in dataset.column_names:
                return dataset  # tokenised by charforge: see `preference_pairs`
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    settings = plan.settings
    plan.folder.mkdir(parents=True, exist_ok=True)
    args = DPOConfig(**trainer_arguments(
        plan, micro, accumulation, bool(test), learning_rate=settings.dpo_learning_rate,
        beta=settings.dpo_beta,
        max_length=settings.max_length, padding_free=False, precompute_ref_log_probs=False))
    trainer_ref: list[Any] = []
    progress = RichProgress(trainer_ref, console, label=f"DPO {plan.character.short_name}")
    trainer = CharforgeDPOTrainer(
        model=model, ref_model=ref_model, args=args, train_dataset=_as_dataset(train),
        eval_dataset=_as_dataset(test) if test else None, processing_class=tokenizer,
        callbacks=[progress, RunLog(plan.folder / LOG_FILE), *callbacks])
    trainer_ref.append(trainer)
    expose_head_bias(trainer.model)
    if ref_model is None:
        _make_reference_the_sft_adapter(trainer.model, sft_folder)
    return run_trainer(trainer, progress, has_eval=bool(test))
