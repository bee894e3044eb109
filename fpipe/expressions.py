"""Named expressions: step arguments that stand for what a step sees when it runs.

An expression is a small immutable tree, data only: building one runs nothing. The
interpreter resolves it each time its step runs on a batch (see :mod:`fpipe.resolve`).
Its leaves name what a running step can see:

- ``B("images")``: a component of the batch at hand; ``B()``: the batch itself;
- ``V("loss")``: a variable of the run (a step that reads one is effectful);
- ``C("lr")``, ``C("model/lr")``: the pipeline's config, ``/`` reading nested keys;
- ``R("normal", loc=0, scale=0.1, size=3)``: a draw from the step's reproducible stream;
- ``I("epoch")``, ``I("batch")`` (in its epoch), ``I("iteration")``: where the run is.

Arithmetic, indexing, attribute access and method calls on expressions give
expressions, and ``F(fn)(*args)`` calls a function whose arguments are expressions.
Expressions compare, hash and pickle as values, with a readable ``repr``:

>>> e = V("n") * 2 + C("shape")[0]
>>> e, e == V("n") * 2 + C("shape")[0], hash(e) == hash(V("n") * 2 + C("shape")[0])
(V('n') * 2 + C('shape')[0], True, True)
>>> [(leaf.kind, leaf.name) for leaf in leaves({"k": (e, B(), [B("x").mean(axis=0)])})]
[('V', 'n'), ('C', 'shape'), ('B', None), ('B', 'x')]

``==`` compares expressions as values, so the comparison operators do not build
expressions (``<``, ``<=``, ``>``, ``>=`` raise): write ``F(operator.lt)(V("n"), 3)``.
An expression has no truth value at definition time either (``if V("x"):`` raises).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, NoReturn

import numpy as np

from .env import update_mode
from .errors import did_you_mean
from .values import freeze, freeze_kwargs, value_hash, values_equal

__all__ = [
    "B",
    "C",
    "Expr",
    "F",
    "I",
    "Leaf",
    "R",
    "V",
    "contains_expression",
    "leaves",
]

# operator -> (function, precedence); the precedences are Python's (higher binds tighter)
BINARY: dict[str, tuple[Callable[[Any, Any], Any], int]] = {
    "|": (operator.or_, 2),
    "^": (operator.xor, 3),
    "&": (operator.and_, 4),
    "+": (operator.add, 5),
    "-": (operator.sub, 5),
    "*": (operator.mul, 6),
    "@": (operator.matmul, 6),
    "/": (operator.truediv, 6),
    "//": (operator.floordiv, 6),
    "%": (operator.mod, 6),
    "**": (operator.pow, 8),
}
UNARY: dict[str, Callable[[Any], Any]] = {
    "-": operator.neg,
    "+": operator.pos,
    "~": operator.invert,
    "abs": abs,
}
_ATOM, _UNARY_PREC = 9, 7
_ATOMS = frozenset({int, float, complex, str, bytes, bool, type(None), range, slice})
INFO = ("epoch", "batch", "iteration")


def _refuse_change(self: Any, *args: Any) -> NoReturn:
    raise AttributeError(f"{type(self).__name__} expressions are values and cannot change")


def _binary(op: str, reflected: bool = False) -> Callable[[Any, Any], Any]:
    def method(self: Expr, other: Any) -> Any:
        if not getattr(type(other), "_expression_operand", True):
            return NotImplemented  # e.g. a Pipeline: `C("n") * pipeline` is its business
        return Op(op, (other, self) if reflected else (self, other))

    return method


class Expr:
    """Base of every expression: operators build new expressions, ``==`` compares."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()

    def _parts(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f) for f in self._fields)

    def _precedence(self) -> int:
        return _ATOM

    # -- a value ----------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if type(other) is not type(self):
            return False  # an expression equals only an expression of its kind
        return all(values_equal(a, b) for a, b in zip(self._parts(), other._parts(), strict=True))

    def __hash__(self) -> int:
        return hash((type(self).__name__, *map(value_hash, self._parts())))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self._parts()))

    __setattr__ = __delattr__ = _refuse_change

    def __bool__(self) -> bool:
        raise TypeError(
            f"{self!r} is an expression: it is resolved when a step runs, so it has no truth "
            "value when the pipeline is written (`if V('x'):`, `and`, `or` and `not` cannot "
            "work). Pass it to a step and test the value there, or compute with "
            "F(fn)(expression, ...)."
        )

    def __iter__(self) -> NoReturn:
        raise TypeError(
            f"{self!r} is an expression, resolved when a step runs: it cannot be iterated or "
            f"unpacked when the pipeline is written; index it instead, e.g. {self!r}[0]"
        )

    def __contains__(self, item: object) -> NoReturn:
        self.__iter__()

    def __lt__(self, other: object) -> NoReturn:
        raise TypeError(
            "expressions do not build comparisons (`==` compares two expressions as "
            "values): write F(operator.lt)(a, b), F(operator.eq)(a, b) and so on"
        )

    __le__ = __gt__ = __ge__ = __lt__
    __array_ufunc__ = None  # `array + V("x")` gives an expression, not an array of them

    # -- building expressions -------------------------------------------------------------
    def __getattr__(self, name: str) -> Attr:
        if name.startswith("_"):
            raise AttributeError(name)
        return Attr(self, name)

    def __getitem__(self, key: Any) -> Item:
        return Item(self, key)

    __add__, __radd__ = _binary("+"), _binary("+", True)
    __sub__, __rsub__ = _binary("-"), _binary("-", True)
    __mul__, __rmul__ = _binary("*"), _binary("*", True)
    __matmul__, __rmatmul__ = _binary("@"), _binary("@", True)
    __truediv__, __rtruediv__ = _binary("/"), _binary("/", True)
    __floordiv__, __rfloordiv__ = _binary("//"), _binary("//", True)
    __mod__, __rmod__ = _binary("%"), _binary("%", True)
    __pow__, __rpow__ = _binary("**"), _binary("**", True)
    __and__, __rand__ = _binary("&"), _binary("&", True)
    __or__, __ror__ = _binary("|"), _binary("|", True)
    __xor__, __rxor__ = _binary("^"), _binary("^", True)

    def __neg__(self) -> Op:
        return Op("-", (self,))

    def __pos__(self) -> Op:
        return Op("+", (self,))

    def __invert__(self) -> Op:
        return Op("~", (self,))

    def __abs__(self) -> Op:
        return Op("abs", (self,))


