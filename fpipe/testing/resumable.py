"""``assert_resumable``: a run resumes exactly from the state after any batch.

>>> import numpy as np
>>> from fpipe import Batch, Dataset, action
>>> class TestingNoisy(Batch):
...     @action
...     def noise(self):
...         return self.replace(data=self.data + self.random.normal(size=len(self)))
>>> p = Dataset(7, TestingNoisy, preloaded=np.zeros(7)).p.noise()
>>> assert_resumable(p, 3, shuffle=True, n_epochs=2, seed=5)
6
"""

from __future__ import annotations

import json
import pickle
from typing import TYPE_CHECKING, Any

import numpy as np

from ..plan import IterState
from .compare import assert_batches_equal

if TYPE_CHECKING:
    from ..pipeline import Pipeline

__all__ = ["assert_resumable"]


def _round_trips(state: IterState) -> list[tuple[str, IterState]]:
    as_json = IterState.from_dict(json.loads(json.dumps(state.to_dict())))
    as_pickle = pickle.loads(pickle.dumps(state))
    return [("json", as_json), ("pickle", as_pickle)]


def assert_resumable(pipeline: Pipeline, batch_size: int, **run_kwargs: Any) -> int:
    """Check that ``pipeline`` resumes exactly from the state after every batch.

    Runs ``pipeline.iterate(batch_size, **run_kwargs)`` to the end once. Then, for each
    position ``k`` (0 up to the number of batches), takes ``get_state()`` after ``k``
    batches of a fresh iteration, sends it through JSON (``to_dict``) and through
    pickle, resumes ``pipeline.iterate(batch_size, **run_kwargs, state=state)`` from
    each copy and asserts that it yields exactly the remaining batches: indices and
    every component, bit for bit (dtype included). Pass a ``seed=`` when the run
    uses randomness (it is recorded in the state anyway, but the full run and the
    fresh iterations must agree). Returns the number of batches checked.

    Raises :class:`AssertionError` naming the position, the batch and the first
    differing component. The run must end (``n_epochs`` or ``n_iters``).
    """
    if run_kwargs.get("n_epochs", 1) is None and run_kwargs.get("n_iters") is None:
        raise ValueError("assert_resumable needs a run that ends: pass n_epochs or n_iters")
    if "state" in run_kwargs:
        raise TypeError("assert_resumable takes no state=: it makes the states itself")
    with pipeline.iterate(batch_size, **run_kwargs) as it:
        full = list(it)
        end_state = it.get_state()
    seed = end_state.seed
    kwargs = {**run_kwargs}
    shuffle = kwargs.get("shuffle")
    seeded_by_shuffle = isinstance(shuffle, (int, np.integer)) and not isinstance(shuffle, bool)
    if isinstance(shuffle, np.random.Generator):
        kwargs["shuffle"] = True
    if not seeded_by_shuffle and not isinstance(kwargs.get("seed"), (int, np.integer)):
        kwargs["seed"] = seed  # fresh runs agree with the first even without an int seed
    n = len(full)
    for k in range(n + 1):
        with pipeline.iterate(batch_size, **kwargs) as it:
            for j in range(k):
                got = next(it, None)
                if got is None:
                    raise AssertionError(
                        f"a fresh iteration ended after {j} batches, but the first run "
                        f"yielded {n}: the pipeline is not deterministic for this seed"
                    )
                assert_batches_equal(full[j], got, f"fresh run, batch {j}")
            state = it.get_state()
        for how, copy in _round_trips(state):
            if copy != state:
                raise AssertionError(f"position {k}: the state changed in a {how} round trip")
            with pipeline.iterate(batch_size, **kwargs, state=copy) as resumed:
                rest = list(resumed)
            if len(rest) != n - k:
                raise AssertionError(
                    f"resumed at position {k} (state via {how}: {state}): got {len(rest)} "
                    f"batches, expected the remaining {n - k}"
                )
            for j, (want, got) in enumerate(zip(full[k:], rest, strict=True)):
                assert_batches_equal(
                    want, got, f"resumed at position {k} (state via {how}), batch {k + j}"
                )
    return n
