"""IterState: where a run stands, as plain data that is safe to read from anywhere.

A state is what ``iterator.get_state()`` returns and ``iterate(..., state=...)``
continues from. It holds numbers and short strings only, never code or batches:

- ``seed``, and ``epoch``/``batch_in_epoch``/``iteration``: how far the run's batching
  plan has gone (``iteration`` batches in all, ``batch_in_epoch`` of them in ``epoch``);
- ``fingerprint``: the digest of what produces the batches (plan, batch class, dataset
  contents, steps, config), and ``identity``: the readable parts of that digest, so a
  mismatch can say what differs (:mod:`fpipe.fingerprint`);
- ``position``: for pipelines with ``rebatch`` or ``merge``, where each stage stands:
  a rebatch stage holds items of batches already made; the state records the position
  its oldest held batch came from and how many of its items were handed out, so a
  resumed run makes those batches again instead of storing them; a ``merge`` records
  the state of each merged source (a nested state);
- ``produced``: how many batches each rebatch stage has handed out.

:meth:`IterState.from_dict` checks a dict field by field (keys, types, ranges, nesting
depth) and never executes anything; consistency with the pipeline it resumes is
checked when the run starts.

>>> st = IterState(seed=3, epoch=1, batch_in_epoch=2, iteration=7, fingerprint="ab")
>>> IterState.from_dict(st.to_dict()) == st
True
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pyrsistent import pmap

from .errors import did_you_mean
from .values import freeze, thaw

__all__ = ["IterState"]

_INTS = ("seed", "epoch", "batch_in_epoch", "iteration")
_REQUIRED = (*_INTS, "fingerprint")
_OPTIONAL = ("identity", "position", "produced")
_MAX_INT = 2**64
_MAX_NESTING = 16  # rebatch stages or merges within merges
_MAX_TEXT = 4096
_PATH = re.compile(r"^\d+(\.\d+)*$")


@dataclass(frozen=True)
class IterState:
    """Where an iteration stands; see the module docs for each field."""

    seed: int
    epoch: int
    batch_in_epoch: int
    iteration: int
    fingerprint: str
    identity: Mapping[str, Any] = field(default_factory=pmap)
    position: Mapping[str, Any] | None = None
    produced: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.identity:  # BatchPlan.iterate makes one per batch, with none
            object.__setattr__(self, "identity", freeze(dict(self.identity)))
        if self.position is not None:
            object.__setattr__(self, "position", freeze(dict(self.position)))
        object.__setattr__(self, "produced", tuple(int(n) for n in self.produced))

    def __hash__(self) -> int:
        return hash((self.seed, self.epoch, self.batch_in_epoch, self.iteration, self.fingerprint))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (ints, strings, lists and dicts) that :meth:`from_dict` reads."""
        d: dict[str, Any] = {
            "seed": int(self.seed),
            "epoch": int(self.epoch),
            "batch_in_epoch": int(self.batch_in_epoch),
            "iteration": int(self.iteration),
            "fingerprint": str(self.fingerprint),
        }
        if self.identity:
            d["identity"] = _plain(self.identity)
        if self.position is not None:
            d["position"] = _plain(self.position)
        if self.produced:
            d["produced"] = list(self.produced)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> IterState:
        """Read a state written by :meth:`to_dict`, checking every field; never runs code.

        >>> IterState.from_dict({"seed": 1, "epoch": 0})
        Traceback (most recent call last):
        ...
        ValueError: IterState dict lacks key(s) ['batch_in_epoch', 'iteration', 'fingerprint']; ...
        """
        return _read_state(d, "IterState", 0)


# -- reading untrusted dicts -------------------------------------------------------------
def _read_state(d: Any, where: str, depth: int) -> IterState:
    if depth > _MAX_NESTING:
        raise ValueError(f"{where}: merges nested deeper than {_MAX_NESTING} levels")
    if not isinstance(d, Mapping):
        raise ValueError(f"an IterState dict must be a mapping, not {type(d).__name__}")
    _keys(d, _REQUIRED, _OPTIONAL, where)
    ints = {k: _count(d[k], f"{where} {k!r}") for k in _INTS}
    fingerprint = _text(d["fingerprint"], f"{where} 'fingerprint'")
    identity = _identity(d["identity"], where) if "identity" in d else pmap()
    position = _position(d["position"], f"{where} 'position'", depth) if "position" in d else None
    produced: tuple[int, ...] = ()
    if "produced" in d:
        raw = d["produced"]
        if not isinstance(raw, (list, tuple)) or len(raw) > _MAX_NESTING:
            raise ValueError(
                f"{where} 'produced' must be a list of at most {_MAX_NESTING} counts, got {raw!r}"
            )
        produced = tuple(_count(n, f"{where} 'produced'") for n in raw)
    return IterState(
        seed=ints["seed"],
        epoch=ints["epoch"],
        batch_in_epoch=ints["batch_in_epoch"],
        iteration=ints["iteration"],
        fingerprint=fingerprint,
        identity=identity,
        position=position,
        produced=produced,
    )