def _rebuild(cls: type[Expr], parts: tuple[Any, ...]) -> Expr:
    obj = object.__new__(cls)
    for name, value in zip(cls._fields, parts, strict=True):
        object.__setattr__(obj, name, value)
    return obj


def _set(obj: Expr, **fields: Any) -> None:
    for name, value in fields.items():
        object.__setattr__(obj, name, value)


# -- leaves ---------------------------------------------------------------------------------
class Leaf(Expr):
    """A leaf: ``kind`` is ``"B"``, ``"V"``, ``"C"``, ``"R"`` or ``"I"``; ``name`` what it
    names (``None`` for ``B()``)."""

    __slots__ = ("name",)
    _fields: ClassVar[tuple[str, ...]] = ("name",)
    kind: ClassVar[str] = ""
    name: str | None

    def __repr__(self) -> str:
        return f"{self.kind}({self.name!r})"


def _name(kind: str, name: object, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"{kind}(...) takes {what} (a non-empty str), not {name!r}")
    return name


class B(Leaf):
    """The batch a step runs on (``B()``) or one of its components (``B("images")``)."""

    __slots__ = ()
    kind = "B"

    def __init__(self, name: str | None = None) -> None:
        _set(self, name=None if name is None else _name("B", name, "a component name"))

    def __repr__(self) -> str:
        return "B()" if self.name is None else f"B({self.name!r})"


class V(Leaf):
    """A variable of the run: ``V("loss")``. As a destination (``save_to=``) it takes a
    ``mode``: ``"w"`` (write, the default), ``"a"`` (append) or ``"e"`` (extend)."""

    __slots__ = ("_mode",)
    _fields = ("name", "_mode")
    kind = "V"
    _mode: str | None

    def __init__(self, name: str, mode: str | None = None) -> None:
        _set(
            self,
            name=_name("V", name, "a variable name"),
            _mode=None if mode is None else update_mode(mode),
        )

    def __repr__(self) -> str:
        mode = "" if self._mode is None else f", mode={self._mode!r}"
        return f"V({self.name!r}{mode})"


