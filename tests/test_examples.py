"""The main example (README's first command) runs, learns, shows its progress and profile,
saves its curves, and prints what README shows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = ("s", "ms", "us")


def shown_output() -> list[str]:
    """The lines of the example's output that README shows (its ```text block)."""
    blocks = re.findall(r"^```text\n(.*?)^```$", (ROOT / "README.md").read_text(), re.S | re.M)
    (block,) = [b for b in blocks if b.startswith("digits:")]
    return [line for line in block.splitlines() if line.strip() and line.strip() != "..."]


def pattern(line: str) -> re.Pattern[str]:
    """``line`` with any numbers (and time units) in it: the shape of an output line."""
    parts = []
    for token in line.split():
        if token in UNITS:
            parts.append("(?:s|ms|us)")
        elif "█" in token or "#" in token:  # a bar's fill: its width follows the terminal's
            parts.append(r"[^ ]*")
        elif token.endswith(".png"):  # the curves' path: the test saves them elsewhere
            parts.append(r"\S+\.png")
        else:
            parts.append(r"\d+(?:\.\d+)?".join(map(re.escape, re.split(r"\d+(?:\.\d+)?", token))))
    return re.compile(r"^\s*" + r"\s+".join(parts) + r"\s*$")


@pytest.mark.tf
def test_digits_example_reaches_the_required_accuracy(tmp_path: Path):
    pytest.importorskip("sklearn")
    pytest.importorskip("keras")
    pytest.importorskip("matplotlib")
    # the example quiets TensorFlow itself: none of its log settings come from here
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")
    }
    curves = tmp_path / "curves.png"
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "digits.py"), "--curves", str(curves)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=tmp_path,  # nothing is written where it runs
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out, err = done.stdout, done.stderr
    epochs = re.findall(r"^epoch (\d+)/12: train loss [\d.]+, test accuracy [\d.]+$", out, re.M)
    assert epochs == [str(k) for k in range(1, 13)], out
    (accuracy,) = re.findall(r"^final test accuracy: (\d\.\d+)$", out, re.M)
    assert float(accuracy) >= 0.93, out
    assert re.search(r"^training throughput: [\d.]+ batches/s, \d+ items/s", out, re.M), out

    # a bar per epoch (on stderr), with the latest loss; and nothing else there
    frames = [f.strip() for f in re.split(r"[\r\n]", err) if f.strip()]
    finished = [f for f in frames if re.match(r"epoch \d+/12: 100%.*45/45 .*loss=[\d.e-]+\]$", f)]
    assert {f.split(":")[0] for f in finished} == {f"epoch {k}/12" for k in range(1, 13)}, err
    assert all(f.startswith("epoch ") for f in frames), err  # no TensorFlow start-up log

    # the training run's profile
    table = out[out.index("profile of 540 batches") :].splitlines()
    assert table[1].split() == [
        "path",
        "step",
        "where",
        "calls",
        "total",
        "mean",
        "p50",
        "p95",
        "share",
    ]
    rows = [re.match(r"^\S+\s+(.+?)\s+(driver)\s+(\d+)\s.*\s([\d.]+)%$", r) for r in table[2:5]]
    assert all(rows), out
    assert [r.groups()[:3] for r in rows] == [  # type: ignore[union-attr]
        ("standardize()", "driver", "540"),
        ("augment(sigma=C('augment/sigma'))", "driver", "540"),
        ("train_step(save_to=V('loss', mode='a'))", "driver", "540"),
    ], out
    assert float(rows[2][4]) > 50  # type: ignore[index]  # README: the Keras step takes most

    # the curves, saved where it says
    (saved,) = re.findall(r"^loss and accuracy curves: (.+)$", out, re.M)
    assert Path(saved) == curves and curves.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]

    # README shows this output: every line it shows has the shape of one printed here
    printed = out.splitlines() + frames
    for line in shown_output():
        assert any(pattern(line).match(p) for p in printed), f"README shows {line!r}"


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
