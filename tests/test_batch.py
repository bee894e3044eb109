"""Batch: an immutable record of item ids and read-only, shared component arrays."""

from __future__ import annotations

import pickle
import re
import threading

import numpy as np
import pytest

from fpipe import (
    ActionError,
    Batch,
    Dataset,
    DatasetIndex,
    FpipeError,
    ImmutableBatchError,
    Pipeline,
    SkipBatch,
    action,
)
from fpipe.values import LazyRows

REPLACE_HINT = re.escape("return self.replace(images=")


class BatchImgs(Batch):
    components = ("images", "labels")

    @action
    def scale(self, k):
        return self.replace(images=self.images * k)

    @action
    def write_in_place(self):
        self.images[0] = 0
        return self

    @action
    def drop_odd(self):
        if int(self.indices[0]) % 2:
            raise SkipBatch
        return self

    @action
    def draw(self):
        self.pipeline.update_variable("draws", self.random.integers(1 << 30, size=2).tolist(), "a")
        return self


class BatchPlain(Batch):
    pass


class BatchOne(Batch):
    components = "masks"


def imgs(n=4, ids=None):
    ids = np.arange(n) if ids is None else np.asarray(ids)
    images = np.arange(len(ids) * 2, dtype=float).reshape(len(ids), 2)
    labels = np.arange(len(ids)) % 2
    return BatchImgs(ids, preloaded=(images, labels)), images, labels


# -- declaring components ---------------------------------------------------------------
def test_components_become_read_only_attributes():
    b, images, labels = imgs()
    assert BatchImgs.components == ("images", "labels")
    np.testing.assert_array_equal(b.images, images)
    np.testing.assert_array_equal(b.labels, labels)
    assert not b.images.flags.writeable
    assert not b.labels.flags.writeable


def test_a_single_string_component_is_one_component():
    b = BatchOne(np.arange(2), preloaded={"masks": np.zeros((2, 3))})
    assert BatchOne.components == ("masks",)
    assert b.masks.shape == (2, 3)


@pytest.mark.parametrize(
    ("comps", "match"),
    [
        (("a", "a"), "non-empty tuple of distinct identifiers"),
        (("not an id",), "non-empty tuple of distinct identifiers"),
        ((), "non-empty tuple of distinct identifiers"),
        (("replace",), "clash with Batch attributes"),
    ],
)
def test_bad_components_declaration_is_an_error(comps, match):
    with pytest.raises(TypeError, match=match):
        type("BatchBadDecl", (Batch,), {"components": comps})


def test_component_not_loaded_reads_as_none():
    b = BatchImgs(np.arange(3), preloaded={"images": np.ones((3, 1))})
    assert b.labels is None
    assert b.images.shape == (3, 1)


# -- preloaded forms -------------------------------------------------------------------
def test_preloaded_dict_tuple_and_single_array():
    images, labels = np.ones((3, 2)), np.arange(3)
    by_dict = BatchImgs(np.arange(3), preloaded={"images": images, "labels": labels})
    by_tuple = BatchImgs(np.arange(3), preloaded=(images, labels))
    for b in (by_dict, by_tuple):
        np.testing.assert_array_equal(b.images, images)
        np.testing.assert_array_equal(b.labels, labels)
    plain = BatchPlain(np.arange(3), preloaded=labels)
    np.testing.assert_array_equal(plain.data, labels)
    assert not plain.data.flags.writeable


def test_batch_without_preloaded_has_no_data():
    assert BatchPlain(np.arange(3)).data is None
    assert BatchImgs(np.arange(3)).images is None


def test_data_of_a_batch_with_components_is_a_read_only_mapping():
    b, _, _ = imgs()
    assert set(b.data) == {"images", "labels"}
    with pytest.raises(TypeError, match="does not support item assignment"):
        b.data["images"] = np.zeros((4, 2))


def test_preloaded_list_becomes_an_array():
    b = BatchPlain(np.arange(3), preloaded=[1, 2, 3])
    assert isinstance(b.data, np.ndarray)
    assert b.data.tolist() == [1, 2, 3]
    assert not b.data.flags.writeable


