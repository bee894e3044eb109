"""The main example (README's first command) runs, learns and reports its throughput."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.tf
def test_digits_example_reaches_the_required_accuracy():
    pytest.importorskip("sklearn")
    pytest.importorskip("keras")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "digits.py")],  # as the README runs it
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert (
        len(re.findall(r"^epoch +\d+/12: train loss [\d.]+, test accuracy [\d.]+$", out, re.M))
        == 12
    )
    (accuracy,) = re.findall(r"^final test accuracy: (\d\.\d+)$", out, re.M)
    assert float(accuracy) >= 0.93, out
    assert re.search(r"^training throughput: [\d.]+ batches/s, \d+ items/s", out, re.M), out


@pytest.mark.dask
@pytest.mark.slow
def test_reproducible_example_gets_the_same_batches_everywhere_and_resumes_exactly():
    pytest.importorskip("sklearn")
    pytest.importorskip("distributed")
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "reproducible.py")],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert len(re.findall(r": identical to the sequential run$", out, re.M)) == 3, out
    assert "training stopped: simulated crash at batch 85" in out, out
    assert "resumed run ends with the uninterrupted run's weights: True" in out, out
