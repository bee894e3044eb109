"""Immutable indices: the ordered, unique ids of a dataset's items.

A :class:`DatasetIndex` is a value. It never changes; :meth:`~DatasetIndex.split` and
:meth:`~DatasetIndex.create_subset` return new indices. Positions (``0..len-1``) and ids
are kept apart: ``get_pos`` turns ids into positions.

>>> idx = DatasetIndex(["a", "b", "c", "d"])
>>> idx.get_pos("c")
2
>>> train, test = idx.split(0.5)
>>> list(train), list(test)
(['a', 'b'], ['c', 'd'])
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeAlias

import numpy as np

from . import rng
from .values import readonly

__all__ = ["DatasetIndex"]

IndexLike: TypeAlias = "int | range | Sequence[Any] | np.ndarray | DatasetIndex"

# The "epoch" slot of a split's shuffle stream: a fixed tag, so that splitting with seed s
# does not draw the same permutation as epoch 0 of a batch plan with seed s.
_SPLIT_TAG = 0x5917
_SHARE_TOL = 1e-9
_INT64_MAX = np.iinfo(np.int64).max
_SHOWN = 5  # how many offending ids an error message names


def _is_frozen(a: np.ndarray) -> bool:
    """True if nobody can write to ``a``'s memory through numpy (so it can be shared)."""
    if a.flags.writeable:
        return False
    base = a.base
    return not (isinstance(base, np.ndarray) and base.flags.writeable)