def test_ragged_preloaded_keeps_one_object_per_item():
    b = BatchPlain(np.arange(2), preloaded=[[1, 2], [3]])
    assert b.data.dtype == object
    assert b.data[1] == [3]


def test_items_of_a_ragged_component_cannot_change():
    b = BatchPlain(np.arange(2), preloaded=[[1, 2], [3]])
    with pytest.raises(TypeError, match="cannot change; make a copy"):
        b.data[0].append(1)
    with pytest.raises(TypeError, match="cannot change"):
        b.data[0][0] = 9
    with pytest.raises(ValueError, match="read-only"):
        b.data[1] = [4]
    assert b.data[0] == [1, 2] and b.data[1] == [3]
    assert list(b.data[0]) == [1, 2]  # a plain list to change is one call away


def test_arrays_and_dicts_inside_an_object_component_are_frozen_copies():
    first, second = np.zeros(2), np.zeros(3)
    b = BatchPlain(np.arange(2), preloaded=[first, second])
    assert b.data.dtype == object
    with pytest.raises(ValueError, match="read-only"):
        b.data[0][0] = 5.0
    first[:] = 7.0  # the caller's arrays stay its own
    assert first.flags.writeable and b.data[0].tolist() == [0.0, 0.0]
    d = BatchPlain(np.arange(2), preloaded=[{"k": [1]}, {"k": [2]}])
    with pytest.raises(TypeError, match="cannot change"):
        d.data[0]["k"] = 3
    with pytest.raises(TypeError, match="cannot change"):
        d.data[1]["k"].append(3)
    assert d.data[1] == {"k": [2]}


def test_replace_with_an_object_array_freezes_its_items_and_leaves_the_callers_alone():
    b = BatchPlain(np.arange(2), preloaded=np.zeros(2))
    items = np.empty(2, dtype=object)
    items[0], items[1] = [1], [2, 3]
    c = b.replace(data=items)
    items[0].append(5)
    with pytest.raises(TypeError, match="cannot change"):
        c.data[1].append(4)
    assert c.data[0] == [1] and c.data[1] == [2, 3]
    assert items.flags.writeable and items[0] == [1, 5]


def test_frozen_items_survive_select_merge_and_pickling():
    b = BatchPlain(np.arange(3), preloaded=[[1], [2, 3], np.arange(2)])
    for c in (
        b.select([2, 0]),
        b.select(slice(0, 2)),
        Batch.merge([b, b]),
        pickle.loads(pickle.dumps(b)),
    ):
        assert not c.data.flags.writeable
        for item in c.data:
            if isinstance(item, list):
                with pytest.raises(TypeError, match="cannot change"):
                    item.append(0)
            else:
                assert not item.flags.writeable
    back = pickle.loads(pickle.dumps(b))
    assert back == b
    assert not back.data[2].flags.writeable


def test_tuple_of_wrong_length_is_an_error():
    with pytest.raises(ValueError, match=r"tuple of 1 arrays but BatchImgs has 2 components"):
        BatchImgs(np.arange(3), preloaded=(np.ones(3),))


def test_misaligned_component_length_is_an_error():
    with pytest.raises(ValueError, match=r"component 'labels' has shape \(2,\) for 3 items"):
        BatchImgs(np.arange(3), preloaded=(np.ones((3, 2)), np.ones(2)))


def test_scalar_component_is_an_error():
    with pytest.raises(ValueError, match=r"component 'data' has shape \(\) for 3 items"):
        BatchPlain(np.arange(3), preloaded=np.float64(1.0))


def test_single_array_for_a_batch_with_components_is_an_error():
    with pytest.raises(TypeError, match="must be a dict or a tuple of arrays"):
        BatchImgs(np.arange(3), preloaded=np.ones(3))


def test_unknown_preloaded_key_is_an_error():
    with pytest.raises(ValueError, match=r"components \['masks'\] that BatchImgs does not declare"):
        BatchImgs(np.arange(3), preloaded={"masks": np.ones(3)})


