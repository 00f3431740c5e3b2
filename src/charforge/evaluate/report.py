"""The evaluation report: judges' scores and judge-free metrics in, files out.

`build_report` does all the arithmetic once and returns a `Report` (a pydantic model, with
every figure already rounded as shown); `write_report` only renders it, into

- `report.md`, for reading in a repository;
- `report.html`, one self-contained page: styles inline, charts as inline PNG data, no
  script and no address outside the file, every piece of text escaped (answers and
  reasoning are model output and may hold markup);
- `report.json`, the `Report` itself, for machines;
- the charts as PNG files beside them: a radar of mean scores per character, and a bar
  chart per dimension of the means and of the paired differences with their intervals.

Markdown and HTML are rendered from the same list of parts, so the two always show the same
numbers, and those numbers are the ones in report.json.
"""

from __future__ import annotations

import base64
import html
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from io import BytesIO
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from charforge.evaluate import stats
from charforge.evaluate.records import MetricRow, ScoreRow

WEAKEST = 10
LEVEL = 0.95


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MeanScore(_Model):
    """One agent's scores of one character on one dimension."""

    character: str
    dimension: str
    agent: str
    mean: float | None = Field(description="over every score given, 2 decimals")
    n: int = Field(description="scores given")
    unscored: int = Field(description="judgments that gave no score")
    low: float
    high: float


class Comparison(_Model):
    """Agent a against agent b on the items both were scored on (one character, dimension)."""

    character: str
    dimension: str
    agent_a: str
    agent_b: str
    difference: float = Field(description="mean of a - b over paired items")
    low: float
    high: float
    level: float
    win_rate: float = Field(description="share of items a scored above b, ties half")
    pairs: int


class DimensionAgreement(_Model):
    """How far the ratings of one answer on one dimension agree."""

    dimension: str
    alpha: float | None
    exact: float | None
    within_one: float | None
    units: int
    ratings: int


class WeakAnswer(_Model):
    """One of the lowest-scored answers, with the judge's reasoning for its lowest score."""

    character: str
    agent: str
    item: str
    dimension: str
    score: float = Field(description="mean over samples and judges, 2 decimals")
    low: float
    high: float
    judge: str
    reasoning: str
    answer: str


class Report(_Model):
    """Everything the report shows, numbers rounded as shown."""

    title: str
    warnings: list[str] = []
    notes: list[str] = []
    judge_samples: dict[str, Any] | None = None
    characters: list[str]
    agents: list[str]
    dimensions: list[str]
    means: list[MeanScore]
    comparisons: list[Comparison]
    agreement_meaningful: bool
    agreement: list[DimensionAgreement]
    metrics: list[MetricRow]
    weakest: list[WeakAnswer]


def _r2(value: float | None) -> float | None:
    return None if value is None else round(float(value), 2)


def _metric_text(value: float) -> str:
    """Two decimals, or two significant digits below 0.1 so small figures keep meaning."""
    return f"{value:.2f}" if value == 0 or abs(value) >= 0.1 else f"{value:.2g}"


def _ordered(values: Iterable[str]) -> list[str]:
    """Distinct values in order of first appearance."""
    return list(dict.fromkeys(values))


def _scale(rows: Sequence[ScoreRow]) -> tuple[float, float]:
    return min(r.low for r in rows), max(r.high for r in rows)


def _means(groups: dict[tuple[str, str], list[ScoreRow]], agents: list[str]) -> list[MeanScore]:
    means = []
    for (character, dimension), rows in groups.items():
        low, high = _scale(rows)
        for agent in agents:
            scores = [r.score for r in rows if r.agent == agent]
            if scores:
                mean, n, unscored = stats.mean_and_n(scores)
                means.append(MeanScore(character=character, dimension=dimension, agent=agent,
                                       mean=_r2(mean), n=n, unscored=unscored, low=low,
                                       high=high))
    return means


def _comparisons(groups: dict[tuple[str, str], list[ScoreRow]], agents: list[str], *,
                 resamples: int, seed: int) -> list[Comparison]:
    comparisons = []
    for (character, dimension), rows in groups.items():
        for agent_a, agent_b in combinations(agents, 2):
            paired = stats.pair_scores(rows, agent_a, agent_b)
            if not paired.keys:
                continue
            interval = stats.paired_bootstrap(paired.a, paired.b, resamples=resamples,
                                              seed=seed, level=LEVEL)
            comparisons.append(Comparison(
                character=character, dimension=dimension, agent_a=agent_a, agent_b=agent_b,
                difference=_r2(interval.estimate), low=_r2(interval.low),
                high=_r2(interval.high), level=LEVEL,
                win_rate=_r2(stats.win_rate(paired.a, paired.b)), pairs=interval.n))
    return comparisons


