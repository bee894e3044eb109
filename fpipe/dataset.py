"""Dataset: an index, a batch class and (optionally) preloaded component arrays.

>>> import numpy as np
>>> from fpipe import Dataset
>>> ds = Dataset(100, preloaded=np.arange(100.0))
>>> train, test = ds.split(0.8)
>>> len(train), len(test), len(ds)
(80, 20, 100)
>>> ds.create_batch([3, 4]).data
array([3., 4.])

A dataset is a value: splitting and subsetting make new datasets that share the
preloaded arrays, and ``ds.p`` starts a new pipeline linked to it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .batch import Batch
from .index import DatasetIndex
from .values import LazyRows, arrays_equal, freeze_objects, own, readonly

if TYPE_CHECKING:
    from .pipeline import Pipeline
    from .runstate import BatchContext

__all__ = ["Dataset"]


class Dataset:
    """Items (by id), the :class:`~fpipe.Batch` class that holds them, and optional data.

    ``preloaded`` holds whole-dataset arrays aligned with the index: a dict by
    component, a tuple with one array per component, or one array for a batch class
    without components.

    >>> import numpy as np
    >>> ds = Dataset(10, preloaded=np.arange(10.0) * 2)
    >>> train, test = ds.split(0.8)
    >>> len(train), len(test), ds.create_batch([3, 1]).data.tolist()
    (8, 2, [6.0, 2.0])
    >>> [b.indices.tolist() for b in test.p.gen_batch(1)]
    [[8], [9]]
    """

    __slots__ = ("__weakref__", "_batch_class", "_data", "_index", "_source")
    # The class of the pipelines ``ds.p`` makes; fpipe.pipeline sets it where it defines
    # Pipeline (a dataset is a description and never imports the running layer).
    _pipeline_type: ClassVar[Any]
    _batch_class: type[Batch]
    _data: dict[str, np.ndarray]
    _index: DatasetIndex
    _source: DatasetIndex | None

    def __init__(
        self,
        index: Any,
        batch_class: type[Batch] = Batch,
        preloaded: Any = None,
    ) -> None:
        if not (isinstance(batch_class, type) and issubclass(batch_class, Batch)):
            raise TypeError(f"batch_class must be a subclass of fpipe.Batch, got {batch_class!r}")
        idx = index if isinstance(index, DatasetIndex) else DatasetIndex(index)
        data = batch_class._parse_preloaded(preloaded, len(idx)) if preloaded is not None else {}
        self._set(idx, batch_class, data, None)

    def _set(
        self,
        index: DatasetIndex,
        batch_class: type[Batch],
        data: dict[str, np.ndarray],
        source: DatasetIndex | None,
    ) -> None:
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_batch_class", batch_class)
        object.__setattr__(self, "_data", data)
        # the index the preloaded arrays are aligned with, when it is not ``_index``
        object.__setattr__(self, "_source", source)

    def _derive(self, index: DatasetIndex) -> Dataset:
        new = object.__new__(Dataset)
        new._set(index, self._batch_class, self._data, self._source or self._index)
        return new

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"Dataset is immutable; cannot set {name!r}. Build a new one with "
            "Dataset(index, batch_class, preloaded) or use split()/create_subset()."
        )

    # -- reading --------------------------------------------------------------------------
    @property
    def index(self) -> DatasetIndex:
        """The dataset's index: the ids of its items."""
        return self._index

    @property
    def indices(self) -> np.ndarray:
        """The ids of the dataset's items (read-only), as ``index.indices``."""
        return self._index.indices

    @property
    def batch_class(self) -> type[Batch]:
        """The ``Batch`` subclass this dataset's batches are made of."""
        return self._batch_class

    @property
    def preloaded(self) -> Mapping[str, np.ndarray]:
        """The whole-dataset arrays by component (aligned with the original index)."""
        from types import MappingProxyType

        return MappingProxyType(self._data)

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        comps = ", ".join(self._data) or "nothing preloaded"
        return f"Dataset({len(self)} items, {self._batch_class.__name__}, {comps})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Dataset):
            return NotImplemented
        return (
            self._batch_class is other._batch_class
            and self._index == other._index
            and self._source == other._source
            and self._data.keys() == other._data.keys()
            and all(arrays_equal(self._data[k], other._data[k]) for k in self._data)
        )

    def __hash__(self) -> int:
        return hash((self._batch_class, self._index))

    def __rshift__(self, pipeline: Any) -> Any:
        """``dataset >> pipeline`` links the pipeline to this dataset."""
        if not isinstance(pipeline, self._pipeline_type):
            raise TypeError(
                f"`dataset >> x` links a pipeline x to the dataset, but x is {pipeline!r} "
                f"({type(pipeline).__name__}): link with `pipeline << dataset` or "
                "`dataset >> pipeline`"
            )
        return pipeline << self

    def __lshift__(self, other: object) -> Any:
        if not isinstance(other, self._pipeline_type):
            return NotImplemented
        raise TypeError(
            "`dataset << pipeline` is the wrong way round: link with `pipeline << dataset` "
            "or `dataset >> pipeline`"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self._index, self._batch_class, self._data, self._source))

    # -- batches --------------------------------------------------------------------------
    def _batch_at(self, positions: np.ndarray, ctx: BatchContext | None = None) -> Batch:
        """The batch of the items at ``positions`` of this dataset's index (hot path).

        Its components are :class:`~fpipe.values.LazyRows`: each is gathered from the
        preloaded array when an action first reads it, so one nobody reads costs nothing.
        """
        if self._index._is_range and self._source is None and positions.dtype == np.int64:
            ids = rows = _private(positions)  # the common case of _ids_rows, inlined
        else:
            ids, rows = self._ids_rows(positions)
        data = {}
        for name, arr in self._data.items():  # a loop: a comprehension is a call on 3.11
            data[name] = LazyRows(arr, rows)
        return self._batch_class._make(ids, data, ctx)

    def _batches_at(
        self, positions: Sequence[np.ndarray], ctxs: Sequence[BatchContext | None]
    ) -> list[Batch]:
        """The batches at each of ``positions``, every component gathered now: one gather
        per component for them all, each batch holding a read-only slice of it.

        For a run's driver making small batches a few in a row (up to
        ``fpipe.executors.INLINE_BYTES`` of rows in all): one gather of many rows costs
        half what a gather per batch does. The gathered rows stay alive while any batch
        of them does.
        """
        sizes = [len(p) for p in positions]
        ids, rows = self._ids_rows(np.concatenate(positions) if positions else np.empty(0, int))
        gathered = {name: readonly(arr[rows]) for name, arr in self._data.items()}
        make = self._batch_class._make
        out, lo = [], 0
        for n, ctx in zip(sizes, ctxs, strict=True):
            hi = lo + n
            out.append(make(ids[lo:hi], {k: v[lo:hi] for k, v in gathered.items()}, ctx))
            lo = hi
        return out

    def _ids_rows(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ids of the items at ``positions`` and their rows in the preloaded arrays,
        both read-only arrays of their own."""
        # A batch keeps its own copy of the positions it needs (a view of the plan's
        # rows would keep that whole epoch's order alive as long as the batch).
        if self._index._is_range and positions.dtype == np.int64:
            ids = _private(positions)  # the ids are the positions: a copy, no gather
            if self._source is None:
                return ids, ids
        else:
            ids = readonly(self._index.indices[positions])
        if not self._data:
            return ids, ids  # no rows to read
        if self._source is not None:  # the arrays are aligned with another index
            return ids, own(self._source.get_pos(ids))
        return ids, _private(positions)

    def create_batch(self, ids: Any) -> Batch:
        """The batch of the items with these ids (in this order)."""
        positions = self._index.get_pos(np.asarray(ids) if not isinstance(ids, np.ndarray) else ids)
        return self._batch_at(np.atleast_1d(positions))

    # -- new datasets ---------------------------------------------------------------------
    def create_subset(self, ids: Any) -> Dataset:
        """A dataset of some of these items; it shares the preloaded arrays."""
        return self._derive(self._index.create_subset(ids))

    def split(
        self, shares: Any = 0.8, shuffle: Any = False, seed: Any = None
    ) -> tuple[Dataset, ...]:
        """Split into new datasets (see :meth:`DatasetIndex.split`); this one is unchanged."""
        return tuple(self._derive(i) for i in self._index.split(shares, shuffle=shuffle, seed=seed))

    # -- pipelines ------------------------------------------------------------------------
    def pipeline(self, config: Mapping[str, Any] | None = None) -> Pipeline:
        """A new, empty pipeline linked to this dataset."""
        return self._pipeline_type(config) << self

    @property
    def p(self) -> Pipeline:
        """Shorthand for :meth:`pipeline`: ``ds.p.normalize().run(32)``."""
        return self.pipeline()

    def gen_batch(self, batch_size: int, *args: Any, **kwargs: Any) -> Iterator[Batch]:
        """Iterate over batches of this dataset (same arguments as :meth:`Pipeline.gen_batch`)."""
        return self.p.gen_batch(batch_size, *args, **kwargs)

    def next_batch(self, batch_size: int, *args: Any, **kwargs: Any) -> Batch:
        """The next batch; successive calls with the same arguments continue one iteration
        (kept beside this dataset object, never in its value)."""
        p = self.p
        return p._next_of(self, p, p._run_args((batch_size, *args), kwargs, "next_batch"))

    def reset(self) -> None:
        """Forget the iteration that :meth:`next_batch` continues."""
        self._pipeline_type._reset_of(self)


def _private(positions: np.ndarray) -> np.ndarray:
    """``positions`` as a read-only array of its own (a view is copied)."""
    return own(positions) if positions.base is None else readonly(positions.copy())


def _rebuild(index: DatasetIndex, batch_class: type[Batch], data: dict, source: Any) -> Dataset:
    # The unpickled arrays are ours alone: a plain one is made read-only in place (no copy,
    # even when protocol 5 gives a view of the pickle's buffer); pickling loses the items'
    # read-only flags, so an object (ragged) one has its items frozen again.
    frozen = {}
    for k, v in data.items():
        if v.dtype.kind == "O":
            v = freeze_objects(v)
        else:
            v.flags.writeable = False
        frozen[k] = v
    ds = object.__new__(Dataset)
    ds._set(index, batch_class, frozen, source)
    return ds
