"""Speed and memory of PersLLM retrieval (`charforge.retrieval`) on a large synthetic character.

    .venv/bin/python bench/retrieval.py [--passages 10000] [--batches 16] [--singles 128]
                                        [--cache-folder DIR] [--smoke]

A character with N passages (80% knowledge, 20% style; 100-400 words each, a third
'early', a third 'late', a third unstaged), generated deterministically, is indexed with
the embedded all-MiniLM-L6-v2 in a temporary cache folder. Printed: the index build (chunks,
chunks/s), the index load from its cache file, queries/s through `search_many` in batches of
64 and through single `search` calls (PersLLM's budget, mixed stages and sources), and peak
memory (process RSS, the index's arrays, the cache file), against the target of at least
64 queries/s with a built index. Query encoding is most of a query's cost, and torch's two
threads slow down many times over when another process keeps a core busy: the load average
is printed at the start and the end. `--cache-folder` keeps the index between runs, so the
queries can be measured again without embedding the passages again.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from charforge.character import Character, Passage, Stage
from charforge.retrieval import MiniLMEmbedder, PassageIndex, PassageRef, Query

TARGET_QPS = 64.0
BATCH = 64
SMOKE = {"passages": 200, "batches": 2, "singles": 16}
STYLE_SHARE = 0.2

PEOPLE = ["my father", "my mother", "the schoolmaster", "the old clockmaker", "my sister",
          "the harbour pilot", "the duke's secretary", "a travelling pedlar", "my teacher",
          "the choirmaster", "a young printer", "the professor", "my landlady", "the admiral"]
PLACES = ["the mill town", "the harbour", "the capital", "the observatory", "the dye house",
          "the lecture hall", "the market square", "the royal academy", "the river bank",
          "the mountain village", "the customs house", "the printing shop", "the cathedral"]
THINGS = ["a brass telescope", "the comet", "a cracked lens", "the winter flood", "a violin",
          "the accounts", "a geometry primer", "the pendulum clock", "the lifeboat", "the hives",
          "a bundle of letters", "the orrery", "the newspaper", "the harvest", "a new sonata",
          "the fever", "the war", "the treaty", "a locked chest", "the map of the coast"]
VERBS = ["remembered", "argued about", "repaired", "measured", "wrote about", "sold",
         "carried", "studied", "lost", "found", "painted", "described", "feared", "praised"]
MOODS = ["with great care", "in secret", "for many years", "against all advice",
         "late at night", "in the spring", "without a word", "with some pride",
         "before the storm", "after the funeral", "during the long winter"]
OPENERS = ["I", "We", "Everyone said I", "Nobody believed I", "Once I", "Later I"]


def sentence(rng: random.Random) -> str:
    """One varied sentence about a person, a place and a thing."""
    return (f"{rng.choice(OPENERS)} {rng.choice(VERBS)} {rng.choice(THINGS)} with "
            f"{rng.choice(PEOPLE)} at {rng.choice(PLACES)} {rng.choice(MOODS)}.")


def passage_text(rng: random.Random) -> str:
    """100-400 words of sentences."""
    target = rng.randint(100, 400)
    parts: list[str] = []
    count = 0
    while count < target:
        parts.append(sentence(rng))
        count += len(parts[-1].split())
    return " ".join(parts)


def synthetic_character(passages: int, seed: int = 0) -> Character:
    """A character with `passages` passages, the same for the same arguments."""
    rng = random.Random(seed)
    stages = ["early", "late", None]
    made = [Passage(text=passage_text(rng), stage=stages[i % 3]) for i in range(passages)]
    style_count = int(passages * STYLE_SHARE)
    return Character(
        name="Bench Character", short_name="Bench", knowledge=made[style_count:],
        style=made[:style_count],
        stages=[Stage(label="early", token="<TIME-I>"), Stage(label="late", token="<TIME-II>")])


def questions(character: Character, count: int, seed: int = 1) -> list[Query]:
    """Questions drawn from the character's passages, at the passage's stage (or any), with
    the passage as source for half of them: the shape of PersLLM's answer stage."""
    rng = random.Random(seed)
    knowledge = character.knowledge_passages()
    made = []
    for number in range(count):
        index = rng.randrange(len(knowledge))
        passage = knowledge[index]
        words = passage.text.split()
        start = rng.randrange(max(1, len(words) - 12))
        text = "What do you remember about " + " ".join(words[start:start + 12]).rstrip(".") + "?"
        stage = passage.stage if passage.stage else rng.choice(["early", "late", None])
        source = PassageRef("knowledge", index) if number % 2 else None
        made.append(Query(text, stage, source))
    return made


