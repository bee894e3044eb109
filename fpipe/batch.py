"""Batch: an immutable record of item ids and named, read-only component arrays.

A user subclasses :class:`Batch`, lists its ``components`` and writes ``@action``
methods that return a new batch built with :meth:`Batch.replace`:

>>> import numpy as np
>>> from fpipe import Batch, action
>>> class Digits(Batch):
...     components = ("images", "labels")
...     @action
...     def scale(self, factor):
...         return self.replace(images=self.images * factor)
>>> b = Digits(np.arange(3), preloaded=(np.ones((3, 2)), np.array([0, 1, 2])))
>>> c = b.scale(2.0)
>>> float(c.images[0, 0]), c.labels is b.labels
(2.0, True)

Untouched components are shared, never copied; every array a batch hands out is
read-only, so an action cannot change its input by accident. A batch made from a
:class:`~fpipe.Dataset` gathers each preloaded component's rows when an action first
reads it (:class:`~fpipe.values.LazyRows`), so a component nobody reads costs nothing.

A batch *takes* the arrays it is given (by ``replace``, ``preloaded`` or a
:class:`~fpipe.Dataset`) rather than copying them: an array that owns its memory is
made read-only in place, so nobody, the caller included, can change the batch later
through it; a view of an array the caller still holds is copied. The items of an
object (ragged) component are frozen too:

>>> mine = np.zeros((3, 2))
>>> d = b.replace(images=mine)
>>> mine[0, 0] = 1.0
Traceback (most recent call last):
...
ValueError: assignment destination is read-only
>>> Batch(np.arange(2), preloaded=[[1, 2], [3]]).data[1].append(4)
Traceback (most recent call last):
...
TypeError: this list belongs to an fpipe value (a step argument or a variable's default, or an item of a batch component) and cannot change; make a copy to change it, e.g. `list(x)` or `dict(x)`
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .errors import FpipeError, ImmutableBatchError, did_you_mean
from .values import LazyRows, arrays_equal, freeze_objects, materialized, own, readonly
from .values import freeze as freeze_value

if TYPE_CHECKING:
    from .index import DatasetIndex
    from .runstate import BatchContext

__all__ = ["Batch", "SkipBatch"]

_DATA = "data"  # the single component of a batch class that declares none
_IMMUTABLE_HINT = (
    "Batches are immutable: build a new one instead, e.g. `return self.replace({name}=...)`."
)


class SkipBatch(Exception):
    """Raise inside an action to drop the current batch from the run's output.

    >>> import numpy as np
    >>> from fpipe import Dataset, action
    >>> class OddOnly(Batch):
    ...     @action
    ...     def keep_odd(self):
    ...         if self.indices[0] % 2 == 0:
    ...             raise SkipBatch
    ...         return self
    >>> [b.indices.tolist() for b in Dataset(4, OddOnly).p.keep_odd().gen_batch(1)]
    [[1], [3]]
    """


def freeze(value: Any, n_items: int, name: str) -> np.ndarray | None:
    """``value`` as a read-only array of ``n_items`` rows that nobody else can change.

    The batch takes ownership of arrays instead of copying them (see
    :func:`fpipe.values.own`): an array that owns its memory is made read-only in place, so
    the caller's array becomes read-only too; a view of an array the caller still holds is
    copied. Anything else goes through ``np.asarray``; a ragged sequence gives one object
    per item. The items of an object array are frozen (:func:`fpipe.values.freeze_objects`).

    >>> a = np.zeros((2, 3))
    >>> freeze(a, 2, "x") is a, a.flags.writeable
    (True, False)
    >>> freeze([[1, 2], [3]], 2, "x")[0]
    [1, 2]
    """
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        value = freeze_objects(value) if value.dtype.kind == "O" else own(value)
    else:
        value = _as_array(value, n_items, name)
    if value.ndim == 0 or len(value) != n_items:
        shape = value.shape
        raise ValueError(
            f"component {name!r} has shape {shape} for {n_items} items; its first "
            "dimension must be the number of items (one row per item id)"
        )
    return value


def _as_array(value: Any, n_items: int, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except ValueError:  # ragged sequence: keep one (frozen) object per item
        items = [freeze_value(v) for v in value]
        arr = np.empty(len(items), dtype=object)
        for i, item in enumerate(items):
            arr[i] = item  # one at a time: numpy would unpack lists given all at once
        return readonly(arr)
    # A converted sequence is a new array (owned: frozen in place); an array-like that
    # shares its memory (a memoryview, a tensor) is copied unless it is read-only.
    return freeze_objects(arr) if arr.dtype.kind == "O" else own(arr)


def _component_property(name: str) -> property:
    def get(self: Batch) -> Any:
        value = self._data.get(name)
        return value.get() if value.__class__ is LazyRows else value

    get.__name__ = name
    return property(get, doc=f"The {name!r} component (read-only), or None if not loaded.")


def _item_property(name: str) -> property:
    def get(item: _Item) -> Any:
        value = item._batch._data.get(name)
        if value is None:
            return None
        if value.__class__ is LazyRows:
            value = value.get()
        return value[item._pos]

    get.__name__ = name
    return property(get, doc=f"The item's {name!r} (read-only), or None if not loaded.")


def _item_type(class_name: str, names: tuple[str, ...]) -> type[_Item]:
    """The item view of a batch class: one property per component (no __getattr__ detour
    on the hot path of in-batch parallelism)."""
    attrs: dict[str, Any] = {"__slots__": ()}
    attrs.update({c: _item_property(c) for c in names})
    return type(f"{class_name}Item", (_Item,), attrs)


def _declare_components(cls: type[Batch], comps: Any) -> None:
    """Check and install the ``components`` a Batch subclass declares (one property each)."""
    if comps is None:
        names: tuple[str, ...] = (_DATA,)
    else:
        if isinstance(comps, str):
            comps = (comps,)
        names = tuple(comps)
        bad = [c for c in names if not isinstance(c, str) or not c.isidentifier()]
        if bad or len(set(names)) != len(names) or not names:
            raise TypeError(
                f"{cls.__name__}.components must be a non-empty tuple of distinct "
                f"identifiers, got {comps!r}"
            )
        reserved = [c for c in names if hasattr(Batch, c)]
        if reserved:
            raise TypeError(
                f"{cls.__name__}.components {reserved} clash with Batch attributes; rename them"
            )
        for c in names:
            setattr(cls, c, _component_property(c))
    cls._component_names = names
    cls._component_set = frozenset(names)
    cls._item_type = _item_type(cls.__name__, names)
    cls.components = None if names == (_DATA,) else names


def _parse_preloaded(cls: type[Batch], preloaded: Any, n: int) -> dict[str, Any]:
    """The frozen components of ``preloaded`` (a dict, a tuple or one array) for ``cls``."""
    names = cls._component_names
    items: Iterable[tuple[str, Any]]
    if preloaded is None:
        return {}
    if isinstance(preloaded, Mapping):
        unknown = [k for k in preloaded if k not in cls._component_set]
        if unknown:
            raise ValueError(
                f"preloaded has components {unknown} that {cls.__name__} does not declare "
                f"(it declares {list(names)}).{did_you_mean(str(unknown[0]), names)} Declare "
                "them in `components` to preload them."
            )
        items = preloaded.items()
    elif isinstance(preloaded, tuple) and names != (_DATA,):
        if len(preloaded) != len(names):
            raise ValueError(
                f"preloaded is a tuple of {len(preloaded)} arrays but {cls.__name__} has "
                f"{len(names)} components {list(names)}; pass one array per component "
                "or a dict"
            )
        items = zip(names, preloaded, strict=True)
    elif names == (_DATA,):
        if isinstance(preloaded, tuple) and _one_array_each(preloaded, n):
            k = len(preloaded)
            listed = ", ".join(f'"{c}"' for c in ("x", "y", "z", "w")[:k]) if k <= 4 else "..."
            declare = f"components = ({listed})"
            fix = (
                f"declare them in a subclass: `class MyBatch(Batch): {declare}`, then "
                f"`Dataset({n}, MyBatch, preloaded=(...))`"
                if cls is Batch
                else f"declare them in {cls.__name__}: `{declare}`"
            )
            raise ValueError(
                f"preloaded is a tuple of {k} arrays, but {cls.__name__} declares no "
                f"components, so it holds one array (`data`). To preload one array per "
                f"component, {fix}; or pass one array."
            )
        items = ((_DATA, preloaded),)
    elif len(names) == 1:
        items = ((names[0], preloaded),)  # one component: its array, bare
    else:
        raise TypeError(
            f"preloaded for {cls.__name__} must be a dict or a tuple of arrays for "
            f"components {list(names)}, not {type(preloaded).__name__}"
        )
    return {k: v for k, v in ((k, freeze(v, n, k)) for k, v in items) if v is not None}


def _one_array_each(parts: tuple[Any, ...], n: int) -> bool:
    """Whether ``parts`` looks like one array per component rather than ``n`` items:
    at least two arrays, and not one per item."""
    return (
        len(parts) >= 2
        and len(parts) != n
        and all(isinstance(p, np.ndarray) and p.ndim >= 1 for p in parts)
    )


class Batch:
    """An immutable batch: item ids (``indices``) plus named components.

    Subclasses declare ``components = ("images", "labels")``; each becomes a
    read-only attribute. With no components the batch has one array, ``data``.

    Arrays given to a batch become its own: one that owns its memory is made read-only
    in place (the caller's array too: copy it first to keep writing to it), a view of an
    array someone holds is copied, and read-only arrays are shared. Lists, dicts and
    arrays inside an object component become immutable (:mod:`fpipe.values`).

    >>> import numpy as np
    >>> class Pairs(Batch):
    ...     components = ("images", "labels")
    >>> b = Pairs([7, 9], preloaded=(np.zeros((2, 3)), np.array([1, 0])))
    >>> b.images.flags.writeable, len(b), b[9].labels
    (False, 2, np.int64(0))
    >>> b.replace(images=b.images + 1).labels is b.labels  # untouched: shared, not copied
    True
    """

    components: ClassVar[tuple[str, ...] | None] = None
    # ``_index`` is a lazily filled cache of ``index``; the other three are always set.
    __slots__ = ("_ctx", "_data", "_index", "_indices")
    _ctx: BatchContext | None
    _data: dict[str, Any]
    _index: DatasetIndex
    _indices: np.ndarray

    _component_names: ClassVar[tuple[str, ...]] = (_DATA,)
    _component_set: ClassVar[frozenset[str]] = frozenset((_DATA,))
    _item_type: ClassVar[type[_Item]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "components" in cls.__dict__:
            _declare_components(cls, cls.__dict__["components"])
        # Global models (fpipe.models.ModelDefinition) are built when their class is
        # created; models depends on batch, not the other way round, hence the duck type.
        for value in list(vars(cls).values()):
            if getattr(value, "owner", None) is cls and hasattr(value, "build_global"):
                value.build_global()

    # -- construction -------------------------------------------------------------------
    def __init__(self, index: Any, preloaded: Any = None) -> None:
        from .index import DatasetIndex

        if isinstance(index, DatasetIndex):
            ids, idx = index.indices, index
        else:
            idx = DatasetIndex(index)
            ids = idx.indices
        n = len(ids)
        data = self._parse_preloaded(preloaded, n)
        object.__setattr__(self, "_indices", ids)
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_ctx", None)
        object.__setattr__(self, "_index", idx)

    @classmethod
    def _parse_preloaded(cls, preloaded: Any, n: int) -> dict[str, Any]:
        return _parse_preloaded(cls, preloaded, n)

    @classmethod
    def _make(
        cls, indices: np.ndarray, data: dict[str, Any], ctx: BatchContext | None = None
    ) -> Batch:
        """Build a batch from already-frozen parts (no validation: fpipe's own hot path)."""
        b = _new(cls)
        _set_indices(b, indices)
        _set_data(b, data)
        _set_ctx(b, ctx)
        return b

    def _with_ctx(self, ctx: BatchContext | None) -> Batch:
        return self._make(self._indices, self._data, ctx)

    def _gather_all(self) -> Batch:
        """Gather every component still to be gathered, now; return this batch.

        For a prefetch worker: the batch it hands over is then fully made, so gathering
        does not fall to the driver when a driver step first reads a component.
        """
        for value in self._data.values():
            if value.__class__ is LazyRows:
                value.get()
        return self

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: an unknown component or attribute.
        if name.startswith("_"):
            raise AttributeError(name)
        cls = type(self)
        comps = list(cls._component_names)
        known = [*comps, *(n for n in dir(cls) if not n.startswith("_"))]
        hint = did_you_mean(name, known)
        raise AttributeError(
            f"{cls.__name__} has no component or attribute {name!r}.{hint} Its components: "
            f"{comps}; declare a new one in `components` to add it"
        )

    # -- immutability -------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        raise ImmutableBatchError(
            f"cannot set {type(self).__name__}.{name}. " + _IMMUTABLE_HINT.format(name=name)
        )

    def __delattr__(self, name: str) -> None:
        raise ImmutableBatchError(
            f"cannot delete {type(self).__name__}.{name}. " + _IMMUTABLE_HINT.format(name=name)
        )

    def replace(self, **components: Any) -> Batch:
        """Return a new batch with some components replaced; the others are shared.

        >>> import numpy as np
        >>> b = Batch(np.arange(2), preloaded=np.zeros((2, 3)))
        >>> b.replace(data=np.ones((2, 3))).data.sum()
        np.float64(6.0)
        """
        data = self._data.copy()
        n = len(self._indices)
        allowed = self._component_set
        for name, value in components.items():
            if name not in allowed:
                raise ValueError(
                    f"{type(self).__name__} has no component {name!r}; its components are "
                    f"{list(self._component_names)}.{did_you_mean(name, allowed)} "
                    "Declare it in `components` to add it."
                )
            if (
                value.__class__ is np.ndarray
                and value.ndim
                and len(value) == n
                and value.dtype.kind != "O"
            ):
                # The common case, inlined: an array the action just made owns its memory
                # and is frozen in place (no copy, no view); anything else goes to ``own``.
                if value.base is None:
                    value.setflags(False)  # type: ignore[call-arg]  # positional: 2x faster
                else:
                    value = own(value)
                data[name] = value
                continue
            frozen = freeze(value, n, name)
            if frozen is None:
                data.pop(name, None)
            else:
                data[name] = frozen
        b = _new(type(self))
        _set_indices(b, self._indices)
        _set_data(b, data)
        _set_ctx(b, self._ctx)
        return b

    # -- reading --------------------------------------------------------------------------
    @property
    def indices(self) -> np.ndarray:
        """The ids of the batch's items, in batch order (read-only)."""
        return self._indices

    @property
    def index(self) -> DatasetIndex:
        """The batch's ids as a :class:`~fpipe.DatasetIndex`."""
        idx = getattr(self, "_index", None)
        if idx is None:
            from .index import DatasetIndex

            try:
                idx = DatasetIndex(self._indices)
            except ValueError as exc:
                raise FpipeError(
                    f"this batch holds some item ids more than once (e.g. after a rebatch that "
                    f"spans two epochs), so it has no DatasetIndex; use batch.indices. ({exc})"
                ) from exc
            object.__setattr__(self, "_index", idx)  # a cache of a pure function of _indices
        return idx

    @property
    def data(self) -> Any:
        """The batch's array when it declares no components, else a read-only mapping."""
        if self._component_names == (_DATA,):
            return materialized(self._data.get(_DATA))
        from types import MappingProxyType

        return MappingProxyType(self._gathered())

    def _gathered(self) -> dict[str, Any]:
        """The components, every one gathered (see :class:`~fpipe.values.LazyRows`)."""
        data = self._data
        if any(v.__class__ is LazyRows for v in data.values()):
            return {k: materialized(v) for k, v in data.items()}
        return data

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, item_id: Any) -> _Item:
        pos = self.index.get_pos(item_id)
        if not isinstance(pos, (int, np.integer)):
            raise TypeError("batch[...] takes one item id; use batch.select(positions) for many")
        return self._item_type(self, int(pos))

    def __iter__(self) -> Any:
        raise TypeError(
            f"{type(self).__name__} is not iterable; iterate over batch.indices, or use "
            "batch[item_id] for one item"
        )

    def __repr__(self) -> str:
        parts = []
        for name in self._component_names:
            value = self._data.get(name)
            parts.append(f"{name}={'None' if value is None else _shape(value)}")
        return f"{type(self).__name__}({len(self)} items, {', '.join(parts)})"

    def __eq__(self, other: object) -> bool:
        """Equal batches have the same class, ids and components, bit for bit (NaN == NaN);
        the run a batch is part of does not count."""
        if not isinstance(other, Batch):
            return NotImplemented
        if self is other:
            return True
        if type(self) is not type(other) or self._data.keys() != other._data.keys():
            return False
        return _same(self._indices, other._indices) and all(
            _same(v, other._data[k]) for k, v in self._data.items()
        )

    def __hash__(self) -> int:
        ids = self._indices
        return hash((type(self), len(ids), ids[:8].tobytes() if ids.dtype.kind != "O" else 0))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_batch, (type(self), self._indices, self._gathered()))

    # -- run context ----------------------------------------------------------------------
    @property
    def pipeline(self) -> Any:
        """The running pipeline's context: variables, models and config.

        Only available while the batch goes through a running pipeline.
        """
        ctx = self._ctx
        if ctx is None:
            raise FpipeError(
                "batch.pipeline is only available while the batch goes through a running "
                "pipeline (inside an action). Run the pipeline, e.g. `(pipeline << dataset)"
                ".next_batch(4)`, instead of calling the action on a loose batch."
            )
        return ctx.view()

    def get_model_by_name(self, name: str) -> Any:
        """The descriptor of model ``name`` in the current run (see :mod:`fpipe.models`)."""
        return self.pipeline.get_model_by_name(name, self)

    @property
    def random(self) -> np.random.Generator:
        """This batch's random generator for the current step.

        It is derived from (run seed, epoch, batch position, step position) only, so
        runs repeat bit for bit whatever the prefetch or executor.
        """
        ctx = self._ctx
        if ctx is None:
            raise FpipeError(
                "batch.random is only defined while the batch goes through a running pipeline: "
                "it is derived from the run's seed. Run the pipeline with seed=..., or pass "
                "your own numpy Generator to the code you are testing."
            )
        return ctx.random()

    def random_for(self, item: int) -> np.random.Generator:
        """An independent generator for item number ``item`` of this batch at this step."""
        ctx = self._ctx
        if ctx is None:
            return self.random  # raises the explanatory error
        return ctx.item_random(item)

    # -- item sets ------------------------------------------------------------------------
    def select(self, positions: Any) -> Batch:
        """A new batch with the items at ``positions`` (an int array, a slice or a mask)."""
        key = _position_key(positions, self._indices.shape)
        indices = readonly(self._indices[key])
        n = len(indices)
        data = {
            k: v.take(key)
            if v.__class__ is LazyRows and not v.gathered
            else freeze(materialized(v)[key], n, k)
            for k, v in self._data.items()
        }
        return self._make(indices, data, self._ctx)

    @classmethod
    def merge(cls, batches: Sequence[Batch]) -> Batch:
        """Concatenate ``batches`` (items in order) into one batch of the first one's class."""
        return _merge(batches)

    def split(self, sizes: Iterable[int]) -> list[Batch]:
        """Cut the batch into consecutive batches of the given sizes (their sum <= len)."""
        out, start = [], 0
        for size in sizes:
            out.append(self.select(slice(start, start + size)))
            start += size
        if start > len(self):
            raise ValueError(f"sizes add up to {start} but the batch has {len(self)} items")
        return out


