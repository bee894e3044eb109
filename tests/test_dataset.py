"""Dataset: construction, batches, splits, subsets, pipelines and next_batch."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest

from fpipe import Batch, Dataset, DatasetIndex, Pipeline, action


class DsNums(Batch):
    @action
    def ds_double(self):
        return self.replace(data=self.data * 2)


class DsPair(Batch):
    components = ("xs", "ys")


def numbers(n=10):
    return Dataset(n, DsNums, preloaded=np.arange(n) * 10)


def pairs(n=6):
    return Dataset(n, DsPair, preloaded=(np.arange(n), -np.arange(n)))


# -- construction ----------------------------------------------------------------------


def test_int_index_gives_a_range_of_ids():
    ds = Dataset(5)
    assert len(ds) == 5
    assert ds.indices.tolist() == [0, 1, 2, 3, 4]
    assert isinstance(ds.index, DatasetIndex)
    assert ds.batch_class is Batch
    assert dict(ds.preloaded) == {}


def test_index_object_is_used_as_is():
    idx = DatasetIndex(["b", "a", "c"])
    ds = Dataset(idx, DsNums)
    assert ds.index == idx
    assert ds.indices.tolist() == ["b", "a", "c"]
    assert ds.batch_class is DsNums


def test_list_of_ids_is_an_index():
    ds = Dataset([7, 3, 5], preloaded=np.array([70, 30, 50]))
    assert ds.indices.tolist() == [7, 3, 5]
    assert ds.create_batch([5, 7]).data.tolist() == [50, 70]


def test_repr_names_size_class_and_components():
    assert repr(numbers()) == "Dataset(10 items, DsNums, data)"
    assert repr(pairs()) == "Dataset(6 items, DsPair, xs, ys)"
    assert repr(Dataset(3)) == "Dataset(3 items, Batch, nothing preloaded)"


def test_batch_class_must_be_a_batch_subclass():
    with pytest.raises(TypeError, match=r"batch_class must be a subclass of fpipe\.Batch"):
        Dataset(3, int)
    with pytest.raises(TypeError, match=r"batch_class must be a subclass of fpipe\.Batch"):
        Dataset(3, DsNums(np.arange(2)))


def test_preloaded_shorter_than_the_index_is_an_error():
    msg = "component 'data' has shape (9,) for 10 items; its first dimension must be"
    with pytest.raises(ValueError, match=re.escape(msg)):
        Dataset(10, DsNums, preloaded=np.arange(9))


def test_preloaded_longer_than_the_index_is_an_error():
    with pytest.raises(ValueError, match=re.escape("component 'data' has shape (11,) for 10")):
        Dataset(10, preloaded=np.arange(11))


def test_one_misaligned_component_is_named():
    with pytest.raises(ValueError, match=re.escape("component 'ys' has shape (4,) for 5 items")):
        Dataset(5, DsPair, preloaded=(np.arange(5), np.arange(4)))


def test_preloaded_with_an_unknown_component_is_an_error():
    msg = "preloaded has components ['zs'] that DsPair does not declare"
    with pytest.raises(ValueError, match=re.escape(msg)):
        Dataset(3, DsPair, preloaded={"xs": np.arange(3), "zs": np.arange(3)})


def test_preloaded_tuple_must_have_one_array_per_component():
    with pytest.raises(ValueError, match="preloaded is a tuple of 1 arrays but DsPair has 2"):
        Dataset(3, DsPair, preloaded=(np.arange(3),))


def test_preloaded_dict_may_hold_some_components():
    ds = Dataset(4, DsPair, preloaded={"xs": np.arange(4)})
    assert list(ds.preloaded) == ["xs"]
    assert ds.create_batch([2]).xs.tolist() == [2]


def test_dataset_is_immutable():
    ds = numbers()
    with pytest.raises(AttributeError, match="Dataset is immutable; cannot set 'index'"):
        ds.index = DatasetIndex(3)
    with pytest.raises(TypeError, match="does not support item assignment"):
        ds.preloaded["data"] = np.arange(10)


def test_preloaded_arrays_are_read_only():
    ds = numbers()
    with pytest.raises(ValueError, match="read-only"):
        ds.preloaded["data"][0] = 1


def test_equal_datasets_have_equal_index_class_and_data():
    ds = numbers()
    assert ds == Dataset(ds.index, DsNums, preloaded=ds.preloaded["data"])
    assert ds == numbers()
    assert ds != Dataset(ds.index, DsNums, preloaded=np.arange(10) * 11)
    assert ds != Dataset(ds.index, DsNums, preloaded=(np.arange(10) * 10).astype(float))
    assert ds != Dataset(ds.index, DsNums)
    assert ds != Dataset(11, DsNums, preloaded=np.arange(11) * 10)
    assert ds != Dataset(ds.index, Batch, preloaded=ds.preloaded["data"])
    assert hash(ds) == hash(Dataset(ds.index, DsNums))


def test_pickled_dataset_gives_the_same_batches():
    ds = pairs()
    back = pickle.loads(pickle.dumps(ds))
    assert back == ds
    assert back.indices.tolist() == ds.indices.tolist()
    assert back.batch_class is DsPair
    assert back.create_batch([4, 1]).ys.tolist() == [-4, -1]
    with pytest.raises(ValueError, match="read-only"):
        back.preloaded["xs"][0] = 1


# -- batches ---------------------------------------------------------------------------


def test_create_batch_takes_ids_in_the_given_order():
    b = pairs().create_batch([3, 0, 5])
    assert isinstance(b, DsPair)
    assert b.indices.tolist() == [3, 0, 5]
    assert b.xs.tolist() == [3, 0, 5]
    assert b.ys.tolist() == [-3, 0, -5]


def test_create_batch_with_string_ids():
    ds = Dataset(["b", "a", "c"], DsNums, preloaded=np.array([1, 2, 3]))
    b = ds.create_batch(["c", "b"])
    assert b.indices.tolist() == ["c", "b"]
    assert b.data.tolist() == [3, 1]


def test_create_batch_with_one_id():
    b = numbers().create_batch(4)
    assert b.indices.tolist() == [4]
    assert b.data.tolist() == [40]


def test_create_batch_with_unknown_ids_is_an_error():
    with pytest.raises(KeyError, match=re.escape("1 id(s) not in this DatasetIndex of 10 items")):
        numbers().create_batch([3, 11])


def test_batch_components_are_read_only():
    b = numbers().create_batch([1, 2])
    with pytest.raises(ValueError, match="read-only"):
        b.data[0] = 5


def test_batch_without_preloaded_data_has_only_ids():
    b = Dataset(4).create_batch([1, 2])
    assert b.indices.tolist() == [1, 2]
    assert b.data is None


# -- pipelines -------------------------------------------------------------------------


def test_p_gives_a_new_linked_pipeline_each_time():
    ds = numbers()
    p1, p2 = ds.p, ds.p
    assert p1 is not p2
    assert p1 == p2 == Pipeline() << ds
    assert p1.dataset is ds
    assert len(p1) == 0


def test_extending_one_p_does_not_change_the_next():
    ds = numbers()
    longer = ds.p.ds_double()
    assert len(longer) == 1
    assert len(ds.p) == 0


def test_pipeline_with_config():
    ds = numbers()
    p = ds.pipeline({"scale": 3})
    assert dict(p.config) == {"scale": 3}
    assert p.dataset is ds
    assert ds.pipeline() == ds.p
    assert ds.pipeline({"scale": 3}) != ds.p


def test_pipeline_config_must_be_a_mapping():
    with pytest.raises(TypeError, match="a pipeline config must be a dict, got list"):
        numbers().pipeline([("a", 1)])


def test_rshift_links_a_template_pipeline():
    ds = numbers(4)
    template = Pipeline().ds_double()
    linked = ds >> template
    assert linked.dataset is ds
    assert template.dataset is None
    assert [b.data.tolist() for b in linked.gen_batch(2)] == [[0, 20], [40, 60]]


def test_rshift_with_an_unknown_action_fails_on_linking():
    with pytest.raises(Exception, match="DsPair has no action 'ds_double'"):
        pairs() >> Pipeline().ds_double()


def test_gen_batch_goes_through_the_dataset_in_order():
    batches = list(numbers(5).gen_batch(2))
    assert [b.indices.tolist() for b in batches] == [[0, 1], [2, 3], [4]]
    assert [b.data.tolist() for b in batches] == [[0, 10], [20, 30], [40]]
    assert all(isinstance(b, DsNums) for b in batches)


def test_gen_batch_accepts_run_arguments():
    ds = numbers(6)
    batches = list(ds.gen_batch(4, drop_last=True, n_epochs=2))
    assert [b.indices.tolist() for b in batches] == [[0, 1, 2, 3], [0, 1, 2, 3]]
    shuffled = [b.indices.tolist() for b in ds.gen_batch(3, shuffle=5)]
    assert sorted(i for b in shuffled for i in b) == list(range(6))
    assert shuffled == [b.indices.tolist() for b in ds.gen_batch(3, shuffle=5)]


def test_next_batch_continues_one_iteration():
    ds = numbers(5)
    assert ds.next_batch(2).indices.tolist() == [0, 1]
    assert ds.next_batch(2).indices.tolist() == [2, 3]
    assert ds.next_batch(2).indices.tolist() == [4]
    with pytest.raises(StopIteration, match="next_batch: the iteration is over"):
        ds.next_batch(2)


def test_next_batch_reset_starts_again():
    ds = numbers(5)
    ds.next_batch(2)
    ds.reset()
    assert ds.next_batch(2).indices.tolist() == [0, 1]


def test_next_batch_with_other_arguments_starts_a_new_iteration():
    ds = numbers(6)
    ds.next_batch(2)
    assert ds.next_batch(3).indices.tolist() == [0, 1, 2]
    assert ds.next_batch(3).indices.tolist() == [3, 4, 5]


def test_reset_before_any_next_batch_does_nothing():
    ds = numbers(3)
    ds.reset()
    assert ds.next_batch(3).indices.tolist() == [0, 1, 2]


def test_next_batch_iteration_is_not_part_of_the_value():
    ds = numbers(4)
    ds.next_batch(2)
    assert ds == Dataset(ds.index, DsNums, preloaded=ds.preloaded["data"])
    assert pickle.loads(pickle.dumps(ds)).next_batch(2).indices.tolist() == [0, 1]


# -- split -----------------------------------------------------------------------------


def covered(parts):
    return sorted(i for part in parts for i in part.indices.tolist())


def test_split_by_one_share_gives_two_datasets():
    ds = numbers()
    train, test = ds.split(0.8)
    assert (len(train), len(test)) == (8, 2)
    assert covered((train, test)) == list(range(10))
    assert len(ds) == 10
    assert ds.indices.tolist() == list(range(10))


def test_split_by_a_list_of_shares_adds_the_rest():
    parts = numbers().split([0.6, 0.3])
    assert [len(p) for p in parts] == [6, 3, 1]
    assert covered(parts) == list(range(10))
    assert not set(parts[0].indices) & set(parts[1].indices)


def test_split_by_shares_summing_to_one():
    parts = numbers().split([0.5, 0.5])
    assert [len(p) for p in parts] == [5, 5]
    assert covered(parts) == list(range(10))


def test_split_parts_keep_class_and_data():
    ds = pairs()
    a, b = ds.split(0.5, shuffle=True, seed=1)
    assert a.batch_class is b.batch_class is DsPair
    for part in (a, b):
        ids = part.indices
        batch = part.create_batch(ids)
        assert batch.xs.tolist() == ids.tolist()
        assert batch.ys.tolist() == (-ids).tolist()
        assert part.preloaded["xs"] is ds.preloaded["xs"]


def test_split_without_shuffle_keeps_the_order():
    a, b = numbers().split(0.3)
    assert a.indices.tolist() == [0, 1, 2]
    assert b.indices.tolist() == [3, 4, 5, 6, 7, 8, 9]


def test_shuffled_split_is_reproducible_for_a_seed():
    ds = numbers(50)
    one = ds.split([0.6, 0.3], shuffle=True, seed=11)
    two = ds.split([0.6, 0.3], shuffle=True, seed=11)
    assert [p.indices.tolist() for p in one] == [p.indices.tolist() for p in two]
    assert one == two
    assert covered(one) == list(range(50))
    other = ds.split([0.6, 0.3], shuffle=True, seed=12)
    assert [p.indices.tolist() for p in one] != [p.indices.tolist() for p in other]


def test_int_shuffle_is_the_split_seed():
    ds = numbers(30)
    assert ds.split(0.5, shuffle=4) == ds.split(0.5, shuffle=True, seed=4)
    assert ds.split(0.5, shuffle=4)[0].indices.tolist() != list(range(15))


def test_split_leaves_the_original_unchanged():
    ds = numbers(20)
    before = (ds.indices.tolist(), ds.preloaded["data"].tolist())
    ds.split([0.6, 0.3], shuffle=True, seed=1)
    assert (ds.indices.tolist(), ds.preloaded["data"].tolist()) == before
    assert ds.index == DatasetIndex(20)


def test_split_of_a_split_reads_the_right_rows():
    ds = Dataset(20, DsNums, preloaded=np.arange(20) * 3)
    outer, _ = ds.split(0.5, shuffle=True, seed=2)
    inner, rest = outer.split(0.4, shuffle=True, seed=3)
    assert covered((inner, rest)) == sorted(outer.indices.tolist())
    batch = inner.create_batch(inner.indices)
    assert batch.data.tolist() == (inner.indices * 3).tolist()
    gen = [b.data.tolist() for b in inner.gen_batch(2)]
    assert [x for b in gen for x in b] == (inner.indices * 3).tolist()


def test_split_into_more_parts_than_items_is_an_error():
    with pytest.raises(ValueError, match="item"):
        Dataset(2).split([0.3, 0.3, 0.3])


def test_pipelines_of_split_parts_see_only_their_items():
    train, test = numbers(10).split(0.7, shuffle=True, seed=9)
    seen = [i for b in train.p.ds_double().gen_batch(3) for i in b.indices.tolist()]
    assert seen == train.indices.tolist()
    doubled = [x for b in test.p.ds_double().gen_batch(3) for x in b.data.tolist()]
    assert doubled == (test.indices * 20).tolist()


# -- subsets ---------------------------------------------------------------------------


def test_create_subset_keeps_the_given_order_and_data():
    ds = numbers()
    sub = ds.create_subset([5, 2, 8])
    assert sub.indices.tolist() == [5, 2, 8]
    assert len(sub) == 3
    assert sub.batch_class is DsNums
    assert [b.data.tolist() for b in sub.gen_batch(2)] == [[50, 20], [80]]
    assert sub.create_batch([8]).data.tolist() == [80]
    assert len(ds) == 10


def test_create_subset_shares_the_preloaded_arrays():
    ds = pairs()
    assert ds.create_subset([1, 2]).preloaded["ys"] is ds.preloaded["ys"]


def test_create_subset_with_unknown_ids_is_an_error():
    with pytest.raises(KeyError, match="not in this DatasetIndex"):
        numbers().create_subset([1, 99])


def test_subset_cannot_create_batches_of_items_outside_it():
    sub = numbers().create_subset([1, 2])
    with pytest.raises(KeyError, match=re.escape("1 id(s) not in this DatasetIndex of 2 items")):
        sub.create_batch([3])


def test_subset_of_a_subset_reads_the_right_rows():
    sub = numbers().create_subset([9, 4, 6, 1]).create_subset([6, 9])
    assert sub.create_batch([9, 6]).data.tolist() == [90, 60]
    assert [b.data.tolist() for b in sub.gen_batch(2)] == [[60, 90]]


def test_pickled_dataset_keeps_ragged_items_immutable():
    ds = Dataset(3, DsPair, preloaded={"xs": [[1, 2], [3], np.arange(4)], "ys": np.arange(3)})
    back = pickle.loads(pickle.dumps(ds))
    assert back == ds
    b = back.create_batch([0, 2])
    assert b.xs.dtype == object and not b.xs.flags.writeable
    assert list(b.xs[0]) == [1, 2]
    with pytest.raises(TypeError, match="cannot change"):
        b.xs[0].append(4)
    with pytest.raises(ValueError, match="read-only"):
        b.xs[1][0] = 7
    assert back.create_batch([0]).xs[0] == [1, 2]  # the dataset's item is unchanged


# -- memory: components gathered on first read, batches freed once used ---------------------
class DsWide(Batch):
    components = ("x", "y")

    @action
    def ds_bump(self):
        return self.replace(x=self.x + 1.0)

    @action
    def ds_note_alive(self):
        """Put in ``y`` how many earlier output batches are still alive."""
        alive = [ref for ref in MADE if ref() is not None]
        return self.replace(y=np.full(len(self), len(alive)))


MADE: list = []  # weak references to the output batches of a run


def wide(n=4_000, y_cols=256):
    x = np.ones((n, 4), dtype=np.float32)
    y = np.zeros((n, y_cols), dtype=np.float32)
    return Dataset(n, DsWide, preloaded={"x": x, "y": y})


def test_a_run_gathers_no_component_that_no_action_reads():
    import tracemalloc

    ds = wide()
    p = ds.p.ds_bump().ds_bump()
    list(p.gen_batch(1_000))  # imports and first-call caches
    tracemalloc.start()
    try:
        out = [float(b.x.sum()) for b in p.gen_batch(1_000)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out == [1_000 * 4 * 3.0] * 4
    y_batch = 1_000 * 256 * 4  # one batch of y: 1 MB
    assert peak < y_batch / 2, peak  # y is never copied; x's batches are 16 kB
    last = next(iter(p.gen_batch(1_000)))
    assert last.y.shape == (1_000, 256) and not last.y.any()  # still there when read


def test_a_run_frees_each_output_batch_once_the_consumer_drops_it():
    import weakref

    MADE.clear()
    p = wide(n=10).p.ds_note_alive()
    alive_then = []
    for b in p.gen_batch(2):
        alive_then.append(int(b.y[0]))
        MADE.append(weakref.ref(b))
        del b
    # while batch k is made, the consumer has dropped batches 0..k-1: none is held
    assert alive_then == [0] * 5


def test_batches_own_their_ids_and_rows_and_read_the_right_items():
    ds = wide(n=12, y_cols=2)
    for b in ds.p.gen_batch(5, shuffle=True, seed=3):
        assert b.indices.base is None  # not a view that keeps the epoch's order alive
        np.testing.assert_array_equal(b.x, ds.preloaded["x"][b.indices])
    part = ds.split(0.5, shuffle=True, seed=1)[1]
    b = part.create_batch(part.indices[::-1])
    np.testing.assert_array_equal(b.indices, part.indices[::-1])
    np.testing.assert_array_equal(b.y, ds.preloaded["y"][part.indices[::-1]])


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_prefetch_workers_give_the_batches_a_sequential_run_gives(executor):
    ds = wide(n=40, y_cols=3)
    p = ds.p.ds_bump()
    expected = list(p.gen_batch(8))
    got = list(p.gen_batch(8, prefetch=2, executor=executor))
    assert got == expected
    assert all(np.array_equal(g.y, e.y) for g, e in zip(got, expected, strict=True))


@pytest.mark.parametrize(
    "ds",
    [
        wide(n=30, y_cols=2),  # a range index: the ids are the rows
        Dataset(DatasetIndex(np.arange(100, 130)), DsWide, preloaded=wide(30, 2).preloaded),
        wide(n=60, y_cols=2).split(0.5, shuffle=True, seed=2)[1],  # rows of another index
        Dataset(30, DsWide),  # nothing preloaded
    ],
    ids=["range", "ids", "subset", "no-data"],
)
def test_batches_made_in_a_row_equal_the_batches_made_one_by_one(ds):
    order = np.random.default_rng(0).permutation(len(ds))
    positions = [order[:7], order[7:8], order[8:8], order[8:30]]
    one_by_one = [ds._batch_at(p) for p in positions]
    in_a_row = ds._batches_at(positions, [None] * len(positions))
    assert in_a_row == one_by_one
    for b in in_a_row:
        for name in ("x", "y"):
            value = getattr(b, name)
            assert value is None or not value.flags.writeable
        assert not b.indices.flags.writeable
    if ds.preloaded:  # one gather for them all: each batch holds a slice of it
        assert in_a_row[0].x.base is in_a_row[3].x.base is not None
    assert ds._batches_at([], []) == []
