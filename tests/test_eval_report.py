"""The evaluation report built from deterministic rows (2 characters x 3 agents x 5
dimensions x 10 items, two judge samples each) and written to files: the Markdown's numbers
against the rows, report.json, and the HTML page, in text and in headless Chromium."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from charforge.evaluate.records import RUBRIC_DIMENSIONS, MetricRow, ScoreRow
from charforge.evaluate.report import Report, build_report, write_report
from charforge.evaluate.stats import pair_scores

CHROMIUM = Path("/usr/bin/chromium")
CHARACTERS = ("ada", "bo")
AGENTS = ("trained", "prompted", "chatgpt")
ITEMS = tuple(f"q{i:02d}" for i in range(10))
ALERT = "<script>alert(1)</script>"
PWNED = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
ADDRESS = "https://example.com/source"
WARNING = "The judge is the same model as the agent 'prompted'."
# Answers scored 1 on one dimension, so they are among the weakest.
INJECTED = {("ada", "trained", "q03", "values"): f"I was born {ALERT} in London",
            ("bo", "prompted", "q07", "personality"): f"Hello {PWNED} friend"}
RESAMPLES = 2000


def score_of(c: int, a: int, d: int, i: int, sample: int) -> float | None:
    if sample == 1 and (i + d + a + c) % 13 == 0:
        return None
    return float(2 + (3 * i + 2 * d + c + 2 * a + sample * ((i + a) % 2)) % 6)


def make_rows(samples: int = 2) -> list[ScoreRow]:
    rows = []
    for c, character in enumerate(CHARACTERS):
        for a, agent in enumerate(AGENTS):
            for d, dimension in enumerate(RUBRIC_DIMENSIONS):
                for i, item in enumerate(ITEMS):
                    key = (character, agent, item, dimension)
                    answer = next((text for k, text in INJECTED.items() if k[:3] == key[:3]),
                                  f"{agent} answers {item} as {character}")
                    for sample in range(samples):
                        score = 1.0 if key in INJECTED else score_of(c, a, d, i, sample)
                        rows.append(ScoreRow(
                            character=character, agent=agent, item=item, dimension=dimension,
                            judge="judge-a", sample=sample, score=score, answer=answer,
                            reasoning=f"Sample {sample}: <b>weak</b>, see {ADDRESS}"))
    return rows


METRICS = [
    MetricRow(character="ada", agent="trained", metric="distinct-2", value=0.53412, n=50),
    MetricRow(character="ada", agent="prompted", metric="distinct-2", value=0.00342, n=50),
    MetricRow(character="bo", agent="trained", metric="refusals", value=None, n=0,
              versus="prompted", note="not <computed>"),
]


@pytest.fixture(scope="module")
def rows() -> list[ScoreRow]:
    return make_rows()


@pytest.fixture(scope="module")
def report(rows) -> Report:
    return build_report(rows, METRICS, title="Ada & Bo <eval>", notes=["Seed 0."],
                        judge_samples={"k": 2, "temperature": 0.7}, warnings=[WARNING],
                        resamples=RESAMPLES, weakest=5)


@pytest.fixture(scope="module")
def written(report, tmp_path_factory) -> dict[str, Path]:
    return write_report(report, tmp_path_factory.mktemp("report"))


def markdown_means(markdown: str) -> dict[tuple[str, str, str], str]:
    """(character, dimension, agent) -> the cell of the Mean scores tables."""
    section = markdown.split("\n## Mean scores\n", 1)[1].split("\n## ", 1)[0]
    cells = {}
    for block in section.split("\n### ")[1:]:
        character, *lines = block.splitlines()
        table = [line.strip().strip("|").split("|") for line in lines if line.startswith("|")]
        agents = [cell.strip() for cell in table[0][1:]]
        for line in table[2:]:
            dimension = line[0].strip().split(" (")[0]
            for agent, cell in zip(agents, line[1:], strict=True):
                cells[(character, dimension, agent)] = cell.strip()
    return cells


def test_markdown_means_equal_means_recomputed_from_the_rows(rows, written):
    cells = markdown_means(written["report.md"].read_text())
    assert len(cells) == len(CHARACTERS) * len(AGENTS) * len(RUBRIC_DIMENSIONS)
    unscored_total = 0
    for (character, dimension, agent), cell in cells.items():
        scores = [r.score for r in rows if (r.character, r.dimension, r.agent)
                  == (character, dimension, agent)]
        given = [s for s in scores if s is not None]
        unscored = len(scores) - len(given)
        unscored_total += unscored
        expected = f"{sum(given) / len(given):.2f} (n={len(given)}"
        assert cell == expected + (f", {unscored} unscored)" if unscored else ")")
    assert unscored_total == sum(r.score is None for r in rows) > 0


def test_report_json_round_trips_and_holds_the_numbers_shown(report, written):
    loaded = Report.model_validate_json(written["report.json"].read_text())
    assert loaded == report
    markdown = written["report.md"].read_text()
    for m in loaded.means:
        assert f"{m.mean:.2f} (n={m.n}" in markdown
    for c in loaded.comparisons:
        assert (f"| {c.character} | {c.dimension} | {c.agent_a} | {c.agent_b} | "
                f"{c.difference:.2f} | [{c.low:.2f}, {c.high:.2f}] | {c.win_rate:.2f} | "
                f"{c.pairs} |") in markdown
    assert "| ada | prompted | distinct-2 | 0.0034 | 50 |" in markdown
    assert [m.value for m in loaded.metrics] == [0.53, 0.0034, None]


def test_comparisons_pair_every_two_agents_on_the_same_items(rows, report):
    assert len(report.comparisons) == len(CHARACTERS) * len(RUBRIC_DIMENSIONS) * 3
    for c in report.comparisons:
        subset = [r for r in rows if (r.character, r.dimension) == (c.character, c.dimension)]
        paired = pair_scores(subset, c.agent_a, c.agent_b)
        assert c.pairs == len(ITEMS) == len(paired.keys)
        assert c.difference == round(float((paired.a - paired.b).mean()), 2)
        assert c.low <= c.difference <= c.high
        assert 0 <= c.win_rate <= 1


def test_agreement_is_reported_only_when_answers_were_rated_more_than_once(report):
    assert report.agreement_meaningful
    assert [a.dimension for a in report.agreement] == list(RUBRIC_DIMENSIONS)
    assert all(a.units > 0 and a.alpha is not None for a in report.agreement)
    single = build_report(make_rows(samples=1), [], title="t", resamples=100)
    assert not single.agreement_meaningful and single.agreement == []
    told = build_report(make_rows(samples=1), [], title="t", resamples=100,
                        agreement_meaningful=True)
    assert told.agreement_meaningful and told.agreement[0].units == 0


def test_the_weakest_answers_come_with_reasoning_and_answer(report, written):
    weakest = {(w.character, w.agent, w.item, w.dimension): w for w in report.weakest}
    assert set(INJECTED) <= set(weakest)
    assert weakest[("ada", "trained", "q03", "values")].answer == INJECTED[
        ("ada", "trained", "q03", "values")]
    assert [w.score for w in report.weakest] == [1.0, 1.0, 2.0, 2.0, 2.0]
    assert report.weakest[0].reasoning == f"Sample 0: <b>weak</b>, see {ADDRESS}"
    assert f"I was born {ALERT} in London" in written["report.md"].read_text()  # fenced


def test_warnings_come_first_in_markdown_and_html(written):
    markdown = written["report.md"].read_text()
    page = written["report.html"].read_text()
    assert markdown.startswith(f"# Ada & Bo &lt;eval&gt;\n\n> **Warning:** {WARNING}\n")
    assert page.index("The judge is the same model") < page.index("<h2>")


def test_html_escapes_model_output_and_names_no_address(written):
    page = written["report.html"].read_text()
    assert "I was born &lt;script&gt;alert(1)&lt;/script&gt; in London" in page
    assert "&lt;b&gt;weak&lt;/b&gt;" in page
    assert "<script" not in page.lower()
    assert "http://" not in page and "https://" not in page
    assert "<title>Ada &amp; Bo &lt;eval&gt;</title>" in page


def test_charts_are_written_and_inlined_byte_for_byte(written):
    charts = sorted(name for name in written if name.endswith(".png"))
    assert charts == sorted(["radar-ada.png", "radar-bo.png",
                             *(f"bars-{d}.png" for d in RUBRIC_DIMENSIONS)])
    page = written["report.html"].read_text()
    inlined = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert sorted(base64.b64decode(data) for data in inlined) == sorted(
        written[name].read_bytes() for name in charts)
    assert all(written[name].parent == written["report.html"].parent for name in charts)
    markdown = written["report.md"].read_text()
    assert all(f"]({name})" in markdown for name in charts)


def test_an_empty_report_still_writes_every_file(tmp_path):
    written = write_report(build_report([], [], title="nothing"), tmp_path)
    assert sorted(written) == ["report.html", "report.json", "report.md"]
    assert "No answer was scored." in written["report.md"].read_text()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "no /usr/bin/chromium: `make test` installs it " \
        "(apt-get install -y chromium)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=["--no-sandbox"])
        yield browser
        browser.close()


def test_the_page_shows_its_charts_and_runs_no_script(browser, written):
    context = browser.new_context()
    context.set_default_timeout(10_000)
    requests: list[str] = []
    page = context.new_page()
    page.on("request", lambda request: requests.append(request.url))
    try:
        page.goto(written["report.html"].as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate(
            "() => Array.from(document.images, i => [i.complete, i.naturalWidth])")
        assert len(images) == 7
        assert all(complete and width > 0 for complete, width in images)
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert page.evaluate("document.scripts.length") == 0
        text = page.inner_text("body")
        assert PWNED in text and ALERT in text and ADDRESS in text  # shown as text
        assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
    finally:
        context.close()
