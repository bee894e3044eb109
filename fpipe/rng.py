"""Counter-based randomness: every stream is a pure function of ``(seed, *path)``.

fpipe never touches numpy's global RNG. A run has one integer seed; each use of
randomness names its place in the run with a path of small integers (what it is
for, the epoch, the batch position, the step position, ...), and gets a fresh
generator for exactly that place. Two places never share a stream, and the same
place always gets the same stream, whichever thread or process asks.

>>> a = derive(7, 0, 3).integers(1000, size=3)
>>> b = derive(7, 0, 3).integers(1000, size=3)
>>> bool((a == b).all())
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "PURPOSE_BATCH",
    "PURPOSE_ITEM",
    "PURPOSE_MAYBE",
    "PURPOSE_SHUFFLE",
    "GlobalMark",
    "derive",
    "fresh_seed",
    "global_mark",
    "global_moved",
    "global_step",
    "normalize_seed",
    "resolve_shuffle",
]

# The first element of a path says what the stream is for, so that a shuffle
# stream and a batch stream can never coincide.
PURPOSE_SHUFFLE = 1
PURPOSE_BATCH = 2


def derive(seed: int, *path: int) -> np.random.Generator:
    """Return a new generator determined by ``seed`` and ``path`` alone."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=path)))


def fresh_seed() -> int:
    """A new seed from the operating system's entropy (recorded, so a run can be repeated)."""
    import secrets

    return secrets.randbits(63)


def normalize_seed(seed: Any, *, what: str = "seed") -> int:
    """Turn ``seed`` (int, numpy Generator or ``None``) into a non-negative int.

    A Generator is asked for one number: the run then depends on that draw only.
    ``None`` gives a fresh seed from the OS.
    """
    if seed is None:
        return fresh_seed()
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 2**63))
    if isinstance(seed, (bool, np.bool_)):
        raise TypeError(f"{what} must be an int, a numpy Generator or None, not a bool")
    if isinstance(seed, (int, np.integer)):
        if seed < 0:
            raise ValueError(f"{what} must be non-negative, got {seed}")
        return int(seed)
    raise TypeError(f"{what} must be an int, a numpy Generator or None, not {type(seed).__name__}")


def _is_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def resolve_shuffle(
    shuffle: object, seed: object, *, allow_callable: bool
) -> tuple[bool | int | Callable[..., Any], int | None]:
    """Resolve a ``(shuffle, seed)`` pair into ``(shuffle, int seed)``, one rule for all.

    * ``False`` or ``None``: no shuffling; the seed comes back as ``None`` and ``seed``
      is left alone (not checked, not drawn from): the caller resolves it if it needs one.
    * ``True``: the seed is ``seed`` resolved by :func:`normalize_seed` (an int, one
      draw from a Generator, or fresh from the OS for ``None``).
    * an int: it is the seed (returned as a plain int); ``seed`` may only repeat it.
    * a numpy Generator: one draw from it is the seed and the shuffle becomes ``True``;
      ``seed`` must then be ``None``.
    * a callable ``f(positions, generator)``, only with ``allow_callable``: kept, with the
      seed resolved as for ``True``.

    numpy bools count as bools. Anything else raises ``TypeError``.

    >>> resolve_shuffle(7, None, allow_callable=False)
    (7, 7)
    >>> resolve_shuffle(True, 3, allow_callable=False)
    (True, 3)
    >>> resolve_shuffle(False, 3, allow_callable=False)
    (False, None)
    >>> shuffle, seed = resolve_shuffle(np.random.default_rng(0), None, allow_callable=False)
    >>> shuffle, seed == normalize_seed(np.random.default_rng(0))
    (True, True)
    """
    if shuffle is None or isinstance(shuffle, (bool, np.bool_)):
        if not shuffle:
            return False, None
        return True, normalize_seed(seed)
    if isinstance(shuffle, np.random.Generator):
        if seed is not None:
            raise ValueError(
                "shuffle is a Generator, which gives the seed, and seed= is given too; "
                "pass only one of them"
            )
        return True, normalize_seed(shuffle, what="shuffle")
    if _is_int(shuffle):
        resolved = normalize_seed(shuffle, what="shuffle")
        if seed is not None and not (_is_int(seed) and seed == resolved):
            raise ValueError(
                f"shuffle={shuffle!r} already gives the seed, and seed={seed!r} differs; "
                "pass shuffle=True, seed=... or only shuffle=<seed>"
            )
        return resolved, resolved
    if allow_callable and callable(shuffle):
        return shuffle, normalize_seed(seed)
    expected = (
        "a bool, an int seed, a numpy Generator or a callable f(positions, generator)"
        if allow_callable
        else "a bool, an int seed or a numpy Generator"
    )
    raise TypeError(f"shuffle must be {expected}, not {type(shuffle).__name__}")