class _Item:
    """A read-only view of one item of a batch: its components as attributes."""

    __slots__ = ("_batch", "_pos")

    def __init__(self, batch: Batch, pos: int) -> None:
        object.__setattr__(self, "_batch", batch)
        object.__setattr__(self, "_pos", pos)

    def __getattr__(self, name: str) -> Any:
        batch = self._batch
        if name not in batch._component_set:
            if name.startswith("_"):
                raise AttributeError(name)
            comps = list(batch._component_names)
            raise AttributeError(
                f"item has no component {name!r}.{did_you_mean(name, comps)} Its components: "
                f"{comps}"
            )
        value = materialized(batch._data.get(name))
        return None if value is None else value[self._pos]

    def __setattr__(self, name: str, value: Any) -> None:
        raise ImmutableBatchError(f"cannot set item.{name}. " + _IMMUTABLE_HINT.format(name=name))

    def __repr__(self) -> str:
        return f"<item {self._batch._indices[self._pos]!r} of {type(self._batch).__name__}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_item_of, (self._batch, self._pos))


def _item_of(batch: Batch, pos: int) -> _Item:
    return batch._item_type(batch, pos)


Batch._item_type = _item_type("Batch", (_DATA,))

# Batches are built on the hot path: set the slots through their descriptors, which
# is faster than object.__setattr__ and bypasses Batch.__setattr__ (which refuses).
_new = object.__new__
_set_indices = Batch.__dict__["_indices"].__set__
_set_data = Batch.__dict__["_data"].__set__
_set_ctx = Batch.__dict__["_ctx"].__set__