class C(Leaf):
    """A value of the pipeline's config: ``C("lr")``; ``C("model/lr")`` reads
    ``config["model"]["lr"]``."""

    __slots__ = ()
    kind = "C"

    def __init__(self, key: str) -> None:
        key = _name("C", key, "a config key")
        if "" in key.split("/"):
            raise ValueError(f"C({key!r}): a nested config key is 'outer/inner', no empty part")
        _set(self, name=key)


_DRAWS = sorted(
    n
    for n in dir(np.random.Generator)
    if not n.startswith("_") and n not in ("bit_generator", "shuffle", "spawn")  # no draws
)


class R(Leaf):
    """A draw from the step's random stream, ``R("normal", loc=0, scale=0.1, size=3)``:
    the named ``numpy.random.Generator`` method, called with these arguments (which may
    be expressions). Same seed, same draws, with any executor."""

    __slots__ = ("_args", "_kwargs")
    _fields = ("name", "_args", "_kwargs")
    kind = "R"
    _args: tuple[Any, ...]
    _kwargs: Mapping[str, Any]

    def __init__(self, method: str, /, *args: Any, **kwargs: Any) -> None:
        method = _name("R", method, "the name of a numpy Generator method")
        if method not in _DRAWS:
            raise ValueError(
                f"R({method!r}): numpy's random Generator has no method {method!r}."
                f"{did_you_mean(method, _DRAWS)} R draws with a method that returns its draw, "
                "e.g. R('normal', size=3), R('integers', 0, 10), R('permutation', 5)."
            )
        _set(self, name=method, _args=tuple(freeze(a) for a in args), _kwargs=freeze_kwargs(kwargs))

    def __repr__(self) -> str:
        return f"R({_arguments((self.name, *self._args), self._kwargs)})"


class I(Leaf):  # noqa: E742  # the one-letter names are the point
    """Where the run is: ``I("epoch")``, ``I("batch")`` (the batch's number in its
    epoch) or ``I("iteration")`` (the batch's number in the run), counted from 0."""

    __slots__ = ()
    kind = "I"

    def __init__(self, what: str) -> None:
        if what not in INFO:
            raise ValueError(
                f"I({what!r}): the position of a run is I('epoch'), I('batch') or "
                f"I('iteration').{did_you_mean(str(what), INFO)}"
            )
        _set(self, name=what)


# -- nodes ----------------------------------------------------------------------------------
class Op(Expr):
    """An operator applied to one or two operands (expressions or constants)."""

    __slots__ = ("_args", "_op")
    _fields = ("_op", "_args")
    _op: str
    _args: tuple[Any, ...]

    def __init__(self, op: str, args: tuple[Any, ...]) -> None:
        _set(self, _op=op, _args=tuple(freeze(a) for a in args))

    def _precedence(self) -> int:
        if len(self._args) == 1:
            return _ATOM if self._op == "abs" else _UNARY_PREC
        return BINARY[self._op][1]

    def __repr__(self) -> str:
        op, args = self._op, self._args
        if len(args) == 1:
            if op == "abs":
                return f"abs({_text(args[0], 0)})"
            return f"{op}{_text(args[0], _UNARY_PREC)}"
        prec = BINARY[op][1]
        right_assoc = op == "**"
        left = _text(args[0], prec + right_assoc)
        right = _text(args[1], prec + (not right_assoc))
        return f"{left} {op} {right}"


class Item(Expr):
    """``obj[key]``: the key may hold expressions, slices and ``...``."""

    __slots__ = ("_key", "_obj")
    _fields = ("_obj", "_key")
    _obj: Expr
    _key: Any

    def __init__(self, obj: Expr, key: Any) -> None:
        _set(self, _obj=obj, _key=freeze(key))

    def __repr__(self) -> str:
        key = self._key
        inner = ", ".join(map(_index, key)) if type(key) is tuple and key else _index(key)
        return f"{_text(self._obj, _ATOM)}[{inner}]"


class Attr(Expr):
    """``obj.name``; calling it (``B("x").mean(axis=0)``) calls the method."""

    __slots__ = ("_attr", "_obj")
    _fields = ("_obj", "_attr")
    _obj: Expr
    _attr: str

    def __init__(self, obj: Expr, attr: str) -> None:
        _set(self, _obj=obj, _attr=attr)

    def __call__(self, *args: Any, **kwargs: Any) -> Call:
        return Call(self, args, kwargs)

    def __repr__(self) -> str:
        return f"{_text(self._obj, _ATOM)}.{self._attr}"


