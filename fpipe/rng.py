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

from typing import Any

import numpy as np

__all__ = [
    "PURPOSE_BATCH",
    "PURPOSE_ITEM",
    "PURPOSE_MAYBE",
    "PURPOSE_SHUFFLE",
    "derive",
    "fresh_seed",
    "global_mark",
    "global_moved",
    "normalize_seed",
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


# Further purposes (see PURPOSE_SHUFFLE / PURPOSE_BATCH above).
PURPOSE_MAYBE = 3
PURPOSE_ITEM = 4


# -- numpy's global generator: fpipe never draws from it, and notices who does ------------
def global_mark() -> tuple[Any, ...]:
    """Where numpy's global (legacy) generator stands: it moves on every draw."""
    st = np.random.get_state(legacy=False)
    return st["state"]["pos"], st["has_gauss"], st["gauss"], st["state"]["key"]


def global_moved(mark: tuple[Any, ...]) -> bool:
    """Whether something drew from the global generator since ``mark`` (a mere re-seed,
    e.g. ``keras.utils.set_random_seed`` in a model factory, leaves it freshly seeded)."""
    now = global_mark()
    if now[:3] == mark[:3] and np.array_equal(now[3], mark[3]):
        return False
    return not (now[0] == 624 and not now[1])  # 624: MT19937's position right after seed()
