"""Near-duplicates, dialogue near-duplicates and the leakage-free split, on crafted data
whose right answer is known: cosines built to sit just below, at and above a threshold,
dialogues with a counted number of words changed, paraphrases planted across groups."""

from __future__ import annotations

import numpy as np
import pytest

from charforge.dataset import dedup
from charforge.dataset.dedup import dialogue_duplicates, grouped_split, near_duplicates

DIM = 64


def rotation(seed: int = 0) -> np.ndarray:
    """A random orthogonal matrix: crafted vectors leave the coordinate axes."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((DIM, DIM)))
    return q


def at_angles(cosines: list[float]) -> np.ndarray:
    """Unit vectors in one plane: the first is the base, each next one has the given
    cosine to the base (float64 maths, rotated, then float32 like real embeddings)."""
    base = np.zeros(DIM)
    base[0] = 1.0
    rows = [base]
    for cosine in cosines:
        row = np.zeros(DIM)
        row[0], row[1] = cosine, np.sqrt(1.0 - cosine**2)
        rows.append(row)
    return (np.array(rows) @ rotation()).astype(np.float32)


def clusters(count: int, copies: int, *, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` random directions, each with `copies` noisy copies, shuffled; returns the
    unit vectors and each row's cluster."""
    rng = np.random.default_rng(seed)
    bases = rng.standard_normal((count, DIM))
    owner = np.repeat(np.arange(count), copies)
    rows = bases[owner] + noise * rng.standard_normal((len(owner), DIM))
    order = rng.permutation(len(owner))
    rows, owner = rows[order], owner[order]
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32), owner


def greedy_reference(vectors: np.ndarray, threshold: float) -> tuple[list[int], dict[int, int]]:
    """The definition, as a plain double loop."""
    kept: list[int] = []
    duplicate_of: dict[int, int] = {}
    for i, row in enumerate(vectors):
        sims = [float(row @ vectors[k]) for k in kept]
        if sims and max(sims) >= threshold - dedup.COSINE_TOLERANCE:
            duplicate_of[i] = kept[int(np.argmax(sims))]
        else:
            kept.append(i)
    return kept, duplicate_of


# ---------------------------------------------------------------- near_duplicates


@pytest.mark.parametrize(("cosine", "removed"), [(0.949, False), (0.95, True), (0.951, True)])
def test_the_threshold_is_honoured_exactly(cosine, removed):
    result = near_duplicates(at_angles([cosine]), 0.95)
    if removed:
        assert result.kept == [0]
        [item] = result.removed
        assert (item.index, item.duplicate_of) == (1, 0)
        assert item.similarity == pytest.approx(cosine, abs=1e-6)
    else:
        assert result.kept == [0, 1]
        assert result.removed == []


def test_greedy_in_order_a_chain_keeps_both_ends():
    """a~b and b~c but a!~c: b goes (a is kept first), so c has nothing kept to match."""
    angle = np.arccos(0.97)
    a, b, c = at_angles([np.cos(angle), np.cos(2 * angle)])
    assert float(a @ c) < 0.95 < float(a @ b)
    result = near_duplicates(np.stack([a, b, c]), 0.95)
    assert result.kept == [0, 2]
    assert [(r.index, r.duplicate_of) for r in result.removed] == [(1, 0)]
    # The order decides: with b first, a and c are both its duplicates.
    result = near_duplicates(np.stack([b, a, c]), 0.95)
    assert result.kept == [0]
    assert [(r.index, r.duplicate_of) for r in result.removed] == [(1, 0), (2, 0)]


@pytest.mark.parametrize("block", [7, 2048])
def test_block_wise_matches_the_definition(monkeypatch, block):
    """Across block boundaries too: the same kept list as a plain loop, every removed
    item pointing at an earlier kept item with its true cosine, no two kept alike."""
    monkeypatch.setattr(dedup, "_BLOCK", block)
    vectors, _ = clusters(40, 4, noise=0.06, seed=1)
    result = near_duplicates(vectors, 0.95)
    kept, duplicate_of = greedy_reference(vectors, 0.95)
    assert result.kept == kept
    assert {r.index: r.duplicate_of for r in result.removed} == duplicate_of
    assert 0 < len(result.removed) < len(vectors)
    kept_set = set(result.kept)
    for item in result.removed:
        assert item.duplicate_of in kept_set and item.duplicate_of < item.index
        true = float(vectors[item.index] @ vectors[item.duplicate_of])
        assert item.similarity == pytest.approx(true, abs=1e-5)
        assert item.similarity >= 0.95 - dedup.COSINE_TOLERANCE
    sims = vectors[result.kept] @ vectors[result.kept].T
    np.fill_diagonal(sims, -1)
    assert sims.max() < 0.95


def test_threshold_one_removes_exact_copies_only():
    vectors = at_angles([1.0, 0.999])
    result = near_duplicates(vectors, 1.0)
    assert result.kept == [0, 2]


