"""The closing summary of `charforge run`: stages (time, records, acceptance,
rejections), training, the judge's dimensions and the judge-free metrics for the
trained agent against the same base prompted, the report's path, and what to run
next."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from charforge.pipeline.run import duration

if TYPE_CHECKING:
    from charforge.pipeline.run import PipelineRun

# The store's stage names behind each step.
STORE_STAGES = {"interview": ("interview", "interview-multi"),
                "judge": ("judge", "judge-rank")}
TRAINED, PROMPTED = "trained", "prompted"


def stage_rows(run: PipelineRun) -> list[dict[str, Any]]:
    """Per step of this invocation: time, and from the store, the stage's tasks over its
    whole history (done, rejected, failed, records, acceptance, reasons)."""
    from charforge.status import workspace_status

    found = {row.stage: row for row in workspace_status(run.workspace)
             if row.character == run.character}
    with run.workspace.store() as store:
        rows = []
        for step in run.steps:
            row: dict[str, Any] = {"step": step.step, "ran": step.ran,
                                   "seconds": round(step.seconds, 1), "detail": step.detail}
            names = STORE_STAGES.get(step.step, (step.step,))
            status = [found[name] for name in names if name in found]
            if status:
                accepted = tries = 0
                for name in names:
                    a, t = store.acceptance(run.character, name)
                    accepted, tries = accepted + a, tries + t
                reasons: dict[str, int] = {}
                for s in status:
                    for reason, n in s.rejection_reasons.items():
                        reasons[reason] = reasons.get(reason, 0) + n
                row.update(done=sum(s.done for s in status),
                           rejected=sum(s.rejected for s in status),
                           failed=sum(s.failed for s in status),
                           records=sum(s.records for s in status),
                           accepted=accepted, tries=tries, reasons=reasons)
            rows.append(row)
    return rows


def training_rows(run: PipelineRun) -> list[dict[str, Any]]:
    rows = []
    for _, record in run.workspace.trained_runs(run.character):
        metrics = record.metrics
        rows.append({"run": f"{record.character}/{record.run}", "kind": record.kind,
                     "steps": metrics.get("steps"), "train_loss": metrics.get("train_loss"),
                     "eval_loss_before": metrics.get("eval_loss_before"),
                     "eval_loss": metrics.get("eval_loss"),
                     "samples": record.data.get("samples"), "finished": record.finished})
    return rows


def judge_rows(run: PipelineRun) -> list[dict[str, Any]]:
    """Per dimension: the trained and prompted means and their paired difference."""
    report = run.report
    if report is None:
        return []
    means = {(m.dimension, m.agent): m for m in report.means if m.character == run.character}
    rows = []
    for dimension in report.dimensions:
        a, b = means.get((dimension, TRAINED)), means.get((dimension, PROMPTED))
        if a is None and b is None:
            continue
        pair = next((c for c in report.comparisons if c.character == run.character
                     and c.dimension == dimension and {c.agent_a, c.agent_b} == {TRAINED,
                                                                                 PROMPTED}),
                    None)
        row: dict[str, Any] = {"dimension": dimension,
                               "trained": a.mean if a else None, "trained_n": a.n if a else 0,
                               "prompted": b.mean if b else None,
                               "prompted_n": b.n if b else 0}
        if pair is not None:
            sign = 1 if pair.agent_a == TRAINED else -1
            low, high = sorted((sign * pair.low, sign * pair.high))
            row.update(difference=sign * pair.difference, low=low, high=high,
                       level=pair.level, pairs=pair.pairs)
        rows.append(row)
    return rows


def metric_rows(run: PipelineRun) -> list[dict[str, Any]]:
    report = run.report
    if report is None:
        return []
    table: dict[str, dict[str, Any]] = {}
    for m in report.metrics:
        if m.character != run.character or m.agent not in (TRAINED, PROMPTED):
            continue
        if not m.versus:
            table.setdefault(m.metric, {"metric": m.metric})[m.agent] = m.value
        elif m.low is None or m.high is None:  # a pairwise figure (the ranking's win rate)
            if m.versus in (TRAINED, PROMPTED):
                table.setdefault(f"{m.metric} over {m.versus}",
                                 {"metric": f"{m.metric} over {m.versus}"})[m.agent] = m.value
        elif {m.agent, m.versus} == {TRAINED, PROMPTED} and m.value is not None:
            sign = 1 if m.agent == TRAINED else -1
            low, high = sorted((sign * (m.low or 0.0), sign * (m.high or 0.0)))
            table.setdefault(m.metric, {"metric": m.metric}).update(
                difference=sign * m.value, low=low, high=high, pairs=m.n)
    return list(table.values())


def summary_data(run: PipelineRun) -> dict[str, Any]:
    """Everything the summary shows, as plain data (also written as summary.json)."""
    return {"character": run.character, "workspace": str(run.workspace.root),
            "stopped": run.stopped, "stages": stage_rows(run), "training": training_rows(run),
            "judge": judge_rows(run), "metrics": metric_rows(run),
            "report": str(run.report_path) if run.report_path else None,
            "total_seconds": round(sum(step.seconds for step in run.steps), 1)}


def _num(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_summary(data: dict[str, Any], console: Console) -> None:
    stages = Table(title="stages", title_justify="left")
    for column in ("stage", "time", "done", "rejected", "failed", "records", "accepted"):
        stages.add_column(column, no_wrap=True)
    reasons: list[str] = []
    for row in data["stages"]:
        tries = row.get("tries")
        share = (f"{row['accepted']}/{tries} ({row['accepted'] / tries:.0%})" if tries else "-")
        stages.add_row(row["step"], duration(row["seconds"]) + ("" if row["ran"] else " (skip)"),
                       str(row.get("done", "-")), str(row.get("rejected", "-")),
                       str(row.get("failed", "-")), str(row.get("records", "-")), share)
        if row.get("reasons"):
            reasons.append(f"  {row['step']}: " + ", ".join(
                f"{k} {v}" for k, v in sorted(row["reasons"].items(), key=lambda kv: -kv[1])))
    console.print(stages)
    if reasons:
        console.print("rejections by reason:")
        for line in reasons:
            console.print(line, markup=False, highlight=False)
    if data["training"]:
        training = Table(title="training", title_justify="left")
        for column in ("run", "kind", "steps", "train loss", "eval loss (before -> after)"):
            training.add_column(column)
        for row in data["training"]:
            training.add_row(row["run"], row["kind"], str(row["steps"]),
                             _num(row["train_loss"], 3),
                             f"{_num(row['eval_loss_before'], 3)} -> {_num(row['eval_loss'], 3)}")
        console.print(training)
    if data["judge"]:
        judged = Table(title="judge (1-7): trained vs the same base prompted",
                       title_justify="left")
        for column in ("dimension", "trained", "prompted", "difference [95% paired CI]",
                       "pairs"):
            judged.add_column(column)
        for row in data["judge"]:
            interval = (f"{row['difference']:+.2f} [{row['low']:+.2f}, {row['high']:+.2f}]"
                        if "difference" in row else "-")
            judged.add_row(row["dimension"], f"{_num(row['trained'])} (n={row['trained_n']})",
                           f"{_num(row['prompted'])} (n={row['prompted_n']})", interval,
                           str(row.get("pairs", "-")))
        console.print(judged)
    if data["metrics"]:
        metrics = Table(title="judge-free metrics", title_justify="left")
        for column in ("metric", TRAINED, PROMPTED, "difference [95% paired CI]", "pairs"):
            metrics.add_column(column)
        for row in data["metrics"]:
            interval = (f"{row['difference']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}]"
                        if "difference" in row else "-")
            metrics.add_row(row["metric"], _num(row.get(TRAINED), 3),
                            _num(row.get(PROMPTED), 3), interval, str(row.get("pairs", "-")))
        console.print(metrics)
    console.print(f"total time: {duration(data['total_seconds'])}")
    if data["stopped"]:
        console.print(f"stopped: {data['stopped']}", markup=False, highlight=False)
    if data["report"]:
        console.print(f"report: {data['report']}", markup=False, highlight=False)


def next_commands(run: PipelineRun) -> list[str]:
    ws = run.workspace.root
    return [f"charforge chat {run.character} -w {ws}",
            f"charforge serve -w {ws}",
            f"charforge export vllm {run.character} -w {ws}",
            f"charforge export ollama {run.character} -w {ws}"]
