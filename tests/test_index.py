from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from fpipe import rng
from fpipe.files import FilesIndex
from fpipe.index import DatasetIndex

# -- construction ---------------------------------------------------------------------


def test_int_gives_range_of_ids():
    idx = DatasetIndex(5)
    assert idx.indices.tolist() == [0, 1, 2, 3, 4]
    assert idx.indices.dtype == np.int64
    assert len(idx) == 5
    assert DatasetIndex(np.int32(3)) == DatasetIndex(3)


def test_range_sequence_and_array_inputs():
    assert DatasetIndex(range(2, 8, 2)).indices.tolist() == [2, 4, 6]
    assert DatasetIndex(range(3, 0, -1)).get_pos(1) == 2
    assert DatasetIndex([5, 3, 9]).indices.tolist() == [5, 3, 9]
    assert DatasetIndex(("b", "a")).indices.tolist() == ["b", "a"]
    assert DatasetIndex(np.array([7, 1], dtype=np.uint8)).indices.dtype == np.int64
    assert DatasetIndex(np.array(["x", "y"], dtype=object)).indices.tolist() == ["x", "y"]
    assert DatasetIndex(iter([4, 2])).indices.tolist() == [4, 2]


def test_arange_inputs_are_detected_as_positions():
    assert DatasetIndex(4)._is_range
    assert DatasetIndex(range(4))._is_range
    assert DatasetIndex(np.arange(4))._is_range
    assert DatasetIndex([0, 1, 2])._is_range
    assert not DatasetIndex([1, 2, 3])._is_range
    assert not DatasetIndex([0, 2, 1])._is_range


def test_copy_from_index_shares_the_ids():
    src = DatasetIndex(["a", "c", "b"])
    assert src.get_pos("b") == 2
    copy = DatasetIndex(src)
    assert copy.indices is src.indices
    assert copy == src
    assert copy.get_pos("c") == 1


def test_plain_index_from_files_index_keeps_ids_only(tmp_path):
    (tmp_path / "a.txt").write_text("")
    files = FilesIndex(str(tmp_path / "*"))
    plain = DatasetIndex(files)
    assert type(plain) is DatasetIndex
    assert list(plain) == ["a.txt"]
    assert plain != files


def test_input_array_is_not_aliased():
    arr = np.array([3, 1, 2])
    idx = DatasetIndex(arr)
    arr[0] = 100
    assert idx.indices.tolist() == [3, 1, 2]


@pytest.mark.parametrize("empty", [0, [], range(0), np.array([], dtype=np.int64)])
def test_empty_input_is_rejected(empty):
    with pytest.raises(ValueError, match="empty"):
        DatasetIndex(empty)


def test_negative_size_is_rejected():
    with pytest.raises(ValueError, match="non-negative, got -3"):
        DatasetIndex(-3)


def test_2d_input_is_rejected():
    with pytest.raises(ValueError, match=r"must be 1-D, got an array of shape \(2, 2\)"):
        DatasetIndex(np.zeros((2, 2), dtype=int))


def test_duplicates_are_named():
    with pytest.raises(ValueError, match=r"unique.*2 id\(s\).*\[3, 7\]"):
        DatasetIndex([7, 3, 1, 3, 7])
    with pytest.raises(ValueError, match=r"'a'"):
        DatasetIndex(["a", "b", "a"])


def test_many_duplicates_are_shortened():
    with pytest.raises(ValueError, match=r"10 id\(s\).*\[0, 1, 2, 3, 4, \.\.\.\]"):
        DatasetIndex(np.tile(np.arange(10), 2))


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (True, "not a bool"),
        ("abc", "single str"),
        ([1.5, 2.5], "ints or all strings.*float64"),
        ([1, "a"], "all ints or all strings, not a mix"),
        (np.array([True, False]), "boolean mask"),
        (3.0, "not float"),
    ],
)
def test_bad_id_types_are_rejected(bad, match):
    with pytest.raises(TypeError, match=match):
        DatasetIndex(bad)


# -- immutability ----------------------------------------------------------------------


def test_attributes_cannot_be_set_or_deleted():
    idx = DatasetIndex(3)
    with pytest.raises(AttributeError, match="DatasetIndex is immutable"):
        idx._ids = np.arange(4)  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        idx.anything = 1  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="immutable"):
        del idx._ids


def test_indices_array_is_read_only():
    for idx in (DatasetIndex(3), DatasetIndex([5, 2]), DatasetIndex(["a"])):
        with pytest.raises(ValueError, match="read-only"):
            idx.indices[0] = idx.indices[-1]


