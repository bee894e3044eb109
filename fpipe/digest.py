"""Content digests: a stable hash of what a value *is*, the same in every process.

:func:`digest` walks a value's structure: array contents (dtype, shape and bytes),
sequences and mappings item by item, a function's code, constants, defaults, closure
values and the plain-data globals it reads, and any other object through what it
pickles to (``__reduce_ex__``), without ever pickling it. Two values with the same
digest build the same batches; it is what a resume state is checked against
(:mod:`fpipe.fingerprint`).

Python's own ``hash()`` cannot serve: it is salted per process for strings and
coarse for arrays. A preloaded array's digest is computed once per array object
(about 1 s per GB) and kept in a side table that forgets the array with it.

>>> import numpy as np
>>> digest(np.ones(3)) == digest(np.ones(3)), digest(np.ones(3)) == digest(np.ones(4))
(True, False)
>>> digest(lambda x: x + 1) == digest(lambda x: x + 2)
False
"""

from __future__ import annotations

import hashlib
import threading
import types
import weakref
from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np

__all__ = ["array_digest", "dataset_digest", "digest"]

_SIZE = 16  # bytes of a digest: 32 hex digits
_MAX_DEPTH = 64  # deeper structures are summarised by type (no recursion bombs)

# array id -> (weak reference, digest); the entry goes when the array does
_ARRAYS: dict[int, tuple[Any, bytes]] = {}
_ARRAYS_LOCK = threading.Lock()


def digest(value: Any) -> str:
    """A hex digest of ``value``'s content, stable across processes and runs."""
    h = hashlib.sha256()
    _Walker(h).feed(value, 0)
    return h.hexdigest()[: 2 * _SIZE]


def array_digest(arr: np.ndarray) -> bytes:
    """The digest of a read-only array's content, computed once per array object.

    A writable array is hashed every time (its content may change).
    """
    if arr.flags.writeable or arr.dtype.hasobject:
        return _hash_array(arr)
    key = id(arr)
    with _ARRAYS_LOCK:
        hit = _ARRAYS.get(key)
    if hit is not None and hit[0]() is arr:
        return hit[1]
    out = _hash_array(arr)
    try:
        ref = weakref.ref(arr, partial(_forget, key))
    except TypeError:  # not weakly referenceable: do not keep it
        return out
    with _ARRAYS_LOCK:
        _ARRAYS[key] = (ref, out)
    return out


def _forget(key: int, _ref: Any) -> None:
    with _ARRAYS_LOCK:
        _ARRAYS.pop(key, None)


def _hash_array(arr: np.ndarray) -> bytes:
    h = hashlib.sha256()
    h.update(f"ndarray|{arr.dtype.str}|{arr.shape}|".encode())
    if arr.dtype.hasobject:
        walker = _Walker(h)
        for item in arr.ravel(order="C"):
            walker.feed(item, 1)
    else:
        h.update(np.ascontiguousarray(arr).view(np.uint8).ravel().data)
    return h.digest()[:_SIZE]


_PLAIN = (type(None), bool, int, float, complex, str, bytes)