@pytest.mark.parametrize("threshold", [0.0, -0.5, 1.01])
def test_a_threshold_outside_0_1_is_refused(threshold):
    with pytest.raises(ValueError, match="threshold"):
        near_duplicates(at_angles([0.5]), threshold)


def test_vectors_must_be_a_matrix():
    with pytest.raises(ValueError, match="2-D"):
        near_duplicates(np.ones(DIM, dtype=np.float32), 0.9)
    assert near_duplicates(np.empty((0, DIM), dtype=np.float32), 0.9).kept == []


# ---------------------------------------------------------------- dialogue_duplicates


WORDS = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "pe", "ro", "su", "ti")
         for b in ("ba", "de", "fi", "go", "hu", "ja", "ke", "lu", "mo", "ni")]


def dialogue(seed: int, length: int = 400) -> list[str]:
    return list(np.random.default_rng(seed).choice(WORDS, length))


def changed(words: list[str], changes: int, *, first: int = 5, step: int = 14) -> list[str]:
    """`changes` words replaced, `step` apart, by words found nowhere else."""
    out = list(words)
    for k in range(changes):
        out[first + k * step] = f"new{k}"
    return out


def shingles(words: list[str], n: int = 5) -> set[tuple[str, ...]]:
    words = [w.lower() for w in words]
    if len(words) < n:
        return {tuple(words)}
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: list[str], b: list[str]) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def test_a_dialogue_with_a_few_words_changed_is_found_a_different_one_kept():
    texts = [dialogue(seed) for seed in range(30)]
    original = texts[3]
    near = changed(original, 4)
    near[0] = near[0].upper()  # case does not matter
    # Shares its first half with the original, the rest is its own: different.
    related = original[:150] + dialogue(99, 250)
    assert jaccard(original, related) < 0.5 < jaccard(original, near)
    corpus = [" ".join(t) for t in [*texts, near, related]]
    corpus[3] = corpus[3].replace(" ", ", ", 5)  # nor does punctuation
    result = dialogue_duplicates(corpus)
    assert result.kept == [*range(30), 31]
    [item] = result.removed
    assert (item.index, item.duplicate_of) == (30, 3)
    assert item.similarity == pytest.approx(jaccard(original, near), abs=1e-12)


def test_candidates_are_verified_with_the_exact_jaccard(monkeypatch):
    """Even when the banding proposes every pair sharing one min-hash, only the exact
    Jaccard decides: a pair at 0.4915 stays under 0.5 and goes under 0.49."""
    monkeypatch.setattr(dedup, "_bands", lambda num_perm, threshold: (num_perm, 1))
    base = dialogue(1)
    near = changed(base, 27)  # 396 shingles each, 27 x 5 replaced: 261 / 531
    assert jaccard(base, near) == pytest.approx(261 / 531)
    texts = [" ".join(base), " ".join(near)]
    for seed in range(5):
        assert dialogue_duplicates(texts, 0.5, seed=seed).kept == [0, 1]
        [item] = dialogue_duplicates(texts, 0.49, seed=seed).removed
        assert item.similarity == pytest.approx(261 / 531, abs=1e-12)


def test_the_banding_finds_a_pair_just_above_the_threshold():
    base = dialogue(2)
    near = changed(base, 27)
    for seed in range(5):
        result = dialogue_duplicates([" ".join(base), " ".join(near)], 0.49, seed=seed)
        assert result.kept == [0]


def test_a_removed_dialogue_points_at_its_most_similar_kept_one():
    """x and y share nothing; z is x's first 150 words and y's last 250: closer to y,
    though x comes first."""
    x, y = dialogue(4), dialogue(5)
    z = x[:150] + y[150:]
    assert jaccard(z, x) == pytest.approx(146 / 646) and jaccard(z, y) == pytest.approx(246 / 546)
    result = dialogue_duplicates([" ".join(t) for t in (x, y, z)], 0.2)
    assert result.kept == [0, 1]
    assert [(r.index, r.duplicate_of) for r in result.removed] == [(2, 1)]
    assert result.removed[0].similarity == pytest.approx(246 / 546, abs=1e-12)


def test_short_texts_are_one_shingle():
    result = dialogue_duplicates(["Hello there.", "hello, there", "Hello there friend",
                                  "", "  "], 0.9)
    assert result.kept == [0, 2, 3]
    assert [(r.index, r.duplicate_of, r.similarity) for r in result.removed] == [
        (1, 0, 1.0), (4, 3, 1.0)]


def test_dialogue_arguments_are_checked():
    assert dialogue_duplicates([]).kept == []
    for threshold in (0.0, 1.5):
        with pytest.raises(ValueError, match="threshold"):
            dialogue_duplicates(["a b c"], threshold)
    with pytest.raises(ValueError, match="at least 1"):
        dialogue_duplicates(["a b c"], n=0)