# -- reading ---------------------------------------------------------------------------


def test_iteration_gives_python_values():
    assert list(DatasetIndex(3)) == [0, 1, 2]
    assert all(type(i) is int for i in DatasetIndex([4, 1]))
    assert all(type(i) is str for i in DatasetIndex(["q"]))


def test_contains():
    idx = DatasetIndex([10, 20])
    assert 10 in idx
    assert np.int64(20) in idx
    assert 15 not in idx
    assert "10" not in idx
    assert [10] not in idx
    assert None not in idx
    assert 2 in DatasetIndex(3)
    assert -1 not in DatasetIndex(3)
    assert "b" in DatasetIndex(["a", "b"])


def test_equality_and_hash():
    a = DatasetIndex(3)
    b = DatasetIndex(np.array([0, 1, 2], dtype=np.int32))
    assert a == b
    assert hash(a) == hash(b)
    assert DatasetIndex([2, 1]) != DatasetIndex([1, 2])
    assert DatasetIndex([1, 2]) != DatasetIndex([1, 2, 3])
    assert DatasetIndex(["1"]) != DatasetIndex([1])
    assert DatasetIndex(3) != [0, 1, 2]
    s1 = DatasetIndex(np.array(["a", "bb"], dtype="<U2"))
    s2 = DatasetIndex(np.array(["a", "bb"], dtype="<U10"))
    assert s1 == s2
    assert hash(s1) == hash(s2)
    assert len({a, b, DatasetIndex([2, 1]), DatasetIndex([2, 1])}) == 2


def test_hash_is_cached():
    idx = DatasetIndex([5, 9, 1])
    assert idx._hash is None
    h = hash(idx)
    assert idx._hash == h
    assert hash(idx) == h


def test_repr():
    assert repr(DatasetIndex(5)) == "DatasetIndex(5 items: [0, 1, 2, 3, 4])"
    assert repr(DatasetIndex(["a"])) == "DatasetIndex(1 item: ['a'])"
    assert repr(DatasetIndex(100)) == "DatasetIndex(100 items: [0, 1, 2, ..., 97, 98, 99])"


@pytest.mark.parametrize(
    "idx", [DatasetIndex(4), DatasetIndex([9, 2, 5]), DatasetIndex(["z", "a"])]
)
def test_pickle_round_trip(idx):
    back = pickle.loads(pickle.dumps(idx))
    assert type(back) is DatasetIndex
    assert back == idx
    assert hash(back) == hash(idx)
    assert back.get_pos(idx.indices[-1]) == len(idx) - 1
    assert not back.indices.flags.writeable
    with pytest.raises(AttributeError, match="immutable"):
        back.x = 1  # type: ignore[attr-defined]


# -- get_pos ---------------------------------------------------------------------------


def test_get_pos_scalar():
    idx = DatasetIndex([30, 10, 20])
    assert idx.get_pos(10) == 1
    assert type(idx.get_pos(np.int64(20))) is int
    assert DatasetIndex(5).get_pos(3) == 3
    assert type(DatasetIndex(5).get_pos(np.int32(3))) is int
    assert DatasetIndex(["b", "a"]).get_pos(np.str_("a")) == 1


def test_get_pos_many():
    idx = DatasetIndex([30, 10, 20])
    pos = idx.get_pos(np.array([20, 30]))
    assert pos.dtype == np.int64
    assert pos.tolist() == [2, 0]
    assert idx.get_pos([10]).tolist() == [1]
    assert idx.get_pos((10, 30)).tolist() == [1, 0]
    assert idx.get_pos(x for x in (20,)).tolist() == [2]
    assert idx.get_pos(DatasetIndex([20, 10])).tolist() == [2, 1]
    assert idx.get_pos(np.array([[10, 20], [30, 10]])).tolist() == [[1, 2], [0, 1]]
    assert idx.get_pos(np.array([20], dtype=np.uint16)).tolist() == [2]
    empty = idx.get_pos([])
    assert empty.dtype == np.int64
    assert empty.shape == (0,)


def test_get_pos_many_on_positions_and_strings():
    r = DatasetIndex(10)
    ids = np.array([9, 0, 4])
    pos = r.get_pos(ids)
    assert pos.tolist() == [9, 0, 4]
    assert pos.dtype == np.int64
    pos[0] = 1  # a new array, not a view of the caller's
    assert ids[0] == 9
    sorted_ids = DatasetIndex(["a", "b", "c"])
    assert sorted_ids.get_pos(["c", "a"]).tolist() == [2, 0]


