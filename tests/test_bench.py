"""Every bench script starts on a fresh install and runs every path it has, small
(`--smoke`): a bench that only fails when someone finally runs it measures nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHES = sorted((Path(__file__).resolve().parents[1] / "bench").glob("*.py"))


def test_there_are_benches():
    assert BENCHES


@pytest.mark.parametrize("script", BENCHES, ids=lambda p: p.name)
def test_bench_smoke_run(script: Path):
    help_text = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                               text=True, timeout=60)
    assert help_text.returncode == 0, help_text.stderr[-2000:]
    assert "--smoke" in help_text.stdout
    smoke = subprocess.run([sys.executable, str(script), "--smoke"], capture_output=True,
                           text=True, timeout=300)
    assert smoke.returncode == 0, (smoke.stdout[-2000:], smoke.stderr[-2000:])
    assert smoke.stdout.strip()
