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
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .batch import Batch
    from .pipeline import Pipeline

__all__ = ["require_tf", "to_tf_dataset"]

_INSTALL_HINT = 'TensorFlow is not installed; install fpipe\'s tf extra: pip install "fpipe[tf]"'
# the path of the seeds of later passes over a tf.data.Dataset (see to_tf_dataset)
_PURPOSE_TF_PASS = 0x7F


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
    """
    tf = require_tf()
    from . import rng

    params = pipeline._run_args(
        args, kwargs, "to_tf_dataset"
    )  # validate now, in the caller's frame
    names = _component_names(pipeline, components)
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

    expected: int | None = None
    if cardinality == "auto":
        if not first_run._program.rebatches:
            expected = first_run.plan.total_batches
            if expected is None:
                expected = int(tf.data.INFINITE_CARDINALITY)
    elif cardinality is not None:
        if isinstance(cardinality, bool) or not isinstance(cardinality, (int, np.integer)):
            raise TypeError(f"cardinality must be 'auto', None or an int, not {cardinality!r}")
        expected = int(cardinality)
    passes = [0]

    def generate() -> Iterator[Any]:
        k = passes[0]
        passes[0] += 1
        if k == 0:
            it, ahead = first_run, list(head)
            head.clear()
        else:
            seed = int(rng.derive(base_seed, _PURPOSE_TF_PASS, k).integers(2**62))
            shuffle = params["shuffle"]
            again = {**params, "seed": seed}
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

    dataset = tf.data.Dataset.from_generator(generate, output_signature=output_signature)
    if expected is not None:
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(expected))
    import weakref

    weakref.finalize(dataset, first_run.close)  # if the dataset is dropped unread
    return dataset