def test_get_pos_slice_is_positional():
    idx = DatasetIndex(["a", "b", "c", "d"])
    assert idx.get_pos(slice(1, None)) == slice(1, 4, 1)
    assert idx.get_pos(slice(-2, 100)) == slice(2, 4, 1)
    back = idx.get_pos(slice(None, None, -1))
    assert idx.indices[back].tolist() == ["d", "c", "b", "a"]


def test_get_pos_unknown_ids():
    idx = DatasetIndex([30, 10, 20])
    with pytest.raises(KeyError, match=r"1 id\(s\) not in this DatasetIndex of 3 items: \[40\]"):
        idx.get_pos(40)
    with pytest.raises(KeyError, match=r"\[5, 6\]"):
        idx.get_pos([10, 5, 6])
    with pytest.raises(KeyError, match=r"7 id\(s\).*\[1, 2, 3, 4, 5, \.\.\.\]"):
        idx.get_pos(range(1, 8))
    with pytest.raises(KeyError, match="'10'"):
        idx.get_pos("10")
    with pytest.raises(KeyError, match="'x'"):
        idx.get_pos(["x"])
    with pytest.raises(KeyError, match="not in this"):
        idx.get_pos(np.array([2**64 - 1], dtype=np.uint64))


def test_get_pos_unknown_positions():
    r = DatasetIndex(3)
    with pytest.raises(KeyError, match=r"\[3\]"):
        r.get_pos(3)
    with pytest.raises(KeyError, match=r"\[-1\]"):
        r.get_pos(-1)
    with pytest.raises(KeyError, match=r"\[-1, 5\]"):
        r.get_pos([0, -1, 5])
    with pytest.raises(KeyError, match="'a'"):
        r.get_pos("a")


def test_get_pos_bad_types():
    idx = DatasetIndex(3)
    with pytest.raises(TypeError, match="not a bool"):
        idx.get_pos(True)
    with pytest.raises(TypeError, match="float64"):
        idx.get_pos([0.0, 1.0])
    with pytest.raises(TypeError, match="boolean mask"):
        idx.get_pos(np.array([True, False, True]))
    with pytest.raises(TypeError, match="NoneType"):
        idx.get_pos(None)
    with pytest.raises(TypeError, match="all ints or all strings, not a mix"):
        DatasetIndex(["1", "a"]).get_pos([1, "a"])


# -- create_subset ---------------------------------------------------------------------


def test_create_subset_keeps_given_order():
    idx = DatasetIndex(["a", "b", "c", "d"])
    sub = idx.create_subset(["d", "a"])
    assert type(sub) is DatasetIndex
    assert sub.indices.tolist() == ["d", "a"]
    assert sub.get_pos("a") == 1
    assert idx.indices.tolist() == ["a", "b", "c", "d"]
    assert DatasetIndex(10).create_subset(np.array([0, 1, 2])) == DatasetIndex(3)
    assert idx.create_subset(DatasetIndex(["c"])).indices.tolist() == ["c"]


def test_create_subset_errors():
    idx = DatasetIndex(5)
    with pytest.raises(KeyError, match=r"\[7\]"):
        idx.create_subset([1, 7])
    with pytest.raises(ValueError, match=r"more than once: \[2\]"):
        idx.create_subset([2, 1, 2])
    with pytest.raises(ValueError, match="empty"):
        idx.create_subset([])
    with pytest.raises(TypeError, match="wrap it in a list"):
        idx.create_subset(3)  # type: ignore[arg-type]


# -- split -----------------------------------------------------------------------------


def test_split_default_keeps_order():
    train, rest = DatasetIndex(10).split()
    assert train.indices.tolist() == list(range(8))
    assert rest.indices.tolist() == [8, 9]


@pytest.mark.parametrize(
    ("n", "shares", "sizes"),
    [
        (10, 0.5, [5, 5]),
        (10, [0.6, 0.2], [6, 2, 2]),
        (10, [0.5, 0.5], [5, 5]),
        (10, (0.7, 0.2, 0.1), [7, 2, 1]),
        (100, [0.29, 0.71], [29, 71]),
        (10, [0.33, 0.33, 0.33], [3, 3, 3, 1]),
        (3, [0.1, 0.1], [1, 1, 1]),
        (5, [0.9, 0.05, 0.05], [3, 1, 1]),
        (7, np.array([0.5]), [3, 4]),
    ],
)
def test_split_sizes(n, shares, sizes):
    parts = DatasetIndex(n).split(shares)
    assert [len(p) for p in parts] == sizes
    assert np.concatenate([p.indices for p in parts]).tolist() == list(range(n))