def test_preloaded_arrays_are_taken_without_a_copy_and_not_mutated():
    images = np.arange(6.0).reshape(3, 2)
    labels = np.array([5, 6, 7])
    before = images.copy(), labels.copy()
    b = BatchImgs(np.arange(3), preloaded=(images, labels))
    c = b.scale(10.0)
    np.testing.assert_array_equal(images, before[0])
    np.testing.assert_array_equal(labels, before[1])
    np.testing.assert_array_equal(c.images, before[0] * 10)
    # the batch takes the caller's memory instead of copying it: it is read-only now
    assert b.labels is labels and np.shares_memory(b.images, images)
    assert not images.flags.writeable and not labels.flags.writeable


def test_already_read_only_input_is_used_as_is():
    arr = np.arange(3)
    arr.setflags(write=False)
    assert BatchPlain(np.arange(3), preloaded=arr).data is arr


def test_a_dataset_preloaded_array_written_by_the_caller_fails_and_batches_are_unchanged():
    x = np.zeros((4, 2))
    ds = Dataset(4, BatchImgs, preloaded={"images": x})
    with pytest.raises(ValueError, match="read-only"):
        x[:] = 9.0
    np.testing.assert_array_equal(ds.create_batch([2, 0]).images, np.zeros((2, 2)))


def test_a_dataset_preloaded_view_of_a_held_array_is_copied():
    held = np.zeros((10, 2))
    ds = Dataset(4, BatchImgs, preloaded={"images": held[2:6]})
    held[:] = 9.0  # the caller's array stays writable, the dataset has its own copy
    np.testing.assert_array_equal(ds.create_batch([0, 3]).images, np.zeros((2, 2)))
    np.testing.assert_array_equal(ds.preloaded["images"], np.zeros((4, 2)))


def test_select_and_pickling_keep_components_read_only_and_owned():
    b = BatchPlain(np.arange(4), preloaded=np.arange(8.0).reshape(4, 2))
    picked = b.select([3, 1])
    sliced = b.select(slice(1, 3))
    back = pickle.loads(pickle.dumps(b))
    for c in (picked, sliced, back):
        assert not c.data.flags.writeable
        base = c.data.base
        assert base is None or not base.flags.writeable
    assert np.shares_memory(sliced.data, b.data)  # a slice of a read-only array is shared


# -- immutability -----------------------------------------------------------------------
def test_setting_a_component_attribute_says_batches_are_immutable():
    b, _, _ = imgs()
    with pytest.raises(ImmutableBatchError, match=r"Batches are immutable.*" + REPLACE_HINT):
        b.images = np.zeros((4, 2))


def test_setting_any_attribute_or_deleting_is_refused():
    b, _, _ = imgs()
    with pytest.raises(ImmutableBatchError, match=r"cannot set BatchImgs\.extra"):
        b.extra = 1
    with pytest.raises(ImmutableBatchError, match=r"cannot delete BatchImgs\.images"):
        del b.images


def test_writing_into_a_component_directly_fails():
    b, images, _ = imgs()
    with pytest.raises(ValueError, match="read-only"):
        b.images[0, 0] = -1.0
    assert images[0, 0] == 0.0


def test_in_place_write_inside_an_action_explains_immutability():
    b, images, _ = imgs()
    with pytest.raises(ImmutableBatchError, match=r"batches are immutable.*" + REPLACE_HINT):
        b.write_in_place()
    assert images[0, 0] == 0.0 and images[0, 1] == 1.0


def test_in_place_write_in_a_pipeline_explains_immutability():
    _, images, labels = imgs()
    ds = Dataset(4, BatchImgs, preloaded=(images, labels))
    with pytest.raises(ActionError, match=r"write_in_place.*batches are immutable") as info:
        (Pipeline().write_in_place() << ds).run(2)
    assert REPLACE_HINT.replace("\\", "") in str(info.value)
    assert images[0, 0] == 0.0 and images[0, 1] == 1.0


def test_item_view_is_read_only():
    b, _, _ = imgs()
    with pytest.raises(ImmutableBatchError, match=r"cannot set item\.labels.*replace\(labels="):
        b[0].labels = 3


def test_indices_are_read_only():
    b, _, _ = imgs()
    with pytest.raises(ValueError, match="read-only"):
        b.indices[0] = 9


