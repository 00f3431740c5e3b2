"""Every bench script starts on a fresh install and runs every path it has, small
(`--smoke`): a bench that only fails when someone finally runs it measures nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHES = sorted((Path(__file__).resolve().parents[1] / "bench").glob("*.py"))
# Started by a test of their own that checks their figures (tests/test_bench.py,
# tests/test_retrieval.py): a second smoke run would prove nothing more.
OWN_TEST = {"serve.py", "retrieval.py"}


def test_there_are_benches():
    assert BENCHES


@pytest.mark.parametrize("script", [p for p in BENCHES if p.name not in OWN_TEST],
                         ids=lambda p: p.name)
def test_bench_smoke_run(script: Path):
    help_text = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                               text=True, timeout=60)
    assert help_text.returncode == 0, help_text.stderr[-2000:]
    assert "--smoke" in help_text.stdout
    smoke = subprocess.run([sys.executable, str(script), "--smoke"], capture_output=True,
                           text=True, timeout=300)
    assert smoke.returncode == 0, (smoke.stdout[-2000:], smoke.stderr[-2000:])
    assert smoke.stdout.strip()


def test_train_bench_prints_its_figures():
    """bench/train.py at tiny sizes: every way is measured and the figures and targets are
    printed (the times themselves are not checked)."""
    script = Path(__file__).resolve().parents[1] / "bench" / "train.py"
    run = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-2000:])
    out = run.stdout
    assert "data: 12 samples" in out and "median" in out and "p90" in out
    for way in ("charforge, micro_batch_tokens default", "charforge, micro_batch_tokens 128",
                "charforge, micro_batch_tokens 256", "seed: padded to 128",
                "grouped: pad to longest"):
        assert way in out
    assert "padding-only ceiling: 128 x 12" in out
    assert "real tok/s by micro_batch_tokens" in out and "fastest:" in out
    assert "charforge, default (1 a micro-batch)" in out  # no flash attention here
    verdicts = [line for line in out.splitlines() if "target >= 2.5x" in line]
    assert verdicts and all("target >= 1.3x" in line for line in verdicts)
    assert all(("met" in line or "missed" in line) for line in verdicts)


@pytest.mark.slow  # ~39 s: the serve bench on the tiny model, both modes
def test_serve_bench_prints_its_figures():
    """bench/serve.py on a tiny model: every setting and level is measured, and the
    figures, the targets (PASS or MISS) and the memory rows are printed (the figures
    themselves are not checked)."""
    script = Path(__file__).resolve().parents[1] / "bench" / "serve.py"
    help_text = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                               text=True, timeout=60)
    assert help_text.returncode == 0 and "--smoke" in help_text.stdout, help_text.stderr
    run = subprocess.run([sys.executable, str(script), "--smoke"], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-2000:])
    out = run.stdout
    settings = ("batched (max_batch 16) ", "one at a time (max_batch 1) ")
    rows = [line for line in out.splitlines() if line.startswith(settings)]
    assert [int(row[28:].split()[0]) for row in rows] == [1, 16] * 2, out  # streams
    assert "in the engine: queued p50" in out and "prefill p50" in out
    assert "TTFT p50" in out and "latency p50" in out and "tok/s" in out
    verdicts = [line for line in out.splitlines() if line.rstrip().endswith(("PASS", "MISS"))]
    # speed-up, TTFT, memory after loading, after requests, trimmed, less the prefix cache
    assert len(verdicts) == 6, out
    assert "batched >= 6x one at a time" in out and "p95 TTFT <= 5x" in out
    assert "each extra character, after loading" in out and "RSS loaded" in out
    assert "after requests, trimmed, less the prefix cache" in out and "kept" in out
