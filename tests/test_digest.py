"""Content digests: equal content, equal digest, in any process; any change, another."""

from __future__ import annotations

import functools
import subprocess
import sys

import numpy as np
import pytest

from fpipe import Batch, Dataset, Pipeline, action
from fpipe import digest as digest_module
from fpipe.digest import array_digest, dataset_digest, digest
from fpipe.steps import ActionStep

FACTOR = 3.0  # a module constant a function reads
COUNTS: list[int] = []  # module state a function keeps


def _times_factor(x):
    return x * FACTOR


class DigItems(Batch):
    components = ("x",)

    @action
    def scale(self, k):
        return self.replace(x=self.x * k)


def test_equal_content_gives_equal_digests():
    assert digest(np.arange(5.0)) == digest(np.arange(5.0))
    assert digest({"a": [1, 2], "b": (3,)}) == digest({"b": (3,), "a": [1, 2]})
    assert digest(ActionStep("scale", (np.ones(2),), {"k": 1})) == digest(
        ActionStep("scale", (np.ones(2),), {"k": 1})
    )


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (np.ones(1), np.full(1, 2.0)),
        (np.ones(2), np.ones(3)),
        (np.ones(2, dtype=np.float32), np.ones(2)),
        (np.ones((2, 1)), np.ones((1, 2))),
        (1, 1.0),
        (1, True),
        ("1", 1),
        ([1, 2], [2, 1]),
        ({"k": 1}, {"k": 2}),
        ({1, 2}, {1, 3}),
        (lambda x: x + 1, lambda x: x + 2),
        (lambda x: x + 1, lambda y, z=1: y + z),
        (functools.partial(max, 1), functools.partial(max, 2)),
        (np.array([1, "a"], dtype=object), np.array([1, "b"], dtype=object)),
    ],
)
def test_any_change_of_content_gives_another_digest(a, b):
    assert digest(a) != digest(b)


def _closure(k):
    return lambda x: x * k


def test_closures_defaults_and_constant_globals_are_content():
    assert digest(_closure(2)) == digest(_closure(2))
    assert digest(_closure(2)) != digest(_closure(3))
    assert digest(_closure(np.ones(2))) != digest(_closure(np.zeros(2)))
    before = digest(_times_factor)
    global FACTOR
    FACTOR = 4.0
    try:
        assert digest(_times_factor) != before
    finally:
        FACTOR = 3.0
    assert digest(_times_factor) == before


def test_mutable_module_state_a_function_keeps_is_not_content():
    def count(x):
        COUNTS.append(1)
        return x

    before = digest(count)
    COUNTS.append(5)
    assert digest(count) == before


def test_cycles_and_deep_nesting_terminate():
    a: list = [1]
    a.append(a)
    assert digest(a) == digest(a)
    deep: list = []
    for _ in range(500):
        deep = [deep]
    assert len(digest(deep)) == 32


def test_pipelines_and_datasets_are_digested_by_content():
    ds = Dataset(4, DigItems, preloaded={"x": np.arange(4.0)})
    same = Dataset(4, DigItems, preloaded={"x": np.arange(4.0)})
    other = Dataset(4, DigItems, preloaded={"x": np.arange(4.0) + 1})
    assert dataset_digest(ds) == dataset_digest(same) != dataset_digest(other)
    assert digest(ds.p.scale(2)) == digest(same.p.scale(2)) != digest(ds.p.scale(3))
    assert digest(Pipeline().scale(2)) != digest(Pipeline().scale(2.0))


def test_a_read_only_array_is_hashed_once(monkeypatch):
    arr = np.arange(1000.0)
    arr.setflags(write=False)
    calls = []
    real = digest_module._hash_array
    monkeypatch.setattr(digest_module, "_hash_array", lambda a: calls.append(1) or real(a))
    first = array_digest(arr)
    assert array_digest(arr) == first and len(calls) == 1
    ds = Dataset(1000, DigItems, preloaded={"x": arr})
    train, _ = ds.split(0.5)
    dataset_digest(ds), dataset_digest(train)
    assert len(calls) <= 1 + 3  # the shared preloaded array is not hashed again (ids are)


def test_a_writable_array_is_hashed_each_time():
    arr = np.zeros(3)
    first = array_digest(arr)
    arr[0] = 1
    assert array_digest(arr) != first


def test_the_cache_forgets_an_array_with_the_array():
    arr = np.arange(10.0)
    arr.setflags(write=False)
    array_digest(arr)
    key = id(arr)
    assert key in digest_module._ARRAYS
    del arr
    assert key not in digest_module._ARRAYS


CHILD = """
import numpy as np
from fpipe.digest import digest
from fpipe.steps import ActionStep
print(digest([ActionStep("scale", (np.arange(3.0),), {"k": "a"}), {"s": "text", 1: 2.5}]))
"""


def test_digests_are_the_same_in_another_process():
    import os

    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, env=env
    ).stdout.strip()
    here = digest([ActionStep("scale", (np.arange(3.0),), {"k": "a"}), {"s": "text", 1: 2.5}])
    assert out == here
