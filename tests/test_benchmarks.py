"""The benchmark scripts keep running (their figures are reported, never asserted)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


def run_script(name: str, *args: str) -> str:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    ).stdout


@pytest.mark.dask
def test_executor_benchmark_runs_every_executor_and_checks_outputs():
    pytest.importorskip("distributed")
    out = run_script("bench_executors.py", "--batches", "4", "--batch-size", "4", "--rounds", "1")
    names = re.findall(r"\[(sequential|threads|processes|dask)\s*\]\s+[\d.]+ batches/s", out)
    assert names == ["sequential", "threads", "processes", "dask"], out
    assert "outputs identical" in out and "differ" not in out, out


@pytest.mark.tf
def test_keras_benchmark_reports_both_sides_and_the_ratio():
    pytest.importorskip("keras")
    out = run_script("bench_keras.py", "--steps", "20", "--repeat", "1")
    assert re.search(r"^loop\s+:\s+[\d.]+ steps/s$", out, re.M), out
    assert re.search(r"^ratio fpipe/loop: [\d.]+ \(best rounds\)", out, re.M), out


def test_torch_benchmark_runs_or_says_torch_is_missing():
    out = run_script("bench_torch.py", "--steps", "20", "--repeat", "1")
    assert "PyTorch is not installed" in out or re.search(r"ratio fpipe/loop: [\d.]+", out), out


def test_replace_benchmark_reports_every_side_and_the_extra_cost():
    out = run_script("bench_replace.py", "--calls", "20", "--repeat", "1")
    names = re.findall(r"^(.+?)\s*: +-?[\d.]+ us/call", out, re.M)
    assert names == ["numpy op alone", "temporary", "held", "temp view", "held view"], out
    assert len(re.findall(r"extra cost of replace: +-?[\d.]+ us", out)) == 4, out


def test_fingerprint_benchmark_reports_the_cost_per_gb():
    out = run_script("bench_fingerprint.py", "--gb", "0.01")
    assert re.search(r"^first  : [\d.]+ s \([\d.]+ s per GB\)$", out, re.M), out
    assert re.search(r"^again  : [\d.]+ ms$", out, re.M), out