# Further purposes (see PURPOSE_SHUFFLE / PURPOSE_BATCH above).
PURPOSE_MAYBE = 3
PURPOSE_ITEM = 4


# -- numpy's global generator: fpipe never draws from it, and notices who does ------------
# Reading its whole state (``np.random.get_state``) costs ~25 us: it copies the 624-word
# Mersenne Twister key. A *tick* costs ~0.2 us: the twister's position and first key word,
# read in place from the generator's memory (the key changes whenever the position wraps
# round). Every draw moves the tick but one: a normal drawn from the value the generator
# keeps from its previous normal draw moves nothing but that kept value. So a mark holds
# the whole state only while such a value is kept (or when the global generator is not
# numpy's MT19937), and a tick otherwise: no normal can then come without moving words.
_MT_POS = 624  # MT19937: words in the key; the position right after seed()


@dataclass(frozen=True)
class GlobalMark:
    """Where numpy's global generator stood (see :func:`global_mark`)."""

    tick: tuple[int, int, int] | None  # None: the global generator is not numpy's MT19937
    whole: tuple[Any, bool] | None  # (state, just seeded?); None: the tick sees every draw


def _flat(value: Any) -> Any:
    """A state (nested dicts of ints and arrays) as a tuple that compares with ``==``."""
    if isinstance(value, dict):
        return tuple((k, _flat(v)) for k, v in value.items())
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.tobytes())
    return value


def _whole(state: Any) -> tuple[Any, bool]:
    seeded = (
        state["bit_generator"] == "MT19937"
        and state["state"]["pos"] == _MT_POS
        and not state.get("has_gauss", 0)
    )
    return _flat(state), seeded


# The global generator's bit generator, and a ctypes view of its state's memory when it
# is an MT19937 laid out as numpy's C struct ``{uint32 key[624]; int pos;}`` (checked
# once against its ``state``), else None. Holding the bit generator keeps the memory alive.
_view: tuple[Any, Any] = (None, None)


def _tick() -> tuple[int, int, int] | None:
    global _view
    bitgen = getattr(np.random.mtrand._rand, "_bit_generator", None)
    if _view[0] is not bitgen:
        words = None
        if type(bitgen) is np.random.MT19937:
            import ctypes

            found = (ctypes.c_uint32 * (_MT_POS + 1)).from_address(bitgen.ctypes.state_address)
            state = bitgen.state["state"]
            if found[_MT_POS] == state["pos"] and list(found[:_MT_POS]) == state["key"].tolist():
                words = found
        _view = (bitgen, words)
    words = _view[1]
    if words is None:
        return None
    return id(bitgen), words[_MT_POS], words[0]


def global_mark() -> GlobalMark:
    """Where numpy's global (legacy) generator stands: it moves on every draw."""
    state = np.random.get_state(legacy=False)
    tick = _tick()
    if tick is not None and not state.get("has_gauss"):
        return GlobalMark(tick, None)
    return GlobalMark(tick, _whole(state))


def global_moved(mark: GlobalMark) -> bool:
    """Whether something drew from the global generator since ``mark`` (a mere re-seed,
    e.g. ``keras.utils.set_random_seed`` in a model factory, leaves it freshly seeded)."""
    if mark.whole is None:
        tick = _tick()
        if tick is not None:
            return tick != mark.tick and tick[1] != _MT_POS
    state, seeded = _whole(np.random.get_state(legacy=False))
    return (mark.whole is None or state != mark.whole[0]) and not seeded


def global_step(mark: GlobalMark) -> tuple[bool, GlobalMark]:
    """``(global_moved(mark), a mark of now)``, for watching step after step: ~0.3 us
    while nothing draws and no normal is kept, the whole state's cost otherwise."""
    if mark.whole is None and mark.tick is not None and _tick() == mark.tick:
        return False, mark
    return global_moved(mark), global_mark()
