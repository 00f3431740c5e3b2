"""Training throughput: charforge's padding-free SFT against padded batches, in real tokens/s.

    .venv/bin/python bench/train.py [--samples N] [--steps 2] [--batch 8] [--rounds 2]
                                    [--max-length 2048] [--hidden 256] [--layers 4]
                                    [--vocab 8192] [--precision auto|fp32|bf16]
                                    [--micro-batch-tokens default,2048,4096] [--quick]

The same synthetic data (a seed-like length distribution: lognormal around 720 tokens, cut
at max_length; random token ids; the later part of each sample learned, like a reply), the
same random Llama built from a config here, the same TRL `SFTTrainer` with charforge's
`trainer_arguments` and `batch_shape`, three ways of batching it:

1. charforge's: micro-batches concatenated without padding (`padding_free=True`, position
   ids restarting per sample, as `charforge train sft` sets it), once per
   `--micro-batch-tokens` value; `default` is charforge's default (one sample a
   micro-batch without flash attention, as here; max_length with it);
2. the seed's (FastChat): every sample padded to max_length, with an attention mask;
3. pad-to-longest batches grouped by length (the Trainer's `group_by_length`): each
   micro-batch padded to its longest sample, the samples sorted longest first.

Every way reads the samples in the same order (`sequential`; the samples are drawn in random
order) and takes `--batch` samples a step, so the timed steps of every way hold the same
samples (the grouped way sorts the timed ones among themselves, as the Trainer sorts a
mega-batch). Each run trains a fresh model from the same seed for one warm-up step, then
`--steps` optimizer steps are timed; every way runs `--rounds` times, the order reversed
every other round, and keeps its fastest round. Only real (non-pad) tokens count. Printed:
the length distribution, real tokens/s of each way (and per CPU second of this process, and
the share of the machine others took meanwhile), the padding-only ceiling (max_length x
samples / real tokens), the ratios and the targets (charforge at least 2.5x the seed's way
and 1.3x the grouped way), met or missed.

On a CPU transformers has no varlen attention: packed samples are kept apart by a dense
block-diagonal mask over the whole micro-batch, so attention costs grow with the micro-batch
length, not the sample's; the grouped way pays attention per sample (with a padding mask),
and a micro-batch of one sample needs no mask at all.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from charforge.train.data import IGNORE, Sample, TokenStats, fit
from charforge.train.settings import TrainSettings

MEAN_LENGTH = 720  # a seed scene, in tokens (FIELD-NOTES, Training)
SIGMA = 0.5  # lognormal spread: p90 about 1.7x the mean, about 1% reach max_length
TARGET_SEED = 2.5
TARGET_GROUPED = 1.3
QUICK = dict(samples=12, steps=1, rounds=1, batch=4, max_length=128, hidden=32, layers=2,
             vocab=256, micro_batch_tokens=None)  # --quick: every way in seconds


# -- data ------------------------------------------------------------------------------
def sample_lengths(count: int, max_length: int, rng: np.random.Generator) -> list[int]:
    """Lognormal lengths with a mean near MEAN_LENGTH x max_length / 2048, cut at
    max_length: the distribution's quantiles at (i + 0.5) / count (so a few dozen samples
    already have its shape and tail), in random order."""
    from statistics import NormalDist

    mean = MEAN_LENGTH * max_length / 2048
    normal = NormalDist(math.log(mean) - SIGMA**2 / 2, SIGMA)
    lengths = [int(min(max_length, max(16, round(math.exp(normal.inv_cdf((i + 0.5) / count))))))
               for i in range(count)]
    return [lengths[i] for i in rng.permutation(count)]


def synthetic_samples(lengths: list[int], vocab: int, rng: np.random.Generator) -> list[Sample]:
    """Random ids (2 and up: 0 pads, 1 ends); the last 40-70% of each sample learned."""
    samples = []
    for length in lengths:
        ids = rng.integers(2, vocab, size=length).tolist()
        cut = int(length * rng.uniform(0.3, 0.6))
        samples.append(Sample(ids, [IGNORE] * cut + ids[cut:], source="bench"))
    return samples


def grouped_order(samples: list[Sample], warmup: int, timed: int) -> list[Sample]:
    """The Trainer's group_by_length order: the warm-up samples, then the timed ones, then
    the rest, each part a mega-batch sorted longest first."""
    def by_length(part: list[Sample]) -> list[Sample]:
        return sorted(part, key=lambda s: len(s.input_ids), reverse=True)

    end = warmup + timed
    return (by_length(samples[:warmup]) + by_length(samples[warmup:end])
            + by_length(samples[end:]))


def verdict(ratio: float, target: float) -> str:
    return "met" if ratio >= target else f"missed ({ratio:.2f}x)"


def percentile(ordered: list[int], q: float) -> int:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- model -----------------------------------------------------------------------------
def tokenizer_for(vocab: int) -> Any:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    words = {"<pad>": 0, "<eos>": 1, **{f"t{i}": i for i in range(2, vocab)}}
    core = Tokenizer(models.WordLevel(words, unk_token="<eos>"))
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>")


def tiny_llama(args: argparse.Namespace) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    heads = max(1, args.hidden // 64)
    intermediate = max(64, round(args.hidden * 8 / 3 / 64) * 64)
    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden,
                         intermediate_size=intermediate, num_hidden_layers=args.layers,
                         num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=args.max_length, tie_word_embeddings=True,
                         pad_token_id=0, eos_token_id=1, bos_token_id=1)
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


# -- one way of batching ---------------------------------------------------------------
@dataclass
class Way:
    name: str
    micro: int
    accumulation: int
    padding_free: bool
    samples: list[Sample]
    pad_to: int | None = None  # pad_to_multiple_of: the seed's fixed length
    micro_batch_tokens: int | None = None


def machine_ticks() -> tuple[int, int, int]:
    """(busy, all, stolen) CPU ticks of the whole machine since boot (Linux; else zeros)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    except (OSError, ValueError):
        return 0, 0, 0
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait, steal