def _rated_more_than_once(scores: Sequence[ScoreRow]) -> bool:
    raters: dict[tuple[str, str, str, str], set[tuple[str, int]]] = defaultdict(set)
    for r in scores:
        raters[(r.character, r.agent, r.item, r.dimension)].add((r.judge, r.sample))
    return any(len(seen) > 1 for seen in raters.values())


def _agreement(scores: Sequence[ScoreRow], dimensions: list[str]) -> list[DimensionAgreement]:
    found = []
    for dimension in dimensions:
        result = stats.agreement(stats.agreement_table(
            r for r in scores if r.dimension == dimension))
        found.append(DimensionAgreement(
            dimension=dimension, alpha=_r2(result.alpha), exact=_r2(result.exact),
            within_one=_r2(result.within_one), units=result.units, ratings=result.ratings))
    return found


def _weakest(scores: Sequence[ScoreRow], count: int) -> list[WeakAnswer]:
    answers: dict[tuple[str, str, str, str], list[ScoreRow]] = defaultdict(list)
    for r in scores:
        if r.score is not None:
            answers[(r.character, r.agent, r.item, r.dimension)].append(r)
    ranked = []
    for key, rows in answers.items():
        mean = stats.mean_and_n(r.score for r in rows).mean
        low, high = _scale(rows)
        share = (mean - low) / (high - low) if high > low else 0.0  # scales may differ
        ranked.append((share, key, mean, rows))
    ranked.sort(key=lambda entry: entry[:2])
    weakest = []
    for _, (character, agent, item, dimension), mean, rows in ranked[:count]:
        worst = min(rows, key=lambda r: r.score)
        answer = next((r.answer for r in rows if r.answer), "")
        weakest.append(WeakAnswer(
            character=character, agent=agent, item=item, dimension=dimension, score=_r2(mean),
            low=worst.low, high=worst.high, judge=worst.judge, reasoning=worst.reasoning,
            answer=answer))
    return weakest


def build_report(scores: Sequence[ScoreRow], metrics: Sequence[MetricRow], *, title: str,
                 notes: Sequence[str] = (), judge_samples: dict[str, Any] | None = None,
                 warnings: Sequence[str] = (), agreement_meaningful: bool | None = None,
                 weakest: int = WEAKEST, resamples: int = 10_000, seed: int = 0) -> Report:
    """Means per (character, dimension, agent); paired comparisons of every two agents scored
    on the same items; judge agreement when an answer was rated more than once (or as the
    caller says: `agreement_meaningful`); the judge-free metrics; the `weakest` answers."""
    agents = _ordered(r.agent for r in scores)
    dimensions = _ordered(r.dimension for r in scores)
    groups: dict[tuple[str, str], list[ScoreRow]] = defaultdict(list)
    for r in scores:
        groups[(r.character, r.dimension)].append(r)
    if agreement_meaningful is None:
        agreement_meaningful = _rated_more_than_once(scores)
    return Report(
        title=title, warnings=list(warnings), notes=list(notes), judge_samples=judge_samples,
        characters=_ordered([*(r.character for r in scores), *(m.character for m in metrics)]),
        agents=agents, dimensions=dimensions,
        means=_means(groups, agents),
        comparisons=_comparisons(groups, agents, resamples=resamples, seed=seed),
        agreement_meaningful=agreement_meaningful,
        agreement=_agreement(scores, dimensions) if agreement_meaningful else [],
        metrics=[m if m.value is None else m.model_copy(
            update={"value": float(_metric_text(m.value))}) for m in metrics],
        weakest=_weakest(scores, weakest))


