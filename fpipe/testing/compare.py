"""Comparing batches and whole runs bit for bit, with readable differences.

>>> import numpy as np
>>> from fpipe import Batch
>>> a = Batch(np.arange(2), preloaded=np.array([1.0, 2.0]))
>>> batch_difference(a, a.replace(data=np.array([1.0, 3.0])))
"component 'data' differs: expected vs got: [1. 2.] != [1. 3.]"
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..batch import Batch
    from ..pipeline import Pipeline

__all__ = [
    "Outcome",
    "assert_batches_equal",
    "batch_difference",
    "brief",
    "describe_batch",
    "describe_pipeline",
    "outcome_difference",
    "run_outcome",
]


def components_of(batch: Batch) -> dict[str, Any]:
    """Every declared component of ``batch``, gathered (None when not loaded)."""
    from ..values import materialized

    return {name: materialized(batch._data.get(name)) for name in type(batch)._component_names}


def difference(a: Any, b: Any) -> str | None:
    """Why ``a`` and ``b`` differ (value, dtype or shape), or None when bit for bit equal."""
    if a is None or b is None:
        return None if a is None and b is None else f"{brief(a)} != {brief(b)}"
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype:
        return f"dtype {a.dtype} != {b.dtype}"
    if a.shape != b.shape:
        return f"shape {a.shape} != {b.shape}"
    # floats bit for bit: NaNs must match too, and -0.0 differs from 0.0
    same = a.tobytes() == b.tobytes() if a.dtype.kind in "fc" else bool(np.array_equal(a, b))
    return None if same else f"{brief(a)} != {brief(b)}"


def brief(x: Any) -> str:
    """``x`` printed short: an array's values (elided past a few), anything else's repr."""
    if x is None:
        return "None"
    if isinstance(x, np.ndarray):
        text = np.array2string(x, threshold=8, separator=" ")
    else:
        text = repr(x.item() if isinstance(x, np.generic) else x)
    text = " ".join(text.split())  # one line
    return text if len(text) < 200 else text[:197] + "..."


def batch_difference(
    expected: Batch, actual: Batch, names: tuple[str, str] = ("expected", "got")
) -> str | None:
    """Why two batches differ (class, indices or the first differing component), or None."""
    if type(expected) is not type(actual):
        return f"batch class {type(actual).__name__} != {type(expected).__name__}"
    how = f"{names[0]} vs {names[1]}"
    diff = difference(expected.indices, actual.indices)
    if diff is not None:
        return f"indices differ: {how}: {diff}"
    theirs = components_of(actual)
    for name, value in components_of(expected).items():
        diff = difference(value, theirs[name])
        if diff is not None:
            return f"component {name!r} differs: {how}: {diff}"
    return None


def assert_batches_equal(expected: Batch, actual: Batch, where: str = "") -> None:
    """Assert two batches have the same class, indices and components, bit for bit.

    >>> import numpy as np
    >>> from fpipe import Batch
    >>> a = Batch(np.arange(2), preloaded=np.zeros(2))
    >>> assert_batches_equal(a, a.replace(data=np.zeros(2)))
    >>> assert_batches_equal(a, a.replace(data=-np.zeros(2)), "batch 0")
    Traceback (most recent call last):
    ...
    AssertionError: batch 0: component 'data' differs: expected vs got: [0. 0.] != [-0. -0.]
    """
    diff = batch_difference(expected, actual)
    if diff is not None:
        raise AssertionError(f"{where}: {diff}" if where else diff)


def describe_batch(batch: Batch) -> str:
    """A batch with its ids and values, short: ``Digits ids [0 1]: images=[[0. 1.] ...]``."""
    parts = [f"{name}={brief(value)}" for name, value in components_of(batch).items()]
    return f"{type(batch).__name__} ids {brief(batch.indices)}: {', '.join(parts)}"


def describe_pipeline(pipeline: Pipeline) -> str:
    """A pipeline's steps on one line: ``[normalize(), (augment(sigma=0.5)) @ 0.5]``."""
    return "[" + ", ".join(step.label for step in pipeline.steps) + "]"


@dataclass(frozen=True)
class Outcome:
    """What a run produced: its output batches, in order, and its final variables."""

    batches: tuple[Batch, ...]
    variables: Mapping[str, Any]


def run_outcome(pipeline: Pipeline, batch_size: int, **run_kwargs: Any) -> Outcome:
    """Run ``pipeline.iterate(batch_size, **run_kwargs)`` to its end."""
    with pipeline.iterate(batch_size, **run_kwargs) as it:
        batches = tuple(it)
        variables = it.result().variables
    return Outcome(batches, variables)


def outcome_difference(
    expected: Outcome, got: Outcome, names: tuple[str, str] = ("expected", "got")
) -> str | None:
    """Where two runs first differ (a batch, the number of batches, a variable), or None."""
    from ..values import values_equal

    for k, (want, have) in enumerate(zip(expected.batches, got.batches, strict=False)):
        diff = batch_difference(want, have, names)
        if diff is not None:
            return f"batch {k}: {diff}"
    if len(expected.batches) != len(got.batches):
        return f"{names[0]} gave {len(expected.batches)} batches, {names[1]} {len(got.batches)}"
    for name in sorted({*expected.variables, *got.variables}):
        missing = object()
        want, have = expected.variables.get(name, missing), got.variables.get(name, missing)
        if want is missing or have is missing or not values_equal(want, have):
            shown = [("missing" if v is missing else brief(v)) for v in (want, have)]
            return f"variable {name!r} differs: {names[0]} vs {names[1]}: {shown[0]} != {shown[1]}"
    return None