@dataclass
class Mark:
    wall: float
    cpu: float  # this process's CPU seconds, all threads
    real: int
    computed: int
    ticks: tuple[int, int, int]

    @classmethod
    def now(cls, real: int, computed: int) -> Mark:
        return cls(time.perf_counter(), time.process_time(), real, computed, machine_ticks())


@dataclass
class Timing:
    way: Way
    seconds: float
    cpu_seconds: float  # this process's CPU time (all threads): less moved by other load
    real: int  # real tokens in the timed steps
    computed: int  # tokens the model ran, padding included
    loss: float
    others: float  # share of the machine's CPU others used meanwhile (stolen time included)

    @classmethod
    def between(cls, way: Way, first: Mark, last: Mark, loss: float) -> Timing:
        busy, total, _ = (b - a for a, b in zip(first.ticks, last.ticks, strict=True))
        ours = (last.cpu - first.cpu) * os.sysconf("SC_CLK_TCK")
        others = max(0.0, (busy - ours) / total) if total else float("nan")
        return cls(way, last.wall - first.wall, last.cpu - first.cpu, last.real - first.real,
                   last.computed - first.computed, loss, others)

    @property
    def tokens_per_s(self) -> float:
        return self.real / self.seconds

    @property
    def tokens_per_cpu_s(self) -> float:
        return self.real / self.cpu_seconds


def settings_for(args: argparse.Namespace, micro_batch_tokens: int | None = None) -> TrainSettings:
    return TrainSettings(method="full", max_length=args.max_length, effective_batch=args.batch,
                         micro_batch_tokens=micro_batch_tokens, precision=args.precision,
                         max_steps=args.steps + 1, save_steps=10**6, logging_steps=10**6,
                         warmup_steps=1)


def train_way(way: Way, args: argparse.Namespace, folder: Path) -> Timing:
    """A fresh model trained one warm-up step, then `args.steps` steps timed."""
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from charforge.train.progress import CharforgeTrainerMixin
    from charforge.train.sft import as_dataset, quiet_trainer, trainer_arguments

    class BenchTrainer(CharforgeTrainerMixin, SFTTrainer):
        computed = 0

        def training_step(self, model: Any, inputs: dict[str, Any], *rest: Any,
                          **kwargs: Any) -> Any:
            self.computed += int(inputs["input_ids"].numel())
            return super().training_step(model, inputs, *rest, **kwargs)

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[Mark] = []

        def on_step_end(self, *_: Any, **__: Any) -> None:
            trainer = trainer_ref[0]
            self.marks.append(Mark.now(trainer.real_tokens, trainer.computed))

    settings = settings_for(args, way.micro_batch_tokens)
    plan = SimpleNamespace(settings=settings, folder=folder)  # all trainer_arguments reads
    arguments = trainer_arguments(plan, way.micro, way.accumulation, False)  # type: ignore[arg-type]
    arguments.update(save_strategy="no", train_sampling_strategy="sequential")
    config = SFTConfig(**arguments, padding_free=way.padding_free, packing=False,
                       max_length=None, pad_to_multiple_of=way.pad_to,
                       dataset_kwargs={"skip_prepare_dataset": False})
    clock = Clock()
    trainer_ref: list[Any] = []
    trainer = BenchTrainer(model=tiny_llama(args), args=config,
                           train_dataset=as_dataset(way.samples),
                           processing_class=tokenizer_for(args.vocab), callbacks=[clock])
    trainer_ref.append(trainer)
    quiet_trainer(trainer)
    output = trainer.train()
    return Timing.between(way, clock.marks[0], clock.marks[-1], output.training_loss)


