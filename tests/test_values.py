"""fpipe.values: frozen values, arrays a batch owns, and structural equality."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import threading
import time
import weakref
from collections import namedtuple

import numpy as np
import pytest
from pyrsistent import pmap

from fpipe.values import (
    FrozenDict,
    FrozenList,
    LazyRows,
    arrays_equal,
    freeze,
    freeze_kwargs,
    freeze_objects,
    materialized,
    own,
    readonly,
    thaw,
    value_hash,
    values_equal,
)

Point = namedtuple("Point", "x y")


# -- freeze --------------------------------------------------------------------------------
def test_freeze_copies_an_array_read_only_and_the_callers_array_stays_its_own():
    a = np.arange(3.0)
    frozen = freeze(a)
    a[:] = -1.0
    assert frozen.tolist() == [0.0, 1.0, 2.0]
    assert not frozen.flags.writeable and a.flags.writeable
    assert not np.shares_memory(frozen, a)


def test_freeze_makes_containers_immutable_and_independent_of_the_caller():
    inner = [1, 2]
    arr = np.zeros(2)
    value = {"list": inner, "arr": arr, "set": {1}, "bytes": bytearray(b"ab"), "t": (inner,)}
    frozen = freeze(value)
    inner.append(3)
    arr[:] = 5.0
    value["new"] = 1
    assert type(frozen) is FrozenDict and set(frozen) == {"list", "arr", "set", "bytes", "t"}
    assert type(frozen["list"]) is FrozenList and frozen["list"] == [1, 2]
    assert frozen["arr"].tolist() == [0.0, 0.0] and not frozen["arr"].flags.writeable
    assert frozen["set"] == frozenset({1}) and isinstance(frozen["set"], frozenset)
    assert frozen["bytes"] == b"ab" and type(frozen["bytes"]) is bytes
    assert type(frozen["t"]) is tuple and type(frozen["t"][0]) is FrozenList


def test_freeze_keeps_atoms_frozen_values_and_unchanged_tuples_as_they_are():
    for atom in (1, 2.5, "s", b"b", None, True, range(3), 1j):
        assert freeze(atom) is atom
    fl, fd = FrozenList([1]), FrozenDict(a=1)
    assert freeze(fl) is fl and freeze(fd) is fd
    t = (1, "a", (2,))
    assert freeze(t) is t
    fn = len
    assert freeze(fn) is fn


def test_freeze_keeps_named_tuples_and_persistent_maps():
    p = freeze(Point([1], 2))
    assert type(p) is Point and type(p.x) is FrozenList
    m = freeze(pmap({"a": [1]}))
    assert type(m["a"]) is FrozenList
    kwargs = freeze_kwargs({"k": [1, 2]})
    assert type(kwargs["k"]) is FrozenList


def test_freeze_of_an_object_array_freezes_every_item():
    items = np.empty(2, dtype=object)
    items[0], items[1] = [1], {"k": np.ones(1)}
    frozen = freeze(items)
    assert frozen is not items and not frozen.flags.writeable
    assert type(frozen[0]) is FrozenList and not frozen[1]["k"].flags.writeable
    assert type(items[0]) is list  # the caller's items are left alone


# -- FrozenList / FrozenDict ---------------------------------------------------------------
@pytest.mark.parametrize(
    "change",
    [
        lambda x: x.append(1),
        lambda x: x.extend([1]),
        lambda x: x.insert(0, 1),
        lambda x: x.pop(),
        lambda x: x.remove(1),
        lambda x: x.clear(),
        lambda x: x.sort(),
        lambda x: x.reverse(),
        lambda x: x.__setitem__(0, 9),
        lambda x: x.__delitem__(0),
        lambda x: x.__iadd__([1]),
        lambda x: x.__imul__(2),
    ],
)
def test_a_frozen_list_refuses_every_change(change):
    x = FrozenList([1, 2])
    with pytest.raises(TypeError, match=r"this list .* cannot change; make a copy .*list\(x\)"):
        change(x)
    assert x == [1, 2]


def test_in_place_operators_on_a_frozen_list_name_are_refused_too():
    x = FrozenList([1])
    with pytest.raises(TypeError, match="cannot change"):
        x += [2]
    assert x == [1]


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.__setitem__("b", 2),
        lambda d: d.__delitem__("a"),
        lambda d: d.pop("a"),
        lambda d: d.popitem(),
        lambda d: d.clear(),
        lambda d: d.update(b=2),
        lambda d: d.setdefault("b", 2),
        lambda d: d.__ior__({"b": 2}),
    ],
)
def test_a_frozen_dict_refuses_every_change(change):
    d = FrozenDict(a=1)
    with pytest.raises(TypeError, match=r"this dict .* cannot change; make a copy .*dict\(x\)"):
        change(d)
    assert d == {"a": 1}


def test_frozen_containers_are_still_lists_and_dicts_to_python_and_numpy():
    x, d = FrozenList([1, 2]), FrozenDict(a=1)
    assert isinstance(x, list) and isinstance(d, dict)
    assert np.asarray(x).tolist() == [1, 2]
    joined = x + [3]  # noqa: RUF005  # concatenation is what is tested
    assert joined == [1, 2, 3] and type(joined) is list
    assert {**d, "b": 2} == {"a": 1, "b": 2}
    assert copy.copy(x) is x and copy.deepcopy(d) is d


def test_frozen_containers_are_hashable_consistently_with_equality():
    assert hash(FrozenList([1, (2,)])) == hash(FrozenList([1, (2,)]))
    assert hash(FrozenDict(a=[1])) == hash(freeze({"a": [1]}))
    assert len({FrozenList([1]), FrozenList([1])}) == 1


def test_frozen_values_survive_pickling_frozen():
    value = freeze({"l": [1, [2, np.array([np.nan, 1.0])]], "d": {"k": (3,)}})
    back = pickle.loads(pickle.dumps(value))
    assert type(back) is FrozenDict and type(back["l"]) is FrozenList
    assert type(back["l"][1]) is FrozenList and type(back["d"]) is FrozenDict
    assert values_equal(back, value)
    with pytest.raises(TypeError, match="cannot change"):
        back["l"].append(0)
    assert type(pickle.loads(pickle.dumps(FrozenList([1])))) is FrozenList


# -- thaw ------------------------------------------------------------------------------------
def test_thaw_gives_a_mutable_copy_that_shares_nothing_with_the_frozen_value():
    frozen = freeze({"l": [1, np.zeros(2)], "t": ([1],), "p": Point(1, 2)})
    thawed = thaw(frozen)
    assert type(thawed) is dict and type(thawed["l"]) is list
    assert type(thawed["t"]) is tuple and type(thawed["t"][0]) is list
    assert thawed["p"] == Point(1, 2)
    thawed["l"][1][0] = 5.0
    thawed["l"].append(3)
    assert frozen["l"][1].tolist() == [0.0, 0.0] and len(frozen["l"]) == 2
    assert values_equal(thaw(frozen), thaw(frozen))


# -- equality --------------------------------------------------------------------------------
def test_arrays_equal_compares_dtype_shape_and_values_with_nan_equal_to_nan():
    a = np.array([np.nan, 1.0])
    assert arrays_equal(a, a.copy())
    assert arrays_equal(np.array([complex(np.nan, 1)]), np.array([complex(np.nan, 1)]))
    assert not arrays_equal(a, a.astype(np.float32))
    assert not arrays_equal(a, a.reshape(1, 2))
    assert not arrays_equal(a, np.array([np.nan, 2.0]))
    assert arrays_equal(np.arange(3), np.arange(3)) and not arrays_equal(np.arange(3), np.ones(3))
    assert arrays_equal(np.array(["a"]), np.array(["a"]))


def test_arrays_equal_compares_object_arrays_item_by_item():
    def objects(*items):
        out = np.empty(len(items), dtype=object)
        for i, item in enumerate(items):
            out[i] = item
        return out

    assert arrays_equal(objects([1], np.array([np.nan])), objects([1], np.array([np.nan])))
    assert not arrays_equal(objects([1]), objects((1,)))
    assert not arrays_equal(objects(np.zeros(2)), objects(np.zeros(3)))


def test_values_equal_is_structural_and_tells_lists_from_tuples():
    assert values_equal([1, {"a": np.array([np.nan])}], [1, {"a": np.array([np.nan])}])
    assert values_equal(FrozenList([1, 2]), [1, 2])
    assert values_equal(FrozenDict(a=1), {"a": 1})
    assert not values_equal([1, 2], (1, 2))
    assert not values_equal([1, 2], [1, 2, 3])
    assert not values_equal({"a": 1}, {"b": 1})
    assert not values_equal(np.zeros(2), [0.0, 0.0])
    assert not values_equal(1, 1.0)
    assert not values_equal(np.zeros(2), np.zeros(2, dtype=np.float32))


def test_values_equal_is_false_when_comparing_raises():
    class Grumpy:
        def __eq__(self, other):
            raise RuntimeError("no")

        __hash__ = object.__hash__

    g = Grumpy()
    assert values_equal(g, g)
    assert not values_equal(g, Grumpy())


def test_equal_values_hash_alike():
    pairs = [
        ([1, np.zeros(2)], FrozenList([1, np.zeros(2)])),
        ({"a": [1]}, FrozenDict(a=FrozenList([1]))),
        (np.array([np.nan]), np.array([np.nan])),
    ]
    for a, b in pairs:
        assert values_equal(a, b)
        assert value_hash(a) == value_hash(b)


# -- read-only arrays a batch owns -------------------------------------------------------------
def test_readonly_marks_the_array_itself():
    a = np.zeros(2)
    assert readonly(a) is a and not a.flags.writeable


def test_own_takes_an_array_that_owns_its_memory_in_place():
    a = np.zeros(3)
    assert own(a) is a
    with pytest.raises(ValueError, match="read-only"):
        a[0] = 1.0


def test_own_copies_a_view_of_an_array_someone_holds():
    held = np.zeros(4)
    taken = own(held[1:3])
    held[:] = 1.0
    assert taken.tolist() == [0.0, 0.0] and not taken.flags.writeable
    assert held.flags.writeable


def test_own_takes_a_view_of_a_fresh_temporary_in_place_with_its_base():
    x = np.ones(4)
    view = (x * 2)[::2]
    taken = own(view)
    assert taken is view
    assert not view.flags.writeable and not view.base.flags.writeable


def test_own_copies_a_view_whose_base_has_weak_references():
    base = np.zeros(4)
    ref = weakref.ref(base)
    view = base[:2]
    del base
    taken = own(view)
    assert taken is not view and ref() is not None
    ref()[:] = 1.0
    assert taken.tolist() == [0.0, 0.0]


def test_own_keeps_arrays_nobody_can_write_and_copies_those_a_writer_holds():
    frozen = readonly(np.zeros(4))
    assert own(frozen[1:]).base is frozen  # a read-only view of read-only memory is shared
    from_bytes = np.frombuffer(b"abcd", dtype=np.uint8)
    assert own(from_bytes) is from_bytes
    buffer = bytearray(b"abcd")
    from_buffer = own(np.frombuffer(buffer, dtype=np.uint8))
    buffer[0] = 0
    assert from_buffer.tolist() == list(b"abcd")
    held = np.zeros(2)
    sneaky = held.view()
    sneaky.setflags(write=False)
    taken = own(sneaky)
    held[:] = 1.0
    assert taken.tolist() == [0.0, 0.0]


def test_freeze_objects_freezes_items_and_leaves_the_callers_array_alone():
    items = np.empty((2, 1), dtype=object)
    items[0, 0], items[1, 0] = [1], (np.zeros(1), {"k": 1})
    frozen = freeze_objects(items)
    assert frozen.shape == (2, 1) and not frozen.flags.writeable
    assert type(frozen[0, 0]) is FrozenList
    assert not frozen[1, 0][0].flags.writeable and type(frozen[1, 0][1]) is FrozenDict
    assert items.flags.writeable and type(items[0, 0]) is list


def test_freeze_objects_takes_an_array_of_immutable_items_as_it_is():
    items = np.empty(3, dtype=object)
    items[0], items[1], items[2] = "a", (1, 2), readonly(np.zeros(1))
    assert freeze_objects(items) is items and not items.flags.writeable
    again = freeze_objects(items[::2])
    assert again[0] == "a" and again[1] is items[2]


def test_importing_values_does_not_import_heavy_libraries():
    code = (
        "import sys, fpipe.values; "
        "print([m for m in ('tensorflow', 'keras', 'torch', 'distributed') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


# -- LazyRows --------------------------------------------------------------------------------
class CountingSource(np.ndarray):
    """A read-only array that counts (and slows down) the gathers made from it."""

    gathers = 0

    def __getitem__(self, key):
        if isinstance(key, np.ndarray):  # a gather of rows, not numpy's own slicing
            type(self).gathers += 1
            time.sleep(0.01)  # widen the window in which threads could race
            return np.asarray(self)[key]
        return super().__getitem__(key)


def counting_source(n=10, cols=3):
    source = np.arange(n * cols, dtype=np.float64).reshape(n, cols).view(CountingSource)
    CountingSource.gathers = 0
    return readonly(source)


def test_lazy_rows_gather_on_first_read_only_and_then_always_give_the_same_array():
    source = counting_source()
    lazy = LazyRows(source, readonly(np.array([4, 1])))
    assert (lazy.shape, lazy.dtype, len(lazy), lazy.gathered) == ((2, 3), source.dtype, 2, False)
    assert CountingSource.gathers == 0 and "not gathered" in repr(lazy)
    first = lazy.get()
    assert first.tolist() == [[12.0, 13.0, 14.0], [3.0, 4.0, 5.0]]
    assert not first.flags.writeable and type(first) is np.ndarray
    assert lazy.get() is first and materialized(lazy) is first and lazy.gathered
    assert CountingSource.gathers == 1 and "gathered" in repr(lazy)


def test_lazy_rows_read_by_many_threads_at_once_are_gathered_once():
    source = counting_source()
    lazy = LazyRows(source, readonly(np.arange(10)))
    start = threading.Barrier(8)
    got = []

    def read():
        start.wait()
        got.append(lazy.get())

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert CountingSource.gathers == 1
    assert len(got) == 8 and all(a is got[0] for a in got)


def test_lazy_rows_take_rows_of_rows_without_gathering():
    source = counting_source()
    lazy = LazyRows(source, readonly(np.array([5, 2, 7, 0])))
    part = lazy.take(slice(1, 3))
    picked = lazy.take(np.array([0, 3]))
    masked = lazy.take(np.array([True, False, False, True]))
    assert CountingSource.gathers == 0
    assert part.get().tolist() == np.asarray(source)[[2, 7]].tolist()
    assert picked.get().tolist() == masked.get().tolist() == np.asarray(source)[[5, 0]].tolist()
    assert not lazy.gathered  # taking from it gathers nothing of it


def test_lazy_rows_compare_by_source_and_rows_and_act_as_their_array():
    source = readonly(np.arange(12.0).reshape(6, 2))
    a = LazyRows(source, readonly(np.array([1, 3])))
    assert a.same_rows(LazyRows(source, readonly(np.array([1, 3]))))
    assert not a.same_rows(LazyRows(source, readonly(np.array([3, 1]))))
    assert not a.same_rows(LazyRows(source.copy(), readonly(np.array([1, 3]))))
    assert not a.gathered  # comparing rows gathers nothing
    assert np.asarray(a).tolist() == [[2.0, 3.0], [6.0, 7.0]]
    assert np.asarray(a, dtype=np.int64).dtype == np.int64
    copied = np.array(a, copy=True)
    assert copied.flags.writeable and not np.shares_memory(copied, a.get())
    assert materialized(source) is source and materialized(None) is None


def test_pickled_lazy_rows_carry_their_rows_only_as_a_read_only_array():
    source = readonly(np.zeros((100_000, 4)))
    lazy = LazyRows(source, readonly(np.array([7, 8])))
    data = pickle.dumps(lazy)
    assert len(data) < 1_000  # the two rows, not the 3.2 MB source
    back = pickle.loads(data)
    assert type(back) is np.ndarray and back.shape == (2, 4) and not back.flags.writeable