# ---------------------------------------------------------------- grouped_split


def planted(seed: int = 0) -> tuple[list[str], np.ndarray, list[tuple[int, int]]]:
    """30 groups of 4 paraphrases (cosine about 0.95 inside a group); 10 pairs of
    groups also share a near-paraphrase (cosine about 0.9) across them, the planted
    leaks. Unrelated items sit near cosine 0 (random directions)."""
    vectors, owner = clusters(30, 4, noise=0.18, seed=seed)
    owner = owner.tolist()
    groups = [f"passage-{g}" for g in owner]
    first = {g: owner.index(g) for g in range(30)}
    leaks = []
    for g in range(0, 20, 2):
        source, target = first[g], first[g + 1]
        mixed = vectors[source] + 0.45 * np.random.default_rng(g).standard_normal(DIM) / 8
        vectors[target] = mixed / np.linalg.norm(mixed)
        leaks.append((source, target))
    return groups, vectors, leaks


def cross(vectors: np.ndarray, test: list[bool]) -> np.ndarray:
    mask = np.array(test)
    return vectors[~mask] @ vectors[mask].T


def test_groups_never_straddle_the_split():
    groups = [f"scene-{i % 23}" for i in range(200)]
    for seed in range(4):
        for fraction in (0.1, 0.25, 0.5):
            result = grouped_split(groups, fraction, seed=seed)
            sides: dict[str, set[bool]] = {}
            for group, side in zip(groups, result.test, strict=True):
                sides.setdefault(group, set()).add(side)
            assert all(len(s) == 1 for s in sides.values())
            assert result.achieved_fraction == pytest.approx(fraction, abs=9 / 200 / 2 + 1e-9)
            assert result.achieved_fraction == sum(result.test) / 200
            assert result.closest is None and result.moved_groups == 0


def test_no_test_item_is_a_paraphrase_of_a_train_item():
    groups, vectors, leaks = planted()
    assert min(float(vectors[a] @ vectors[b]) for a, b in leaks) > 0.85
    without = grouped_split(groups, 0.3, seed=0)
    assert cross(vectors, without.test).max() > 0.85  # the planted leaks do straddle
    for seed in range(4):
        result = grouped_split(groups, 0.3, seed=seed, vectors=vectors)
        assert cross(vectors, result.test).max() <= 0.85  # every train/test pair
        for group in set(groups):
            assert len({side for g, side in zip(groups, result.test, strict=True)
                        if g == group}) == 1
        assert 0.2 <= result.achieved_fraction <= 0.4
    assert grouped_split(groups, 0.3, seed=0, vectors=vectors).moved_groups > 0


def test_closest_is_the_brute_force_maximum():
    groups, vectors, _ = planted(seed=3)
    result = grouped_split(groups, 0.3, seed=1, vectors=vectors)
    test = np.array(result.test)
    sims = cross(vectors, result.test)
    train_at, test_at = np.unravel_index(sims.argmax(), sims.shape)
    assert result.closest is not None
    assert result.closest.train == int(np.flatnonzero(~test)[train_at])
    assert result.closest.test == int(np.flatnonzero(test)[test_at])
    assert result.closest.similarity == pytest.approx(float(sims.max()), abs=1e-5)


def test_moved_groups_are_made_up_where_that_adds_no_leak():
    """Groups moved to train for leaking leave test short; untried groups that leak
    nothing take their place."""
    groups, vectors, _ = planted(seed=5)
    result = grouped_split(groups, 0.3, seed=0, vectors=vectors)
    assert result.moved_groups > 0
    assert abs(result.achieved_fraction - 0.3) <= 4 / len(groups)


def test_the_split_is_deterministic_for_a_seed():
    groups, vectors, _ = planted()
    first = grouped_split(groups, 0.25, seed=7, vectors=vectors)
    assert grouped_split(groups, 0.25, seed=7, vectors=vectors) == first
    assert any(grouped_split(groups, 0.25, seed=s, vectors=vectors).test != first.test
               for s in range(1, 4))


def test_fraction_zero_keeps_everything_in_train():
    groups, vectors, _ = planted()
    result = grouped_split(groups, 0.0, vectors=vectors)
    assert result.test == [False] * len(groups)
    assert (result.moved_groups, result.closest, result.achieved_fraction) == (0, None, 0.0)
    assert grouped_split([], 0.2).test == []


def test_train_is_never_emptied():
    assert grouped_split(["one"] * 5, 0.9).test == [False] * 5


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_a_fraction_outside_0_1_is_refused(fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        grouped_split(["a", "b"], fraction)


def test_vectors_must_match_the_items():
    groups, vectors, _ = planted()
    with pytest.raises(ValueError, match="one per item"):
        grouped_split(groups[:-1], 0.2, vectors=vectors)
    with pytest.raises(ValueError, match="max_similarity"):
        grouped_split(groups, 0.2, vectors=vectors, max_similarity=0.0)
