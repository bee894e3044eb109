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
    figures = re.findall(
        r"^\[(fixed|add|identity|expression)\] overhead per (?:action per |argument per )?"
        r"batch: +(-?[\d.]+) us \(range -?[\d.]+ to -?[\d.]+\)$",
        out,
        re.M,
    )
    assert [name for name, _ in figures] == ["fixed", "add", "identity", "expression"], out
    assert all(float(value) < 1000 for _, value in figures), out  # sanity, not a speed test
    assert re.search(r"^ratio fpipe add/loop add: [\d.]+ \(median of rounds", out, re.M), out


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
    out = run_script("bench_keras.py", "--steps", "20", "--repeat", "1", "--null-steps", "50")
    assert re.search(r"^loop\s+:\s+[\d.]+ steps/s$", out, re.M), out
    ratios = re.findall(r"^ratio (.+?)/loop: [\d.]+ \(best rounds\), [\d.]+ \(median", out, re.M)
    assert ratios == ["fpipe", "fpipe prefetch=2"], out
    costs = re.findall(r"^(fpipe|fpipe prefetch=2)\s*: \+ *-?[\d.]+ us per batch$", out, re.M)
    assert costs == ["fpipe", "fpipe prefetch=2"], out


def test_torch_benchmark_runs_or_says_torch_is_missing():
    out = run_script("bench_torch.py", "--steps", "20", "--repeat", "1")
    assert "PyTorch is not installed" in out or re.search(r"ratio fpipe/loop: [\d.]+", out), out


def test_expressions_benchmark_reports_the_cost_of_each_kind_of_expression():
    out = run_script("bench_expressions.py", "--repeat", "1", "--rows", "2000")
    kinds = re.findall(r"^\[(.+?)\] per expression argument per batch: +-?[\d.]+ us", out, re.M)
    assert kinds == ["C", "B", "I", "V", "C * 2"], out
    assert re.search(r"^per expression argument per batch: -?[\d.]+ us \(the costliest", out, re.M)


def test_replace_benchmark_reports_every_side_and_the_extra_cost():
    out = run_script("bench_replace.py", "--calls", "20", "--repeat", "1")
    names = re.findall(r"^(.+?)\s*: +-?[\d.]+ us/call", out, re.M)
    assert names == ["numpy op alone", "temporary", "held", "temp view", "held view"], out
    assert len(re.findall(r"extra cost of replace: +-?[\d.]+ us", out)) == 4, out


def test_fingerprint_benchmark_reports_the_cost_per_gb():
    out = run_script("bench_fingerprint.py", "--gb", "0.01")
    assert re.search(r"^first  : [\d.]+ s \([\d.]+ s per GB\)$", out, re.M), out
    assert re.search(r"^again  : [\d.]+ ms$", out, re.M), out


def test_memory_benchmark_reports_each_side_and_fpipes_ratios():
    out = run_script("bench_memory.py", "--rounds", "1", "--rows", "4000", "--batch-size", "1000")
    side = r"^(\w+)\s*: peak RSS growth +[\d.]+ MB .* tracemalloc peak +[\d.]+ MB$"
    assert re.findall(side, out, re.M) == ["loop", "fpipe", "loop_xy"], out
    ratio = r"^ratio fpipe/(loop|loop_xy), (?:peak RSS growth|tracemalloc peak): ([\d.]+|n/a) "
    assert [base for base, _ in re.findall(ratio, out, re.M)] == ["loop"] * 2 + ["loop_xy"] * 2
    assert "checksums identical" in out, out


def test_scaling_benchmark_reports_every_table():
    out = run_script(
        "bench_scaling.py",
        *("--rows", "1000,2000", "--actions", "1,2", "--batches", "3"),
        *("--steps", "10,20", "--repeat", "1"),
    )
    titles = re.findall(r"^## (per batch|building|start-up|first batch)", out, re.M)
    assert titles == ["per batch", "building", "start-up", "first batch"], out
    assert re.search(
        r"^fpipe's extra cost per action \(1 to 2 actions\), us: 1,000 rows", out, re.M
    ), out
    assert len(re.findall(r"^fold \(p \+ step\) << ds( +[\d.]+){2}$", out, re.M)) == 1, out
    assert re.search(r"^run\(prefetch=2\) +: +[\d.]+ \(range", out, re.M), out
    assert len(re.findall(r"^ +(10|20)( +[\d.]+){4}$", out, re.M)) == 2, out


def test_inbatch_benchmark_reports_every_side_against_the_loop():
    out = run_script("bench_inbatch.py", "--items", "40", "--batch-size", "8", "--repeat", "1")
    assert "checksums agree" in out, out
    sides = re.findall(r"^(.+?)\s*: +[\d.]+ us/item", out, re.M)
    assert sides == ["loop", "action loop", "inbatch for", "inbatch threads", "inbatch auto"], out
    figures = r"time x loop: +[\d.]+  overhead: +-?[\d.]+ us/item$"
    assert len(re.findall(figures, out, re.M)) == 4, out


def test_prefetch_benchmark_runs_with_tuned_malloc_and_reports_every_side():
    out = run_script("bench_prefetch.py", "--batches", "6", "--repeat", "1")
    assert re.search(r"malloc: MALLOC_MMAP_THRESHOLD_=\d+, MALLOC_TRIM_THRESHOLD_=\d+;", out), out
    assert "checksums identical" in out, out
    ratios = re.findall(r"^ratio (.+?)/loop: [\d.]+ \(best rounds\), [\d.]+ \(median", out, re.M)
    assert ratios == ["pool(2)", "fpipe", "fpipe prefetch=2", "fpipe prefetch=4"], out


@pytest.mark.tf
def test_fit_benchmark_checks_the_batches_and_reports_every_side():
    pytest.importorskip("keras")
    out = run_script("bench_fit.py", "--steps", "20", "--repeat", "1")
    assert "every side sees the loop's batches" in out, out
    ratios = re.findall(r"^ratio (.+?)/loop: [\d.]+ \(best rounds\), [\d.]+ \(median", out, re.M)
    assert ratios == ["tf.data", "fpipe fast", "fpipe generator"], out
