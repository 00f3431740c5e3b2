"""Near-duplicates and a leakage-free train/test split, as pure functions.

Three jobs, each on data the caller prepares (no model is called here):

- `near_duplicates`: embedding vectors (rows L2-normalised, so a dot product is a
  cosine) -> which items to keep, greedily in the given order (PersLLM drops
  questions at cosine >= 0.95).
- `dialogue_duplicates`: long texts -> the same, by word n-gram overlap (a sentence
  embedding cannot read a 1,200-word dialogue): MinHash + LSH find candidates, the
  exact Jaccard of the shingle sets decides.
- `grouped_split`: a seeded split in which a group (a question's source passage, a
  dialogue's scene) never straddles the two sides, and, given vectors, no test item
  is a near-paraphrase of a train item.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

# Cosines are float32 dot products; a pair built at exactly the threshold lands a few
# units in the last place either side of it. This much slack counts it as reached.
COSINE_TOLERANCE = 1e-6
_BLOCK = 2048  # rows per matrix product: 2048 x 15,000 float32 is 120 MB
_PUNCTUATION = str.maketrans({**{c: " " for c in string.punctuation if c != "'"},
                              **{c: " " for c in "“”‘«»—–…"}, "’": "'"})


class RemovedItem(BaseModel):
    """An item dropped as a near-duplicate of an earlier, kept item."""

    model_config = ConfigDict(frozen=True)

    index: int
    duplicate_of: int  # the most similar kept item before it
    similarity: float  # cosine (vectors) or exact Jaccard (dialogues)


class DedupResult(BaseModel):
    """Which items survive deduplication, and why the others did not."""

    model_config = ConfigDict(frozen=True)

    kept: list[int]
    removed: list[RemovedItem]


class ClosestPair(BaseModel):
    """The most similar train/test pair left after a split."""

    model_config = ConfigDict(frozen=True)

    train: int
    test: int
    similarity: float


class SplitResult(BaseModel):
    """A per-item train/test assignment and how it was reached."""

    model_config = ConfigDict(frozen=True)

    test: list[bool]
    moved_groups: int  # groups moved from test to train because they leaked
    closest: ClosestPair | None  # None without vectors or with an empty side
    requested_fraction: float
    achieved_fraction: float


# ---------------------------------------------------------------- vectors


def _check_vectors(vectors: np.ndarray) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array (items x dimensions), not {matrix.shape}")
    return matrix


def near_duplicates(vectors: np.ndarray, threshold: float) -> DedupResult:
    """Greedy in the given order: item i is kept unless its cosine to an item already
    kept is >= `threshold` (within `COSINE_TOLERANCE`); a removed item points at the
    most similar kept item before it.

    Works block by block: each block is compared with everything kept so far in one
    matrix product, and only inside a block does the order need a loop.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], not {threshold}")
    matrix = _check_vectors(vectors)
    count = len(matrix)
    limit = np.float32(threshold - COSINE_TOLERANCE)
    kept: list[int] = []
    removed: list[RemovedItem] = []
    kept_rows = np.empty((0, matrix.shape[1]), dtype=np.float32)
    for start in range(0, count, _BLOCK):
        block = matrix[start : start + _BLOCK]
        size = len(block)
        # The best earlier kept item for each row of the block.
        if len(kept_rows):
            earlier = block @ kept_rows.T
            best_earlier = earlier.argmax(axis=1)
            best_earlier_sim = earlier[np.arange(size), best_earlier]
        else:
            best_earlier = np.zeros(size, dtype=np.intp)
            best_earlier_sim = np.full(size, -np.inf, dtype=np.float32)
        within = block @ block.T
        kept_in_block = np.empty(size, dtype=np.intp)  # offsets inside the block
        kept_count = 0
        for offset in range(size):
            best_sim, best_index = best_earlier_sim[offset], -1
            if best_sim > -np.inf:
                best_index = kept[best_earlier[offset]]
            if kept_count:
                row = within[offset, kept_in_block[:kept_count]]
                local = int(row.argmax())
                if row[local] > best_sim:  # ties go to the earlier kept item
                    best_sim, best_index = row[local], start + int(kept_in_block[local])
            if best_sim >= limit:
                removed.append(RemovedItem(index=start + offset, duplicate_of=best_index,
                                           similarity=float(best_sim)))
            else:
                kept_in_block[kept_count] = offset
                kept_count += 1
        kept.extend((start + kept_in_block[:kept_count]).tolist())
        kept_rows = np.concatenate([kept_rows, block[kept_in_block[:kept_count]]])
    return DedupResult(kept=kept, removed=removed)