class Precomputed:
    """Hands back vectors encoded beforehand, so search_many can be timed without the model."""

    def __init__(self, name: str, queries: list[Query], vectors: list[np.ndarray]) -> None:
        self.name = name  # the real model's name: the index loads from the same cache file
        rows = np.concatenate(vectors)
        self.table = {query.text: rows[number] for number, query in enumerate(queries)}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.table[text] for text in texts])


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passages", type=int, default=10_000, help="passages in the character")
    parser.add_argument("--batches", type=int, default=16,
                        help=f"search_many batches of {BATCH} queries to time")
    parser.add_argument("--singles", type=int, default=128, help="single search() calls to time")
    parser.add_argument("--cache-folder", type=Path,
                        help="keep the index here (default: a temporary folder); a second run "
                             "then loads it instead of building it")
    parser.add_argument("--smoke", action="store_true",
                        help=f"every path, small: {SMOKE['passages']} passages (the tests run it)")
    args = parser.parse_args()
    if args.smoke:
        args.passages, args.batches, args.singles = (SMOKE["passages"], SMOKE["batches"],
                                                     SMOKE["singles"])

    character = synthetic_character(args.passages)
    total_words = sum(len(p.text.split()) for p in [*character.knowledge, *character.style])
    print(f"{args.passages} passages ({len(character.knowledge)} knowledge, "
          f"{len(character.style)} style), {total_words:,} words; {os.cpu_count()} cores, "
          f"torch threads {torch.get_num_threads()}, load average "
          f"{os.getloadavg()[0]:.2f} at the start", flush=True)

    embedder = MiniLMEmbedder()
    started = time.perf_counter()
    embedder.encode(["warm up"])
    print(f"model load: {time.perf_counter() - started:.1f} s; RSS {peak_rss_mib():.0f} MiB",
          flush=True)

    kept = nullcontext(str(args.cache_folder)) if args.cache_folder else None
    with kept or tempfile.TemporaryDirectory(prefix="charforge-retrieval-bench-") as folder:
        started = time.perf_counter()
        index = PassageIndex.open(character, Path(folder), embedder=embedder)
        seconds = time.perf_counter() - started
        if index.built:
            print(f"build: {seconds:.1f} s, {index.chunk_count} chunks, "
                  f"{index.chunk_count / seconds:.1f} chunks/s", flush=True)
        else:
            print(f"build: skipped, the index of {index.chunk_count} chunks was in "
                  f"{args.cache_folder}", flush=True)

        started = time.perf_counter()
        index = PassageIndex.open(character, Path(folder), embedder=embedder)
        seconds = time.perf_counter() - started
        assert not index.built and index.chunks_embedded == 0
        file_mib = index.path.stat().st_size / 2**20
        print(f"load from cache: {seconds:.2f} s ({file_mib:.1f} MiB file)", flush=True)

        asked = questions(character, BATCH * args.batches + args.singles)
        batched, singles = asked[:BATCH * args.batches], asked[BATCH * args.batches:]
        started = time.perf_counter()
        for start in range(0, len(batched), BATCH):
            index.search_many(batched[start:start + BATCH])
        batched_s = time.perf_counter() - started
        started = time.perf_counter()
        vectors = [embedder.encode([query.text for query in batched[start:start + BATCH]])
                   for start in range(0, len(batched), BATCH)]
        encode_s = time.perf_counter() - started
        known = Precomputed(embedder.name, batched, vectors)
        scoring = PassageIndex.open(character, Path(folder), embedder=known)
        started = time.perf_counter()
        for start in range(0, len(batched), BATCH):
            scoring.search_many(batched[start:start + BATCH])
        scoring_s = time.perf_counter() - started
        batched_qps = len(batched) / batched_s
        print(f"search_many, batches of {BATCH}: {batched_qps:.0f} queries/s "
              f"({len(batched)} queries in {batched_s:.2f} s); of which encoding the queries "
              f"{encode_s:.2f} s, scoring and selection {scoring_s:.2f} s "
              f"({scoring_s / len(batched) * 1000:.2f} ms a query)", flush=True)

        started = time.perf_counter()
        for query in singles:
            index.search(query.text, stage=query.stage, source=query.source)
        single_s = time.perf_counter() - started
        single_qps = len(singles) / single_s
        print(f"search(), one at a time: {single_qps:.0f} queries/s "
              f"({len(singles)} queries in {single_s:.2f} s)", flush=True)

        found = index.search_many(batched[:BATCH])
        knowledge_picked = sum(len(r.knowledge) for r in found) / len(found)
        style_picked = sum(len(r.style) for r in found) / len(found)
        print(f"per query (PersLLM budget 1500/500 words): {knowledge_picked:.1f} knowledge and "
              f"{style_picked:.1f} style passages on average")
        print(f"peak RSS: {peak_rss_mib():.0f} MiB; index arrays: {index.nbytes / 2**20:.1f} MiB")

    verdict = "ok" if batched_qps >= TARGET_QPS else "MISSED"
    single_verdict = "ok" if single_qps >= TARGET_QPS else "MISSED"
    print(f"target >= {TARGET_QPS:.0f} queries/s with a built index: search_many "
          f"{batched_qps:.0f} ({verdict}), search() {single_qps:.0f} ({single_verdict}); "
          f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