class Call(Expr):
    """``fn(*args, **kwargs)`` resolved per batch; made by ``F(fn)(...)`` or a method call."""

    __slots__ = ("_args", "_fn", "_kwargs")
    _fields = ("_fn", "_args", "_kwargs")
    _fn: Any
    _args: tuple[Any, ...]
    _kwargs: Mapping[str, Any]

    def __init__(self, fn: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        _set(self, _fn=fn, _args=tuple(freeze(a) for a in args), _kwargs=freeze_kwargs(kwargs))

    def __repr__(self) -> str:
        fn = self._fn
        head = _text(fn, _ATOM) if isinstance(fn, Expr) else repr(F(fn))
        return f"{head}({_arguments(self._args, self._kwargs)})"


class F:
    """``F(fn)(*args, **kwargs)``: an expression that calls ``fn`` with its arguments
    resolved, each time its step runs.

    >>> import operator
    >>> F(operator.lt)(V("n"), 3)
    F(lt)(V('n'), 3)
    """

    __slots__ = ("fn",)
    fn: Callable[..., Any]

    def __init__(self, fn: Callable[..., Any]) -> None:
        if isinstance(fn, Expr) or not callable(fn):
            raise TypeError(
                f"F(fn) takes a function, not {fn!r}; a method of an expression is called "
                "directly, e.g. B('images').mean(axis=0)"
            )
        object.__setattr__(self, "fn", fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Call:
        return Call(self.fn, args, kwargs)

    def __eq__(self, other: object) -> bool:
        return type(other) is F and values_equal(self.fn, other.fn)

    def __hash__(self) -> int:
        return hash(("F", value_hash(self.fn)))

    def __repr__(self) -> str:
        fn = self.fn
        name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
        return f"F({name})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (F, (self.fn,))

    __setattr__ = __delattr__ = _refuse_change


# -- readable text ------------------------------------------------------------------------
def _text(value: Any, needed: int) -> str:
    """``value``'s text, in parentheses if it binds less tightly than ``needed``."""
    if isinstance(value, Expr):
        text, prec = repr(value), value._precedence()
    else:
        text = repr(value)
        negative = isinstance(value, (int, float, np.number)) and value < 0
        prec = _UNARY_PREC if negative else _ATOM
    return f"({text})" if prec < needed else text


def _index(key: Any) -> str:
    if isinstance(key, slice):
        parts = ["" if p is None else _text(p, 0) for p in (key.start, key.stop, key.step)]
        return ":".join(parts[:2] if key.step is None else parts)
    return "..." if key is Ellipsis else _text(key, 0)


def _arguments(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    named = (f"{k}={v!r}" for k, v in sorted(kwargs.items()))
    return ", ".join([*map(repr, args), *named])


# -- walking argument values --------------------------------------------------------------
def leaves(value: Any) -> Iterator[Leaf]:
    """The leaf expressions in ``value``, depth first: inside tuples, lists, sets, dicts
    and persistent maps, expressions and their arguments (an ``R``'s too).

    >>> list(leaves((1, {"a": V("n") + C("k")}, "text")))
    [V('n'), C('k')]
    """
    if value.__class__ in _ATOMS:
        return
    if isinstance(value, Expr):
        if isinstance(value, Leaf):
            yield value
        for part in value._parts():
            yield from leaves(part)
    elif isinstance(value, (tuple, list, set, frozenset)):
        for item in value:
            yield from leaves(item)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from leaves(key)
            yield from leaves(item)


def contains_expression(value: Any) -> bool:
    """Whether ``value`` is or holds an expression (where :func:`leaves` looks).

    >>> contains_expression([1, (2, {"k": V("n")})]), contains_expression([1, "V"])
    (True, False)
    """
    cls = value.__class__
    if cls in _ATOMS or cls is np.ndarray:
        return False
    if cls is tuple or cls is list:  # the common containers, without the isinstance chain
        return any(contains_expression(item) for item in value)
    if isinstance(value, Expr):
        return True
    if isinstance(value, (tuple, list, set, frozenset)):
        return any(contains_expression(item) for item in value)
    if isinstance(value, np.ndarray):
        return False
    if isinstance(value, Mapping):
        return any(contains_expression(k) or contains_expression(v) for k, v in value.items())
    return False