# ---------------------------------------------------------------- dialogues


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """A fixed 64-bit mixing function (splitmix64's finaliser): shingle ids, which are
    small and structured, -> well spread 64-bit values."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _words(text: str) -> list[str]:
    """Lower-cased words, split at white space and punctuation (apostrophes stay inside
    words): cheap enough for thousands of long dialogues."""
    return text.lower().translate(_PUNCTUATION).split()


def _renumber(keys: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense ids 0..k-1 for int64 keys (equal keys, equal ids), and k."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    fresh = np.empty(len(keys), dtype=bool)
    fresh[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=fresh[1:])
    ids = np.empty(len(keys), dtype=np.int64)
    ids[order] = np.cumsum(fresh) - 1
    return ids, int(fresh.sum())


def _gram_ids(flat: np.ndarray, vocabulary: int, n: int) -> np.ndarray:
    """An exact int64 id for the n words starting at every position of `flat` (the last
    n-1 positions excluded): equal ids exactly when the n words are equal.

    Doubling: k-gram ids at every position combine into 2k-gram ids, renumbered densely
    so products stay far below 2**63; the pieces of n (binary) then combine the same way.
    """
    pieces: list[tuple[int, np.ndarray, int]] = []  # (length, ids at every position, range)
    length, ids, size = 1, flat, vocabulary
    remaining = n
    while True:
        if remaining & 1:
            pieces.append((length, ids, size))
        remaining >>= 1
        if not remaining:
            break
        ids, size = _renumber(ids[: len(ids) - length] * size + ids[length:])
        length *= 2
    covered, result, result_size = 0, None, 1
    for length, ids, size in pieces:
        part = ids[covered : covered + len(flat) - n + 1]
        if result is None:
            result, result_size = part.copy(), size
        else:
            if result_size * size >= 2**62:
                result, result_size = _renumber(result)
            result = result * size + part
            result_size *= size
        covered += length
    assert result is not None
    return result


def _shingle_sets(texts: Sequence[str], n: int) -> list[np.ndarray]:
    """Each text's set of word n-grams as sorted, unique int64 ids, exact: two
    n-grams share an id exactly when their words are equal (no hashing). A text of
    fewer than n words is one shingle: its whole word tuple."""
    vocabulary: dict[str, int] = {}
    per_text: list[np.ndarray] = []
    for text in texts:  # word strings live one text at a time
        text_words = _words(text)
        for word in dict.fromkeys(text_words):
            if word not in vocabulary:
                vocabulary[word] = len(vocabulary)
        per_text.append(np.fromiter(map(vocabulary.__getitem__, text_words), dtype=np.int64,
                                    count=len(text_words)))
    word_ids = np.concatenate(per_text) if per_text else np.empty(0, dtype=np.int64)
    lengths = np.array([len(t) for t in per_text], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    result: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(texts)
    long_texts = np.flatnonzero(lengths >= n)
    next_id = 0
    if len(long_texts):
        flat = np.concatenate([word_ids[offsets[i] : offsets[i + 1]] for i in long_texts])
        grams = _gram_ids(flat, len(vocabulary), n)
        next_id = int(grams.max()) + 1
        start = 0
        for index in long_texts:
            ordered = np.sort(grams[start : start + lengths[index] - n + 1])
            keep = np.empty(len(ordered), dtype=bool)
            keep[:1] = True
            np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
            result[index] = ordered[keep]
            start += lengths[index]
    short_ids: dict[tuple[int, ...], int] = {}
    for index in np.flatnonzero(lengths < n):
        key = tuple(word_ids[offsets[index] : offsets[index + 1]].tolist())
        result[index] = np.array([short_ids.setdefault(key, next_id + len(short_ids))],
                                 dtype=np.int64)
    return result


def _minhash(shingle_sets: list[np.ndarray], num_perm: int, seed: int) -> np.ndarray:
    """One MinHash signature per set (sets x num_perm, uint32): shingle ids are mixed
    by splitmix64, then each of num_perm seeded odd multipliers permutes the 64-bit
    values; the signature keeps the top 32 bits of each minimum."""
    rng = np.random.default_rng(seed)
    multipliers = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64) * np.uint64(2) + 1
    signatures = np.empty((len(shingle_sets), num_perm), dtype=np.uint32)
    chunk_limit = 1 << 16  # shingles per product: 128 x 65,536 uint64 is 64 MB
    buffer = np.empty((num_perm, chunk_limit), dtype=np.uint64)
    index = 0
    while index < len(shingle_sets):
        stop, total = index + 1, len(shingle_sets[index])
        while stop < len(shingle_sets) and total + len(shingle_sets[stop]) <= chunk_limit:
            total += len(shingle_sets[stop])
            stop += 1
        chunk = shingle_sets[index:stop]
        mixed = _splitmix64(np.concatenate(chunk))
        hashes = buffer[:, :total] if total <= chunk_limit else np.empty((num_perm, total),
                                                                         dtype=np.uint64)
        with np.errstate(over="ignore"):
            np.multiply(multipliers[:, None], mixed[None, :], out=hashes)
        starts = np.concatenate([[0], np.cumsum([len(s) for s in chunk])[:-1]])
        lowest = np.minimum.reduceat(hashes, starts, axis=1)
        signatures[index:stop] = (lowest >> np.uint64(32)).T
        index = stop
    return signatures


RECALL_AT_THRESHOLD = 0.95


def _bands(num_perm: int, threshold: float) -> tuple[int, int]:
    """LSH bands x rows (bands * rows <= num_perm): the most rows per band (fewest
    needless candidates) that still propose a pair AT the threshold with probability
    >= RECALL_AT_THRESHOLD; pairs further above it are proposed more surely still."""
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if 1.0 - (1.0 - threshold**rows) ** bands >= RECALL_AT_THRESHOLD:
            return bands, rows
    return num_perm, 1


def _jaccard(first: np.ndarray, second: np.ndarray) -> float:
    shared = len(np.intersect1d(first, second, assume_unique=True))
    return shared / (len(first) + len(second) - shared)


def dialogue_duplicates(texts: Sequence[str], threshold: float = 0.5, *, n: int = 5,
                        num_perm: int = 128, seed: int = 0) -> DedupResult:
    """Greedy in the given order: text i is kept unless the Jaccard similarity of its
    word `n`-gram set (lower-cased words; a text shorter than `n` words is one shingle)
    with a kept text is >= `threshold`.

    MinHash signatures with LSH banding propose candidate pairs; each candidate is
    verified with the exact Jaccard of the two shingle sets, so nothing is removed on
    an estimate. A pair at the threshold goes unproposed with probability under 5%
    (much less above it): the banding trades that against needless candidates.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], not {threshold}")
    if n < 1 or num_perm < 1:
        raise ValueError(f"n and num_perm must be at least 1, not {n} and {num_perm}")
    shingle_sets = _shingle_sets(texts, n)
    signatures = _minhash(shingle_sets, num_perm, seed)
    bands, rows = _bands(num_perm, threshold)
    candidates: list[set[int]] = [set() for _ in texts]  # earlier texts sharing a bucket
    for band in range(bands):
        buckets: dict[bytes, list[int]] = {}
        block = np.ascontiguousarray(signatures[:, band * rows : (band + 1) * rows])
        for index in range(len(texts)):
            members = buckets.setdefault(block[index].tobytes(), [])
            candidates[index].update(members)
            members.append(index)
    kept: list[int] = []
    removed: list[RemovedItem] = []
    is_kept = np.zeros(len(texts), dtype=bool)
    for index in range(len(texts)):
        best_sim, best_index = -1.0, -1
        for other in sorted(candidates[index]):
            if is_kept[other]:
                similarity = _jaccard(shingle_sets[index], shingle_sets[other])
                if similarity > best_sim:
                    best_sim, best_index = similarity, other
        if best_sim >= threshold:
            removed.append(RemovedItem(index=index, duplicate_of=best_index,
                                       similarity=best_sim))
        else:
            kept.append(index)
            is_kept[index] = True
    return DedupResult(kept=kept, removed=removed)


