"""Resuming: merge stream paths, rebatch stages and their positions, and merge_fn errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fpipe import Batch, Dataset, FpipeError, Pipeline, action
from fpipe.resume import merge_stages


class Rs(Batch):
    components = ("x",)

    @action
    def inc(self):
        return self.replace(x=self.x + 1)


def ds(n=10, base=0):
    ids = base + np.arange(n)
    return Dataset(ids, Rs, preloaded={"x": ids * 1.0})


def test_merge_streams_are_named_by_their_place_in_the_whole_pipeline():
    other = ds(20, 100).p
    p = ds().p.merge(other).rebatch(4).inc().merge(other, other) + (Pipeline().merge(other) @ 0.5)
    assert merge_stages(p.steps) == {"0.0": 0, "3.0": 1, "3.1": 1, "4.0.0": 1}


def test_merges_in_different_stages_have_streams_of_their_own():
    """A merge after a rebatch does not share the stream of a merge before it."""
    other = ds(40, 100).p
    p = ds(12).p.merge(other).rebatch(6).merge(other)
    out = [b.indices.tolist() for b in p.gen_batch(3, seed=0)]
    # stage 0 merges 3 + 3 items; stage 1 re-cuts to 6 and merges the next batch of its
    # own stream of `other`, which starts at the beginning (a shared stream would go on)
    assert out[0] == [0, 1, 2, 100, 101, 102, 100, 101, 102]
    assert out[1] == [3, 4, 5, 103, 104, 105, 103, 104, 105]


@pytest.mark.parametrize(
    ("merge_fn", "message"),
    [
        (lambda parts: None, r"returned None \(NoneType\)"),
        (lambda parts: parts, r"returned \[.*\(list\)"),
        (lambda parts: parts[0], "returned a batch of 3 items"),
    ],
    ids=["None", "a list", "too few items"],
)
def test_a_merge_fn_that_returns_no_batch_names_the_rebatch_and_the_function(merge_fn, message):
    p = ds().p.rebatch(4, merge_fn=merge_fn)
    with pytest.raises(FpipeError, match=r"rebatch\(4, merge_fn=.*<lambda>\) must return") as info:
        p.run(3)
    assert "one batch holding the 4 items of the 2 batches" in str(info.value)
    assert __import__("re").search(message, str(info.value))


def test_a_merge_fn_sees_exactly_the_items_of_the_next_batch():
    seen = []

    def merge(parts):
        seen.append([len(b) for b in parts])
        return type(parts[0]).merge(parts)

    list(ds(10).p.rebatch(4, merge_fn=merge).gen_batch(3))
    assert seen == [[3, 1], [2, 2], [1, 1]]


def test_a_rebatch_stage_position_says_where_its_oldest_batch_came_from():
    p = ds(10).p.rebatch(4).rebatch(3)
    with p.iterate(3, seed=0) as it:
        next(it), next(it)
        d = it.get_state().to_dict()
    assert d["produced"] == [2, 2]
    outer = d["position"]
    assert (outer["skip"], outer["produced"]) == (2, 2)
    inner = outer["from"]
    assert inner["produced"] == 1 and inner["from"]["iteration"] == 1
    with p.iterate(3, seed=0, state=json.loads(json.dumps(d))) as again:
        assert [b.indices.tolist() for b in again] == [[6, 7, 8], [9]]


def test_a_merge_source_smaller_than_a_batch_is_named():
    with pytest.raises(FpipeError, match=r"merge: the merged pipeline's dataset has 2 items"):
        ds().p.merge(ds(2, 100).p).run(3)