# -- replace ------------------------------------------------------------------------------
def test_replace_returns_a_new_batch_and_leaves_the_old_one_unchanged():
    b, images, _ = imgs()
    c = b.replace(images=np.zeros((4, 2)))
    assert c is not b
    assert type(c) is BatchImgs
    np.testing.assert_array_equal(b.images, images)
    np.testing.assert_array_equal(c.images, np.zeros((4, 2)))
    assert c.indices is b.indices


def test_replace_shares_untouched_components():
    b, _, labels = imgs()
    c = b.replace(images=b.images + 1)
    assert c.labels is b.labels
    assert np.shares_memory(c.labels, labels)


def test_replace_takes_an_array_that_owns_its_memory_without_a_copy():
    b, _, _ = imgs()
    new = np.full((4, 2), 3.0)
    c = b.replace(images=new)
    assert c.images is new
    assert not c.images.flags.writeable


def test_writing_to_the_callers_array_after_replace_fails_and_the_batch_is_unchanged():
    b, _, _ = imgs()
    mine = np.full((4, 2), 3.0)
    c = b.replace(images=mine)
    with pytest.raises(ValueError, match="read-only"):
        mine[:] = 5.0
    with pytest.raises(ValueError, match="read-only"):
        np.add(mine, 1.0, out=mine)
    np.testing.assert_array_equal(c.images, np.full((4, 2), 3.0))


@pytest.mark.parametrize(
    "view",
    [
        lambda held: held[:4],
        lambda held: held[::2],
        lambda held: held.reshape(4, 4)[:, 1:3],
        lambda held: held.reshape(2, 8).T[:4],
    ],
    ids=["rows", "strided", "reshaped", "transposed"],
)
def test_a_view_of_an_array_the_caller_holds_is_copied(view):
    b, _, _ = imgs()
    held = np.arange(16.0).reshape(8, 2)
    arr = view(held)
    expected = arr.copy()
    c = b.replace(images=arr)
    held[:] = -1.0  # the caller still may write to its own array...
    np.testing.assert_array_equal(c.images, expected)  # ...and the batch does not change
    assert held.flags.writeable and not c.images.flags.writeable


def test_writing_through_the_callers_own_view_after_replace_does_not_change_the_batch():
    b, _, _ = imgs()
    held = np.zeros((4, 2))
    view = held[:]
    c = b.replace(images=view)
    view[:] = 7.0
    held[0] = 8.0
    np.testing.assert_array_equal(c.images, np.zeros((4, 2)))


def test_a_view_of_a_fresh_temporary_is_taken_without_a_copy():
    b, _, _ = imgs()
    c = b.replace(images=(b.images * 2).reshape(2, 4).reshape(4, 2))
    np.testing.assert_array_equal(c.images, b.images * 2)
    base = c.images.base
    assert base is not None  # not copied: still a view of the temporary...
    assert not base.flags.writeable  # ...which nobody can write to, not even through .base
    with pytest.raises(ValueError, match="read-only"):
        base[...] = 0.0


def test_a_view_of_an_array_made_before_is_taken_once_nobody_else_holds_it():
    b, _, _ = imgs()
    t = b.images * 2
    view = t[::-1]
    del t
    c = b.replace(images=view)
    assert c.images is view and not view.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        view[0, 0] = 1.0


def test_a_read_only_view_of_a_writable_array_the_caller_holds_is_copied():
    b, _, _ = imgs()
    held = np.zeros((4, 2))
    view = held.view()
    view.setflags(write=False)
    c = b.replace(images=view)
    held[:] = 3.0
    np.testing.assert_array_equal(c.images, np.zeros((4, 2)))


def test_replace_unknown_component_is_an_error_with_a_suggestion():
    b, _, _ = imgs()
    with pytest.raises(ValueError, match=r"no component 'image'.*Did you mean 'images'"):
        b.replace(image=np.zeros((4, 2)))


def test_replace_with_wrong_length_is_an_error():
    b, _, _ = imgs()
    with pytest.raises(ValueError, match=r"component 'images' has shape \(3, 2\) for 4 items"):
        b.replace(images=np.zeros((3, 2)))


def test_replace_with_none_unloads_a_component():
    b, _, _ = imgs()
    c = b.replace(labels=None)
    assert c.labels is None
    assert b.labels is not None