# ---------------------------------------------------------------- split


def _max_cosine(rows: np.ndarray, against: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row, its highest cosine to `against` and where it is (block-wise)."""
    best = np.full(len(rows), -np.inf, dtype=np.float32)
    where = np.zeros(len(rows), dtype=np.intp)
    if len(against) == 0:
        return best, where
    for start in range(0, len(rows), _BLOCK):
        sims = rows[start : start + _BLOCK] @ against.T
        top = sims.argmax(axis=1)
        where[start : start + len(sims)] = top
        best[start : start + len(sims)] = sims[np.arange(len(sims)), top]
    return best, where


def _members(group_of: np.ndarray, groups: int) -> list[np.ndarray]:
    """The item indices of each group, in item order."""
    order = np.argsort(group_of, kind="stable")
    bounds = np.searchsorted(group_of[order], np.arange(groups + 1))
    return [order[bounds[g] : bounds[g + 1]] for g in range(groups)]


def _headroom(matrix: np.ndarray, items: np.ndarray, group_of: np.ndarray) -> np.ndarray:
    """For every item (indexed like `matrix`; only `items` are filled), its highest
    cosine to the other `items` outside its own group."""
    best = np.full(len(matrix), -np.inf, dtype=np.float32)
    rows, groups = matrix[items], group_of[items]
    for start in range(0, len(items), _BLOCK):
        sims = rows[start : start + _BLOCK] @ rows.T
        sims[groups[start : start + _BLOCK, None] == groups[None, :]] = -np.inf
        best[items[start : start + len(sims)]] = sims.max(axis=1)
    return best


def _draw(order: list[int], members: list[np.ndarray], in_test: np.ndarray, target: float,
          allowed: Callable[[np.ndarray], bool] | None = None) -> set[int]:
    """Put groups, in `order`, on the test side where each brings its size closer to
    `target` (and `allowed` accepts its items), never leaving train empty; returns the
    groups drawn."""
    size, count = int(in_test.sum()), len(in_test)
    drawn: set[int] = set()
    for group in order:
        items = members[group]
        if (abs(size + len(items) - target) < abs(size - target)
                and size + len(items) < count and (allowed is None or allowed(items))):
            in_test[items] = True
            size += len(items)
            drawn.add(group)
    return drawn


def _move_leaking(matrix: np.ndarray, members: list[np.ndarray], group_of: np.ndarray,
                  in_test: np.ndarray, max_similarity: float) -> int:
    """Move to train every group with a test item above `max_similarity` to a train
    item, until none is left (a moved group can make others leak); returns how many
    groups moved. Each round compares the test side with the items just moved only."""
    moved = 0
    newly_train = np.flatnonzero(~in_test)
    while in_test.any() and len(newly_train):
        test_items = np.flatnonzero(in_test)
        best, _ = _max_cosine(matrix[test_items], matrix[newly_train])
        leaking = np.unique(group_of[test_items[best > max_similarity]])
        moved += len(leaking)
        newly_train = (np.concatenate([members[g] for g in leaking]) if len(leaking)
                       else np.empty(0, dtype=np.intp))
        in_test[newly_train] = False
    return moved


def grouped_split(groups: Sequence[str], test_fraction: float, *, seed: int = 0,
                  vectors: np.ndarray | None = None,
                  max_similarity: float = 0.85) -> SplitResult:
    """Split items into train and test so that items of one group share a side.

    Groups (in first-appearance order, then a seeded shuffle) go to test while each
    brings the test size closer to `test_fraction` of the items. With `vectors`
    (rows L2-normalised), a test item whose cosine to any train item exceeds
    `max_similarity` moves its whole group to train, until no test item does; then
    groups not yet tried go to test where that brings the size closer to the
    fraction and adds no such pair. Deterministic for a seed and an input order.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), not {test_fraction}")
    count = len(groups)
    matrix = None
    if vectors is not None:
        if not 0.0 < max_similarity <= 1.0:
            raise ValueError(f"max_similarity must be in (0, 1], not {max_similarity}")
        matrix = _check_vectors(vectors)
        if len(matrix) != count:
            raise ValueError(f"{len(matrix)} vectors for {count} items: give one per item")
    numbers: dict[str, int] = {}
    group_of = np.array([numbers.setdefault(g, len(numbers)) for g in groups], dtype=np.intp)
    members = _members(group_of, len(numbers))
    order = [int(g) for g in np.random.default_rng(seed).permutation(len(numbers))]
    target = test_fraction * count
    in_test = np.zeros(count, dtype=bool)
    drawn = _draw(order, members, in_test, target)
    moved = 0
    if matrix is not None and in_test.any():
        moved = _move_leaking(matrix, members, group_of, in_test, max_similarity)
        if moved:
            headroom = _headroom(matrix, np.flatnonzero(~in_test), group_of)
            untried = [g for g in order if g not in drawn]
            _draw(untried, members, in_test, target,
                  allowed=lambda items: bool(headroom[items].max() <= max_similarity))
    size = int(in_test.sum())
    closest = None
    if matrix is not None and 0 < size < count:
        test_items, train_items = np.flatnonzero(in_test), np.flatnonzero(~in_test)
        best, where = _max_cosine(matrix[test_items], matrix[train_items])
        pick = int(best.argmax())
        closest = ClosestPair(train=int(train_items[where[pick]]), test=int(test_items[pick]),
                              similarity=float(best[pick]))
    return SplitResult(test=in_test.tolist(), moved_groups=moved, closest=closest,
                       requested_fraction=test_fraction,
                       achieved_fraction=size / count if count else 0.0)