def test_split_too_small():
    with pytest.raises(ValueError, match=r"2 item.*too few to split into 3 non-empty parts"):
        DatasetIndex(2).split([0.5, 0.3])
    with pytest.raises(ValueError, match="too few"):
        DatasetIndex(1).split()


@pytest.mark.parametrize(
    ("shares", "exc", "match"),
    [
        (1.0, ValueError, "strictly between 0 and 1"),
        (0, ValueError, "strictly between 0 and 1"),
        (1.5, ValueError, "strictly between 0 and 1"),
        ([], ValueError, "shares is empty"),
        ([0.5, -0.1], ValueError, "must be > 0"),
        ([0.5, 0.0], ValueError, "must be > 0"),
        ([0.6, 0.5], ValueError, "add up to 1.1, more than 1"),
        ([float("nan")], ValueError, "must be > 0"),
        (True, TypeError, "float or a list"),
        ("0.5", TypeError, "float or a list"),
        ([0.5, None], TypeError, "must be numbers"),
    ],
)
def test_split_bad_shares(shares, exc, match):
    with pytest.raises(exc, match=match):
        DatasetIndex(10).split(shares)


def test_split_shuffled_is_reproducible_and_uses_derive():
    idx = DatasetIndex(["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"])
    before = idx.indices.copy()
    a = idx.split([0.5, 0.3], shuffle=True, seed=11)
    b = idx.split([0.5, 0.3], shuffle=11)
    c = idx.split([0.5, 0.3], shuffle=True, seed=np.random.default_rng(5))
    assert a == b
    assert len(c) == 3
    order = rng.derive(11, rng.PURPOSE_SHUFFLE, 0x5917).permutation(10)
    assert np.concatenate([p.indices for p in a]).tolist() == before[order].tolist()
    assert idx.indices.tolist() == before.tolist()
    assert idx.split(0.5, shuffle=1) != idx.split(0.5, shuffle=2)


def test_split_shuffle_with_fresh_seed_and_generator():
    parts = DatasetIndex(50).split(0.5, shuffle=True)
    assert sorted(np.concatenate([p.indices for p in parts]).tolist()) == list(range(50))
    g1, g2 = np.random.default_rng(3), np.random.default_rng(3)
    assert DatasetIndex(20).split(0.5, shuffle=g1) == DatasetIndex(20).split(0.5, shuffle=g2)


def test_split_seed_is_ignored_without_shuffle():
    assert DatasetIndex(4).split(0.5, seed=3) == DatasetIndex(4).split(0.5)


def test_split_bad_shuffle_arguments():
    with pytest.raises(ValueError, match="shuffle=3 already gives the seed, and seed=4 differs"):
        DatasetIndex(10).split(0.5, shuffle=3, seed=4)
    assert DatasetIndex(10).split(0.5, shuffle=3, seed=3) == DatasetIndex(10).split(0.5, shuffle=3)
    with pytest.raises(TypeError, match="shuffle must be a bool"):
        DatasetIndex(10).split(0.5, shuffle="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative"):
        DatasetIndex(10).split(0.5, shuffle=-1)
    with pytest.raises(ValueError, match="pass only one of them"):
        DatasetIndex(10).split(0.5, shuffle=np.random.default_rng(0), seed=1)
    with pytest.raises(TypeError, match="an int seed or a numpy Generator, not function"):
        DatasetIndex(10).split(0.5, shuffle=lambda pos, gen: pos)  # type: ignore[arg-type]


# -- FilesIndex ------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path):
    for folder, names in {"x": ["b.png", "a.png", "c.txt"], "y": ["d.png", "e.png"]}.items():
        (tmp_path / folder).mkdir()
        for name in names:
            (tmp_path / folder / name).write_text(name)
    (tmp_path / "x" / "sub.png").mkdir()
    return tmp_path


def test_files_index_basic(tree):
    idx = FilesIndex(str(tree / "x" / "*.png"))
    assert list(idx) == ["a.png", "b.png"]  # sorted within the glob; the dir is skipped
    assert idx.get_fullpath("b.png") == str(tree / "x" / "b.png")
    assert idx.get_fullpath(["a.png"]) == [str(tree / "x" / "a.png")]
    assert idx.fullpaths.tolist() == [str(tree / "x" / "a.png"), str(tree / "x" / "b.png")]
    assert repr(idx) == "FilesIndex(2 items: ['a.png', 'b.png'])"


