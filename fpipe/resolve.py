"""Resolving named expressions: each one becomes a closure when its step is compiled.

The interpreter (:mod:`fpipe.interpreter`) hands this module the arguments of a step
that holds expressions (:mod:`fpipe.expressions`); a step without any is compiled as
before and pays nothing. Each expression becomes a closure ``(batch, ctx) -> value``
made once, at compile time, so a batch pays a few calls per expression, never a walk
over the tree:

- ``B("x")`` reads the component of the batch at hand; ``B()`` is the batch;
- ``V("n")`` reads the run's variable (the step is effectful: on the driver, in order);
- ``C("a/b")`` reads the run's config, nested keys split at ``/``;
- ``R(method, ...)`` draws from the step's generator (``ctx.random()``);
- ``I(...)`` reads the batch's epoch, number in its epoch or number in the run.

An unknown component fails when the step is compiled (the run starts); a missing
config key or variable fails when the step runs, and every message names the step
and the expression.

>>> from fpipe.env import Environment
>>> from fpipe.expressions import C, V
>>> from fpipe.runstate import BatchContext, RunState
>>> env = Environment().set_variable("n", 2)
>>> run = RunState(seed=0, env=env, batch_class=None, config={"k": 10})
>>> resolve = resolver(V("n") * C("k") + 1, None, ((0,), "example"))
>>> resolve(None, BatchContext(run, epoch=0, iteration=0))
21
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Mapping
from typing import Any

from pyrsistent import PMap, pmap

from .errors import FpipeError, PipelineDefinitionError, UnknownVariableError, did_you_mean
from .expressions import BINARY, UNARY, Attr, B, C, Call, Expr, I, Item, Op, R, V, leaves
from .expressions import contains_expression as has_expression
from .values import FrozenDict, FrozenList

__all__ = ["bind_call", "config_count", "config_probability", "resolver", "update_value"]

Resolver = Callable[[Any, Any], Any]  # (batch, ctx) -> the value
Site = tuple[tuple[int, ...], Any]  # (path, step): where a compile error points


def _where(site: Site) -> str:
    path, step = site
    label = step if isinstance(step, str) else step.label
    return f"step {'.'.join(map(str, path))} `{label}`"


# -- one expression -------------------------------------------------------------------------
def resolver(expr: Expr, batch_class: type | None, site: Site) -> Resolver:
    """The closure that resolves ``expr`` for a batch and its context."""
    match expr:
        case B():
            return _component(expr, batch_class, site)
        case V():
            return _variable(expr, site)
        case C():
            return _config(expr)
        case R():
            return _draw(expr, batch_class, site)
        case I():
            return _position(expr)
        case Op():
            return _operator(expr, batch_class, site)
        case Item():
            obj, key = resolver(expr._obj, batch_class, site), _value(expr._key, batch_class, site)
            if key is None:
                fixed = expr._key
                return lambda b, c: obj(b, c)[fixed]
            return lambda b, c: obj(b, c)[key(b, c)]
        case Attr():
            obj, attr = resolver(expr._obj, batch_class, site), expr._attr
            return lambda b, c: getattr(obj(b, c), attr)
        case Call():
            return _call(expr, batch_class, site)
    raise TypeError(f"{type(expr).__name__} is not an expression")


def _component(expr: B, batch_class: type | None, site: Site, store: bool = False) -> Resolver:
    name = expr.name
    if name is None:
        return lambda b, c: b
    if batch_class is not None:
        names = list(getattr(batch_class, "_component_names", ()))
        if name not in names and (store or name.startswith("_") or not hasattr(batch_class, name)):
            raise PipelineDefinitionError(
                f"{_where(site)}: {expr!r}: {batch_class.__name__} has no component {name!r}."
                f"{did_you_mean(name, names)} Its components: {names}; declare it in "
                "`components` to add it."
            )
    return lambda b, c: getattr(b, name)


def _variable(expr: V, site: Site) -> Resolver:
    name = expr.name
    assert name is not None
    if expr._mode is not None:
        raise PipelineDefinitionError(
            f"{_where(site)}: {expr!r} reads variable {name!r}, and a mode only means "
            f"something where a result is stored: write V({name!r}) to read it, or "
            f"save_to={expr!r} to store an action's result in it."
        )

    def variable(b: Any, c: Any) -> Any:
        try:
            return c.run.read_variable(name)
        except KeyError:
            known = sorted(c.run.env.variables)
            raise UnknownVariableError(
                f"{expr!r}: the run has no variable {name!r} (its variables: {known})."
                f"{did_you_mean(name, known)} Declare it with .init_variable({name!r}, "
                "default)."
            ) from None

    return variable


def _config(expr: C) -> Resolver:
    key = expr.name
    assert key is not None
    parts = key.split("/")
    look = _lookup(expr, parts)
    last: tuple[Any, Any] = (None, None)  # (run, value): a run's config never changes

    def config(b: Any, c: Any) -> Any:
        nonlocal last
        run, value = last
        if run is not c.run:
            value = look(c.run.config)
            last = (c.run, value)
        return value

    return config


def _lookup(expr: C, parts: list[str]) -> Callable[[Any], Any]:
    if len(parts) == 1:
        key = parts[0]

        def top(config: Any) -> Any:
            try:
                return config[key]
            except KeyError:
                raise _no_key(expr, config, parts, 0) from None

        return top

    def nested(config: Any) -> Any:
        value = config
        for i, part in enumerate(parts):
            if not isinstance(value, Mapping):
                inside = "".join(f"[{p!r}]" for p in parts[:i])
                raise PipelineDefinitionError(
                    f"{expr!r}: the pipeline's config{inside} is {value!r} "
                    f"({type(value).__name__}), not a dict, so it has no key {part!r}"
                )
            try:
                value = value[part]
            except KeyError:
                raise _no_key(expr, value, parts, i) from None
        return value

    return nested


def _no_key(expr: C, where: Mapping[str, Any], parts: list[str], i: int) -> FpipeError:
    inside = "".join(f"[{p!r}]" for p in parts[:i])
    keys = sorted(map(str, where))
    given = "{" + "".join(f"{p!r}: {{" for p in parts[:i]) + f"{parts[i]!r}: ...}}"
    given += "}" * i
    return PipelineDefinitionError(
        f"{expr!r}: the pipeline's config{inside} has no key {parts[i]!r}."
        f"{did_you_mean(parts[i], keys)} Its keys: {keys}. Give it with "
        f"`pipeline << {given}` or Pipeline(config)."
    )


def _draw(expr: R, batch_class: type | None, site: Site) -> Resolver:
    method = expr.name
    assert method is not None
    args = _arguments(expr._args, expr._kwargs, batch_class, site)
    if args is None:
        fixed, named = expr._args, dict(expr._kwargs)
        return lambda b, c: getattr(c.random(), method)(*fixed, **named)

    def draw(b: Any, c: Any) -> Any:
        a, kw = args(b, c)
        return getattr(c.random(), method)(*a, **kw)

    return draw


def _position(expr: I) -> Resolver:
    if expr.name == "epoch":
        return lambda b, c: c.epoch
    if expr.name == "iteration":
        return lambda b, c: c.iteration

    def in_epoch(b: Any, c: Any) -> Any:
        n = c.batch_in_epoch
        if n is None:
            raise FpipeError(
                "I('batch'): this batch's number in its epoch is not known here (after a "
                "rebatch, or in a run that did not say it); use I('iteration') instead"
            )
        return n

    return in_epoch


def _operator(expr: Op, batch_class: type | None, site: Site) -> Resolver:
    args = expr._args
    if len(args) == 1:
        unary, operand = UNARY[expr._op], _part(args[0], batch_class, site)
        return lambda b, c: unary(operand(b, c))
    fn = BINARY[expr._op][0]
    left, right = (_value(a, batch_class, site) for a in args)
    if right is None:
        assert left is not None
        k = args[1]
        return lambda b, c: fn(left(b, c), k)
    if left is None:
        k = args[0]
        return lambda b, c: fn(k, right(b, c))
    return lambda b, c: fn(left(b, c), right(b, c))


def _call(expr: Call, batch_class: type | None, site: Site) -> Resolver:
    fn = expr._fn
    call = _part(fn, batch_class, site)
    args = _arguments(expr._args, expr._kwargs, batch_class, site)
    if args is None:
        fixed, named = expr._args, dict(expr._kwargs)
        if not isinstance(fn, Expr):
            return lambda b, c: fn(*fixed, **named)
        return lambda b, c: call(b, c)(*fixed, **named)

    def called(b: Any, c: Any) -> Any:
        a, kw = args(b, c)
        return call(b, c)(*a, **kw)

    return called


# -- values that hold expressions -----------------------------------------------------------
def _value(value: Any, batch_class: type | None, site: Site) -> Resolver | None:
    """A resolver for ``value`` if it is or holds an expression, else None (a constant)."""
    if not has_expression(value):
        return None
    if isinstance(value, Expr):
        return resolver(value, batch_class, site)
    if isinstance(value, Mapping):
        items = [
            (_part(k, batch_class, site), _part(v, batch_class, site)) for k, v in value.items()
        ]
        build: Callable[[Any], Any] = pmap if isinstance(value, PMap) else FrozenDict
        return lambda b, c: build({k(b, c): v(b, c) for k, v in items})
    parts = [_part(v, batch_class, site) for v in value]
    if isinstance(value, list):
        build = FrozenList
    elif isinstance(value, (set, frozenset)):
        build = frozenset
    elif hasattr(value, "_fields"):  # a named tuple
        build = lambda items: type(value)(*items)  # noqa: E731
    else:
        build = tuple
    return lambda b, c: build([p(b, c) for p in parts])


def _part(value: Any, batch_class: type | None, site: Site) -> Resolver:
    found = _value(value, batch_class, site)
    return found if found is not None else (lambda b, c: value)


def _arguments(
    args: tuple[Any, ...], kwargs: Mapping[str, Any], batch_class: type | None, site: Site
) -> Callable[[Any, Any], tuple[list[Any], dict[str, Any]]] | None:
    """``(args, kwargs)`` of a call with their expressions resolved, or None if none."""
    slots = [(i, r) for i, a in enumerate(args) if (r := _value(a, batch_class, site))]
    named = [(k, r) for k, v in kwargs.items() if (r := _value(v, batch_class, site))]
    if not slots and not named:
        return None
    base, base_kw = list(args), dict(kwargs)

    def resolved(b: Any, c: Any) -> tuple[list[Any], dict[str, Any]]:
        a, kw = base.copy(), base_kw.copy()
        for i, r in slots:
            a[i] = r(b, c)
        for k, r in named:
            kw[k] = r(b, c)
        return a, kw

    return resolved


def _check_reads(values: Any, site: Site) -> bool:
    """Whether ``values`` read a variable (V leaves); a V that gives a mode is refused."""
    reads = False
    for leaf in leaves(values):
        if isinstance(leaf, V):
            _variable(leaf, site)  # refuses a mode
            reads = True
    return reads


# -- what the interpreter asks for ----------------------------------------------------------
def bind_call(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    save_to: Expr | None,
    batch_class: type,
    site: Site,
) -> tuple[Callable[..., Any], tuple[Any, ...], Mapping[str, Any], bool]:
    """A call ``fn(batch, *lead, *args, **kwargs)`` with its expressions resolved per batch.

    Returns ``(fn, args, kwargs, reads_variables)``: unchanged (and False) when nothing
    in the call is an expression; else a function ``(batch, *lead)`` that resolves the
    arguments and calls ``fn``, with no arguments of its own. ``save_to`` (a step's
    ``save_to=``) is where what ``fn`` returns is stored, unless ``fn`` has a parameter
    of that name: then it is an argument like any other.
    """
    if save_to is None and not args and not kwargs:  # the commonest call: nothing to look at
        return fn, args, kwargs, False
    dest = store = None
    if save_to is not None and _takes(fn, "save_to"):
        kwargs = pmap(kwargs).set("save_to", save_to)
    elif save_to is not None:
        dest, store = save_to, _destination(save_to, batch_class, site)
    elif not (has_expression(args) or has_expression(kwargs)):
        return fn, args, kwargs, False
    reads = _check_reads((args, kwargs), site) or isinstance(dest, V)
    slots = [(i, r, a) for i, a in enumerate(args) if (r := _value(a, batch_class, site))]
    named = [(k, r, v) for k, v in kwargs.items() if (r := _value(v, batch_class, site))]
    base, base_kw = list(args), dict(kwargs)

    def bound(b: Any, *lead: Any) -> Any:
        c = b._ctx
        a = base.copy() if slots else base
        kw = base_kw.copy() if named else base_kw
        at: tuple[Any, Any] = ("?", None)
        try:
            for i, r, e in slots:
                at = (i, e)
                a[i] = r(b, c)
            for k, r, e in named:
                at = (k, e)
                kw[k] = r(b, c)
        except FpipeError:
            raise
        except Exception as exc:
            where, expr = at
            name = f"argument {where}" if isinstance(where, int) else f"{where}="
            raise _unresolved(name, expr, exc) from exc
        out = fn(b, *lead, *a, **kw)
        return out if store is None else store(b, c, out)

    return bound, (), pmap(), reads


def _unresolved(what: str, expr: Any, exc: Exception) -> FpipeError:
    return FpipeError(f"{what} {expr!r} could not be resolved: {type(exc).__name__}: {exc}")


def _takes(fn: Callable[..., Any], name: str) -> bool:
    try:
        param = inspect.signature(fn).parameters.get(name)
    except (TypeError, ValueError):
        return False
    return param is not None and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD)


def _destination(dest: Expr, batch_class: type, site: Site) -> Callable[[Any, Any, Any], Any]:
    if isinstance(dest, V):
        name, mode = dest.name, dest._mode or "w"

        def store_variable(b: Any, c: Any, out: Any) -> Any:
            c.update_variable(name, out, mode)
            return b

        return store_variable
    if isinstance(dest, B) and dest.name is not None:
        _component(dest, batch_class, site, store=True)
        component = dest.name
        return lambda b, c, out: b.replace(**{component: out})
    raise PipelineDefinitionError(
        f"{_where(site)}: save_to={dest!r}: save_to= says where the action's result goes: "
        "V('name', mode='w'|'a'|'e') (a variable of the run) or B('component') (a component "
        "of the batch)"
    )


def update_value(value: Any, batch_class: type, site: Site) -> Any:
    """``update_variable``'s value: unchanged, or a function of the batch if it holds
    expressions (the interpreter calls such a function with the batch)."""
    found = _value(value, batch_class, site)
    if found is None:
        return value
    _check_reads(value, site)

    def resolved(b: Any) -> Any:
        try:
            return found(b, b._ctx)
        except FpipeError:
            raise
        except Exception as exc:
            raise _unresolved("the value", value, exc) from exc

    return resolved


def config_probability(prob: Any, site: Site) -> Callable[[Any], float]:
    """``ctx -> probability`` for ``pipeline @ C(...)``, checked on each use."""
    value = resolver(prob, None, site)

    def probability(c: Any) -> float:
        p = value(None, c)
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= float(p) <= 1:
            raise PipelineDefinitionError(
                f"`pipeline @ {prob!r}`: the config gives {p!r} ({type(p).__name__}), not a "
                "probability in [0, 1]"
            )
        return float(p)

    return probability


def config_count(times: Any, site: Site) -> Callable[[Any], int]:
    """``ctx -> count`` for ``pipeline * C(...)``, checked on each use."""
    value = resolver(times, None, site)

    def count(c: Any) -> int:
        n = value(None, c)
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise PipelineDefinitionError(
                f"`pipeline * {times!r}`: the config gives {n!r} ({type(n).__name__}), not a "
                "whole number of repetitions >= 0"
            )
        return int(n)

    return count