# -- charts ---------------------------------------------------------------------------------
@dataclass
class _Chart:
    key: str  # "radar:<character>" or "bars:<dimension>"
    name: str
    alt: str
    png: bytes


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(plt, figure) -> bytes:
    buffer = BytesIO()
    # No "Software" entry: it would carry matplotlib's web address into the page.
    figure.savefig(buffer, format="png", dpi=80, metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def _radar(plt, report: Report, character: str) -> bytes:
    means = {(m.dimension, m.agent): m for m in report.means if m.character == character}
    dimensions = [d for d in report.dimensions if any(k[0] == d for k in means)]
    scales = {(m.low, m.high) for m in means.values()}
    shared = len(scales) == 1
    angles = np.linspace(0, 2 * np.pi, len(dimensions), endpoint=False).tolist()
    figure, axes = plt.subplots(figsize=(5, 5), subplot_kw={"projection": "polar"})
    for agent in report.agents:
        values = []
        for dimension in dimensions:
            m = means.get((dimension, agent))
            if m is None or m.mean is None:
                values.append(np.nan)
            else:
                values.append(m.mean if shared else (m.mean - m.low) / (m.high - m.low or 1))
        axes.plot([*angles, angles[0]], [*values, values[0]], marker="o", label=agent)
    axes.set_xticks(angles, dimensions)
    low, high = next(iter(scales)) if shared else (0.0, 1.0)
    axes.set_ylim(low, high)
    axes.set_title(character if shared else f"{character} (share of each scale)")
    axes.legend(loc="upper right", bbox_to_anchor=(1.3, 1.1), fontsize="small")
    figure.tight_layout()
    return _png(plt, figure)


def _bars(plt, report: Report, dimension: str) -> bytes:
    comparisons = [c for c in report.comparisons if c.dimension == dimension]
    means = [m for m in report.means if m.dimension == dimension]
    figure, panels = plt.subplots(1, 2 if comparisons else 1, squeeze=False,
                                  figsize=(11 if comparisons else 5.5, 4))
    axes = panels[0][0]
    characters = _ordered(m.character for m in means)
    width = 0.8 / max(1, len(report.agents))
    for k, agent in enumerate(report.agents):
        found = {m.character: m.mean for m in means if m.agent == agent}
        heights = [np.nan if found.get(c) is None else found[c] for c in characters]
        axes.bar(np.arange(len(characters)) + k * width, heights, width, label=agent)
    axes.set_xticks(np.arange(len(characters)) + width * (len(report.agents) - 1) / 2,
                    characters)
    axes.set_ylim(min(m.low for m in means), max(m.high for m in means))
    axes.set_title(f"{dimension}: mean score")
    axes.legend(fontsize="small")
    if comparisons:
        axes = panels[0][1]
        positions = np.arange(len(comparisons))[::-1]  # the first comparison on top
        errors = [[c.difference - c.low for c in comparisons],
                  [c.high - c.difference for c in comparisons]]
        axes.barh(positions, [c.difference for c in comparisons], xerr=errors, capsize=3)
        axes.axvline(0, color="black", linewidth=0.8)
        axes.set_yticks(positions, [f"{c.character}: {c.agent_a} - {c.agent_b}"
                                    for c in comparisons], fontsize="small")
        axes.set_title(f"{dimension}: paired difference, {LEVEL:.0%} interval")
    figure.tight_layout()
    return _png(plt, figure)


def _charts(report: Report) -> list[_Chart]:
    if not report.means:
        return []
    plt = _pyplot()
    charts, taken = [], set()

    def name(stem: str) -> str:
        chosen, k = stem, 1
        while chosen in taken:
            k += 1
            chosen = f"{stem}-{k}"
        taken.add(chosen)
        return f"{chosen}.png"

    for character in report.characters:
        if any(m.character == character for m in report.means):
            charts.append(_Chart(f"radar:{character}", name(f"radar-{_slug(character)}"),
                                 f"Mean scores of {character}, per dimension and agent",
                                 _radar(plt, report, character)))
    for dimension in report.dimensions:
        charts.append(_Chart(f"bars:{dimension}", name(f"bars-{_slug(dimension)}"),
                             f"{dimension}: means and paired differences",
                             _bars(plt, report, dimension)))
    return charts


# -- one list of parts, rendered as Markdown or HTML ----------------------------------------
@dataclass
class _Heading:
    text: str
    level: int


@dataclass
class _Text:
    text: str
    warning: bool = False


@dataclass
class _Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class _Image:
    chart: _Chart


@dataclass
class _Pre:
    label: str
    text: str


_Part = _Heading | _Text | _Table | _Image | _Pre


def _f(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _mean_cell(m: MeanScore) -> str:
    extra = f", {m.unscored} unscored" if m.unscored else ""
    return f"{_f(m.mean)} (n={m.n}{extra})"


def _mean_parts(report: Report, charts: dict[str, _Chart]) -> list[_Part]:
    parts: list[_Part] = [
        _Heading("Mean scores", 2),
        _Text("The mean of every score given, per character, dimension and agent, with n "
              "the scores given; judgments that gave no score are counted apart, never as "
              "a score.")]
    for character in report.characters:
        means = {(m.dimension, m.agent): m for m in report.means if m.character == character}
        if not means:
            continue
        parts.append(_Heading(character, 3))
        rows = []
        for dimension in report.dimensions:
            if any(k[0] == dimension for k in means):
                scale = next(m for k, m in means.items() if k[0] == dimension)
                rows.append([f"{dimension} ({scale.low:g}-{scale.high:g})"] + [
                    _mean_cell(means[(dimension, a)]) if (dimension, a) in means else "—"
                    for a in report.agents])
        parts.append(_Table(["dimension", *report.agents], rows))
        if f"radar:{character}" in charts:
            parts.append(_Image(charts[f"radar:{character}"]))
    return parts


def _comparison_parts(report: Report, charts: dict[str, _Chart]) -> list[_Part]:
    parts: list[_Part] = [_Heading("Paired comparisons", 2)]
    if not report.comparisons:
        return [*parts, _Text("No two agents were scored on the same items.")]
    parts.append(_Text(f"Agent a minus agent b over the items both were scored on (each "
                       f"item's scores averaged over samples and judges first), with a "
                       f"{LEVEL:.0%} paired bootstrap interval, and the share of items a "
                       f"scored above b (ties count half)."))
    parts.append(_Table(
        ["character", "dimension", "a", "b", "a - b", f"{LEVEL:.0%} interval", "a wins",
         "pairs"],
        [[c.character, c.dimension, c.agent_a, c.agent_b, _f(c.difference),
          f"[{_f(c.low)}, {_f(c.high)}]", _f(c.win_rate), str(c.pairs)]
         for c in report.comparisons]))
    parts += [_Image(charts[f"bars:{d}"]) for d in report.dimensions if f"bars:{d}" in charts]
    return parts


def _agreement_parts(report: Report) -> list[_Part]:
    parts: list[_Part] = [_Heading("Judge agreement", 2)]
    if not report.agreement_meaningful:
        return [*parts, _Text("Each answer was scored once, by one judge: there is no "
                              "agreement to report.")]
    parts.append(_Text("Over answers rated more than once (several judges, or one judge's "
                       "samples): Krippendorff's alpha (interval metric; 1 is perfect, 0 "
                       "chance), and the shares of pairs of ratings that are equal and that "
                       "are at most 1 apart."))
    parts.append(_Table(
        ["dimension", "alpha", "exact", "within 1", "answers", "ratings"],
        [[a.dimension, _f(a.alpha), _f(a.exact), _f(a.within_one), str(a.units),
          str(a.ratings)] for a in report.agreement]))
    return parts


def _metric_parts(report: Report) -> list[_Part]:
    parts: list[_Part] = [_Heading("Judge-free metrics", 2)]
    if not report.metrics:
        return [*parts, _Text("None were computed.")]
    return [*parts, _Table(
        ["character", "agent", "metric", "value", "n", "versus", "note"],
        [[m.character, m.agent, m.metric, _metric_value(m), str(m.n), m.versus, m.note]
         for m in report.metrics])]


def _metric_value(m: MetricRow) -> str:
    if m.value is None:
        return "—"
    if m.low is None or m.high is None:
        return _metric_text(m.value)
    return f"{m.value:+.3f} [{m.low:+.3f}, {m.high:+.3f}]"


def _weakest_parts(report: Report) -> list[_Part]:
    parts: list[_Part] = [_Heading("Weakest answers", 2)]
    if not report.weakest:
        return [*parts, _Text("No answer was scored.")]
    parts.append(_Text("The lowest-scored answers (as a share of each scale), with the "
                       "reasoning of their lowest score."))
    for k, w in enumerate(report.weakest, 1):
        parts.append(_Heading(f"{k}. {w.character} / {w.agent} / {w.item} / {w.dimension}: "
                              f"{_f(w.score)} on {w.low:g}-{w.high:g}", 3))
        parts.append(_Pre(f"Reasoning ({w.judge})", w.reasoning or "(none given)"))
        parts.append(_Pre("Answer", w.answer or "(not recorded)"))
    return parts


def _parts(report: Report, charts: list[_Chart]) -> list[_Part]:
    by_key = {chart.key: chart for chart in charts}
    parts: list[_Part] = [_Heading(report.title, 1)]
    parts += [_Text(w, warning=True) for w in report.warnings]
    parts += [_Text(n) for n in report.notes]
    if report.judge_samples:
        parts.append(_Text("Judge sampling: " + ", ".join(
            f"{k}={v}" for k, v in report.judge_samples.items())))
    return [*parts, *_mean_parts(report, by_key), *_comparison_parts(report, by_key),
            *_agreement_parts(report), *_metric_parts(report), *_weakest_parts(report)]


def _md_inline(text: str) -> str:
    """One line of Markdown text, shown as typed: no tags, emphasis, code, links, headings
    or table breaks."""
    text = re.sub(r"[<>]|&(?=#?\w+;)", lambda m: html.escape(m[0]), " ".join(text.split()))
    return re.sub(r"([\\`*_|]|\](?=[(\[]))", r"\\\1", text)


def _md_line(text: str) -> str:
    """A paragraph of one line, which must not start a heading, quote, list or reference."""
    return re.sub(r"^([#>+\-\[]|\d+\.)", r"\\\1", _md_inline(text))


def _fence(text: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _markdown(parts: list[_Part]) -> str:
    lines: list[str] = []
    for part in parts:
        match part:
            case _Heading(text, level):
                lines += ["#" * level + " " + _md_inline(text), ""]
            case _Text(text, True):
                lines += [f"> **Warning:** {_md_inline(text)}", ""]
            case _Text(text):
                lines += [_md_line(text), ""]
            case _Table(headers, rows):
                lines.append("| " + " | ".join(_md_inline(h) for h in headers) + " |")
                lines.append("|" + "---|" * len(headers))
                lines += ["| " + " | ".join(_md_inline(c) for c in row) + " |" for row in rows]
                lines.append("")
            case _Image(chart):
                lines += [f"![{_md_inline(chart.alt)}]({chart.name})", ""]
            case _Pre(label, text):
                lines += [f"**{_md_inline(label)}**", "", _fence(text), ""]
    return "\n".join(lines)


def _esc(text: str) -> str:
    """Escaped for HTML; '://' written as an entity so no address appears in the source."""
    return html.escape(text, quote=True).replace("://", "&#58;//")


_CSS = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
.warning { background: #fff3cd; border: 1px solid #e0b000; padding: 0.6em 1em;
           margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 0.6em; white-space: pre-wrap; overflow-wrap: anywhere; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
"""
# Nothing may run or be fetched, even if some text slipped through unescaped.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _html_part(part: _Part) -> str:
    match part:
        case _Heading(text, level):
            return f"<h{level}>{_esc(text)}</h{level}>"
        case _Text(text, True):
            return (f'<div class="warning" role="alert"><strong>Warning:</strong> '
                    f"{_esc(text)}</div>")
        case _Text(text):
            return f"<p>{_esc(text)}</p>"
        case _Table(headers, rows):
            head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
            body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>"
                           for row in rows)
            return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        case _Image(chart):
            data = base64.b64encode(chart.png).decode("ascii")
            return f'<img src="data:image/png;base64,{data}" alt="{_esc(chart.alt)}">'
        case _Pre(label, text):
            return f"<p><strong>{_esc(label)}</strong></p><pre>{_esc(text)}</pre>"
    raise TypeError(f"not a report part: {part!r}")


def _html(title: str, parts: list[_Part]) -> str:
    body = "\n".join(_html_part(part) for part in parts)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n"
            f"</body>\n</html>\n")


def write_report(report: Report, folder: Path) -> dict[str, Path]:
    """Writes report.md, report.html, report.json and the charts' PNGs into `folder`
    (created if need be); returns every file written, by its name."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    charts = _charts(report)
    parts = _parts(report, charts)
    written: dict[str, Path] = {}
    for chart in charts:
        written[chart.name] = folder / chart.name
        written[chart.name].write_bytes(chart.png)
    texts = {"report.md": _markdown(parts), "report.html": _html(report.title, parts),
             "report.json": report.model_dump_json(indent=2) + "\n"}
    for name, text in texts.items():
        written[name] = folder / name
        written[name].write_text(text, encoding="utf-8")
    return written