def test_files_index_globs_keep_their_order(tree):
    idx = FilesIndex([tree / "y" / "*.png", str(tree / "x" / "*.png")], no_ext=True)
    assert list(idx) == ["d", "e", "a", "b"]
    assert idx.get_fullpath("d") == str(tree / "y" / "d.png")
    srt = FilesIndex([str(tree / "y" / "*.png"), str(tree / "x" / "*.png")], sort=True)
    assert list(srt) == ["a.png", "b.png", "d.png", "e.png"]
    assert srt.get_fullpath("e.png") == str(tree / "y" / "e.png")


def test_files_index_dirs_and_recursion(tree):
    dirs = FilesIndex(str(tree / "*"), dirs=True)
    assert list(dirs) == ["x", "y"]
    assert dirs.get_fullpath("y") == str(tree / "y")
    nested = FilesIndex(str(tree / "**" / "*.png"), dirs=True)
    assert list(nested) == ["sub.png"]
    deep = FilesIndex(str(tree / "**" / "*.txt"))
    assert list(deep) == ["c.txt"]


def test_files_index_relative_globs_give_absolute_paths(tree, monkeypatch):
    monkeypatch.chdir(tree)
    idx = FilesIndex(os.path.join("x", "*.txt"))
    assert idx.get_fullpath("c.txt") == str(tree / "x" / "c.txt")


def test_files_index_same_path_from_two_globs_counts_once(tree):
    idx = FilesIndex([str(tree / "x" / "a.*"), str(tree / "x" / "*.png")])
    assert list(idx) == ["a.png", "b.png"]


def test_files_index_duplicate_ids(tree):
    (tree / "y" / "a.png").write_text("")
    with pytest.raises(ValueError, match=r"same id 'a.png'.*x.a\.png.*y.a\.png"):
        FilesIndex(str(tree / "*" / "*.png"))
    (tree / "x" / "a.jpg").write_text("")
    with pytest.raises(ValueError, match=r"same id 'a'.*a\.jpg.*a\.png.*without extension"):
        FilesIndex(str(tree / "x" / "a.*"), no_ext=True)


def test_files_index_no_match(tree):
    with pytest.raises(ValueError, match=r"no files match \[.*nothing\*'\]"):
        FilesIndex(str(tree / "nothing*"))
    with pytest.raises(ValueError, match=r"no files match.*2 directories matched; pass dirs=True"):
        FilesIndex(str(tree / "*"))
    with pytest.raises(ValueError, match=r"no directories match.*pass dirs=False"):
        FilesIndex(str(tree / "x" / "*.txt"), dirs=True)


def test_files_index_bad_path_argument():
    with pytest.raises(ValueError, match="empty list"):
        FilesIndex([])
    with pytest.raises(TypeError, match="glob or a list of globs"):
        FilesIndex(3)  # type: ignore[arg-type]


def test_files_index_subset_split_keep_paths(tree):
    idx = FilesIndex([str(tree / "x" / "*.png"), str(tree / "y" / "*.png")], no_ext=True)
    sub = idx.create_subset(["e", "a"])
    assert type(sub) is FilesIndex
    assert sub.get_fullpath("e") == str(tree / "y" / "e.png")
    assert sub.fullpaths.tolist() == [str(tree / "y" / "e.png"), str(tree / "x" / "a.png")]
    for shuffle in (False, 4):
        parts = idx.split(0.5, shuffle=shuffle)
        assert all(type(p) is FilesIndex for p in parts)
        for p in parts:
            for item in p:
                assert p.get_fullpath(item) == idx.get_fullpath(item)
            assert not p.fullpaths.flags.writeable


def test_files_index_equality_hash_pickle(tree):
    a = FilesIndex(str(tree / "x" / "*.png"))
    b = FilesIndex([str(tree / "x" / "b.png"), str(tree / "x" / "a.png")], sort=True)
    assert a == b
    assert hash(a) == hash(b)
    (tree / "z").mkdir()
    for name in ("a.png", "b.png"):
        (tree / "z" / name).write_text("")
    other_dir = FilesIndex(str(tree / "z" / "*.png"))
    assert list(other_dir) == list(a)
    assert other_dir != a
    assert a != DatasetIndex(["a.png", "b.png"])
    back = pickle.loads(pickle.dumps(a))
    assert type(back) is FilesIndex
    assert back == a
    assert hash(back) == hash(a)
    assert back.get_fullpath("a.png") == a.get_fullpath("a.png")
    with pytest.raises(AttributeError, match="FilesIndex is immutable"):
        a._paths = None  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        a.fullpaths[0] = "x"
