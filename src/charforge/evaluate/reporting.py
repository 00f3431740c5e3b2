"""The evaluation report from the store: every judgment of the chosen characters as
`ScoreRow`s (with the answer it judged), the judge-free metrics as `MetricRow`s, the
warnings a reader must see, then `report.build_report` and `report.write_report`.

An item is `<mode>:<item>` in the report, so a single-turn and a multi-turn interview on
the same question are never paired with each other.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from charforge.errors import CharforgeError
from charforge.store import Store
from charforge.workspace import Workspace

from .records import (
    INTERVIEW_KIND,
    JUDGMENT_KIND,
    RANKING_KIND,
    InterviewRecord,
    Judgment,
    MetricRow,
    Ranking,
    ScoreRow,
)
from .report import Report, build_report, write_report

MetricsHook = Callable[[Workspace, dict[str, list[InterviewRecord]]], list[MetricRow]]


def interviews_of(store: Store, slug: str) -> list[InterviewRecord]:
    return [InterviewRecord.model_validate(r.data) for r in store.records(slug, INTERVIEW_KIND)]


def score_rows(store: Store, slug: str) -> list[ScoreRow]:
    """Every current judgment of the character, with the answers it judged."""
    answers = {(r.agent, r.stage, r.mode, r.item): "\n\n".join(t.answer for t in r.turns)
               for r in interviews_of(store, slug)}
    rows = []
    for stored in store.records(slug, JUDGMENT_KIND):
        j = Judgment.model_validate(stored.data)
        agent = f"{j.agent} [{j.stage}]" if j.stage else j.agent  # stages compared as agents
        rows.append(ScoreRow(character=slug, agent=agent, item=f"{j.mode}:{j.item}",
                             dimension=j.dimension, judge=j.judge, sample=j.sample,
                             score=j.score, low=j.low, high=j.high, reasoning=j.reasoning,
                             answer=answers.get((j.agent, j.stage, j.mode, j.item), "")))
    return rows


def ranking_rows(store: Store, slug: str) -> list[MetricRow]:
    """PersLLM's ranking judge, per judge, mode and set of agents ranked together: each
    agent's first-place share and pairwise win rate over the readable rankings."""
    from .persllm_judges import ranking_shares

    groups: dict[tuple[str, str, tuple[str, ...]], list[Ranking]] = {}
    for stored in store.records(slug, RANKING_KIND):
        ranking = Ranking.model_validate(stored.data)
        key = (ranking.judge, ranking.mode, tuple(sorted(ranking.shown)))
        groups.setdefault(key, []).append(ranking)
    rows = []
    for (judge, mode, agents), rankings in groups.items():
        note = f"ranked by {judge} ({mode}) among {', '.join(agents)}"
        for agent, figures in ranking_shares(rankings).items():
            unread = int(figures["unreadable"])
            for metric in ("first_place_share", "pairwise_win_rate"):
                value = figures[metric]
                rows.append(MetricRow(
                    character=slug, agent=agent, metric=f"rank_{metric}",
                    value=None if value != value else value, n=int(figures["rankings"]),
                    note=note + (f"; {unread} unreadable" if unread else "")))
    return rows


def _models_by_stage(store: Store, slug: str) -> dict[str, set[str]]:
    """Model names by role, over the character's current tasks."""
    found: dict[str, set[str]] = {}
    for character, _stage, models, *_ in store.identity_groups():
        if character != slug or not models:
            continue
        for role, ref in models.items():
            name = ref.get("name") if isinstance(ref, dict) else None
            if name:
                found.setdefault(role, set()).add(name)
    return found


def same_model_warnings(store: Store, slug: str, interviews: Sequence[InterviewRecord]
                        ) -> list[str]:
    """A judge that is also the character's teacher, or the model behind an agent."""
    roles = _models_by_stage(store, slug)
    judges = roles.get("judge", set())
    warnings = []
    for judge in sorted(judges):
        if judge in roles.get("teacher", set()):
            warnings.append(f"{slug}: the judge {judge} is also this character's teacher (it "
                            "wrote data for it): it may favour what it wrote")
        agents = sorted({r.agent for r in interviews
                         if r.model.endswith(f"@{judge}") or r.model == judge
                         or r.agent.endswith(f":{judge}")})
        if agents:
            warnings.append(f"{slug}: the judge {judge} is also the model behind "
                            f"{', '.join(agents)}: it may favour its own answers")
    return warnings


def collect(ws: Workspace, characters: Sequence[str] | None = None,
            metrics: MetricsHook | None = None) -> tuple[list[ScoreRow], list[MetricRow],
                                                         list[str], list[str]]:
    """(scores, metrics, warnings, notes) of `characters` (default: every character with
    interviews in the store)."""
    chosen = [ws.load_character(name) for name in characters] if characters else \
        ws.characters()
    scores: list[ScoreRow] = []
    warnings: list[str] = []
    interviews: dict[str, list[InterviewRecord]] = {}
    rankings: list[MetricRow] = []
    with ws.store() as store:
        for character in chosen:
            found = interviews_of(store, character.slug)
            if not found:
                continue
            interviews[character.slug] = found
            scores += score_rows(store, character.slug)
            rankings += ranking_rows(store, character.slug)
            warnings += same_model_warnings(store, character.slug, found)
    if not interviews:
        raise CharforgeError("no interviews in the store for "
                             f"{', '.join(c.slug for c in chosen) or 'any character'}; run "
                             "charforge eval interview (or import-characterllm) first")
    notes = [f"{slug}: {len(found)} interviews ({', '.join(sorted({r.agent for r in found}))})"
             for slug, found in interviews.items()]
    unscored = sum(row.score is None for row in scores)
    if unscored:
        notes.append(f"{unscored} of {len(scores)} judgments gave no readable score after one "
                     "retry: counted as unscored, never as a score")
    rows = rankings + (metrics(ws, interviews) if metrics is not None else [])
    return scores, rows, warnings, notes