# -- the run ---------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=None,
                        help="samples in the data set (default: the steps' worth of the "
                             "largest micro-batch setting, none repeated)")
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps timed, after "
                        "one warm-up step")
    parser.add_argument("--batch", type=int, default=8,
                        help="samples per optimizer step (charforge's effective_batch; its "
                             "default is 16, halved here to keep the run in minutes)")
    parser.add_argument("--max-length", type=int, default=2048,
                        help="the seed's padded length and charforge's max_length")
    parser.add_argument("--hidden", type=int, default=256, help="the model's hidden size")
    parser.add_argument("--layers", type=int, default=4, help="the model's layers")
    parser.add_argument("--vocab", type=int, default=8192, help="the model's vocabulary")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="as charforge's setting: auto is bf16 autocast on a GPU or an "
                             "AVX-512 CPU, else fp32")
    parser.add_argument("--micro-batch-tokens", default=None,
                        help="charforge's micro_batch_tokens values to measure, comma-"
                             "separated (default: max_length/2, max_length, 2x max_length)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="run every way this many times (the order reversed every other "
                             "round) and keep each way's fastest: steadier on a shared machine")
    parser.add_argument("--quick", "--smoke", action="store_true",
                        help="every way, tiny sizes, in seconds (the tests run it)")
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    mbt_values: list[int | None] = (
        [None if v == "default" else int(v) for v in args.micro_batch_tokens.split(",")]
        if args.micro_batch_tokens else [None, args.max_length, 2 * args.max_length])

    import torch
    from transformers.utils import logging as hf_logging

    from charforge.train.base import training_dtype
    from charforge.train.sft import batch_shape

    hf_logging.set_verbosity_error()
    logging.getLogger("trl").setLevel(logging.ERROR)  # "batch size of 1 ... padding-free"
    warnings.filterwarnings("ignore")
    _, bf16 = training_dtype(settings_for(args))

    # Charforge's batch shapes need the data's mean length: draw lengths first.
    rng = np.random.default_rng(0)
    probe = TokenStats()
    probe.samples, probe.tokens = 1, MEAN_LENGTH * args.max_length // 2048
    widest = max(m * a for m, a in (batch_shape(settings_for(args, mbt), probe, 1)
                                    for mbt in mbt_values))
    count = args.samples or widest * (args.steps + 1)
    stats = TokenStats(records=count)
    samples = fit(synthetic_samples(sample_lengths(count, args.max_length, rng), args.vocab,
                                    rng), args.max_length, stats)
    ordered = sorted(stats.lengths)
    ceiling = args.max_length * stats.samples / stats.tokens
    print(f"data: {stats.samples} samples, {stats.tokens:,} tokens; length mean "
          f"{stats.tokens / stats.samples:.0f}, median {percentile(ordered, 0.5)}, p90 "
          f"{percentile(ordered, 0.9)}, max {ordered[-1]} (lognormal, cut at {args.max_length});"
          f" {stats.learned_tokens / stats.tokens:.0%} of tokens learned", flush=True)
    model = tiny_llama(args)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"model: random Llama, hidden {args.hidden}, {args.layers} layers, vocab "
          f"{args.vocab}, {parameters / 1e6:.1f}M parameters, attention "
          f"{model.config._attn_implementation}; full fine-tune, AdamW; "
          f"{'bf16 autocast' if bf16 else 'fp32'} (--precision {args.precision}; CPU "
          f"{torch.backends.cpu.get_cpu_capability()})", flush=True)
    print(f"timing: {args.steps} optimizer step{'s' if args.steps != 1 else ''} after 1 "
          f"warm-up step, {args.batch} samples a step, best of {args.rounds} "
          f"round{'s' if args.rounds != 1 else ''}; {os.cpu_count()} cores, torch "
          f"threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f} at the "
          "start", flush=True)
    del model

    # The baselines batch as a Trainer user would: as many samples as fit max_length.
    default_micro, default_accumulation = batch_shape(settings_for(args, args.max_length),
                                                      stats, 1)
    ways = []
    for mbt in mbt_values:
        micro, accumulation = batch_shape(settings_for(args, mbt), stats, 1)
        ways.append(Way(f"charforge, micro_batch_tokens {mbt or 'default'}", micro,
                        accumulation, True, samples, micro_batch_tokens=mbt))
    ways.append(Way(f"seed: padded to {args.max_length}", default_micro, default_accumulation,
                    False, samples, pad_to=args.max_length))
    ways.append(Way("grouped: pad to longest", default_micro, default_accumulation, False,
                    grouped_order(samples, default_micro * default_accumulation,
                                  args.steps * default_micro * default_accumulation)))

    print(f"\n{'way':<46}{'micro x acc':>12}{'real tok':>10}{'computed':>10}{'wall s':>8}"
          f"{'CPU s':>8}{'others':>8}{'real tok/s':>12}{'per CPU s':>11}{'loss':>7}",
          flush=True)
    best: dict[int, Timing] = {}
    with tempfile.TemporaryDirectory(prefix="charforge-train-bench-") as folder:
        for round_ in range(args.rounds):
            if args.rounds > 1:
                print(f"round {round_ + 1}", flush=True)
            order = list(range(len(ways)))
            for index in order if round_ % 2 == 0 else order[::-1]:
                way = ways[index]
                t = train_way(way, args, Path(folder))
                if index not in best or t.tokens_per_s > best[index].tokens_per_s:
                    best[index] = t
                print(f"{way.name:<46}{f'{way.micro} x {way.accumulation}':>12}{t.real:>10,}"
                      f"{t.computed:>10,}{t.seconds:>8.1f}{t.cpu_seconds:>8.1f}"
                      f"{t.others:>8.0%}{t.tokens_per_s:>12.1f}{t.tokens_per_cpu_s:>11.1f}"
                      f"{t.loss:>7.3f}", flush=True)
    timings = [best[index] for index in range(len(ways))]
    print("(others: the share of the machine's CPU time other processes used, or the host "
          "took, while a way was timed)" + ("; the figures below take each way's fastest "
                                            "round" if args.rounds > 1 else ""))

    packed = timings[:len(mbt_values)]
    seed, grouped = timings[-2], timings[-1]
    default = next((t for t in packed if t.way.micro_batch_tokens is None), packed[0])
    fastest = max(packed, key=lambda t: t.tokens_per_s)
    print(f"\npadding-only ceiling: {args.max_length} x {stats.samples} / {stats.tokens:,} "
          f"real tokens = {ceiling:.2f}x; computed / real tokens in the timed steps: the "
          f"seed's way {seed.computed / seed.real:.2f}x, grouped "
          f"{grouped.computed / grouped.real:.3f}x, charforge 1.000x")
    print("real tok/s by micro_batch_tokens: "
          + ", ".join(f"{t.way.micro_batch_tokens or 'default'} ({t.way.micro} a "
                      f"micro-batch): {t.tokens_per_s:.1f}" for t in packed)
          + f"; fastest: {fastest.way.micro_batch_tokens or 'default'}")
    chosen = [(f"charforge, default ({default.way.micro} a micro-batch)", default)]
    if fastest is not default:
        chosen.append((f"charforge, fastest micro_batch_tokens "
                       f"{fastest.way.micro_batch_tokens}", fastest))
    for label, timing in chosen:
        over_seed = timing.tokens_per_s / seed.tokens_per_s
        over_grouped = timing.tokens_per_s / grouped.tokens_per_s
        print(f"{label}: {over_seed:.2f}x the seed's way (target >= {TARGET_SEED}x: "
              f"{verdict(over_seed, TARGET_SEED)}), {over_grouped:.2f}x grouped "
              f"pad-to-longest (target >= {TARGET_GROUPED}x: "
              f"{verdict(over_grouped, TARGET_GROUPED)}); per CPU second: "
              f"{timing.tokens_per_cpu_s / seed.tokens_per_cpu_s:.2f}x and "
              f"{timing.tokens_per_cpu_s / grouped.tokens_per_cpu_s:.2f}x")
    print(f"load average {os.getloadavg()[0]:.2f} at the end (wall figures slow down when "
          "another process takes a core; CPU-second figures much less)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