def test_replace_accepts_a_list():
    b, _, _ = imgs()
    c = b.replace(labels=[9, 8, 7, 6])
    assert c.labels.tolist() == [9, 8, 7, 6]
    assert not c.labels.flags.writeable


# -- reading ------------------------------------------------------------------------------
def test_indices_index_and_len():
    b, _, _ = imgs(ids=[10, 20, 30])
    assert b.indices.tolist() == [10, 20, 30]
    assert isinstance(b.index, DatasetIndex)
    assert b.index.indices.tolist() == [10, 20, 30]
    assert len(b) == 3


def test_batch_from_a_dataset_index_keeps_it():
    idx = DatasetIndex([3, 1, 2])
    b = BatchPlain(idx, preloaded=np.zeros(3))
    assert b.index is idx
    assert b.indices.tolist() == [3, 1, 2]


def test_item_view_has_component_attributes():
    b, images, labels = imgs(ids=[10, 20, 30])
    item = b[20]
    np.testing.assert_array_equal(item.images, images[1])
    assert item.labels == labels[1]
    assert "20" in repr(item)


def test_item_view_of_unloaded_component_is_none():
    b = BatchImgs(np.arange(2), preloaded={"labels": np.arange(2)})
    assert b[1].images is None


def test_item_view_unknown_component_is_an_error():
    b, _, _ = imgs()
    with pytest.raises(AttributeError, match=r"item has no component 'masks'"):
        _ = b[0].masks


def test_unknown_item_id_is_an_error():
    b, _, _ = imgs(ids=[10, 20, 30])
    with pytest.raises(KeyError, match=r"not in this DatasetIndex of 3 items: \[5\]"):
        b[5]


def test_many_ids_in_getitem_is_an_error():
    b, _, _ = imgs()
    with pytest.raises(TypeError, match="takes one item id"):
        b[[0, 1]]


def test_batch_is_not_iterable():
    b, _, _ = imgs()
    with pytest.raises(TypeError, match="BatchImgs is not iterable"):
        iter(b)


def test_repr_names_class_size_and_component_shapes():
    b = BatchImgs(np.arange(3), preloaded={"images": np.zeros((3, 2), dtype=np.float32)})
    assert repr(b) == "BatchImgs(3 items, images=float32[3, 2], labels=None)"


def test_batch_with_repeated_ids_has_indices_but_no_index():
    b = BatchPlain(np.arange(2), preloaded=np.zeros(2))
    doubled = Batch.merge([b, b])
    assert doubled.indices.tolist() == [0, 1, 0, 1]
    with pytest.raises(FpipeError, match="holds some item ids more than once"):
        _ = doubled.index


# -- select, split and merge ------------------------------------------------------------------
def test_select_positions_slice_and_mask():
    b, images, _ = imgs(ids=[10, 20, 30, 40])
    assert b.select([3, 0]).indices.tolist() == [40, 10]
    np.testing.assert_array_equal(b.select([3, 0]).images, images[[3, 0]])
    assert b.select(slice(1, 3)).indices.tolist() == [20, 30]
    mask = np.array([True, False, True, False])
    assert b.select(mask).indices.tolist() == [10, 30]


def test_select_with_bad_mask_or_float_positions_is_an_error():
    b, _, _ = imgs()
    with pytest.raises(ValueError, match=r"a mask must have one entry per item \(4\)"):
        b.select(np.array([True, False]))
    with pytest.raises(TypeError, match="positions must be ints"):
        b.select(np.array([0.5]))


def test_merge_concatenates_indices_and_components_in_order():
    a, ai, al = imgs(ids=[0, 1])
    b, bi, bl = imgs(ids=[5, 6, 7])
    m = Batch.merge([b, a])
    assert type(m) is BatchImgs
    assert m.indices.tolist() == [5, 6, 7, 0, 1]
    np.testing.assert_array_equal(m.images, np.concatenate([bi, ai]))
    np.testing.assert_array_equal(m.labels, np.concatenate([bl, al]))
    assert not m.images.flags.writeable and not m.indices.flags.writeable
    assert a.indices.tolist() == [0, 1]


def test_merge_of_one_batch_is_that_batch():
    a, _, _ = imgs()
    assert Batch.merge([a]) is a