def evaluation_report(ws: Workspace, folder: str | Path | None = None, *,
                      characters: Sequence[str] | None = None,
                      metrics: MetricsHook | None = None, resamples: int = 10_000,
                      title: str = "charforge evaluation") -> tuple[Report, dict[str, Path]]:
    """Build the report from the store and write it to `folder` (default:
    `<workspace>/reports/evaluation`)."""
    scores, rows, warnings, notes = collect(ws, characters, metrics)
    judges = sorted({row.judge for row in scores})
    samples = max((row.sample for row in scores), default=0) + 1
    report = build_report(scores, rows, title=title, notes=notes, warnings=warnings,
                          judge_samples={"judges": judges, "samples": samples},
                          resamples=resamples)
    target = Path(folder) if folder else ws.root / "reports" / "evaluation"
    return report, write_report(report, target)


def report_summary(report: Report) -> list[str]:
    """Lines for the terminal: per character and dimension, each agent's mean and n."""
    return [f"{m.character} · {m.dimension} · {m.agent}: "
            f"{'-' if m.mean is None else f'{m.mean:.2f}'} (n={m.n}"
            f"{f', {m.unscored} unscored' if m.unscored else ''})" for m in report.means]


# At most this many answers per character and agent are embedded for the report's profile
# similarity (MiniLM on 2 CPU cores: ~100 answers a second), in store order.
SIMILARITY_ANSWERS = 60


def workspace_metrics(ws: Workspace, interviews: dict[str, list[InterviewRecord]]
                      ) -> list[MetricRow]:
    """The judge-free metrics of the report: per character and agent, similarity of the
    answers to the profile, the protective-refusal rate on anachronism probes, held-out
    perplexity (trained vs its base), and BLEU distinctiveness of each agent's answers
    within and between characters."""
    from charforge.retrieval import default_embedder

    from .metrics import distinctiveness_rows, probe_topic_ids, profile_similarity, refusal_rows

    embedder = default_embedder()
    rows: list[MetricRow] = []
    answers: dict[tuple[str, str, str | None], list[str]] = {}
    for slug, records in interviews.items():
        character = ws.load_character(slug)
        by_agent: dict[str, list[InterviewRecord]] = {}
        for record in records:
            by_agent.setdefault(record.agent, []).append(record)
            answers.setdefault((slug, record.agent, record.stage), []).extend(
                turn.answer for turn in record.turns if turn.answer)
        sample = {agent: found[:SIMILARITY_ANSWERS] for agent, found in by_agent.items()}
        rows += profile_similarity(sample, character.profile_or_knowledge(), embedder,
                                   character=slug, pairs=True)
        probes = probe_topic_ids(records)
        if probes:
            rows += refusal_rows(by_agent, probes, character=slug, pairs=True)
        rows += perplexity_rows(ws, slug, set(by_agent))
    rows += distinctiveness_rows(answers)
    return rows


PERPLEXITY_DIALOGUES = 50  # test dialogues scored per agent, in file order


def test_dialogues(ws: Workspace, slug: str) -> list[list[dict[str, Any]]]:
    """The chat messages of the character's held-out SFT rows (`split` "test")."""
    path = ws.datasets_dir / slug / "sft.jsonl"
    if not path.is_file():
        return []
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line) if line.strip() else {}
        if row.get("split") == "test" and row.get("messages"):
            found.append(row["messages"])
    return found[:PERPLEXITY_DIALOGUES]


def perplexity_rows(ws: Workspace, slug: str, agents: set[str]) -> list[MetricRow]:
    """Held-out perplexity of the test dialogues under the latest trained LoRA run
    (agent `trained`) and under its bare base (agent `prompted`), when the character has
    both a run and test dialogues and those agents were interviewed."""
    from charforge.llm.local import LocalChatModel, LocalConfig
    from charforge.train.runs import trained_model_entries

    entry = trained_model_entries(ws.root).get(slug)
    dialogues = test_dialogues(ws, slug)
    wanted = agents & {"trained", "prompted"}
    if not entry or "adapter" not in entry or not dialogues or not wanted:
        return []
    from .metrics import paired_rows, perplexity

    rows = []
    options = {k: v for k, v in entry.items() if k != "backend"}
    nlls: dict[str, dict[int, float]] = {}
    for agent in sorted(wanted, reverse=True):  # trained first: a - b is trained - base
        config = options if agent == "trained" else {k: v for k, v in options.items()
                                                     if k != "adapter"}
        model = LocalChatModel(LocalConfig.model_validate(config), name=f"{slug}-{agent}")
        nlls[agent] = {}
        try:
            rows.append(perplexity(model, dialogues, character=slug, agent=agent,
                                   per_dialogue=nlls[agent]))
        finally:
            model.shutdown()
    return rows + paired_rows(slug, "log_perplexity", nlls, "test dialogues")