def _keys(
    d: Mapping[str, Any], required: tuple[str, ...], optional: tuple[str, ...], where: str
) -> None:
    known = (*required, *optional)
    unknown = [k for k in d if k not in known]
    if unknown:
        hint = did_you_mean(str(unknown[0]), known)
        extra = ""
        if "carry" in unknown:
            extra = (
                " ('carry' held pickled batches in fpipe's old states; states are plain data "
                "now: start the run afresh)"
            )
        raise ValueError(f"unknown {where} key(s) {unknown}; expected {list(known)}.{hint}{extra}")
    missing = [k for k in required if k not in d]
    if missing:
        raise ValueError(f"{where} dict lacks key(s) {missing}; got {sorted(map(str, d))}")


def _count(v: Any, what: str) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"{what} must be a non-negative int, got {v!r} ({type(v).__name__})")
    if v < 0:
        raise ValueError(f"{what} must be a non-negative int, got {v!r}")
    if v >= _MAX_INT:
        raise ValueError(f"{what} must be below 2**64, got {v!r}")
    return int(v)


def _text(v: Any, what: str) -> str:
    if not isinstance(v, str):
        raise ValueError(f"{what} must be a str, got {v!r:.80}")
    if len(v) > _MAX_TEXT:
        raise ValueError(f"{what} must be at most {_MAX_TEXT} characters, got {len(v)}")
    return v


def _position(p: Any, where: str, depth: int) -> Mapping[str, Any]:
    """One stage's position: the source's (epoch, batch_in_epoch, iteration) or a
    rebatch's (from, skip, produced); either may list its merges' states."""
    if depth > _MAX_NESTING:
        raise ValueError(
            f"{where}: more than {_MAX_NESTING} nested rebatch stages or merges; the state "
            "was edited"
        )
    if not isinstance(p, Mapping):
        raise ValueError(f"{where} must be a mapping, not {type(p).__name__}")
    out: dict[str, Any] = {}
    if "from" in p:
        _keys(p, ("from", "skip", "produced"), ("merges",), where)
        out["from"] = _position(p["from"], f"{where}['from']", depth + 1)
        out["skip"] = _count(p["skip"], f"{where} 'skip'")
        out["produced"] = _count(p["produced"], f"{where} 'produced'")
    else:
        _keys(p, ("epoch", "batch_in_epoch", "iteration"), ("merges",), where)
        for k in ("epoch", "batch_in_epoch", "iteration"):
            out[k] = _count(p[k], f"{where} {k!r}")
    if "merges" in p:
        merges = p["merges"]
        if not isinstance(merges, Mapping):
            raise ValueError(f"{where} 'merges' must be a mapping, not {type(merges).__name__}")
        read: dict[str, Any] = {}
        for path, sub in merges.items():
            if not isinstance(path, str) or not _PATH.match(path) or len(path) > 64:
                raise ValueError(
                    f"{where} 'merges' keys are step paths like '3.0', got {path!r:.80}"
                )
            read[path] = _read_state(sub, f"merge {path} state", depth + 1).to_dict()
        out["merges"] = read
    return out


def _identity(v: Any, where: str) -> Mapping[str, Any]:
    """The readable parts of a fingerprint: short strings, counts and flags only."""
    if not isinstance(v, Mapping):
        raise ValueError(f"{where} 'identity' must be a mapping, not {type(v).__name__}")
    _plain_data(v, f"{where} 'identity'", 0)
    return v


def _plain_data(v: Any, where: str, depth: int) -> None:
    if depth > 6:
        raise ValueError(f"{where} is nested too deeply")
    if v is None or isinstance(v, (bool, int, float)):
        return
    if isinstance(v, str):
        _text(v, where)
    elif isinstance(v, (list, tuple)):
        if len(v) > 100_000:
            raise ValueError(f"{where} is too long ({len(v)} items)")
        for x in v:
            _plain_data(x, where, depth + 1)
    elif isinstance(v, Mapping):
        if len(v) > 100_000:
            raise ValueError(f"{where} is too long ({len(v)} keys)")
        for k, x in v.items():
            if not isinstance(k, str):
                raise ValueError(f"{where} keys must be str, got {k!r:.80}")
            _plain_data(x, where, depth + 1)
    else:
        raise ValueError(f"{where} holds a {type(v).__name__}; only plain JSON data is allowed")


def _plain(v: Any) -> Any:
    """A frozen structure as plain dicts and lists (JSON-able)."""
    v = thaw(v)
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v
