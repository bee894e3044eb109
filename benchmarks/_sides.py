"""Timing for benchmarks that pit fpipe against a hand-written loop in one process.

The sides take turns, ``repeat`` rounds, with the order rotated each round so that
no side always runs first (or right after another). Each side's best round gives its
rate; the ratio against the baseline is also given as the median of the per-round
ratios, which is steadier on a shared, noisy machine.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def take_turns(sides: dict[str, Callable[[], object]], repeat: int) -> dict[str, list[float]]:
    """Run every side ``repeat`` times, rotating the order; return the times of each."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    order = list(sides)
    for r in range(repeat):
        for name in order[r % len(order) :] + order[: r % len(order)]:
            start = time.perf_counter()
            sides[name]()
            times[name].append(time.perf_counter() - start)
    return times


def report(times: dict[str, list[float]], steps: int, baseline: str = "loop") -> None:
    """Print each side's steps/s (best round) and its ratio to ``baseline``."""
    width = max(map(len, times))
    rate = {name: steps / min(ts) for name, ts in times.items()}
    for name, steps_per_s in rate.items():
        print(f"{name:{width}s}: {steps_per_s:8.1f} steps/s")
    for name, ts in times.items():
        if name == baseline:
            continue
        paired = statistics.median(b / t for b, t in zip(times[baseline], ts, strict=True))
        print(
            f"ratio {name}/{baseline}: {rate[name] / rate[baseline]:.3f} "
            f"(best rounds), {paired:.3f} (median of rounds)"
        )


def spread(values: list[float], digits: int = 2, width: int = 0, unit: str = " us") -> str:
    """The median of ``values`` and their range: ``1.23 us (range 1.10 to 1.50)``."""
    return (
        f"{statistics.median(values):{width}.{digits}f}{unit} "
        f"(range {min(values):.{digits}f} to {max(values):.{digits}f})"
    )


def consume(pipeline: Any, batch_size: int) -> int:
    """Iterate over a pipeline's batches as a consumer would: read each batch's ``x``
    (a batch may gather it lazily); return the number of batches."""
    n = 0
    for batch in pipeline.gen_batch(batch_size):
        batch.x  # noqa: B018  the consumer reads the rows
        n += 1
    return n
