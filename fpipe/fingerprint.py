"""The identity of a run: what its batches are a function of, and how two differ.

A resume state (:class:`~fpipe.state.IterState`) carries the fingerprint of the run it
came from: a digest (:mod:`fpipe.digest`) of

- the batching plan's shape (items, batch size, shuffle kind, drop_last, epochs, iters);
- the batch class (its module, name and the code of everything it defines);
- the dataset (ids and preloaded contents);
- every step: argument contents, callables' code and closure values, linked sources;
- the config, key by key.

The state also keeps the readable parts (``identity``), so a run that would produce
different batches refuses the state and says what differs::

    step 2: scale(<array 1.0>) vs scale(<array 2.0>)
    config 'lr': 0.1 vs 0.2

The seed is not part of it: a state carries its own seed, which the run adopts.

>>> import numpy as np
>>> from fpipe import Dataset
>>> a = identity_of(Dataset(4).p.apply(np.negative), plan_parts={"batch_size": 2})
>>> b = identity_of(Dataset(4).p.apply(np.sqrt), plan_parts={"batch_size": 2})
>>> differences(a, b)
['step 0: apply(numpy.negative) vs apply(numpy.sqrt)']
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from .digest import dataset_digest, digest
from .steps import ActionStep, ApplyStep, Step

__all__ = ["differences", "fingerprint_of", "identity_of"]

_LABEL = 60  # characters of a step's or value's readable text


def identity_of(pipeline: Any, plan_parts: Mapping[str, Any]) -> dict[str, Any]:
    """The readable identity of ``pipeline`` run under a plan with ``plan_parts``."""
    ds = pipeline.dataset
    cls = ds.batch_class
    return {
        "plan": dict(plan_parts),
        "batch_class": f"{cls.__module__}.{cls.__qualname__} {class_digest(cls)[:12]}",
        "dataset": f"{len(ds)} items {dataset_digest(ds)}",
        "steps": [[describe_step(s), digest(s)] for s in pipeline.steps],
        "config": {str(k): [describe(v), digest(v)] for k, v in pipeline.config.items()},
    }


def fingerprint_of(identity: Mapping[str, Any]) -> str:
    """The digest of an identity (32 hex digits)."""
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def class_digest(cls: type) -> str:
    """The digest of a batch class: what it and its bases up to fpipe's Batch define."""
    from .batch import Batch

    parts = []
    for klass in cls.__mro__:
        if klass is Batch or klass is object:
            break
        own = {k: v for k, v in vars(klass).items() if not _dunder(k)}
        parts.append((f"{klass.__module__}.{klass.__qualname__}", own))
    return digest(parts)


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """What differs between a saved identity and this run's, one readable line each."""
    out: list[str] = []
    for key, value in _get(saved, "plan", {}).items():
        mine = _get(now, "plan", {}).get(key)
        if mine != value:
            out.append(f"plan {key}: {value!r} vs {mine!r}")
    for key in ("batch_class", "dataset"):
        if saved.get(key) != now.get(key):
            what = "dataset contents differ" if key == "dataset" else "batch class differs"
            out.append(f"{what}: {saved.get(key)} vs {now.get(key)}")
    old_steps, new_steps = list(_get(saved, "steps", [])), list(_get(now, "steps", []))
    for i in range(max(len(old_steps), len(new_steps))):
        old = old_steps[i] if i < len(old_steps) else None
        new = new_steps[i] if i < len(new_steps) else None
        if new is None:
            out.append(f"step {i}: {_label(old)} was removed")
        elif old is None:
            out.append(f"step {i}: {_label(new)} is new")
        elif _plainlist(old) != _plainlist(new):
            if _label(old) == _label(new):
                out.append(f"step {i}: {_label(old)} differs in content (arguments or code)")
            else:
                out.append(f"step {i}: {_label(old)} vs {_label(new)}")
    old_cfg, new_cfg = _get(saved, "config", {}), _get(now, "config", {})
    for key in sorted(set(old_cfg) | set(new_cfg), key=str):
        a, b = old_cfg.get(key), new_cfg.get(key)
        if _plainlist(a) != _plainlist(b):
            old_text = "missing" if a is None else _label(a)
            new_text = "missing" if b is None else _label(b)
            out.append(f"config {key!r}: {old_text} vs {new_text}")
    return out


def _label(entry: Any) -> str:
    """The readable half of a ``[text, digest]`` entry (saved ones are untrusted data)."""
    if isinstance(entry, (list, tuple)) and entry and isinstance(entry[0], str):
        return entry[0]
    return repr(entry)[:_LABEL]


def _plainlist(entry: Any) -> Any:
    return list(entry) if isinstance(entry, (list, tuple)) else entry


def _get(d: Mapping[str, Any], key: str, default: Any) -> Any:
    v = d.get(key, default)
    return v if isinstance(v, type(default)) else default


# -- readable texts --------------------------------------------------------------------------
def describe_step(step: Step) -> str:
    """A step as readable text, with array contents summarised (``<array 1.0 2.0>``)."""
    match step:
        case ActionStep(name=name, args=args, kwargs=kwargs):
            return _cut(f"{name}({_call_args(args, kwargs)})")
        case ApplyStep(fn=fn, args=args, kwargs=kwargs):
            inner = ", ".join(p for p in (describe(fn), _call_args(args, kwargs)) if p)
            return _cut(f"apply({inner})")
        case _:
            return _cut(step.label)


def _call_args(args: Any, kwargs: Mapping[str, Any]) -> str:
    parts = [describe(a) for a in args]
    parts += [f"{k}={describe(v)}" for k, v in kwargs.items()]
    return ", ".join(parts)


def describe(value: Any) -> str:
    """A short readable text of a value: small arrays by content, callables by name."""
    if isinstance(value, np.ndarray):
        if value.size <= 4 and value.dtype.kind in "biuf":
            return "<array " + " ".join(repr(x) for x in value.ravel().tolist()) + ">"
        return f"<array {value.dtype}{list(value.shape)} {digest(value)[:8]}>"
    if callable(value) and hasattr(value, "__qualname__"):
        module = getattr(value, "__module__", None) or ""
        return f"{module}.{value.__qualname__}" if module else value.__qualname__
    text = repr(value)
    return text if len(text) <= _LABEL else text[: _LABEL - 3] + "..."


def _cut(text: str) -> str:
    return text if len(text) <= 2 * _LABEL else text[: 2 * _LABEL - 3] + "..."
