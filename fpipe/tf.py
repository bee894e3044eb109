"""TensorFlow helpers (the ``tf`` extra): TensorFlow is imported only when one is called.

``import fpipe`` never imports TensorFlow; this module does not either until
:func:`require_tf` or :func:`to_tf_dataset` runs.

>>> import numpy as np
>>> from fpipe import Batch, Dataset
>>> class XY(Batch):
...     components = ("x", "y")
>>> ds = Dataset(10, XY, preloaded=(np.ones((10, 3), "float32"), np.arange(10)))
>>> tfds = to_tf_dataset(ds.p, 4, seed=0)
>>> [spec.shape.as_list() for spec in tfds.element_spec]
[[None, 3], [None]]
>>> [len(x) for x, y in tfds]
[4, 4, 2]

A pipeline without steps over preloaded numeric arrays takes a fast path that runs no
Python per batch (``tf.gather`` over the plan's positions); any other pipeline streams
its batches through a generator, several small batches per call. Both give the batches
of :meth:`Pipeline.gen_batch`, bit for bit and in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import takewhile
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .batch import Batch
    from .dataset import Dataset
    from .pipeline import Pipeline
    from .plan import BatchPlan

__all__ = ["require_tf", "to_tf_dataset"]

_INSTALL_HINT = 'TensorFlow is not installed; install fpipe\'s tf extra: pip install "fpipe-ml[tf]"'
# the path of the seeds of later passes over a tf.data.Dataset (see to_tf_dataset)
_PURPOSE_TF_PASS = 0x7F
# The generator path hands TensorFlow consecutive batches of one shape stacked, up to
# this many and this many bytes a call: a call into Python from tf.data costs ~0.1 ms.
_CHUNK_BATCHES = 32
_CHUNK_BYTES = 1 << 20
# dtypes the fast path gathers with tf ops (strings and objects take the generator path)
_FAST_KINDS = "biufc"


def require_tf() -> ModuleType:
    """Return the ``tensorflow`` module, or raise ImportError saying how to install it."""
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise ImportError(f"{_INSTALL_HINT} ({exc})") from exc
    return tf


def _component_names(pipeline: Pipeline, components: str | Sequence[str] | None) -> tuple[str, ...]:
    if components is None:
        batch_class = pipeline.batch_class
        declared = getattr(batch_class, "components", None)
        return tuple(declared) if declared else ("data",)
    if isinstance(components, str):
        return (components,)
    names = tuple(components)
    if not names or not all(isinstance(n, str) for n in names):
        raise TypeError(
            f"components must be a component name or a list of names, not {components!r}"
        )
    return names


def _arrays(batch: Batch, names: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    out = []
    for name in names:
        value = getattr(batch, name, None)
        if value is None:
            raise ValueError(
                f"to_tf_dataset: component {name!r} of {type(batch).__name__} is None in a "
                "batch; load it in the pipeline or choose others with components=[...]"
            )
        out.append(np.asarray(value))
    return tuple(out)


def _spec(tf: Any, array: np.ndarray) -> Any:
    dtype = tf.string if array.dtype.kind in "USO" else tf.as_dtype(array.dtype)
    return tf.TensorSpec(shape=(None, *array.shape[1:]), dtype=dtype)


def to_tf_dataset(
    pipeline: Pipeline,
    *args: Any,
    output_signature: Any = None,
    components: str | Sequence[str] | None = None,
    cardinality: int | str | None = "auto",
    fast: bool = True,
    **kwargs: Any,
) -> Any:
    """Stream the output batches of ``pipeline`` as a ``tf.data.Dataset``.

    ``args`` / ``kwargs`` are the run arguments of :meth:`Pipeline.iterate`
    (``batch_size, shuffle, n_epochs, n_iters, drop_last, prefetch, seed, executor``).
    Each element is one batch: the arrays of ``components`` (default: the batch
    class's components) as a tuple, so a batch class with ``("images", "labels")``
    gives ``(x, y)`` pairs that ``keras_model.fit(ds)`` trains on; a single component
    gives the tensor alone. Without ``output_signature`` the signature is read from
    the first batch, with a ``None`` batch dimension (the last batch may be smaller).

    Every pass over the dataset is a new run of the pipeline: the first with the
    given seed, pass ``k`` with a seed derived from (seed, k), so ``fit(ds, epochs=3)``
    sees a fresh, reproducible shuffle every epoch. No batch is computed twice: the
    first batch, read for the signature, is the first one the first pass yields.

    ``cardinality`` is the number of batches a pass yields, which Keras needs to know
    where an epoch ends: ``"auto"`` takes it from the batching plan (infinite for
    ``n_epochs=None``) unless the pipeline rebatches; pass ``None`` (unknown) when
    actions skip batches, or a number.

    **Fast path.** A pipeline with no steps that act on batches, whose components are
    all preloaded arrays of numbers or bools, runs no Python per batch: each batch is a
    ``tf.gather`` of the plan's positions from a TensorFlow copy of the dataset's rows of
    those arrays (made once, held by the returned dataset, as ``from_tensor_slices``
    would), prefetched by tf.data; Python runs once per epoch, to draw its order. The batches, their order and
    the seed of every pass are those of the generator path. The generator path is taken
    instead, and ``fast=False`` forces it (to spare the copy), when

    - the pipeline has steps that act on batches (actions, ``apply``, ``rebatch``,
      ``merge``, ...): they are Python code, run by fpipe's own iterator;
    - a component is not preloaded, or holds strings or objects;
    - ``output_signature`` is given (the generator path follows it as given).

    ``prefetch`` and ``executor`` matter on the generator path only.
    """
    tf = require_tf()

    params = pipeline._run_args(
        args, kwargs, "to_tf_dataset"
    )  # validate now, in the caller's frame
    names = _component_names(pipeline, components)
    if cardinality not in ("auto", None) and (
        isinstance(cardinality, bool) or not isinstance(cardinality, (int, np.integer))
    ):
        raise TypeError(f"cardinality must be 'auto', None or an int, not {cardinality!r}")
    if fast and output_signature is None and fast_path_reason(pipeline, names) is None:
        return _gathered_dataset(tf, pipeline, params, names, cardinality)
    return _generated_dataset(tf, pipeline, params, names, cardinality, output_signature)


def fast_path_reason(pipeline: Pipeline, names: Sequence[str]) -> str | None:
    """Why ``to_tf_dataset`` streams ``pipeline`` through a generator (None: it need not)."""
    from .interpreter import compile_program

    dataset = pipeline._require_dataset("to_tf_dataset")
    program = compile_program(pipeline.steps, dataset.batch_class)
    if program.rebatches or any(program.stages):
        return "the pipeline has steps that act on batches (Python code)"
    preloaded = dataset.preloaded
    for name in names:
        array = preloaded.get(name)
        if array is None:
            return f"component {name!r} is not preloaded"
        if array.dtype.kind not in _FAST_KINDS:
            return f"component {name!r} holds {array.dtype} values, not numbers"
    return None


def _expected(tf: Any, plan: BatchPlan | None, cardinality: int | str | None) -> int | None:
    """The number of batches a pass yields, as ``cardinality`` says (None: unknown)."""
    if cardinality == "auto":
        if plan is None:
            return None
        total = plan.total_batches
        return int(tf.data.INFINITE_CARDINALITY) if total is None else total
    return None if cardinality is None else int(cardinality)


# The fast path gathers several batches' rows in one tf op, up to this many bytes and
# MAX_GATHER batches (a tf.data function call costs more than a small batch's gather)
GATHER_BYTES = 1 << 20
MAX_GATHER = 64


def _pass_seed(base_seed: int, k: int) -> int:
    """The seed of pass ``k`` over a tf.data.Dataset (pass 0 has the run's own)."""
    from . import rng

    return base_seed if k == 0 else int(rng.derive(base_seed, _PURPOSE_TF_PASS, k).integers(2**62))


def _gathered_dataset(
    tf: Any, pipeline: Pipeline, params: dict[str, Any], names: tuple[str, ...], cardinality: Any
) -> Any:
    """The fast path: batches gathered by tf ops over the plan's positions."""
    dataset = pipeline._require_dataset("to_tf_dataset")
    plan = pipeline._plan(params, "to_tf_dataset")
    rows_of = _rows_of(dataset)  # the dataset's rows of its arrays, in position order
    tensors = tuple(
        tf.convert_to_tensor(a if rows_of is None else a[rows_of])
        for a in (dataset.preloaded[name] for name in names)
    )
    total = plan.total_batches
    n_epochs = None if total is None else -(-total // plan.batches_per_epoch)
    row_bytes = sum(int(np.prod(t.shape[1:], dtype=np.int64)) * t.dtype.size for t in tensors)
    per_gather = max(1, min(MAX_GATHER, GATHER_BYTES // max(1, row_bytes * plan.batch_size)))
    passes = [0]

    def epoch_rows(k: np.ndarray, epoch: np.ndarray) -> tuple[np.int64, np.ndarray, np.ndarray]:
        """Epoch ``epoch`` of pass ``k`` (epoch 0 opens a new pass): the pass, and the
        positions of the epoch's batches in groups (see :func:`_grouped`)."""
        this = int(k)
        if int(epoch) == 0:
            this = passes[0]
            passes[0] += 1
        positions, bounds = _epoch(plan.reseeded(_pass_seed(plan.seed, this)), int(epoch))
        return (np.int64(this), *_grouped(positions, bounds, per_gather))

    plain = tf.autograph.experimental.do_not_convert  # plain tf ops: nothing to convert
    int64 = tf.int64

    @plain
    def batch_rows(k: Any, epoch: Any) -> Any:
        # the scan carries the pass's number through its epochs
        k, rows, shapes = tf.numpy_function(
            epoch_rows, [k, epoch], (int64, int64, int64), stateful=True
        )
        shapes = tf.reshape(shapes, [-1, 2])
        rows = tf.reshape(rows, [tf.shape(shapes)[0], per_gather, -1])
        return tf.reshape(k, []), (rows, shapes)

    @plain
    def gather(rows: Any, shape: Any) -> Any:
        rows = rows[: shape[0], : shape[1]]  # the group's batches, unpadded
        out = tuple(tf.gather(t, rows) for t in tensors)
        return out[0] if len(out) == 1 else out

    # Python runs once per epoch (to draw its order) and never per batch. A call into a
    # tf.data function costs tens of microseconds, more than the gather of a small batch:
    # one gather serves a group of batches (up to GATHER_BYTES), then split into batches.
    epochs = tf.data.Dataset.range(n_epochs) if n_epochs is not None else tf.data.Dataset.counter()
    groups = epochs.scan(tf.constant(-1, int64), batch_rows).unbatch()
    out = groups.map(gather).unbatch().prefetch(tf.data.AUTOTUNE)
    expected = _expected(tf, plan, cardinality)
    if expected is not None:
        out = out.apply(tf.data.experimental.assert_cardinality(expected))
    return out


def _rows_of(dataset: Dataset) -> np.ndarray | None:
    """The rows of its preloaded arrays that ``dataset`` holds, in position order (as
    ``Dataset._batch_at`` finds them); None: position ``i`` is row ``i``."""
    source = dataset._source
    if source is None:
        return None
    return np.asarray(source.get_pos(dataset._index.indices), dtype=np.int64)


def _grouped(positions: np.ndarray, bounds: np.ndarray, most: int) -> tuple[np.ndarray, np.ndarray]:
    """The batches ``positions[bounds[i]:bounds[i + 1]]`` in groups of consecutive
    batches of one length, at most ``most`` each: a matrix ``most`` x the longest batch per
    group, padded with zeros, and each group's (number of batches, length).

    >>> rows, shapes = _grouped(np.arange(7), np.array([0, 2, 4, 6, 7]), 2)
    >>> rows.tolist()
    [[[0, 1], [2, 3]], [[4, 5], [0, 0]], [[6, 0], [0, 0]]]
    >>> shapes.tolist()
    [[2, 2], [1, 2], [1, 1]]
    """
    sizes = np.diff(bounds).tolist()
    groups: list[tuple[int, int, int]] = []  # (first batch, number of batches, length)
    for i, size in enumerate(sizes):
        if groups and groups[-1][2] == size and groups[-1][1] < most:
            first, count, _ = groups[-1]
            groups[-1] = (first, count + 1, size)
        else:
            groups.append((i, 1, size))
    rows = np.zeros((len(groups), most, max(sizes, default=0)), dtype=np.int64)
    for g, (first, count, size) in enumerate(groups):
        start = bounds[first]
        rows[g, :count, :size] = positions[start : start + count * size].reshape(count, size)
    shapes = np.array([(count, size) for _, count, size in groups], dtype=np.int64)
    return rows, shapes.reshape(-1, 2)


def _epoch(plan: BatchPlan, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """The positions of the batches of epoch ``epoch`` of ``plan``, end to end, and the
    bounds of each batch in them."""
    from .state import IterState

    start = IterState(plan.seed, epoch, 0, epoch * plan.batches_per_epoch, plan.fingerprint)
    parts = [p for e, _, _, p in takewhile(lambda c: c[0] == epoch, plan.coordinates(start))]
    bounds = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=bounds[1:])
    return np.concatenate(parts).astype(np.int64, copy=False), bounds


def _generated_dataset(
    tf: Any,
    pipeline: Pipeline,
    params: dict[str, Any],
    names: tuple[str, ...],
    cardinality: Any,
    output_signature: Any,
) -> Any:
    """The generator path: fpipe's own runs, several small batches per call."""
    single = len(names) == 1

    def element(batch: Batch) -> Any:
        arrays = _arrays(batch, names)
        return arrays[0] if single else arrays

    first_run = pipeline._iterator(params)
    base_seed = first_run.seed
    head: list[Batch] = []
    if output_signature is None:
        try:
            head.append(next(first_run))
        except StopIteration:
            first_run.close()
            raise ValueError(
                "to_tf_dataset: the pipeline produced no batch, so the signature cannot be "
                "inferred; pass output_signature=..."
            ) from None
        specs = tuple(_spec(tf, a) for a in _arrays(head[0], names))
        output_signature = specs[0] if single else specs

    expected = _expected(tf, None if first_run._program.rebatches else first_run.plan, cardinality)
    passes = [0]

    def generate() -> Iterator[Any]:
        k = passes[0]
        passes[0] += 1
        if k == 0:
            it, ahead = first_run, list(head)
            head.clear()
        else:
            shuffle = params["shuffle"]
            again = {**params, "seed": _pass_seed(base_seed, k)}
            if isinstance(shuffle, (int, np.integer, np.random.Generator)) and not isinstance(
                shuffle, (bool, np.bool_)
            ):
                again["shuffle"] = True  # an int or Generator shuffle gave the first seed
            it, ahead = pipeline._iterator(again), []
        count = 0
        try:
            for batch in ahead:
                count += 1
                yield element(batch)
            for batch in it:
                count += 1
                yield element(batch)
        finally:
            it.close()
        if expected is not None and expected >= 0 and count != expected:
            raise ValueError(
                f"to_tf_dataset: the pipeline yielded {count} batches, not the {expected} "
                "of its batching plan (does an action skip batches?); pass "
                "cardinality=None (unknown) or the right number"
            )

    def stacked(spec: Any) -> Any:
        return tf.TensorSpec((None, *spec.shape), spec.dtype)

    chunks = tf.nest.map_structure(stacked, output_signature)
    dataset = tf.data.Dataset.from_generator(
        lambda: _stacks(generate(), single), output_signature=chunks
    ).unbatch()
    if expected is not None:
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(expected))
    import weakref

    weakref.finalize(dataset, first_run.close)  # if the dataset is dropped unread
    return dataset


def _stacks(elements: Iterator[Any], single: bool) -> Iterator[Any]:
    """Consecutive elements of one shape and dtype stacked on a new first axis, up to
    ``_CHUNK_BATCHES`` of them and ``_CHUNK_BYTES`` (one alone travels as a view)."""
    group: list[tuple[np.ndarray, ...]] = []
    key: Any = None
    limit = 1
    for element in elements:
        arrays = (element,) if single else element
        this = tuple((a.shape, a.dtype) for a in arrays)
        if group and (this != key or len(group) >= limit):
            yield _stack(group, single)
            group = []
        if not group:
            key = this
            size = sum(a.nbytes for a in arrays)
            limit = max(1, min(_CHUNK_BATCHES, _CHUNK_BYTES // max(size, 1)))
        group.append(arrays)
    if group:
        yield _stack(group, single)


def _stack(group: list[tuple[np.ndarray, ...]], single: bool) -> Any:
    if len(group) == 1:
        out = tuple(a[np.newaxis] for a in group[0])
    else:
        out = tuple(np.stack(parts) for parts in zip(*group, strict=True))
    return out[0] if single else out
