"""Properties of the model layer: when factories run, imports, locks and run isolation."""

from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fpipe import Batch, Dataset, Pipeline, action, inbatch_parallel, model

CALLS: Counter[str] = Counter()


class PTBatch(Batch):
    guard = threading.Lock()
    active = 0
    peak = 0

    @model(mode="static")
    def pt_static(pipeline, config):
        CALLS["pt_static"] += 1
        return {"seen": []}

    @model(mode="dynamic")
    def pt_dynamic(batch, config):
        CALLS["pt_dynamic"] += 1
        return {"items": 0}

    @action(model="pt_static")
    def use_static(self, m):
        self.pipeline.update_variable("static_ids", id(m), mode="a")
        return self

    @action(model="pt_dynamic")
    def use_dynamic(self, m):
        m["items"] += len(self)
        return self

    @action
    def tag(self, value):
        self.pipeline.update_variable("tags", value, mode="a")
        return self

    @action(use_lock="pt_lock")
    def locked(self):
        cls = type(self)
        with cls.guard:
            cls.active += 1
            cls.peak = max(cls.peak, cls.active)
        time.sleep(0.0005)
        with cls.guard:
            cls.active -= 1
        return self

    @action
    def calls_locked(self):
        """An action that calls a locked one by hand: effectful by inference."""
        return self.locked()

    @action
    @inbatch_parallel(init="indices", target="threads")
    def per_item_locked(self, item_id):
        self.locked()


def dataset(n: int) -> Dataset:
    return Dataset(n, PTBatch, preloaded=np.arange(n, dtype=float))


sizes = st.integers(1, 40)
prefetches = st.integers(0, 4)

# operations that derive a new pipeline from the template (or from a derived one)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("link"), sizes),
        st.tuples(st.just("chain"), st.integers(1, 3)),
        st.tuples(st.just("add"), st.integers(0, 2)),
        st.tuples(st.just("repeat"), st.integers(0, 3)),
        st.tuples(st.just("run"), st.integers(1, 8), prefetches),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(operations, sizes)
def test_static_factory_runs_once_for_any_derived_pipelines_and_runs(ops, n):
    before = CALLS["pt_static"]
    template = (
        Pipeline().init_variable("static_ids", []).init_variable("tags", []).init_model("pt_static")
    )
    assert CALLS["pt_static"] == before + 1
    descriptor = template.get_model_by_name("pt_static")
    current, seen = template, [template]
    for op in ops:
        kind = op[0]
        if kind == "link":
            current = current << dataset(op[1])
        elif kind == "chain":
            current = current.use_static() if op[1] % 2 else current.tag(op[1])
        elif kind == "add":
            current = current + Pipeline().use_static() * op[1]
        elif kind == "repeat":
            current = current * op[1] if op[1] else current + template
        else:
            linked = current if current.dataset is not None else current << dataset(n)
            current = linked.run(min(op[1], len(linked.dataset)), prefetch=op[2])
            assert set(current.get_variable("static_ids")) <= {id(descriptor)}
        seen.append(current)
    assert CALLS["pt_static"] == before + 1
    for p in seen:
        if any(getattr(s, "name", None) == "pt_static" for s in p.steps):
            assert p.get_model_by_name("pt_static") is descriptor


@settings(max_examples=60, deadline=None)
@given(sizes, st.integers(1, 10), prefetches, st.integers(1, 3), st.integers(1, 3))
def test_dynamic_factory_runs_exactly_once_per_run(n, batch_size, prefetch, n_epochs, uses):
    batch_size = min(batch_size, n)
    p = dataset(n).p.init_variable("tags", []).tag("x")
    for _ in range(uses):
        p = p.use_dynamic()
    before = CALLS["pt_dynamic"]
    results = [p.run(batch_size, n_epochs=n_epochs, prefetch=prefetch, shuffle=True)]
    assert CALLS["pt_dynamic"] == before + 1
    results.append(p.run(batch_size, prefetch=prefetch))
    assert CALLS["pt_dynamic"] == before + 2
    a, b = (r.get_model_by_name("pt_dynamic") for r in results)
    assert a is not b
    assert a["items"] == uses * n * n_epochs
    assert b["items"] == uses * n


@settings(max_examples=30, deadline=None)
@given(sizes, st.integers(1, 10), prefetches, st.booleans())
def test_import_never_builds(n, batch_size, prefetch, from_static):
    batch_size = min(batch_size, n)
    if from_static:
        name, source = "pt_static", Pipeline().init_model("pt_static")
    else:
        name, source = "pt_dynamic", dataset(n).p.use_dynamic().run(batch_size)
    trained = source.get_model_by_name(name)
    before = Counter(CALLS)
    importing = Pipeline().import_model(name, source)
    importing = importing.use_dynamic() if name == "pt_dynamic" else importing.use_static()
    for _ in range(2):
        r = (importing.init_variable("static_ids", []) << dataset(n)).run(
            batch_size, prefetch=prefetch
        )
        assert r.get_model_by_name(name) is trained
    assert dict(CALLS) == dict(before)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(4, 40),
    st.integers(1, 8),
    st.integers(1, 4),
    st.sampled_from(["locked", "calls_locked", "per_item_locked"]),
)
def test_locked_action_never_runs_in_two_batches_at_once(n, batch_size, prefetch, how):
    PTBatch.active = PTBatch.peak = 0
    p = dataset(n).p.action(how).action(how)
    batches = list(p.gen_batch(min(batch_size, n), prefetch=prefetch))
    assert sum(len(b) for b in batches) == n
    assert PTBatch.peak == 1
    assert PTBatch.active == 0


@settings(max_examples=40, deadline=None)
@given(sizes, sizes, st.integers(1, 6), prefetches, prefetches)
def test_environment_of_one_run_never_leaks_into_another(n1, n2, bs, pf1, pf2):
    p = Pipeline().init_variable("tags", []).tag("a").use_dynamic()
    first = (p << dataset(n1)).iterate(min(bs, n1), prefetch=pf1)
    second = (p.tag("b") << dataset(n2)).iterate(min(bs, n2), prefetch=pf2)
    # interleave the two runs batch by batch
    done = [False, False]
    while not all(done):
        for k, it in enumerate((first, second)):
            if not done[k]:
                done[k] = next(it, None) is None
    n_first = -(-n1 // min(bs, n1))
    n_second = -(-n2 // min(bs, n2))
    assert first.env.variables["tags"] == ["a"] * n_first
    assert second.env.variables["tags"] == ["a", "b"] * n_second
    m1, m2 = first.env.dynamic["pt_dynamic"], second.env.dynamic["pt_dynamic"]
    assert m1 is not m2
    assert (m1["items"], m2["items"]) == (n1, n2)
    assert p.get_variable("tags") == []
    assert "pt_dynamic" not in p.models
