"""Judge-free metrics of interviewed agents, as `MetricRow`s the report reads.

No judge model is asked; each figure comes from the answers themselves, an embedding
model, BLEU, plain rules or the agent's own weights:

- `profile_similarity`: mean cosine between each spoken answer (every turn of a
  multi-turn interview) and the nearest ~100-word piece of the character's profile,
  embedded with MiniLM (`charforge.retrieval`). It rewards answers that talk about
  what the profile talks about; it cannot tell a true statement from a false one.
- `reference_similarity`: mean cosine between an agent's answer and a reference answer
  to the same item (PersLLM's test answers, say).
- `distinctiveness_rows`: PersLLM's BLEU figures (`charforge.dataset.distinct`) of an
  agent's answers: within one character (intra), between characters (inter), between
  stages, and intra / inter.
- `refusal_rows`: how often an agent declines anachronism probes (Character-LLM's topic
  "difficult to answer without breaking character"), by `charforge.evaluate.refusal`.
- `perplexity`: the agent's perplexity of held-out dialogues of its character, on the
  assistant's tokens only. An in-distribution fit, comparable only between agents that
  share a tokenizer: the row's note carries the tokenizer's fingerprint and
  `comparable` checks it.

`metric_orderings` and `print_orderings` turn rows into "which agent comes first" per
character and metric, in the direction `HIGHER_IS_BETTER` sets.

MiniLM reads at most 256 word pieces (about 190 words) of a text: a longer answer is
embedded by its beginning only. Profiles are cut into pieces for that reason; answers
are not, so a long answer's tail does not count.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from charforge.dataset.distinct import distinctiveness
from charforge.evaluate.records import InterviewRecord, MetricRow
from charforge.evaluate.refusal import refusal_verdict
from charforge.retrieval import Embedder, chunk_text

if TYPE_CHECKING:
    from rich.console import Console

    from charforge.llm.base import MessagesLike
    from charforge.llm.local import LocalChatModel

__all__ = [
    "ALL_CHARACTERS",
    "HIGHER_IS_BETTER",
    "PERPLEXITY_NOTE",
    "PROTECTIVE_TOPIC",
    "comparable",
    "distinctiveness_rows",
    "metric_orderings",
    "perplexity",
    "print_orderings",
    "probe_topic_ids",
    "profile_chunks",
    "profile_similarity",
    "reference_similarity",
    "refusal_rows",
    "spoken_answers",
    "tokenizer_id",
]

# The `character` of rows that pool every character (distinctiveness averages).
ALL_CHARACTERS = "all"
# Character-LLM's topic of questions a historical character cannot answer in character.
PROTECTIVE_TOPIC = "difficult to answer without breaking character"
PERPLEXITY_NOTE = "in-distribution fit; comparable only between agents with the same tokenizer"

# Which way is better, per metric; None: no better direction, so never ordered.
HIGHER_IS_BETTER: dict[str, bool | None] = {
    # closer to the profile / to the reference answer
    "profile_similarity": True,
    "reference_similarity": True,
    # BLEU between answers: lower means more distinct. Between characters, distinct is
    # the goal. Within one character, high BLEU is a consistent voice or a repeated
    # template, and BLEU cannot tell which: no direction. Between stages of one
    # character, distinct stages are what staged training is for.
    "bleu_inter": False,
    "bleu_intra": None,
    "bleu_stage": False,
    # characters' answers resemble themselves more than each other (PersLLM: about 9)
    "bleu_ratio": True,
    # anachronism probes declined (any way / in character)
    "protective_refusal_rate": True,
    "in_character_refusal_rate": True,
    # fit of the character's held-out dialogues; only within one tokenizer
    "perplexity": False,
    # PersLLM's ranking judge (judge-based, shown beside these in the report)
    "rank_first_place_share": True,
    "rank_pairwise_win_rate": True,
}

_TOKENIZER_TAG = "tokenizer="


# ------------------------------------------------------------------ answers


def spoken_answers(records: Iterable[InterviewRecord]) -> list[str]:
    """Every non-empty spoken answer of `records`, one per turn, in order (thoughts are
    apart in `InterviewTurn.thinking` and never included)."""
    return [turn.answer.strip() for record in records for turn in record.turns
            if turn.answer.strip()]


def profile_chunks(profile: Sequence[str], words: int = 100, overlap: int = 20) -> list[str]:
    """The profile's paragraphs as pieces of at most `words` words: paragraphs in a row
    are joined until they hold `words` words, and each such run is cut into windows of
    `words` words overlapping by `overlap` (`charforge.retrieval.chunk_text`), so a
    heading or a short paragraph joins the text after it."""
    pieces: list[str] = []
    run: list[str] = []
    for paragraph in profile:
        if paragraph.split():
            run.append(paragraph)
        if run and len(" ".join(run).split()) >= words:
            pieces += chunk_text(" ".join(run), words, overlap)
            run = []
    if run:
        pieces += chunk_text(" ".join(run), words, overlap)
    return pieces


def _similarity_row(character: str, agent: str, metric: str, scores: list[float],
                    note: str) -> MetricRow:
    value = float(np.mean(scores)) if scores else None
    return MetricRow(character=character, agent=agent, metric=metric, value=value,
                     n=len(scores), note=note)


def profile_similarity(records_by_agent: Mapping[str, Sequence[InterviewRecord]],
                       profile: Sequence[str], embedder: Embedder, *,
                       character: str, pairs: bool = False) -> list[MetricRow]:
    """One row per agent: the mean over its spoken answers (each turn of a multi-turn
    interview) of the cosine to the nearest ~100-word piece of `profile` (paragraphs,
    as `Character.profile_or_knowledge()` gives them). `n`: answers scored; None with
    none. `pairs`: also each two agents' paired difference (`paired_rows`) over the
    answers to the same item and turn. Raises ValueError for a profile without words."""
    pieces = profile_chunks(profile)
    if not pieces:
        raise ValueError(f"{character}: the profile has no words to compare answers with")
    keyed = {agent: [((record.item, number), turn.answer.strip()) for record in records
                     for number, turn in enumerate(record.turns) if turn.answer.strip()]
             for agent, records in records_by_agent.items()}
    # One call for everything: each call to the model has a fixed cost.
    vectors = embedder.encode([*pieces, *(text for found in keyed.values() for _, text in found)])
    nearest = (vectors[len(pieces):] @ vectors[:len(pieces)].T).max(axis=1, initial=-1.0)
    note = f"cosine to the nearest of {len(pieces)} profile pieces ({embedder.name})"
    rows, start = [], 0
    by_item: dict[str, dict[Any, float]] = {}
    for agent, found in keyed.items():
        scores = [float(score) for score in nearest[start:start + len(found)]]
        start += len(found)
        by_item[agent] = {key: score for (key, _), score in zip(found, scores, strict=True)}
        rows.append(_similarity_row(character, agent, "profile_similarity", scores, note))
    if pairs:
        rows += paired_rows(character, "profile_similarity", by_item, "answers")
    return rows


def paired_rows(character: str, metric: str, by_item: Mapping[str, Mapping[Any, float]],
                unit: str) -> list[MetricRow]:
    """For each two agents, the mean difference a - b of `metric` over the items both
    have, with its 95% paired bootstrap interval (`low`, `high`); `versus` names b."""
    from itertools import combinations

    from .stats import paired_bootstrap

    rows = []
    for a, b in combinations(by_item, 2):
        keys = [key for key in by_item[a] if key in by_item[b]]
        if not keys:
            continue
        interval = paired_bootstrap([by_item[a][k] for k in keys],
                                    [by_item[b][k] for k in keys])
        rows.append(MetricRow(character=character, agent=a, versus=b, metric=metric,
                              value=round(interval.estimate, 4), n=len(keys),
                              low=round(interval.low, 4), high=round(interval.high, 4),
                              note=f"{a} - {b} over {len(keys)} paired {unit}, "
                                   f"{interval.level:.0%} bootstrap interval"))
    return rows


def reference_similarity(records_by_agent: Mapping[str, Sequence[InterviewRecord]],
                         references: Mapping[str, str], embedder: Embedder, *,
                         character: str) -> list[MetricRow]:
    """One row per agent: the mean cosine between its answer to an item (a multi-turn
    interview's spoken turns joined) and `references[item]`. Records whose item has no
    reference, or whose answer is empty, are left out (the note counts them); `n`:
    answers compared."""
    pairs = {agent: [(answer, references[record.item]) for record in records
                     if record.item in references
                     and (answer := "\n".join(spoken_answers([record])))]
             for agent, records in records_by_agent.items()}
    texts = [text for found in pairs.values() for pair in found for text in pair]
    vectors = embedder.encode(texts) if texts else np.zeros((0, 1), dtype=np.float32)
    cosines = np.sum(vectors[0::2] * vectors[1::2], axis=1)  # answer, reference, ...
    rows, start = [], 0
    for agent, records in records_by_agent.items():
        count = len(pairs[agent])
        scores = [float(score) for score in cosines[start:start + count]]
        start += count
        note = f"cosine to the item's reference answer ({embedder.name})"
        if count < len(records):
            note += (f"; {len(records) - count} of {len(records)} records without a "
                     "reference or answer")
        rows.append(_similarity_row(character, agent, "reference_similarity", scores, note))
    return rows


# ------------------------------------------------------------------ distinctiveness


def distinctiveness_rows(answers: Mapping[tuple[str, str, str | None], Sequence[str]], *,
                         seed: int = 0, max_pairs: int = 200) -> list[MetricRow]:
    """PersLLM's distinctiveness BLEU of each agent's answers, from `answers`
    ((character, agent, stage label or None) -> answer texts), through
    `charforge.dataset.distinct.distinctiveness` run once per agent (its characters
    are the personas). Per agent and character: `bleu_intra`, `bleu_inter`,
    `bleu_ratio` (intra / inter) and, with two stages or more, `bleu_stage`; the same
    averaged over characters under character `ALL_CHARACTERS`. BLEU is 0-100, lower =
    more distinct; `n`: the answers the figure reads; the note: pairs scored."""
    by_agent: dict[str, dict[tuple[str, str | None], list[str]]] = {}
    for (character, agent, stage), texts in answers.items():
        by_agent.setdefault(agent, {}).setdefault((character, stage), []).extend(texts)
    rows: list[MetricRow] = []
    for agent, grouped in by_agent.items():
        result = distinctiveness(grouped, seed=seed, max_pairs=max_pairs)

        def row(character: str, metric: str, value: float | None, n: int, note: str,
                agent: str = agent) -> MetricRow:
            return MetricRow(character=character, agent=agent, metric=metric, value=value,
                             n=n, note=note)

        for name, persona in result.personas.items():
            pairs = persona.pairs
            ratio = (round(persona.intra / persona.inter, 2)
                     if persona.intra is not None and persona.inter else None)
            rows += [row(name, "bleu_intra", persona.intra, persona.answers,
                         f"{pairs.intra} pairs within {name}"),
                     row(name, "bleu_inter", persona.inter, persona.answers,
                         f"{pairs.inter} pairs with the other characters"),
                     row(name, "bleu_ratio", ratio, persona.answers, "bleu_intra / bleu_inter")]
            if persona.stages > 1:
                rows.append(row(name, "bleu_stage", persona.stage, persona.answers,
                                f"{pairs.stage} pairs across {persona.stages} stages"))
        total = sum(persona.answers for persona in result.personas.values())
        characters = len(result.personas)
        rows += [row(ALL_CHARACTERS, "bleu_intra", result.average_intra, total,
                     f"mean of {characters} characters; {result.pairs.intra} pairs"),
                 row(ALL_CHARACTERS, "bleu_inter", result.average_inter, total,
                     f"mean of {characters} characters; {result.pairs.inter} pairs"),
                 row(ALL_CHARACTERS, "bleu_ratio", result.intra_to_inter, total,
                     "mean bleu_intra / mean bleu_inter")]
        if result.average_stage is not None:
            rows.append(row(ALL_CHARACTERS, "bleu_stage", result.average_stage, total,
                            f"mean of {characters} characters; {result.pairs.stage} pairs"))
    return rows


# ------------------------------------------------------------------ refusals


def probe_topic_ids(records: Iterable[InterviewRecord],
                    topic: str = PROTECTIVE_TOPIC) -> set[str]:
    """The topic ids whose topic (the words) is `topic`, as the records carry them
    (Character-LLM numbers its topics per character file)."""
    wanted = topic.strip().casefold()
    return {record.topic_id for record in records
            if record.topic_id and record.topic.strip().casefold() == wanted}


def refusal_rows(records_by_agent: Mapping[str, Sequence[InterviewRecord]],
                 probes: Collection[str] | Callable[[InterviewRecord], bool], *,
                 character: str, pairs: bool = False) -> list[MetricRow]:
    """Two rows per agent over its anachronism probes: `protective_refusal_rate`, the
    share of probes it declined (in character or as an AI), and
    `in_character_refusal_rate`, the share it declined in character (both out of every
    probe answered, so the second is at most the first). `probes`: topic ids (see
    `probe_topic_ids`) or a predicate on records. A probe's first turn is read
    (`refusal_verdict`); a probe with an empty answer is not counted. `n`: probes
    answered; the rates are None with none. `pairs`: also each two agents' paired
    difference of the protective refusal rate over the probes both answered."""
    chosen: Callable[[InterviewRecord], bool] = (
        probes if callable(probes) else lambda record: record.topic_id in probes)
    rows = []
    by_item: dict[str, dict[Any, float]] = {}
    for agent, records in records_by_agent.items():
        asked = [record for record in records if chosen(record) and record.turns]
        answered = [(record.item, record.turns[0]) for record in asked
                    if record.turns[0].answer.strip()]
        verdicts = [refusal_verdict(turn.answer, turn.question) for _, turn in answered]
        by_item[agent] = {item: float(verdict.is_refusal)
                          for (item, _), verdict in zip(answered, verdicts, strict=True)}
        refused = sum(verdict.is_refusal for verdict in verdicts)
        in_character = sum(verdict.is_refusal and bool(verdict.in_character)
                           for verdict in verdicts)
        count = len(verdicts)
        unanswered = len(asked) - count
        tail = f"; {unanswered} probes unanswered, left out" if unanswered else ""
        rows += [
            MetricRow(character=character, agent=agent, metric="protective_refusal_rate",
                      value=refused / count if count else None, n=count,
                      note=f"{refused} of {count} probes declined{tail}"),
            MetricRow(character=character, agent=agent, metric="in_character_refusal_rate",
                      value=in_character / count if count else None, n=count,
                      note=f"{in_character} of {count} probes declined in character{tail}"),
        ]
    if pairs:
        rows += paired_rows(character, "protective_refusal_rate", by_item, "probes")
    return rows


# ------------------------------------------------------------------ perplexity


def tokenizer_id(tokenizer: Any) -> str:
    """`<name>|vocab=<size>|sha=<12 hex>`: the tokenizer's folder name, its size and a
    hash of its vocabulary and chat template (which together decide the token ids a
    dialogue is scored on). Two ids with the same size and hash are comparable."""
    payload = json.dumps([sorted(tokenizer.get_vocab().items()),
                          getattr(tokenizer, "chat_template", None) or ""])
    digest = hashlib.sha256(payload.encode()).hexdigest()[:12]
    name = re.sub(r"\s+", "_", Path(str(tokenizer.name_or_path or "?")).name or "?")
    return f"{name}|vocab={len(tokenizer)}|sha={digest}"


def _fingerprint(row: MetricRow) -> str | None:
    """The vocabulary part of the tokenizer id in a perplexity row's note."""
    found = re.search(re.escape(_TOKENIZER_TAG) + r"\S*?\|(vocab=\d+\|sha=[0-9a-f]+)", row.note)
    return found[1] if found else None


def comparable(rows: Iterable[MetricRow]) -> bool:
    """Whether the perplexity rows among `rows` were all computed with one tokenizer
    (vocabulary and chat template; where it was loaded from does not matter). False
    when a perplexity row carries no tokenizer id; True with fewer than two rows."""
    prints = {_fingerprint(row) for row in rows if row.metric == "perplexity"}
    return None not in prints and len(prints) <= 1


def _load_scorer(model: str | Path | LocalChatModel,
                 adapter: str | Path | None) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, extra forward arguments). A folder loads on the CPU in
    float32 without remote code, with `adapter` (a PEFT folder, its own tokenizer when
    it has one) on top; a `LocalChatModel` is used as loaded, through its own adapter."""
    from charforge.llm.local import DEFAULT_ADAPTER, LocalChatModel

    if isinstance(model, LocalChatModel):
        if adapter is not None:
            raise ValueError("give a LocalChatModel its adapter in its LocalConfig, "
                             "not to perplexity()")
        from charforge.llm.engine import BASE_ADAPTER

        network = model.model
        extra: dict[str, Any] = {}
        if hasattr(network, "peft_config"):  # pick the adapter: several may be loaded
            extra["adapter_names"] = [DEFAULT_ADAPTER if model.config.adapter
                                      else BASE_ADAPTER]
        return network, model.tokenizer, extra

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from charforge.llm.local import quiet_progress_bars
    from charforge.llm.vocab import grow_vocabulary

    folder = str(Path(model).expanduser())
    with quiet_progress_bars():
        tokenizer = AutoTokenizer.from_pretrained(folder)
        network = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        if adapter is not None:
            from peft import PeftModel

            adapter_folder = Path(adapter).expanduser()
            if (adapter_folder / "tokenizer_config.json").is_file():
                tokenizer = AutoTokenizer.from_pretrained(str(adapter_folder))
                grow_vocabulary(network, len(tokenizer))  # as charforge.train saved it
            with warnings.catch_warnings():  # deprecations inside PEFT and transformers
                warnings.simplefilter("ignore", FutureWarning)
                network = PeftModel.from_pretrained(network, str(adapter_folder))
    return network.to("cpu").eval(), tokenizer, {}


def _dialogue_tokens(tokenizer: Any, dialogue: MessagesLike,
                     scope: Literal["assistant", "all"]) -> tuple[list[int], list[int]]:
    """Token ids of the dialogue under the chat template, and labels: the assistant's
    tokens (each reply and its end-of-turn marker, as charforge trains them), or every
    token with `scope="all"`."""
    from charforge.llm.turns import template_turns
    from charforge.train.data import learned_spans, tokens_with_labels

    turns = template_turns(dialogue, thoughts="all")
    text, spans = learned_spans(tokenizer, turns, 0, loss="character")
    if scope == "all":
        spans = [(0, len(text))]
    return tokens_with_labels(tokenizer, text, spans)


def perplexity(model: str | Path | LocalChatModel, dialogues: Sequence[MessagesLike], *,
               character: str, agent: str, adapter: str | Path | None = None,
               scope: Literal["assistant", "all"] = "assistant",
               max_tokens: int | None = None,
               per_dialogue: dict[int, float] | None = None) -> MetricRow:
    """The perplexity of `dialogues` (chat message lists) under `model` (a folder, or a
    loaded `LocalChatModel`), with an optional PEFT `adapter` folder on a folder's
    model: exp of the mean negative log-likelihood over the assistant's tokens of all
    dialogues together (`scope="all"`: every token after the first), one dialogue at
    a time. A dialogue longer than `max_tokens` (default: the model's context) is cut.
    `n`: dialogues scored; the note holds `PERPLEXITY_NOTE`, the tokens scored and the
    tokenizer's id (`tokenizer_id`; see `comparable`). `per_dialogue`, when given, is
    filled with each scored dialogue's mean negative log-likelihood, by its index.

    A `LocalChatModel` is scored in the dtype and on the device it loaded with, and
    through the model its engine decodes with: score it while it serves no request."""
    import torch
    import torch.nn.functional as F

    network, tokenizer, extra = _load_scorer(model, adapter)
    limit = max_tokens or getattr(network.config, "max_position_embeddings", None)
    device = next(network.parameters()).device
    total_nll, tokens, scored, cut = 0.0, 0, 0, 0
    for number, dialogue in enumerate(dialogues):
        ids, labels = _dialogue_tokens(tokenizer, dialogue, scope)
        if limit and len(ids) > limit:
            ids, labels, cut = ids[:limit], labels[:limit], cut + 1
        targets = torch.tensor(labels[1:], device=device)
        if not len(targets) or bool((targets == -100).all()):
            continue
        with torch.inference_mode():
            logits = network(input_ids=torch.tensor([ids], device=device),
                             use_cache=False, **extra).logits[0, :-1].float()
        nll = float(F.cross_entropy(logits, targets, ignore_index=-100, reduction="sum"))
        counted = int((targets != -100).sum())
        total_nll, tokens = total_nll + nll, tokens + counted
        if per_dialogue is not None:
            per_dialogue[number] = nll / counted
        scored += 1
    value = math.exp(total_nll / tokens) if tokens else None
    parts = [PERPLEXITY_NOTE, f"{scope} tokens: {tokens}"]
    if cut:
        parts.append(f"{cut} dialogues cut to {limit} tokens")
    if scored < len(dialogues):
        parts.append(f"{len(dialogues) - scored} dialogues with nothing to score")
    parts.append(_TOKENIZER_TAG + tokenizer_id(tokenizer))
    return MetricRow(character=character, agent=agent, metric="perplexity", value=value,
                     n=scored, note="; ".join(parts))


# ------------------------------------------------------------------ orderings


def metric_orderings(rows: Iterable[MetricRow]) -> dict[tuple[str, str], list[str]]:
    """(character, metric) -> agents, best first, for every metric with a direction in
    `HIGHER_IS_BETTER` (unknown metrics and those without a direction are left out).
    Rows with a `versus` or no value are skipped; ties keep the agents' names' order;
    perplexity is ordered only where its rows are `comparable`."""
    groups: dict[tuple[str, str], list[MetricRow]] = {}
    for row in rows:
        if row.versus or row.value is None or HIGHER_IS_BETTER.get(row.metric) is None:
            continue
        groups.setdefault((row.character, row.metric), []).append(row)
    orderings = {}
    for key, group in groups.items():
        if key[1] == "perplexity" and not comparable(group):
            continue
        sign = -1.0 if HIGHER_IS_BETTER[key[1]] else 1.0
        best = sorted(group, key=lambda row: (sign * float(row.value or 0.0), row.agent))
        orderings[key] = [row.agent for row in best]
    return orderings


def print_orderings(rows: Sequence[MetricRow], console: Console) -> None:
    """A table of `metric_orderings(rows)`: per character and metric, the agents best
    first with their values."""
    from rich.table import Table

    values = {(row.character, row.metric, row.agent): row.value for row in rows
              if not row.versus}
    table = Table(title="Agents ordered per metric (best first)")
    for column in ("character", "metric", "better", "ordering"):
        table.add_column(column)
    for (character, metric), agents in metric_orderings(rows).items():
        shown = " > ".join(f"{agent} {values[character, metric, agent]:.3g}"
                           for agent in agents)
        table.add_row(character, metric, "higher" if HIGHER_IS_BETTER[metric] else "lower",
                      shown)
    console.print(table)
    undirected = sorted({row.metric for row in rows
                         if row.metric in HIGHER_IS_BETTER
                         and HIGHER_IS_BETTER[row.metric] is None})
    if undirected:
        console.print(f"not ordered (no better direction): {', '.join(undirected)}")