class _Walker:
    """Feeds a value's structure into a hash; guards against cycles and depth."""

    __slots__ = ("h", "seen")

    def __init__(self, h: Any) -> None:
        self.h = h
        self.seen: set[int] = set()  # ids of containers on the path being walked

    def tag(self, text: str) -> None:
        self.h.update(text.encode("utf-8", "surrogatepass") + b"\x00")

    def feed(self, v: Any, depth: int) -> None:
        t = type(v)
        if t in _PLAIN:
            self.tag(f"{t.__name__}:{v!r}")
            return
        if depth > _MAX_DEPTH:
            self.tag(f"deep:{t.__module__}.{t.__qualname__}")
            return
        if isinstance(v, np.ndarray):
            self.h.update(b"A" + array_digest(v))
            return
        if isinstance(v, np.generic):
            self.tag(f"np:{v.dtype.str}")
            self.h.update(np.asarray(v).tobytes() if not v.dtype.hasobject else repr(v).encode())
            return
        key = id(v)
        if key in self.seen:
            self.tag("cycle")
            return
        self.seen.add(key)
        try:
            self._container(v, t, depth + 1)
        finally:
            self.seen.discard(key)

    def _container(self, v: Any, t: type, depth: int) -> None:
        from .dataset import Dataset  # a description module: no running layer

        if isinstance(v, (tuple, list)):
            self.tag(f"seq:{len(v)}")
            for item in v:
                self.feed(item, depth)
        elif isinstance(v, Mapping):
            self.tag(f"map:{len(v)}")
            for k in sorted(v, key=_sort_key):
                self.feed(k, depth)
                self.feed(v[k], depth)
        elif isinstance(v, (set, frozenset)):
            parts = sorted(digest(item) for item in v)
            self.tag(f"set:{','.join(parts)}")
        elif isinstance(v, Dataset):
            self.tag("dataset")
            self.tag(dataset_digest(v))
        elif isinstance(v, types.FunctionType):
            self._function(v, depth)
        elif isinstance(v, types.MethodType):
            self.tag("method")
            self.feed(v.__func__, depth)
            self.feed(v.__self__, depth)
        elif isinstance(v, partial):
            self.tag("partial")
            self.feed(v.func, depth)
            self.feed(v.args, depth)
            self.feed(v.keywords, depth)
        elif isinstance(v, types.CodeType):
            self._code(v, depth)
        elif isinstance(v, (type, types.BuiltinFunctionType, types.ModuleType)):
            name = getattr(v, "__qualname__", None) or getattr(v, "__name__", "?")
            self.tag(f"ref:{getattr(v, '__module__', '')}.{name}")
        else:
            self._reduced(v, t, depth)

    def _function(self, fn: types.FunctionType, depth: int) -> None:
        self.tag(f"fn:{fn.__module__}.{fn.__qualname__}")
        self._code(fn.__code__, depth)
        self.feed(fn.__defaults__, depth)
        self.feed(fn.__kwdefaults__, depth)
        cells = []
        for cell in fn.__closure__ or ():
            try:
                cells.append(cell.cell_contents)
            except ValueError:  # an empty cell
                cells.append("<empty cell>")
        self.feed(tuple(cells), depth)
        # globals the code reads that hold plain data (not modules, classes, functions):
        # a module constant a lambda uses is part of what it computes
        g = fn.__globals__
        for name in _global_names(fn.__code__):
            if name in g and _is_data(g[name]):
                self.tag(f"global:{name}")
                self.feed(g[name], depth)

    def _code(self, code: types.CodeType, depth: int) -> None:
        self.tag(f"code:{code.co_name}:{code.co_argcount}:{code.co_kwonlyargcount}")
        self.h.update(code.co_code)
        self.tag(",".join(code.co_names))
        self.tag(",".join(code.co_varnames))
        self.tag(",".join(code.co_freevars))
        for const in code.co_consts:
            self.feed(const, depth)

    def _reduced(self, v: Any, t: type, depth: int) -> None:
        self.tag(f"obj:{t.__module__}.{t.__qualname__}")
        try:
            reduced = v.__reduce_ex__(4)
        except Exception:  # not picklable: its readable text, without addresses
            self.tag(_without_addresses(repr(v)))
            return
        if isinstance(reduced, str):  # a global singleton, by name
            self.tag(reduced)
            return
        for part in reduced[:3]:
            self.feed(part, depth)
        for extra in reduced[3:5]:  # list items / dict items, when given as iterators
            if extra is not None:
                self.feed(list(extra), depth)


def _global_names(code: types.CodeType) -> list[str]:
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.extend(_global_names(const))
    return names


def _is_data(v: Any) -> bool:
    """Immutable plain data: a constant a function computes with (a mutable module-level
    list or dict is state the function keeps, not part of what it is)."""
    if isinstance(v, (*_PLAIN, np.generic)):
        return True
    if isinstance(v, np.ndarray):
        return not v.flags.writeable
    if isinstance(v, (tuple, frozenset)) and len(v) <= 1000:
        return all(_is_data(x) for x in v)
    return False


def _sort_key(k: Any) -> tuple[str, str]:
    return (type(k).__name__, repr(k))


def _without_addresses(text: str) -> str:
    import re

    return re.sub(r"0x[0-9a-fA-F]+", "", text)


# -- datasets --------------------------------------------------------------------------------
def dataset_digest(ds: Any) -> str:
    """The digest of a Dataset: its batch class, ids and preloaded arrays.

    Each preloaded array is hashed once per array object (datasets made by ``split``
    share their parent's arrays and their digests).
    """
    h = hashlib.sha256()
    cls = ds.batch_class
    h.update(f"{cls.__module__}.{cls.__qualname__}\x00".encode())
    h.update(array_digest(ds.indices))
    source = ds._source
    if source is not None:
        h.update(b"source" + array_digest(source.indices))
    for name in sorted(ds.preloaded):
        h.update(name.encode() + b"\x00")
        h.update(array_digest(ds.preloaded[name]))
    return h.hexdigest()[: 2 * _SIZE]
