"""Values that cannot change: freezing arguments, read-only arrays and structural equality.

fpipe's records (steps, pipelines, batches) hold only values. What a caller hands
over is frozen once, when the record is made:

- a numpy array argument is copied into a read-only array, so writing to the caller's
  array later changes nothing;
- a list or dict becomes a :class:`FrozenList` / :class:`FrozenDict` (still a ``list``
  / ``dict`` to numpy and to ``isinstance``, but refusing every in-place change), a set a
  ``frozenset``, a ``bytearray`` ``bytes``;
- anything else (numbers, strings, functions, models, sessions) is kept as it is.

>>> import numpy as np
>>> a = np.ones(2)
>>> frozen = freeze([a, {"k": 1}])
>>> a[:] = 5
>>> frozen[0].tolist(), frozen[1]["k"], frozen[0].flags.writeable
([1.0, 1.0], 1, False)
>>> thaw(frozen)[0].flags.writeable   # a run gets its own writable copy
True

:func:`values_equal` and :func:`value_hash` compare such values structurally
(arrays by dtype, shape and contents, NaN equal to NaN).

Batch components are taken rather than copied (:func:`own`): an array that owns its
memory is made read-only in place, and only a view of memory that someone else can still
write is copied; :func:`freeze_objects` freezes the items of an object array. A batch
made from a dataset holds its preloaded components as :class:`LazyRows`: the rows are
gathered from the dataset's array when first read, so a component no action reads is
never copied.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Mapping
from typing import Any, NoReturn

import numpy as np
from pyrsistent import PMap, pmap

__all__ = [
    "FrozenDict",
    "FrozenList",
    "LazyRows",
    "arrays_equal",
    "freeze",
    "freeze_kwargs",
    "freeze_objects",
    "materialized",
    "own",
    "readonly",
    "thaw",
    "value_hash",
    "values_equal",
]


def _refuse(self: Any, *args: Any, **kwargs: Any) -> NoReturn:
    raise TypeError(
        f"this {type(self).__mro__[1].__name__} belongs to an fpipe value (a step argument or a "
        "variable's default, or an item of a batch component) and cannot change; make a copy "
        "to change it, e.g. `list(x)` or `dict(x)`"
    )


class FrozenList(list):
    """A list that refuses in-place changes (numpy and ``isinstance`` still see a list)."""

    __slots__ = ()
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(("list", *map(value_hash, self)))

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenList, (list(self),))

    def __copy__(self) -> FrozenList:
        return self

    def __deepcopy__(self, memo: Any) -> FrozenList:
        return self


class FrozenDict(dict):
    """A dict that refuses in-place changes."""

    __slots__ = ()
    pop = popitem = clear = update = setdefault = _refuse
    __setitem__ = __delitem__ = __ior__ = _refuse

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(("dict", frozenset(self.keys()), *(value_hash(v) for v in self.values())))

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))

    def __copy__(self) -> FrozenDict:
        return self

    def __deepcopy__(self, memo: Any) -> FrozenDict:
        return self


def readonly(arr: np.ndarray) -> np.ndarray:
    """Mark ``arr`` read-only in place and return it (for arrays fpipe itself made)."""
    arr.setflags(False)  # type: ignore[call-arg]  # positional: twice as fast as write=False
    return arr


def freeze(value: Any) -> Any:
    """``value`` as an immutable value that shares no mutable state with the caller.

    Arrays are copied read-only (also inside containers); lists and dicts become
    :class:`FrozenList` / :class:`FrozenDict`, sets ``frozenset``; tuples are frozen item by
    item; anything else is kept as it is.
    """
    cls = value.__class__
    if cls in _ATOMS:
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "O":
            out = np.empty(value.shape, dtype=object)
            for i, v in np.ndenumerate(value):
                out[i] = freeze(v)
            return readonly(out)
        return readonly(value.copy())
    if cls is FrozenList or cls is FrozenDict:
        return value
    if isinstance(value, list):
        return FrozenList(freeze(v) for v in value)
    if isinstance(value, tuple):
        items = tuple(freeze(v) for v in value)
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return cls(*items) if hasattr(value, "_fields") else cls(items)
    if isinstance(value, PMap):
        return pmap({k: freeze(v) for k, v in value.items()})
    if isinstance(value, dict):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (set, frozenset)):
        return frozenset(value)
    if isinstance(value, bytearray):
        return bytes(value)
    return value


def freeze_kwargs(kwargs: Mapping[str, Any]) -> PMap:
    """Keyword arguments as a persistent map of frozen values."""
    return pmap({k: freeze(v) for k, v in kwargs.items()})


def thaw(value: Any) -> Any:
    """A mutable copy of a frozen value: what a run starts a variable from."""
    cls = value.__class__
    if cls in _ATOMS:
        return value
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, list):
        return [thaw(v) for v in value]
    if isinstance(value, dict):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(thaw(v) for v in value)
    return value


_ATOMS = frozenset({int, float, complex, str, bytes, bool, type(None), range, slice})


def arrays_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Same dtype, shape and values (NaN equal to NaN): the one array equality fpipe uses."""
    if a is b:
        return True
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    if a.dtype.kind == "O":
        return all(values_equal(x, y) for x, y in zip(a.flat, b.flat, strict=True))
    return bool(np.array_equal(a, b))


