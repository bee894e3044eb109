"""Hypothesis strategies for your own batch classes: batches, datasets and pipelines.

They need hypothesis, a test dependency (``pip install hypothesis``); ``import fpipe`` and
``import fpipe.testing`` never import it. Every array they generate is read-only, so an
action that writes into its input fails at once instead of changing the data of the
next example.

>>> import numpy as np
>>> from hypothesis import find
>>> from fpipe import Batch, action
>>> class Digits(Batch):
...     components = ("images", "labels")
...     component_specs = {"images": ("float32", (8, 8), (0, 16)), "labels": ("int64", (), (0, 9))}
...     @action
...     def normalize(self):
...         return self.replace(images=self.images / 16)
>>> b = find(batches(Digits, size=3), lambda b: True)  # the simplest batch of 3 items
>>> b.images.shape, b.images.dtype, b.labels.dtype, b.images.flags.writeable
((3, 8, 8), dtype('float32'), dtype('int64'), False)

What a component holds is declared, for every test at once, by an optional class
attribute ``component_specs``: per component, a dtype, ``(dtype, item_shape)`` or
``(dtype, item_shape, (low, high))``. A component without a spec holds float64
scalars, one per item. Elements are finite numbers within ``(low, high)``, by default
``(-1000, 1000)`` (clipped to what the dtype holds). ``components={name: ...}`` in a
call overrides the class: a spec, a hypothesis strategy that draws *one item* (the
batch stacks ``size`` of them), or ``None`` to leave the component unloaded.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

try:
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ImportError as exc:  # a test dependency: say how to get it
    raise ImportError(
        "fpipe.testing's strategies (batches, datasets, pipelines) need hypothesis, a test "
        "dependency of fpipe: pip install hypothesis (or pip install 'fpipe-ml[test]')"
    ) from exc

from ..actions import ActionDefinition
from ..batch import Batch
from ..dataset import Dataset
from ..errors import did_you_mean
from ..pipeline import Pipeline
from ..steps import action_definition

__all__ = ["batches", "datasets", "pipelines"]

SearchStrategy = st.SearchStrategy
_BOUND = 1000  # default bounds of generated numbers: (-_BOUND, _BOUND)
_MakeRows = Callable[[int], SearchStrategy]  # n -> arrays of n rows


# -- components -----------------------------------------------------------------------------


def _elements(dtype: np.dtype, bounds: tuple[Any, Any] | None, where: str) -> SearchStrategy:
    """Finite elements of ``dtype`` within ``bounds`` (default +-1000, clipped to the dtype)."""
    low, high = bounds if bounds is not None else (-_BOUND, _BOUND)
    if dtype.kind == "f":
        info = np.finfo(dtype)
        low, high = max(float(low), float(info.min)), min(float(high), float(info.max))
        width: Any = min(64, 8 * dtype.itemsize)  # 16, 32 or 64
        return st.floats(low, high, width=width, allow_nan=False, allow_infinity=False)
    if dtype.kind in "iu":
        iinfo = np.iinfo(dtype)
        low, high = max(int(low), int(iinfo.min)), min(int(high), int(iinfo.max))
        return st.integers(low, high)
    if bounds is not None:
        raise ValueError(f"{where}: (low, high) bounds apply to numbers, not to dtype {dtype}")
    if dtype.kind == "b":
        return st.booleans()
    return hnp.from_dtype(dtype, allow_nan=False, allow_infinity=False)


def _from_spec(spec: Any, where: str) -> _MakeRows:
    """A spec (dtype, ``(dtype, item_shape)`` or ``(dtype, item_shape, (low, high))``) as
    a function from a number of rows to a strategy of read-only arrays."""
    try:
        if isinstance(spec, tuple):
            if not 2 <= len(spec) <= 3:
                raise ValueError("a tuple spec has 2 or 3 parts")
            dtype, shape = np.dtype(spec[0]), tuple(int(d) for d in spec[1])
            bounds = tuple(spec[2]) if len(spec) == 3 else None
            if bounds is not None and len(bounds) != 2:
                raise ValueError("bounds are (low, high)")
        else:
            dtype, shape, bounds = np.dtype(spec), (), None
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{where} must be a dtype, (dtype, item_shape) or (dtype, item_shape, (low, high)), "
            f"e.g. ('float32', (28, 28), (0, 1)); got {spec!r} ({exc})"
        ) from exc
    elements = _elements(dtype, bounds, where)

    def rows(n: int) -> SearchStrategy:
        return hnp.arrays(dtype, (n, *shape), elements=elements)

    return rows


def _from_items(strategy: SearchStrategy, name: str) -> _MakeRows:
    """A strategy of one item as a function from a number of rows to stacked arrays."""

    def stack(items: list[Any]) -> np.ndarray:
        try:
            return np.stack([np.asarray(item) for item in items])
        except ValueError as exc:
            raise ValueError(
                f"the strategy for component {name!r} drew items of different shapes "
                f"({exc}); draw one item of a fixed shape, e.g. arrays('float32', (8, 8))"
            ) from exc

    return lambda n: st.lists(strategy, min_size=n, max_size=n).map(stack)


def _component_rows(
    batch_class: type[Batch], components: Mapping[str, Any] | None
) -> dict[str, _MakeRows | None]:
    """For each component of ``batch_class``: how to draw its rows, or None (not loaded)."""
    if not (isinstance(batch_class, type) and issubclass(batch_class, Batch)):
        raise TypeError(f"expected a subclass of fpipe.Batch, got {batch_class!r}")
    names = batch_class._component_names
    owner = batch_class.__name__
    specs = getattr(batch_class, "component_specs", None) or {}
    if not isinstance(specs, Mapping):
        raise TypeError(f"{owner}.component_specs must be a dict {{component: spec}}")
    given = dict(components or {})
    for where, keys in ((f"{owner}.component_specs", specs), ("components=", given)):
        unknown = [k for k in keys if k not in names]
        if unknown:
            raise ValueError(
                f"{where} names {unknown[0]!r}, which is not a component of {owner} "
                f"(its components: {list(names)}).{did_you_mean(str(unknown[0]), names)}"
            )
    out: dict[str, _MakeRows | None] = {}
    for name in names:
        if name in given:
            value = given[name]
            if value is None:
                out[name] = None
            elif isinstance(value, SearchStrategy):
                out[name] = _from_items(value, name)
            else:
                out[name] = _from_spec(value, f"components[{name!r}]")
        else:
            out[name] = _from_spec(specs.get(name, "float64"), f"{owner}.component_specs[{name!r}]")
    return out


def _sizes(size: int | SearchStrategy | None, default: SearchStrategy) -> SearchStrategy:
    if size is None:
        return default
    if isinstance(size, SearchStrategy):
        return size
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int or a strategy of them, not {size!r}")
    return st.just(int(size))


@st.composite
def _made(
    draw: Any, make: Callable[..., Any], rows: dict[str, _MakeRows | None], sizes: SearchStrategy
) -> Any:
    """``make(n, preloaded)`` with ``n`` drawn from ``sizes`` and a drawn array per
    component (hypothesis shows a failing example by the repr of what ``make`` made)."""
    n = draw(sizes)
    return make(n, {name: draw(rows_of(n)) for name, rows_of in rows.items() if rows_of})


def batches(
    batch_class: type[Batch],
    *,
    size: int | SearchStrategy | None = None,
    components: Mapping[str, Any] | None = None,
) -> SearchStrategy:
    """Batches of ``batch_class``: ``size`` items (default 1 to 8) with ids ``0..size-1``
    and read-only components drawn as the module docs say.

    >>> from hypothesis import find, strategies as st
    >>> from fpipe import Batch
    >>> class Pairs(Batch):
    ...     components = ("x", "y")
    >>> b = find(batches(Pairs, components={"x": st.integers(1, 3), "y": None}), lambda b: True)
    >>> b.x.tolist(), b.y
    ([1], None)
    """
    rows = _component_rows(batch_class, components)
    sizes = _sizes(size, st.integers(1, 8))
    return _made(lambda n, data: batch_class(np.arange(n), preloaded=data), rows, sizes)


def datasets(
    batch_class: type[Batch],
    *,
    size: int | SearchStrategy | None = None,
    components: Mapping[str, Any] | None = None,
) -> SearchStrategy:
    """Datasets ``Dataset(size, batch_class, preloaded=...)``: ``size`` items (default 1
    to 16) whose read-only components are drawn like those of :func:`batches`.

    >>> from hypothesis import find
    >>> from fpipe import Batch
    >>> ds = find(datasets(Batch, size=5, components={"data": ("int8", (2,))}), lambda d: True)
    >>> len(ds), ds.preloaded["data"].shape, ds.preloaded["data"].flags.writeable
    (5, (5, 2), False)
    """
    rows = _component_rows(batch_class, components)
    sizes = _sizes(size, st.integers(1, 16))
    return _made(lambda n, data: Dataset(n, batch_class, preloaded=data), rows, sizes)


# -- pipelines --------------------------------------------------------------------------------


def _default_actions(batch_class: type[Batch]) -> dict[str, dict[str, Any]]:
    """The class's actions that need no argument and no model."""
    found: dict[str, dict[str, Any]] = {}
    for name in dir(batch_class):
        defn = getattr(batch_class, name, None)
        if not isinstance(defn, ActionDefinition) or defn.model is not None:
            continue
        params = list(inspect.signature(defn.fn).parameters.values())[1:]
        if all(
            p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params
        ):
            found[name] = {}
    if not found:
        raise ValueError(
            f"{batch_class.__name__} has no action that runs without arguments; name the "
            "actions and strategies for their arguments: "
            "pipelines(MyBatch, actions={'augment': {'sigma': st.floats(0, 1)}})"
        )
    return found