def test_merge_of_no_batches_is_an_error():
    with pytest.raises(ValueError, match="needs at least one batch"):
        Batch.merge([])


def test_merge_of_different_components_is_an_error():
    a, _, _ = imgs()
    with pytest.raises(TypeError, match="cannot merge BatchImgs with BatchPlain"):
        Batch.merge([a, BatchPlain(np.arange(2), preloaded=np.zeros(2))])


def test_merge_with_a_component_missing_in_some_is_an_error():
    a, _, _ = imgs()
    b = BatchImgs(np.arange(2), preloaded={"images": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="component 'labels' is loaded in some and missing"):
        Batch.merge([a, b])


def test_merge_skips_a_component_missing_everywhere():
    a = BatchImgs(np.arange(2), preloaded={"images": np.zeros((2, 2))})
    m = Batch.merge([a, a])
    assert m.labels is None
    assert m.images.shape == (4, 2)


def test_split_cuts_consecutive_batches_and_split_then_merge_round_trips():
    b, images, labels = imgs(n=5)
    parts = b.split([2, 3])
    assert [p.indices.tolist() for p in parts] == [[0, 1], [2, 3, 4]]
    np.testing.assert_array_equal(parts[1].images, images[2:])
    m = Batch.merge(parts)
    assert m.indices.tolist() == b.indices.tolist()
    np.testing.assert_array_equal(m.labels, labels)


def test_split_sizes_may_leave_a_tail():
    b, _, _ = imgs(n=5)
    assert [len(p) for p in b.split([1, 1])] == [1, 1]


def test_split_sizes_larger_than_the_batch_is_an_error():
    b, _, _ = imgs(n=3)
    with pytest.raises(ValueError, match="sizes add up to 4 but the batch has 3 items"):
        b.split([2, 2])


# -- pickling -------------------------------------------------------------------------------
def test_pickle_round_trip_keeps_class_ids_and_components():
    b, images, labels = imgs(ids=[7, 8, 9])
    c = pickle.loads(pickle.dumps(b))
    assert type(c) is BatchImgs
    assert c.indices.tolist() == [7, 8, 9]
    np.testing.assert_array_equal(c.images, images[:3])
    np.testing.assert_array_equal(c.labels, labels[:3])
    assert not c.images.flags.writeable and not c.indices.flags.writeable
    assert c.scale(2.0).images[1, 0] == 2 * images[1, 0]


# -- run context ------------------------------------------------------------------------------
def test_pipeline_and_random_are_only_available_in_a_run():
    b, _, _ = imgs()
    with pytest.raises(FpipeError, match="only available while the batch goes through"):
        _ = b.pipeline
    with pytest.raises(FpipeError, match="only defined while the batch goes through"):
        _ = b.random
    with pytest.raises(FpipeError, match="only defined while the batch goes through"):
        b.random_for(0)


def test_batch_random_is_a_generator_reproducible_for_a_seed():
    _, images, labels = imgs(n=6)
    ds = Dataset(6, BatchImgs, preloaded=(images, labels))
    p = (Pipeline().init_variable("draws", []).draw().draw() << ds).run
    one = p(2, seed=11).get_variable("draws")
    two = p(2, seed=11).get_variable("draws")
    other = p(2, seed=12).get_variable("draws")
    assert len(one) == 6  # 3 batches x 2 steps
    assert one == two
    assert one != other
    assert len({tuple(d) for d in one}) == 6  # each (batch, step) gets its own stream


def test_batch_random_is_a_numpy_generator():
    ds = Dataset(2, BatchPlain, preloaded=np.zeros(2))
    seen = []

    def grab(batch):
        seen.append(batch.random)
        return batch

    (Pipeline().apply(grab) << ds).run(2, seed=1)
    assert isinstance(seen[0], np.random.Generator)


def test_skip_batch_drops_the_batch_from_the_output():
    _, images, labels = imgs(n=6)
    ds = Dataset(6, BatchImgs, preloaded=(images, labels))
    out = list((Pipeline().drop_odd() << ds).gen_batch(1))
    assert [b.indices.tolist() for b in out] == [[0], [2], [4]]
    assert issubclass(SkipBatch, Exception)


# -- value equality ----------------------------------------------------------------------------


def test_batches_with_the_same_class_ids_and_components_are_equal_and_hash_alike():
    a, _, _ = imgs(n=3)
    b, _, _ = imgs(n=3)
    assert a is not b and a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    assert pickle.loads(pickle.dumps(a)) == a


def test_batches_differ_by_ids_values_dtype_class_or_components():
    a, images, _ = imgs(n=3)
    assert a != imgs(ids=[0, 1, 5])[0]
    assert a != a.replace(images=a.images + 1)
    assert a != a.replace(images=a.images.astype(np.float32))
    assert a != a.replace(labels=None)
    assert a != BatchPlain(np.arange(3), preloaded=images)
    assert a != "a batch"


def test_batches_with_equal_object_components_are_equal():
    a = BatchPlain([0, 1], preloaded=[np.array([np.nan, 1.0]), np.zeros(3)])
    b = BatchPlain([0, 1], preloaded=[np.array([np.nan, 1.0]), np.zeros(3)])
    assert a == b
    assert a != BatchPlain([0, 1], preloaded=[np.array([np.nan, 2.0]), np.zeros(3)])
    assert BatchPlain([0, 1], preloaded=[[1], [2, 3]]) != BatchPlain(
        [0, 1], preloaded=[(1,), (2, 3)]
    )


def test_nan_equals_nan_in_batch_equality_and_the_run_context_does_not_count():
    b = BatchPlain([0, 1], preloaded=np.array([np.nan, 1.0]))
    assert b == BatchPlain([0, 1], preloaded=np.array([np.nan, 1.0]))
    ds = Dataset(4, BatchImgs, preloaded=(np.zeros((4, 2)), np.arange(4)))
    (in_run,) = list(ds.p.scale(1.0).gen_batch(4))
    assert in_run == ds.create_batch([0, 1, 2, 3])


# -- components gathered on first read (batches made from a dataset) ------------------------
class BatchXY(Batch):
    components = ("x", "y")


def xy_dataset(n=8):
    x = np.arange(n * 2, dtype=np.float64).reshape(n, 2)
    y = np.arange(n) * 10
    return Dataset(n, BatchXY, preloaded={"x": x, "y": y}), x.copy(), y.copy()


def pending(batch, name):
    """Whether ``batch`` holds component ``name`` still ungathered."""
    value = batch._data[name]
    return isinstance(value, LazyRows) and not value.gathered


def test_a_dataset_batch_gathers_a_component_when_it_is_first_read():
    ds, _, y = xy_dataset()
    b = ds.create_batch([5, 2])
    assert pending(b, "x") and pending(b, "y")
    got = b.y
    assert got.tolist() == y[[5, 2]].tolist() and not got.flags.writeable
    assert b.y is got and not pending(b, "y")
    assert pending(b, "x")  # reading one component gathers that one only


def test_untouched_components_stay_ungathered_through_replace_select_split_and_merge():
    ds, x, y = xy_dataset()
    b = ds.create_batch([0, 1, 2, 3])
    c = b.replace(x=np.zeros((4, 2)))
    assert c._data["y"] is b._data["y"] and pending(c, "y")  # shared, not gathered
    first, second = c.split([1, 3])
    picked, masked = c.select(np.array([3, 1])), c.select(np.array([True, False, True, False]))
    merged = BatchXY.merge([b.select(slice(2, 4)), ds.create_batch([6])])
    for part in (first, second, picked, masked, merged):
        assert pending(part, "y")
    assert repr(merged) == "BatchXY(3 items, x=float64[3, 2], y=int64[3])"
    assert pending(merged, "x") and pending(merged, "y")  # repr reads shapes only
    assert second.y.tolist() == y[[1, 2, 3]].tolist()
    assert picked.y.tolist() == y[[3, 1]].tolist() and masked.y.tolist() == y[[0, 2]].tolist()
    assert merged.x.tolist() == x[[2, 3, 6]].tolist() and merged.y.tolist() == y[[2, 3, 6]].tolist()


def test_merge_and_select_of_gathered_or_mixed_components_give_the_same_values():
    ds, x, y = xy_dataset()
    b = ds.create_batch([4, 0, 7])
    gathered = ds.create_batch([1, 2])
    assert gathered.y.tolist() == y[[1, 2]].tolist()  # gathered now
    eager = BatchXY([3], preloaded={"x": x[[3]], "y": y[[3]]})
    merged = BatchXY.merge([b, gathered, eager])
    assert merged.y.tolist() == y[[4, 0, 7, 1, 2, 3]].tolist()
    assert merged.x.tolist() == x[[4, 0, 7, 1, 2, 3]].tolist()
    assert gathered.select(slice(1, None)).y.tolist() == [y[2]]


def test_lazy_batches_equal_and_hash_like_the_eager_batches_they_stand_for():
    ds, x, y = xy_dataset()
    lazy = ds.create_batch([6, 1])
    eager = BatchXY([6, 1], preloaded={"x": x[[6, 1]], "y": y[[6, 1]]})
    assert ds.create_batch([6, 1]) == lazy  # same rows of the same arrays: nothing gathered
    assert pending(lazy, "x") and pending(lazy, "y")
    assert lazy == eager and eager == lazy and hash(lazy) == hash(eager)
    assert lazy != ds.create_batch([1, 6]) and lazy != eager.replace(y=np.array([0, 0]))
    assert lazy.replace(x=None) != eager


def test_pickled_lazy_batch_carries_its_rows_and_not_the_datasets_arrays():
    n = 50_000
    ds = Dataset(n, BatchXY, preloaded={"x": np.zeros((n, 2)), "y": np.arange(n)})
    b = ds.create_batch([10, 20, 30])
    data = pickle.dumps(b)
    assert len(data) < 2_000  # three rows, not the 1.2 MB arrays
    back = pickle.loads(data)
    assert back == b and back.y.tolist() == [10, 20, 30]
    assert all(type(v) is np.ndarray and not v.flags.writeable for v in back._data.values())


def test_data_items_and_testing_helpers_read_lazy_components_like_eager_ones():
    from fpipe.testing import assert_batches_equal

    ds, x, y = xy_dataset()
    b = ds.create_batch([3, 4])
    assert set(b.data) == {"x", "y"} and b.data["y"].tolist() == y[[3, 4]].tolist()
    with pytest.raises(TypeError, match="does not support item assignment"):
        b.data["y"] = np.zeros(2)
    assert b[4].x.tolist() == x[4].tolist() and b[3].y == y[3]
    assert b.components == ("x", "y")
    eager = BatchXY([3, 4], preloaded={"x": x[[3, 4]], "y": y[[3, 4]]})
    assert_batches_equal(eager, ds.create_batch([3, 4]))
    with pytest.raises(AssertionError, match="component 'y' differs"):
        assert_batches_equal(eager, ds.create_batch([3, 4]).replace(y=np.array([1, 2])))
    plain = Dataset(3, BatchPlain, preloaded=np.arange(3.0)).create_batch([2])
    assert plain.data.tolist() == [2.0] and not plain.data.flags.writeable


def test_threads_reading_a_lazy_component_at_once_share_one_gathered_array():
    ds = Dataset(20_000, BatchXY, preloaded={"x": np.zeros((20_000, 64)), "y": np.arange(20_000)})
    b = ds.create_batch(np.arange(20_000)[::-1])
    start = threading.Barrier(6)
    got = []

    def read():
        start.wait()
        got.append(b.x)

    threads = [threading.Thread(target=read) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 6 and all(a is got[0] for a in got)


def test_gather_all_gathers_every_pending_component_of_the_batch():
    ds, _, _ = xy_dataset()
    b = ds.create_batch([1, 2])
    assert b._gather_all() is b
    assert not pending(b, "x") and not pending(b, "y")


class Pics(Batch):
    components = ("images", "labels")


def test_items_read_components_through_class_properties_and_pickle():
    import pickle

    b = Dataset(4, Pics, preloaded={"images": np.arange(4.0)}).create_batch([1, 3])
    item = b[3]
    assert type(item).__name__ == "PicsItem" and isinstance(type(item).__dict__["images"], property)
    assert item.images == 3.0 and item.labels is None
    assert pickle.loads(pickle.dumps(item)).images == 3.0
    with pytest.raises(AttributeError, match="Did you mean 'images'"):
        item.imgs
