"""Resuming a run: checking a state against it, and where each of its stages stands.

A run is a chain of stages: the source stage (the batching plan and the steps up to
the first ``rebatch``), then one stage per ``rebatch``. :func:`resume_point` checks an
:class:`~fpipe.state.IterState` against the run it should continue (fingerprint, seed,
position, shape) and unpacks where each stage restarts. :class:`RebatchStage` re-cuts
batches and knows its own position: the upstream position its oldest held batch came
from, how many of that batch's items are already out, and how many batches it made.
A resumed stage makes its held batches again from that position (replaying them with a
replica of the run, so their effects are not applied twice) instead of saving them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .batch import Batch, SkipBatch
from .errors import FpipeError, ResumeError
from .fingerprint import describe, differences, fingerprint_of, identity_of
from .interpreter import run_compiled
from .plan import BatchPlan
from .runstate import BatchContext, RunState
from .state import IterState
from .steps import Maybe, Merge, Rebatch, Step

__all__ = [
    "RebatchStage",
    "ResumePoint",
    "check_position",
    "merge_stages",
    "resume_point",
    "run_identity",
]

Position = dict[str, Any]


def run_identity(pipeline: Any, plan: BatchPlan) -> tuple[dict[str, Any], str]:
    """The readable identity of a run of ``pipeline`` under ``plan``, and its digest."""
    identity = identity_of(pipeline, plan.parts())
    return identity, fingerprint_of(identity)


def merge_stages(steps: Sequence[Step]) -> dict[str, int]:
    """The streams the ``merge`` steps of ``steps`` open (``"3.0"``: step 3, source 0),
    each with the stage it belongs to."""
    out: dict[str, int] = {}

    def walk(seq: Sequence[Step], base: tuple[int, ...], stage: int) -> int:
        for i, step in enumerate(seq):
            path = (*base, i)
            if isinstance(step, Rebatch) and not base:
                stage += 1
            elif isinstance(step, Merge):
                for k in range(len(step.sources)):
                    out[".".join(map(str, (*path, k)))] = stage
            elif isinstance(step, Maybe):
                walk(step.steps, path, stage)
        return stage

    walk(steps, (), 0)
    return out


@dataclass(frozen=True)
class ResumePoint:
    """Where each stage of a resumed run restarts, unpacked from a checked state.

    ``start`` is the source stage's restart position (a state of the plan);
    ``present`` the source's position when the state was taken, and ``produced`` the
    batches each rebatch stage had made then: batches before those are remade, not new.
    """

    state: IterState
    start: IterState
    present: int
    produced: tuple[int, ...]
    stages: tuple[Mapping[str, Any], ...]  # the saved position of each rebatch stage
    merges: Mapping[str, Any] = field(default_factory=dict)  # stream path -> state dict


def resume_point(
    state: IterState | Mapping[str, Any],
    pipeline: Any,
    plan: BatchPlan,
    *,
    seed_given: bool,
) -> tuple[BatchPlan, ResumePoint]:
    """Check ``state`` against a run of ``pipeline`` under ``plan``; return the plan with
    the state's seed and where the run restarts. Refuses, naming what differs, a state of
    another run, a contradictory position or a seed that differs from an explicit one."""
    if isinstance(state, Mapping):
        try:
            state = IterState.from_dict(state)
        except ValueError as exc:
            raise ResumeError(f"this resume state is malformed: {exc}") from exc
    if not isinstance(state, IterState):
        raise ResumeError(
            f"state must be an IterState or the dict of one (iterator.get_state() or its "
            f"to_dict()), not {type(state).__name__}"
        )
    identity, fingerprint = run_identity(pipeline, plan)
    if state.fingerprint != fingerprint:
        raise ResumeError(_mismatch(state, identity))
    if seed_given and state.seed != plan.seed:
        raise ResumeError(
            f"seed={plan.seed} was given, but the state was saved with seed={state.seed}: a "
            "resumed run continues with the state's seed. Drop `seed=` (or pass "
            f"seed={state.seed}) to resume, or drop `state=` to start afresh with your seed."
        )
    plan = plan.reseeded(state.seed)
    check_position(plan, state.epoch, state.batch_in_epoch, state.iteration)
    n_rebatch = sum(isinstance(s, Rebatch) for s in pipeline.steps)
    if len(state.produced) != n_rebatch:
        raise ResumeError(
            f"the state records {len(state.produced)} rebatch stage(s), but the pipeline has "
            f"{n_rebatch}: the state was edited; start afresh without `state=`"
        )
    position: Mapping[str, Any] = state.position or {
        "epoch": state.epoch,
        "batch_in_epoch": state.batch_in_epoch,
        "iteration": state.iteration,
    }
    stages: list[Mapping[str, Any]] = []
    merges: dict[str, Any] = {}
    known = merge_stages(pipeline.steps)
    for j in range(n_rebatch, -1, -1):
        is_source = "from" not in position
        if is_source != (j == 0):
            raise ResumeError(
                f"the state's position has the wrong number of nested stages for a pipeline "
                f"with {n_rebatch} rebatch step(s): the state was edited; start afresh"
            )
        for path, sub in position.get("merges", {}).items():
            if known.get(path) != j:
                raise ResumeError(
                    f"the state records a merge stream {path!r} in stage {j} that this "
                    "pipeline does not have there: the state was edited; start afresh"
                )
            merges[path] = sub
        if j:
            stages.append(position)
            position = position["from"]
    stages.reverse()
    e, b, it = position["epoch"], position["batch_in_epoch"], position["iteration"]
    check_position(plan, e, b, it)
    _ordered(it, state.iteration, stages, state.produced)
    start = IterState(plan.seed, e, b, it, plan.fingerprint)
    return plan, ResumePoint(state, start, state.iteration, state.produced, tuple(stages), merges)


def check_position(plan: BatchPlan, epoch: int, batch_in_epoch: int, iteration: int) -> None:
    """Refuse a position this plan never reaches (a tampered or foreign state).

    After ``iteration`` batches, ``batch_in_epoch`` of them in ``epoch``, the plan has
    ``iteration == epoch * batches_per_epoch + batch_in_epoch``; the position may be the
    end of the run but not past it.

    >>> check_position(BatchPlan.make(10, 4), 0, 2, 5)
    Traceback (most recent call last):
    ...
    fpipe.errors.ResumeError: the state's position is inconsistent: ...
    """
    per = plan.batches_per_epoch
    if batch_in_epoch > per or iteration != epoch * per + batch_in_epoch:
        raise ResumeError(
            f"the state's position is inconsistent: iteration={iteration} cannot follow "
            f"epoch={epoch}, batch_in_epoch={batch_in_epoch} with {per} batches per epoch "
            f"(it would be {epoch * per + min(batch_in_epoch, per)}); the state was edited "
            "or comes from another plan: start afresh without `state=`"
        )
    total = plan.total_batches
    if total is not None and iteration > total:
        limit = (
            f"n_iters={plan.n_iters}" if plan.n_iters is not None else (f"n_epochs={plan.n_epochs}")
        )
        raise ResumeError(
            f"the state is past the end of this run: it is at epoch {epoch}, "
            f"iteration {iteration}, but the run ends after {total} batches ({limit}); "
            "resume with the plan the state was saved under, or start afresh"
        )


def _ordered(
    source_from: int, present: int, stages: list[Mapping[str, Any]], produced: tuple[int, ...]
) -> None:
    """Each stage restarts at or before where it stood: a state cannot ask for the future."""
    if source_from > present:
        raise ResumeError(
            f"the state's source restarts at iteration {source_from}, after its present "
            f"iteration {present}: the state was edited; start afresh"
        )
    for j, (pos, now) in enumerate(zip(stages, produced, strict=True), start=1):
        if pos["produced"] > now or (j == len(stages) and pos["produced"] != now):
            raise ResumeError(
                f"the state's rebatch stage {j} restarts after {pos['produced']} batches but "
                f"had made {now}: the state was edited; start afresh"
            )


def _mismatch(state: IterState, identity: Mapping[str, Any]) -> str:
    head = "this state comes from a run that makes different batches, so it cannot resume this one"
    tail = (
        "Resume with the pipeline, dataset, config and batching arguments the state was "
        "saved with, or start afresh without `state=`."
    )
    if not state.identity:
        return f"{head}: its fingerprint is {state.fingerprint!r}, this run's differs. {tail}"
    lines = differences(state.identity, identity) or ["(the fingerprints differ)"]
    return head + ":\n" + "\n".join(f"  - {line}" for line in lines[:20]) + "\n" + tail


class RebatchStage:
    """One ``rebatch`` stage of a run: cuts its upstream batches into batches of ``size``.

    It holds upstream batches (each with the upstream position it started from) and
    the number of items of the oldest already handed out, never copies of items.
    """

    def __init__(
        self,
        number: int,
        rebatch: Rebatch,
        steps: Any,
        saved: Mapping[str, Any] | None,
        present: int,
    ) -> None:
        self.number = number  # 1 for the first rebatch
        self.size = rebatch.batch_size
        self.merge_fn = rebatch.merge_fn
        self.steps = steps
        self.entries: deque[tuple[Batch, Position]] = deque()
        self.offset = 0  # items of entries[0] already handed out
        self.produced = 0 if saved is None else saved["produced"]
        self.skip = 0 if saved is None else saved["skip"]  # of the first upstream batch
        self.present = present  # batches made before the state was taken: remade, not new

    def position(self, upstream: Callable[[], Position]) -> Position:
        """Where this stage stands (its upstream position is asked for only if needed)."""
        head = self.entries[0][1] if self.entries else upstream()
        return {"from": head, "skip": self.offset, "produced": self.produced}

    def run(
        self,
        stream: Iterator[Batch],
        upstream: Callable[[], Position],
        run_for: Callable[[bool], RunState],
    ) -> Iterator[Batch]:
        """The re-cut batches of ``stream``, each through this stage's steps."""
        before = upstream()
        held = 0
        for batch in stream:
            start = 0
            if self.skip:
                start, self.skip = self.skip, 0
                if start >= len(batch):
                    raise ResumeError(
                        f"the state says rebatch stage {self.number} had handed out {start} "
                        f"items of a batch of {len(batch)}: the state was edited or the data "
                        "changed; start afresh"
                    )
                self.offset = start
            self.entries.append((batch, before))
            held += len(batch) - start
            del batch  # held in entries only: freed as soon as its items are out
            before = upstream()
            while held >= self.size:
                held -= self.size
                out = self._emit(self._take(self.size), run_for)
                if out is not None:
                    yield out
                    del out  # the consumer's now: not kept while the next is made
        if held:
            out = self._emit(self._take(held), run_for)
            if out is not None:
                yield out

    def _take(self, n: int) -> Batch:
        parts: list[Batch] = []
        while n:
            batch = self.entries[0][0]
            left = len(batch) - self.offset
            if left <= n:
                parts.append(batch if not self.offset else batch.select(slice(self.offset, None)))
                self.entries.popleft()
                self.offset = 0
                n -= left
            else:
                parts.append(batch.select(slice(self.offset, self.offset + n)))
                self.offset += n
                n = 0
        if len(parts) == 1:
            return parts[0]
        merged = (self.merge_fn or type(parts[0]).merge)(parts)
        expected = sum(len(p) for p in parts)
        if not isinstance(merged, Batch) or len(merged) != expected:
            fn = describe(self.merge_fn) if self.merge_fn is not None else "Batch.merge"
            got = (
                f"a batch of {len(merged)} items"
                if isinstance(merged, Batch)
                else repr(merged)[:60] + f" ({type(merged).__name__})"
            )
            raise FpipeError(
                f"rebatch({self.size}, merge_fn={fn}) must return one batch holding the "
                f"{expected} items of the {len(parts)} batches it is given, but returned "
                f"{got}. Return e.g. `type(batches[0]).merge(batches)`."
            )
        return merged

    def _emit(self, batch: Batch, run_for: Callable[[bool], RunState]) -> Batch | None:
        remade = self.produced < self.present
        ctx = BatchContext(run_for(remade), 0, self.produced)
        self.produced += 1
        try:
            return run_compiled(self.steps, batch._with_ctx(ctx), ctx)
        except SkipBatch:
            return None