def _check_arguments(batch_class: type[Batch], name: str, arguments: Mapping[str, Any]) -> None:
    defn = action_definition(batch_class, name)  # an unknown name: a did-you-mean error
    params = inspect.signature(defn.fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    known = list(params)[2 if defn.model is not None else 1 :]
    for arg in arguments:
        if arg not in known:
            raise ValueError(
                f"{batch_class.__name__}.{name} takes no argument {arg!r}.{did_you_mean(arg, known)}"
                f" Its arguments: {', '.join(known) or 'none'}."
            )


def _leaf(name: str, arguments: Mapping[str, Any]) -> SearchStrategy:
    drawn = st.fixed_dictionaries(
        {k: v if isinstance(v, SearchStrategy) else st.just(v) for k, v in arguments.items()}
    )
    return drawn.map(lambda kwargs: Pipeline().action(name, **kwargs))


def pipelines(
    batch_class: type[Batch],
    actions: Mapping[str, Mapping[str, Any]] | Sequence[str] | None = None,
    *,
    min_steps: int = 1,
    max_steps: int = 4,
    algebra: bool = True,
    probabilities: SearchStrategy | None = None,
    repeats: SearchStrategy | None = None,
    extra: SearchStrategy | None = None,
) -> SearchStrategy:
    """Template pipelines (link them: ``p << dataset``) of ``batch_class``'s actions.

    ``actions`` maps an action's name to its keyword arguments, each a value or a
    strategy: ``{"normalize": {}, "augment": {"sigma": st.floats(0, 1)}}`` (a list of
    names: no arguments; None: every action that needs no argument). Each pipeline has
    ``min_steps`` to ``max_steps`` drawn actions; with ``algebra`` a group of them may be
    wrapped as ``group @ prob`` (``probabilities``, default 0 to 1) or ``group * n``
    (``repeats``, default 0 to 2). ``extra`` draws more pipelines to mix in as steps,
    e.g. ``st.just(Pipeline().update_variable("n", 1, mode="a"))``.

    >>> from hypothesis import find, strategies as st
    >>> from fpipe import Batch, action
    >>> class Nums(Batch):
    ...     @action
    ...     def add(self, k):
    ...         return self.replace(data=self.data + k)
    >>> p = find(pipelines(Nums, {"add": {"k": st.integers(1, 9)}}), lambda p: len(p.steps) == 2)
    >>> [step.label for step in p.steps]
    ['add(k=1)', 'add(k=1)']
    """
    if actions is None:
        table = _default_actions(batch_class)
    elif isinstance(actions, Mapping):
        table = {name: dict(args or {}) for name, args in actions.items()}
    else:
        table = {name: {} for name in actions}
    if not table and extra is None:
        raise ValueError("pipelines() needs at least one action (or extra=)")
    for name, arguments in table.items():
        _check_arguments(batch_class, name, arguments)
    if not 0 <= min_steps <= max_steps:
        raise ValueError(f"need 0 <= min_steps <= max_steps, got {min_steps} and {max_steps}")
    leaves = [_leaf(name, arguments) for name, arguments in table.items()]
    if extra is not None:
        leaves.append(extra)
    leaf = st.one_of(*leaves)
    probs = probabilities if probabilities is not None else st.floats(0.0, 1.0)
    times = repeats if repeats is not None else st.integers(0, 2)
    forms = st.sampled_from(["step", "maybe", "repeat"]) if algebra else st.just("step")

    @st.composite
    def composed(draw: Any, low: int, high: int, depth: int) -> Pipeline:
        p, left = Pipeline(), draw(st.integers(low, high))
        while left > 0:
            form = draw(forms) if depth < 2 else "step"
            if form == "step":
                p, left = p + draw(leaf), left - 1
                continue
            k = draw(st.integers(1, left))
            group = draw(composed(k, k, depth + 1))
            p = p + (group @ draw(probs) if form == "maybe" else group * draw(times))
            left -= k
        return p

    return composed(min_steps, max_steps, 0)