def _is_int_scalar(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _show(values: Iterable[Any]) -> str:
    vals = list(values)
    text = ", ".join(repr(v) for v in vals[:_SHOWN])
    return f"[{text}, ...]" if len(vals) > _SHOWN else f"[{text}]"


def _normalize_ids(arr: np.ndarray) -> np.ndarray:
    """Return ``arr`` as an int64 or str array (the two id kinds fpipe supports)."""
    kind = arr.dtype.kind
    if kind == "i":
        return arr if arr.dtype == np.int64 else arr.astype(np.int64)
    if kind == "u":
        if arr.size and int(arr.max()) > _INT64_MAX:
            raise ValueError(f"integer ids must fit in int64; got {int(arr.max())}")
        return arr.astype(np.int64)
    if kind == "U":
        return arr
    if kind == "O":
        items = arr.tolist()
        if all(isinstance(x, str) for x in items):
            return np.array(items, dtype=str)
        if all(_is_int_scalar(x) for x in items):
            return np.array(items, dtype=np.int64)
    raise TypeError(
        f"ids must be all ints or all strings, got an array of dtype {arr.dtype}"
        + (" (a boolean mask is not a list of ids)" if kind == "b" else "")
    )


def _seq_to_array(seq: list[Any] | tuple[Any, ...], what: str) -> np.ndarray:
    arr = np.asarray(seq)
    # numpy silently turns [1, "a"] into ["1", "a"]
    if arr.dtype.kind == "U" and arr.ndim == 1 and not all(isinstance(x, str) for x in seq):
        raise TypeError(f"{what} must be all ints or all strings, not a mix: {_show(seq)}")
    return arr


def _as_id_array(ids: object, what: str) -> np.ndarray:
    """Turn a sequence / iterable / array of ids into a 1-D array (not yet validated)."""
    if isinstance(ids, DatasetIndex):
        return ids._ids
    if isinstance(ids, (str, bytes)) or _is_int_scalar(ids):
        raise TypeError(
            f"{what} must be a sequence of ids, not a single {type(ids).__name__} {ids!r}; "
            f"wrap it in a list"
        )
    if isinstance(ids, np.ndarray):
        arr = ids
    elif isinstance(ids, (list, tuple)):
        arr = _seq_to_array(ids, what)
    else:
        try:
            items = list(ids)  # type: ignore[call-overload]
        except TypeError:
            raise TypeError(
                f"{what} must be an int, a range, or a sequence of ids, not {type(ids).__name__}"
            ) from None
        arr = _seq_to_array(items, what)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got an array of shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{what} is empty; an index needs at least one item")
    return arr


def _analyse(ids: np.ndarray, check_unique: bool) -> tuple[bool, bool]:
    """Return ``(is_range, is_sorted)`` for ids; raise on duplicates if ``check_unique``."""
    n = len(ids)
    # count_nonzero is much cheaper than .all() / .any() on the small arrays of a batch.
    is_sorted = n == 1 or np.count_nonzero(ids[1:] > ids[:-1]) == n - 1
    if is_sorted:
        is_range = ids.dtype.kind == "i" and int(ids[0]) == 0 and int(ids[-1]) == n - 1
        return is_range, True
    if check_unique:
        s = np.sort(ids)
        dup = s[1:] == s[:-1]
        if np.count_nonzero(dup):
            dups = np.unique(s[1:][dup])
            raise ValueError(
                f"index ids must be unique, but {len(dups)} id(s) occur more than once: "
                f"{_show(dups[: _SHOWN + 1].tolist())}"
            )
    return False, False


def _split_sizes(n: int, shares: object) -> list[int]:
    """Sizes of the parts of an ``n``-item index split by ``shares`` (see DatasetIndex.split)."""
    if isinstance(shares, (float, int, np.floating, np.integer)) and not isinstance(
        shares, (bool, np.bool_)
    ):
        if not 0.0 < float(shares) < 1.0:
            raise ValueError(
                f"shares={shares!r}: a single share must be strictly between 0 and 1 "
                "(e.g. 0.8 for an 80/20 split)"
            )
        fracs = [float(shares)]
    elif isinstance(shares, (Sequence, np.ndarray)) and not isinstance(shares, (str, bytes)):
        fracs = []
        for s in shares:
            if isinstance(s, (bool, np.bool_)) or not isinstance(
                s, (float, int, np.floating, np.integer)
            ):
                raise TypeError(f"shares must be numbers, got {s!r} in {shares!r}")
            fracs.append(float(s))
        if not fracs:
            raise ValueError("shares is empty; give at least one share, e.g. [0.8, 0.1]")
    else:
        raise TypeError(f"shares must be a float or a list of floats, not {type(shares).__name__}")
    if any(not math.isfinite(f) or f <= 0.0 for f in fracs):
        raise ValueError(f"every share must be > 0, got {list(fracs)}")
    total = math.fsum(fracs)
    if total > 1.0 + _SHARE_TOL:
        raise ValueError(f"shares {list(fracs)} add up to {total:g}, more than 1")
    explicit = fracs if total >= 1.0 - _SHARE_TOL else [*fracs, 1.0 - total]
    k = len(explicit)
    if n < k:
        raise ValueError(
            f"the index has {n} item(s), too few to split into {k} non-empty parts "
            f"(shares {list(fracs)}); use fewer parts or a larger index"
        )
    # The epsilon stops 0.29 * 100 == 28.999999999999996 from flooring to 28.
    sizes = [math.floor(f * n + _SHARE_TOL) for f in explicit[:-1]]
    sizes.append(n - sum(sizes))
    for i in range(k):
        if sizes[i] == 0:
            donor = sizes.index(max(sizes))
            sizes[donor] -= 1
            sizes[i] = 1
    return sizes


class DatasetIndex:
    """An immutable, hashable sequence of unique item ids (ints or strings).

    ``DatasetIndex(n)`` holds ids ``0..n-1``; a range, a 1-D sequence or array of ids, or
    another ``DatasetIndex`` (shared, not copied) are accepted too.

    >>> idx = DatasetIndex(5)
    >>> idx
    DatasetIndex(5 items: [0, 1, 2, 3, 4])
    >>> idx.get_pos([4, 1]).tolist()
    [4, 1]
    >>> DatasetIndex(["x", "y"]) == DatasetIndex(np.array(["x", "y"]))
    True
    """

    __slots__ = ("_hash", "_ids", "_is_range", "_is_sorted", "_sorted_ids", "_sorter")

    _ids: np.ndarray
    _is_range: bool
    _is_sorted: bool
    _sorter: np.ndarray | None
    _sorted_ids: np.ndarray | None
    _hash: int | None

    def __init__(self, index: IndexLike) -> None:
        if type(index) is np.ndarray and index.dtype == np.int64 and index.ndim == 1 and len(index):
            arr = index if _is_frozen(index) else readonly(index.copy())  # the common case
            self._set(arr, *_analyse(arr, check_unique=True))
            return
        if isinstance(index, DatasetIndex):
            self._set(index._ids, index._is_range, index._is_sorted)
            object.__setattr__(self, "_sorter", index._sorter)
            object.__setattr__(self, "_sorted_ids", index._sorted_ids)
            return
        if isinstance(index, (bool, np.bool_)):
            raise TypeError("index must be an int, a range or a sequence of ids, not a bool")
        if _is_int_scalar(index) or isinstance(index, range):
            if isinstance(index, range):
                r = index
            else:
                if index < 0:  # type: ignore[operator]
                    raise ValueError(f"index size must be non-negative, got {index}")
                r = range(int(index))  # type: ignore[arg-type]
            if len(r) == 0:
                raise ValueError(f"index {index!r} is empty; an index needs at least one item")
            ids = readonly(np.arange(r.start, r.stop, r.step, dtype=np.int64))
            is_range = r.start == 0 and r.step == 1
            self._set(ids, is_range, r.step > 0)
            return
        arr = _normalize_ids(_as_id_array(index, "index"))
        if not _is_frozen(arr):
            arr = readonly(arr.copy())
        self._set(arr, *_analyse(arr, check_unique=True))

    def _set(self, ids: np.ndarray, is_range: bool, is_sorted: bool) -> None:
        object.__setattr__(self, "_ids", ids)
        object.__setattr__(self, "_is_range", is_range)
        object.__setattr__(self, "_is_sorted", is_sorted)
        object.__setattr__(self, "_sorter", None)
        object.__setattr__(self, "_sorted_ids", ids if is_sorted else None)
        object.__setattr__(self, "_hash", None)

    @classmethod
    def _trusted(cls, ids: np.ndarray) -> DatasetIndex:
        """Wrap read-only ids already known to be unique and valid (no copy, no check)."""
        obj = object.__new__(cls)
        obj._set(ids, *_analyse(ids, check_unique=False))
        return obj

    def _take(self, positions: np.ndarray | slice) -> DatasetIndex:
        """A new index of the same class holding the items at unique ``positions``."""
        ids = self._ids[positions]
        if isinstance(positions, np.ndarray):
            readonly(ids)
        return self._trusted(ids)

    # -- immutability ------------------------------------------------------------------
    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(
            f"{type(self).__name__} is immutable; cannot set {name!r}. "
            "Use create_subset() or split() to make a new index."
        )

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; cannot delete {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        data: object = len(self._ids) if self._is_range else np.asarray(self._ids)
        return (_restore_index, (type(self), data, None))

    # -- reading -----------------------------------------------------------------------
    @property
    def indices(self) -> np.ndarray:
        """The ids, in index order, as a read-only 1-D array."""
        return self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._ids.tolist())

    def __contains__(self, item: object) -> bool:
        if not (_is_int_scalar(item) or isinstance(item, str)):
            return False
        try:
            self.get_pos(item)
        except KeyError:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DatasetIndex):
            return NotImplemented
        if type(self) is not type(other):
            return False
        if self is other or self._ids is other._ids:
            return True
        a, b = self._ids, other._ids
        if len(a) != len(b) or a.dtype.kind != b.dtype.kind:
            return False
        if self._is_range and other._is_range:
            return True
        if self._hash is not None and other._hash is not None and self._hash != other._hash:
            return False
        return bool(np.array_equal(a, b))

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def _hash_parts(self) -> tuple[Any, ...]:
        ids = self._ids
        key: object = ids.tobytes() if ids.dtype.kind == "i" else tuple(ids.tolist())
        return (type(self).__qualname__, ids.dtype.kind, key)

    def __hash__(self) -> int:
        h = self._hash
        if h is None:
            h = hash(self._hash_parts())
            object.__setattr__(self, "_hash", h)
        return h

    def __repr__(self) -> str:
        n = len(self._ids)
        if n > 10:
            head = ", ".join(repr(v) for v in self._ids[:3].tolist())
            tail = ", ".join(repr(v) for v in self._ids[-3:].tolist())
            shown = f"{head}, ..., {tail}"
        else:
            shown = ", ".join(repr(v) for v in self._ids.tolist())
        return f"{type(self).__name__}({n} item{'s' if n != 1 else ''}: [{shown}])"

    # -- ids -> positions --------------------------------------------------------------
    def _lookup(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The sorted ids and the argsort that maps them back to positions (None: identity)."""
        s = self._sorted_ids
        if s is None:
            sorter = self._sorter
            if sorter is None:
                sorter = readonly(np.argsort(self._ids, kind="stable"))
                object.__setattr__(self, "_sorter", sorter)
            s = readonly(self._ids[sorter])
            object.__setattr__(self, "_sorted_ids", s)
        return s, self._sorter

    def _missing(self, ids: Iterable[Any]) -> KeyError:
        missing = list(ids)
        return KeyError(
            f"{len(missing)} id(s) not in this {type(self).__name__} of {len(self)} items: "
            f"{_show(missing)}"
        )

    def get_pos(self, id: Any) -> Any:
        """The position(s) of ``id`` in the index.

        A scalar id gives an ``int``; an array, list or other iterable of ids gives an
        int64 array of the same shape. A ``slice`` is read as positions, not ids, and is
        returned normalized to this index's length (``slice(1, None)`` ->
        ``slice(1, len, 1)``). Unknown ids raise ``KeyError``.

        >>> idx = DatasetIndex(["b", "a", "c"])
        >>> idx.get_pos("a"), idx.get_pos(["c", "b"]).tolist()
        (1, [2, 0])
        """
        n = len(self._ids)
        kind = self._ids.dtype.kind
        if _is_int_scalar(id) or isinstance(id, str):
            if self._is_range:
                if _is_int_scalar(id) and 0 <= id < n:
                    return int(id)
                raise self._missing([id])
            if (kind == "i") != _is_int_scalar(id):
                raise self._missing([id])
            s, sorter = self._lookup()
            i = int(np.searchsorted(s, id))
            if i < n and s[i] == id:
                return i if sorter is None else int(sorter[i])
            raise self._missing([id])
        if isinstance(id, slice):
            start, stop, step = id.indices(n)
            return slice(start, None if stop < 0 else stop, step)
        if isinstance(id, (bool, np.bool_)):
            raise TypeError(f"ids are ints or strings, not a bool ({id!r})")
        if isinstance(id, DatasetIndex):
            arr = id._ids
        elif isinstance(id, np.ndarray):
            arr = id
        elif isinstance(id, (list, tuple)):
            arr = _seq_to_array(id, "ids")
        else:
            try:
                items = list(id)
            except TypeError:
                raise TypeError(
                    f"get_pos takes an id or an iterable of ids, not {type(id).__name__}"
                ) from None
            arr = _seq_to_array(items, "ids")
        if arr.size == 0:
            return np.empty(arr.shape, dtype=np.int64)
        if arr.dtype != np.int64 and arr.dtype.kind != "U":
            try:
                arr = _normalize_ids(arr.ravel()).reshape(arr.shape)
            except ValueError:  # unsigned ids beyond int64 cannot be in the index
                raise self._missing(arr[arr > _INT64_MAX].tolist()) from None
        if arr.dtype.kind != kind:
            raise self._missing(arr.ravel().tolist())
        if self._is_range:
            # Viewed as unsigned, negative ids become huge: one comparison checks both ends.
            bad = arr.view(np.uint64) >= n
            if np.count_nonzero(bad):
                raise self._missing(arr[bad].tolist())
            return arr.astype(np.int64, copy=True)
        s, sorter = self._lookup()
        at = np.searchsorted(s, arr)
        found = s[np.minimum(at, n - 1)] == arr
        if np.count_nonzero(found) != found.size:
            raise self._missing(arr[~found].tolist())
        return at if sorter is None else sorter[at]

    # -- new indices -------------------------------------------------------------------
    def create_subset(self, ids: Sequence[Any] | np.ndarray | DatasetIndex) -> DatasetIndex:
        """A new index of the given ids, in the given order (same class as this one).

        >>> DatasetIndex(10).create_subset([7, 2, 3])
        DatasetIndex(3 items: [7, 2, 3])
        """
        arr = _as_id_array(ids, "ids")
        positions = self.get_pos(arr)
        sub = self._take(positions)
        if not sub._is_sorted:
            _analyse(sub._ids, check_unique=True)  # raises on duplicated ids
        return sub

    def split(
        self,
        shares: float | Sequence[float] = 0.8,
        shuffle: bool | int | np.random.Generator = False,
        seed: int | np.random.Generator | None = None,
    ) -> tuple[DatasetIndex, ...]:
        """Split into new, disjoint indices that together cover this one.

        ``shares`` is a float in (0, 1) for two parts (``share`` and the rest), or a list of
        k shares: k parts when they add up to 1, else k + 1 parts, the last taking the
        rest. Part ``i`` gets ``floor(share_i * len)`` items and the last part whatever
        remains; a part that would be empty takes one item from the largest part, and an
        index with fewer items than parts raises ``ValueError``.

        ``shuffle=False`` keeps the index order. ``shuffle=True`` permutes with ``seed``
        (an int, a numpy Generator, or None for a fresh one); ``shuffle=<int>`` or a
        Generator is the seed itself. A given seed always gives the same split. ``seed``
        is ignored when not shuffling.

        >>> a, b, c = DatasetIndex(10).split([0.6, 0.2])
        >>> len(a), len(b), len(c)
        (6, 2, 2)
        >>> DatasetIndex(10).split(0.5, shuffle=7) == DatasetIndex(10).split(0.5, shuffle=7)
        True
        """
        n = len(self._ids)
        sizes = _split_sizes(n, shares)
        _, seed_int = rng.resolve_shuffle(shuffle, seed, allow_callable=False)
        if seed_int is None:
            bounds = np.cumsum([0, *sizes]).tolist()
            return tuple(self._take(slice(a, b)) for a, b in itertools.pairwise(bounds))
        order = rng.derive(seed_int, rng.PURPOSE_SHUFFLE, _SPLIT_TAG).permutation(n)
        parts = np.split(order, np.cumsum(sizes)[:-1])
        return tuple(self._take(p) for p in parts)


def _restore_index(cls: type[DatasetIndex], data: Any, paths: Any) -> DatasetIndex:
    """Rebuild a pickled index (its ids were validated when it was first built)."""
    if isinstance(data, int):
        return cls._trusted(readonly(np.arange(data, dtype=np.int64)))
    ids = readonly(np.array(data))
    if paths is None:
        return cls._trusted(ids)
    return cls._from_arrays(ids, readonly(np.array(paths)))  # type: ignore[attr-defined]
