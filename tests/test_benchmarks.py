"""The benchmark scripts keep running (their figures are reported, never asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_overhead_benchmark_runs_and_reports_per_action_overhead():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_overhead.py"), "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    figures = re.findall(r"\[(add|identity)\] overhead per action per batch: (-?[\d.]+) us", out)
    assert [name for name, _ in figures] == ["add", "identity"]
    assert all(float(value) < 1000 for _, value in figures), out  # sanity, not a speed test
