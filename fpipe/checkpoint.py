"""Checkpoint: make a long run survive a restart.

``pipeline.run(..., checkpoint=Checkpoint(path, every=50))`` saves the iteration
state (seed, epoch, position) and the run's environment (variables and picklable
models) every 50 batches, atomically. When the same run starts again with the same
checkpoint, it resumes after the last saved batch and ends with the same result as
a run that was never interrupted (given actions that are functions of the batch,
``batch.random`` and the environment).

The file starts with a line naming the format and the SHA-256 of everything after
it; then comes the iteration state as JSON and the pickled environment. Loading checks
the format and the digest before reading anything, so a flipped byte or a cut-off
file is reported as a corrupt checkpoint, never unpickled. The environment part is a
pickle: load only checkpoints your own runs wrote. The folder must exist: a
checkpoint in a missing folder fails before the first batch.

>>> import tempfile, os, numpy as np
>>> from fpipe import Dataset
>>> path = os.path.join(tempfile.mkdtemp(), "run.ckpt")
>>> p = Dataset(10).p.init_variable("n", 0).update_variable("n", lambda b: len(b), mode="a")
>>> p.run(4, checkpoint=Checkpoint(path, every=1)).get_variable("n")
[4, 4, 2]
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyrsistent import pmap

from .env import Environment
from .errors import FpipeError, ResumeError
from .state import IterState

if TYPE_CHECKING:
    from .pipeline import Pipeline

__all__ = ["Checkpoint"]

_MAGIC = b"fpipe-checkpoint/2\n"
_DIGEST_LINE = 64 + 1  # sha256 hex and a newline


@dataclass(frozen=True)
class Checkpoint:
    """Where and how often to save a run (``every`` batches); ``models=False`` saves variables only."""

    path: str | os.PathLike[str]
    every: int = 100
    models: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"Checkpoint(every=...) must be a positive int, not {self.every!r}")
        if not isinstance(self.path, (str, os.PathLike)):
            raise TypeError(f"Checkpoint(path=...) must be a str or path, not {self.path!r}")

    def load(self) -> tuple[IterState, Environment] | None:
        """The saved state and environment, or None if nothing was saved yet."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        if not data.startswith(_MAGIC):
            self._corrupt("it does not start with fpipe's checkpoint header")
        digest_line = data[len(_MAGIC) : len(_MAGIC) + _DIGEST_LINE]
        body = data[len(_MAGIC) + _DIGEST_LINE :]
        if digest_line != hashlib.sha256(body).hexdigest().encode() + b"\n":
            self._corrupt("its content does not match its SHA-256: a byte changed or it was cut")
        header, _, payload = body.partition(b"\n")
        try:
            state = IterState.from_dict(json.loads(header))
            saved = pickle.loads(payload)
        except Exception as exc:  # the digest matched: an fpipe of another version wrote it
            self._corrupt(f"it cannot be read: {type(exc).__name__}: {exc}", exc)
        if not isinstance(saved, dict) or not isinstance(saved.get("variables"), dict):
            self._corrupt("it holds no variables")
        env = Environment(
            variables=pmap(saved["variables"]),
            static=pmap(saved.get("static", {})),
            dynamic=pmap(saved.get("dynamic", {})),
        )
        return state, env

    def _corrupt(self, why: str, cause: BaseException | None = None) -> Any:
        raise FpipeError(
            f"checkpoint {os.fspath(self.path)} is corrupt: {why}. Delete it to start the run "
            "afresh, or restore it from a copy."
        ) from cause

    def save(self, state: IterState, env: Environment) -> None:
        """Write ``state`` and ``env`` atomically (a crash leaves the previous save intact)."""
        payload: dict[str, Any] = {"variables": dict(env.variables)}
        if self.models:
            payload["static"] = dict(env.static)
            payload["dynamic"] = dict(env.dynamic)
        try:
            pickled = pickle.dumps(payload)
        except Exception as exc:
            raise FpipeError(
                f"cannot checkpoint the run to {os.fspath(self.path)}: {type(exc).__name__}: "
                f"{exc}. Keep model weights in pipeline variables (numpy arrays pickle), or "
                "pass Checkpoint(..., models=False) and save the model yourself."
            ) from exc
        body = json.dumps(state.to_dict()).encode() + b"\n" + pickled
        data = _MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body
        import tempfile

        fd, tmp = tempfile.mkstemp(dir=self._folder(), prefix=".fpipe-ckpt-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _folder(self) -> str:
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise FpipeError(
                f"cannot checkpoint to {os.fspath(self.path)}: the folder {folder} does not "
                f"exist. Create it first (os.makedirs({folder!r}, exist_ok=True)) or choose "
                "another path."
            )
        if not os.access(folder, os.W_OK):
            raise FpipeError(
                f"cannot checkpoint to {os.fspath(self.path)}: the folder {folder} is not "
                "writable. Choose another path."
            )
        return folder

    def run(self, pipeline: Pipeline, params: dict[str, Any]) -> Pipeline:
        """Run ``pipeline`` to the end, resuming from and saving to this checkpoint."""
        self._folder()  # before any work
        saved = self.load()
        state, restore = saved if saved is not None else (None, None)
        try:
            it = pipeline._iterator(params, state=state, restore=restore)
        except ResumeError as exc:
            raise ResumeError(
                f"checkpoint {os.fspath(self.path)} was saved by another run: {exc}\nTo start "
                f"this run afresh, delete {os.fspath(self.path)} or checkpoint to another path."
            ) from exc
        with it:
            for k, _ in enumerate(it, start=1):
                if k % self.every == 0:
                    self.save(it.get_state(), it.env)
            self.save(it.get_state(), it.env)
            return it.result()
