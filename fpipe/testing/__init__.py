"""Testing your pipelines: checkers, hypothesis strategies for your own batch classes,
and helpers (see docs/testing.md, "Property-testing your pipelines").

- Checkers, each a plain assertion (:mod:`fpipe.testing.checkers`): :func:`assert_pure`
  (an action's output is a function of its input and seed), :func:`assert_deterministic`
  (the same batches on every executor), :func:`assert_laws` (the algebra's laws on your
  own pipelines), :func:`assert_resumable` (a run resumes exactly from any state) and
  :func:`assert_batches_equal`.
- Strategies (:mod:`fpipe.testing.strategies`, they need hypothesis): :func:`batches`,
  :func:`datasets` and :func:`pipelines` of your own batch class.
- :func:`local_dask_client`: a small local Dask cluster (the ``dask`` extra).

``import fpipe.testing`` never imports hypothesis: the strategies import it when first
used, and say how to install it when it is missing.

>>> import numpy as np
>>> from fpipe import Batch, action
>>> class TestingNoisy(Batch):
...     @action
...     def noise(self):
...         return self.replace(data=self.data + self.random.normal(size=len(self)))
>>> assert_pure(TestingNoisy.noise, TestingNoisy(np.arange(3), preloaded=np.ones(3)))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .checkers import assert_deterministic, assert_laws, assert_pure
from .cluster import local_dask_client
from .compare import assert_batches_equal
from .resumable import assert_resumable

if TYPE_CHECKING:  # imported on first use, below: they import hypothesis
    from .strategies import batches, datasets, pipelines

__all__ = [
    "assert_batches_equal",
    "assert_deterministic",
    "assert_laws",
    "assert_pure",
    "assert_resumable",
    "batches",
    "datasets",
    "local_dask_client",
    "pipelines",
]

_STRATEGIES = frozenset({"batches", "datasets", "pipelines"})


def __getattr__(name: str) -> Any:
    """The strategies, imported on first use (they import hypothesis)."""
    if name in _STRATEGIES:
        return getattr(importlib.import_module(".strategies", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