def values_equal(a: Any, b: Any) -> bool:
    """Structural equality that also compares numpy arrays, inside containers too."""
    if a is b:
        return True
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and arrays_equal(a, b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if isinstance(a, tuple) != isinstance(b, tuple):
            return False
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    if type(a) is not type(b):
        return False
    try:
        return bool(a == b)
    except Exception:
        return False


def value_hash(value: Any) -> int:
    """A hash consistent with :func:`values_equal` (coarse for arrays and unhashable values)."""
    if isinstance(value, np.ndarray):
        return hash(("ndarray", value.shape, str(value.dtype)))
    if isinstance(value, (list, tuple)):
        return hash(("seq", *(value_hash(v) for v in value)))
    if isinstance(value, Mapping):
        return hash(("map", frozenset(value.keys())))
    try:
        return hash(value)
    except TypeError:
        return hash(type(value).__name__)


# -- taking ownership of arrays (Batch components) ---------------------------------------
def own(arr: np.ndarray) -> np.ndarray:
    """``arr`` as a read-only array that nobody can write to any more, copying only if needed.

    This is how a batch takes the arrays it is given, without copying where it can:

    - an array that owns its memory (``arr.base is None``) is made read-only *in place*:
      the caller's array becomes read-only too (writing to it raises), and no copy is made;
    - a view of an array that nothing but the view refers to (a fresh temporary, e.g.
      ``(x * 2).reshape(...)``) is made read-only in place, with that base array;
    - a read-only array whose memory no writable numpy array refers to (e.g. a component of
      another batch, or a read-only memory map) is kept as it is;
    - any other array (a view of an array someone holds, of a writable buffer or memory
      map) is copied into a new read-only array.

    >>> import numpy as np
    >>> a = np.ones(3)
    >>> own(a) is a, a.flags.writeable           # owned: frozen in place, no copy
    (True, False)
    >>> held = np.ones(4)
    >>> v = own(held[:3])                        # a view of an array the caller holds: copied
    >>> held[:] = 5
    >>> v.tolist(), held.flags.writeable
    ([1.0, 1.0, 1.0], True)

    Writing through a ``memoryview`` or raw pointer taken before the call is not
    prevented (numpy cannot tell that such exports exist).
    """
    base = arr.base
    if base is None:
        arr.setflags(False)  # type: ignore[call-arg]
        return arr
    # Is ``base`` a fresh temporary that only ``arr`` refers to? See the comment below.
    if (
        base.__class__ is np.ndarray
        and base.base is None
        and _getrefcount(base) <= _PRIVATE_REFS
        and not _getweakrefcount(base)
    ):
        base.setflags(False)  # type: ignore[call-arg]
        arr.setflags(False)  # type: ignore[call-arg]
        return arr
    if not arr.flags.writeable and not (isinstance(base, np.ndarray) and base.flags.writeable):
        return arr  # nobody can write this memory through numpy
    return readonly(arr.copy())


# Whether a view's base is a fresh temporary is read from CPython's reference counts. A
# base that nothing but the view refers to is referred to exactly three times while
# ``own`` counts: by the view (its ``base`` pointer), by the local name ``base`` and by
# the argument of ``getrefcount``. Any other holder (a name in some frame, a container,
# another view of the same memory: numpy points every view at the array that owns the
# memory) adds one. Weak references are not counted, so a base with any is treated as
# held. The count for a private base is measured when this module is imported, with a
# function laid out like ``own`` (``_base_refcount``), and ``own`` is then checked on a
# fresh and on a held array: on an interpreter without ``getrefcount`` (PyPy) or whose
# counts do not behave as described, ``_PRIVATE_REFS`` is -1 and every such view is copied.
_getrefcount: Any = getattr(sys, "getrefcount", lambda obj: sys.maxsize)
_getweakrefcount = weakref.getweakrefcount
_PRIVATE_REFS = -1


def _base_refcount(arr: np.ndarray) -> int:
    base = arr.base
    return int(_getrefcount(base))


def _calibrated() -> int:
    global _PRIVATE_REFS
    fresh = _base_refcount(np.empty(2)[:1])
    held = np.empty(2)
    if _base_refcount(held[:1]) != fresh + 1:
        return -1
    _PRIVATE_REFS = fresh
    view = np.empty(2)[:1]
    if own(view) is not view or own(held[:1]).base is held or not held.flags.writeable:
        return -1  # pragma: no cover  # counts that do not behave: always copy
    return fresh


_PRIVATE_REFS = _calibrated()


def freeze_objects(arr: np.ndarray) -> np.ndarray:
    """An object array as a read-only array of immutable items.

    Each item is frozen with :func:`freeze` (lists become :class:`FrozenList`, dicts
    :class:`FrozenDict`, writable arrays read-only copies); read-only arrays are kept. When
    every item already is immutable the array itself is taken as :func:`own` takes it.

    >>> import numpy as np
    >>> items = np.empty(2, dtype=object)
    >>> items[0], items[1] = [1, 2], {"k": np.zeros(2)}
    >>> frozen = freeze_objects(items)
    >>> type(frozen[0]).__name__, frozen[1]["k"].flags.writeable, frozen.flags.writeable
    ('FrozenList', False, False)
    >>> frozen[0].append(3)
    Traceback (most recent call last):
    ...
    TypeError: this list belongs to an fpipe value (a step argument or a variable's default, or an item of a batch component) and cannot change; make a copy to change it, e.g. `list(x)` or `dict(x)`
    >>> freeze_objects(frozen) is frozen
    True
    """
    items = [_freeze_item(v) for v in arr.flat]
    if all(new is old for new, old in zip(items, arr.flat, strict=True)):
        return own(arr)
    out = np.empty(arr.shape, dtype=object)
    flat = out.reshape(-1)  # a view: ``out`` is new and contiguous
    for i, v in enumerate(items):
        flat[i] = v  # one item at a time: numpy would unpack lists given all at once
    return readonly(out)


def _freeze_item(value: Any) -> Any:
    if (
        isinstance(value, np.ndarray)
        and value.dtype.kind != "O"
        and not value.flags.writeable
        and not (isinstance(value.base, np.ndarray) and value.base.flags.writeable)
    ):
        return value
    return freeze(value)


# -- rows gathered on first use (a dataset's batches) -------------------------------------
class LazyRows:
    """The rows ``source[rows]`` of a read-only array, gathered when first read, once.

    A batch made from a :class:`~fpipe.Dataset` holds one per preloaded component: a
    component that no action reads costs its batch nothing. It stands for its gathered
    array, which cannot change (``source`` and ``rows`` are read-only and nobody can write
    to them), so *when* it is gathered makes no difference. :meth:`get` gathers it the
    first time, under a lock: threads asking at once all get the one array, gathered once.

    >>> import numpy as np
    >>> source = readonly(np.arange(10.0))
    >>> lazy = LazyRows(source, readonly(np.array([3, 1])))
    >>> lazy.shape, lazy.gathered
    ((2,), False)
    >>> lazy.get().tolist(), lazy.get() is lazy.get(), lazy.get().flags.writeable
    ([3.0, 1.0], True, False)
    >>> lazy.take(slice(1, None)).get().tolist()   # rows of rows, still gathered lazily
    [1.0]

    It pickles as its gathered array, so a batch sent to another process carries its
    rows, never the whole source.
    """

    __slots__ = ("_lock", "_value", "rows", "source")

    def __init__(self, source: np.ndarray, rows: np.ndarray) -> None:
        self.source = source  # read-only: the dataset's whole array
        self.rows = rows  # read-only int positions into ``source``
        self._value: np.ndarray | None = None  # the gathered rows, once read
        self._lock = threading.Lock()

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.source.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.source.dtype

    @property
    def gathered(self) -> bool:
        """Whether the rows have been gathered (read) already."""
        return self._value is not None

    def __len__(self) -> int:
        return len(self.rows)

    def get(self) -> np.ndarray:
        """The gathered rows: a read-only array, the same one on every call."""
        value = self._value
        if value is None:
            with self._lock:
                value = self._value
                if value is None:  # no other thread gathered it while this one waited
                    value = self._value = readonly(self.source[self.rows])
        return value

    def take(self, key: Any) -> LazyRows:
        """The rows at ``key`` (a slice, int array or mask) of these rows, still lazy."""
        return LazyRows(self.source, own(self.rows[key]))

    def same_rows(self, other: LazyRows) -> bool:
        """Whether ``other`` stands for the same rows of the same array (no gathering)."""
        return self.source is other.source and bool(np.array_equal(self.rows, other.rows))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        value = self.get()
        if dtype is not None and np.dtype(dtype) != value.dtype:
            return value.astype(dtype)
        return value.copy() if copy else value

    def __reduce__(self) -> tuple[Any, ...]:
        return (readonly, (self.get(),))

    def __repr__(self) -> str:
        state = "gathered" if self._value is not None else "not gathered yet"
        return f"<LazyRows {self.dtype}{list(self.shape)}, {state}>"


def materialized(value: Any) -> Any:
    """``value``, or its gathered rows when it is :class:`LazyRows`."""
    return value.get() if value.__class__ is LazyRows else value