def _position_key(positions: Any, shape: tuple[int, ...]) -> Any:
    """``positions`` checked as a key into ``shape[0]`` items: a slice, int array or mask."""
    if isinstance(positions, slice):
        return positions
    key = np.asarray(positions)
    if key.dtype == bool:
        if key.shape != shape:
            raise ValueError(f"a mask must have one entry per item ({shape[0]}), got {key.shape}")
    elif key.dtype.kind not in "iu":
        raise TypeError(f"positions must be ints, a slice or a bool mask, not {key.dtype}")
    return key


def _merge(batches: Sequence[Batch]) -> Batch:
    """Concatenate ``batches`` into one of the first one's class (:meth:`Batch.merge`)."""
    if not batches:
        raise ValueError("Batch.merge needs at least one batch")
    first = batches[0]
    kind = type(first)
    if len(batches) == 1:
        return first
    for b in batches:
        if type(b)._component_names != kind._component_names:
            raise TypeError(
                f"cannot merge {kind.__name__} with {type(b).__name__}: their components "
                f"differ ({list(kind._component_names)} vs {list(type(b)._component_names)})"
            )
    indices = readonly(np.concatenate([b._indices for b in batches]))
    data: dict[str, Any] = {}
    for name in kind._component_names:
        parts = [b._data.get(name) for b in batches]
        missing = sum(p is None for p in parts)
        if missing == len(parts):
            continue
        if missing:
            raise ValueError(
                f"cannot merge batches where component {name!r} is loaded in some and "
                "missing in others"
            )
        data[name] = _concatenate(parts)
    return kind._make(indices, data, first._ctx)


def _concatenate(parts: list[Any]) -> Any:
    """The parts of a component in order: still lazy when all are ungathered rows of one
    array, else gathered and concatenated."""
    first = parts[0]
    if first.__class__ is LazyRows and all(
        p.__class__ is LazyRows and p.source is first.source and not p.gathered for p in parts
    ):
        rows = readonly(np.concatenate([p.rows for p in parts]))
        return LazyRows(first.source, rows)
    return readonly(np.concatenate([materialized(p) for p in parts]))


def _shape(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return f"{value.dtype}{list(shape)}" if shape is not None else type(value).__name__


def _rebuild_batch(cls: type[Batch], indices: np.ndarray, data: dict[str, Any]) -> Batch:
    n = len(indices)
    return cls._make(readonly(np.array(indices)), {k: freeze(v, n, k) for k, v in data.items()})


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if a.__class__ is LazyRows or b.__class__ is LazyRows:
        if a.__class__ is b.__class__ and a.same_rows(b):
            return True
        a, b = materialized(a), materialized(b)
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return arrays_equal(a, b)
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    except Exception:
        return False
