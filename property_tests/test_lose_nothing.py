"""Lose nothing: batching, rebatch, join and merge hand out every item exactly once.

Each property runs a pipeline and compares its output, batch by batch, with a model
written from first principles: the batches the plan cuts (every epoch a permutation of
the items, cut into consecutive batches; ``drop_last`` drops exactly the tail; ``n_iters``
runs across epoch boundaries), less exactly the batches a step skipped with
:class:`~fpipe.SkipBatch`, regrouped by ``rebatch`` or extended by ``merge``. Every item
carries data that is a function of its id, so a row that lost its item shows too.

The properties are marked ``slow``: CI runs them in its second pytest pass, under the
"slow" hypothesis profile, with :func:`budget`'s full count of examples (scripts/test.sh).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from fpipe import Batch, Dataset, DatasetIndex, SkipBatch, action


def budget(full: int, quick: int = 25) -> settings:
    """``full`` examples under the "slow" hypothesis profile, ``quick`` in any other run.

    CI's second pytest pass (``-m slow --hypothesis-profile=slow``, scripts/test.sh) runs
    the tests marked slow with their full budget; a plain ``pytest`` run keeps them quick.
    The "slow" profile is told by its 1,000 examples (conftest.py), which profiles derived
    from it (``--hypothesis-verbosity=verbose``) keep. Use it between
    ``@pytest.mark.slow`` and ``@given``.
    """
    full_run = settings.default.max_examples >= 1000
    return settings(max_examples=full if full_run else quick)


FULL = 1000  # examples per lose-nothing property in CI's slow pass


class Parcel(Batch):
    """Items whose components are functions of their ids; ``extra`` holds joined data."""

    components = ("values", "rows", "extra")

    @action
    def skip_first_in(self, ids):
        if int(self.indices[0]) in ids:
            raise SkipBatch
        return self

    @action
    def add(self, k):
        return self.replace(values=self.values + k)

    @action
    def absorb(self, *others):
        """Keep what each joined batch holds, row by row: its ids, values and rows."""
        parts = [np.column_stack([o.indices, o.values, o.rows]) for o in others]
        return self.replace(extra=np.concatenate(parts, axis=1))


def values_of(ids):
    return np.asarray(ids, dtype=float) * 2 + 0.5


def rows_of(ids):
    ids = np.asarray(ids, dtype=np.int64)
    return np.column_stack([ids * 3, -ids])


def parcels(ids, values=values_of, rows=rows_of):
    ids = np.asarray(ids, dtype=np.int64)
    return Dataset(DatasetIndex(ids), Parcel, preloaded={"values": values(ids), "rows": rows(ids)})


def concat(parts):
    """A merge_fn of our own: merges the parts pairwise, left to right."""
    return functools.reduce(lambda a, b: Parcel.merge([a, b]), parts)


def check_rows(batch, shift=0.0):
    """Every row still holds its own item's data (``values`` shifted by ``shift``)."""
    assert batch.values.tolist() == (values_of(batch.indices) + shift).tolist()
    assert batch.rows.tolist() == rows_of(batch.indices).tolist()


# -- strategies ---------------------------------------------------------------------------------

SEEDS = st.integers(0, 2**63 - 1)


@st.composite
def datasets(draw, min_size=1, max_size=60, base=0):
    """min_size..max_size items: ids 0..n-1, scattered ids, or a subset of a larger one."""
    n = draw(st.integers(min_size, max_size))
    kind = draw(st.sampled_from(["range", "scattered", "subset"]))
    if kind == "range":
        return parcels(base + np.arange(n))
    if kind == "scattered":
        ids = draw(st.lists(st.integers(0, 9_999), min_size=n, max_size=n, unique=True))
        return parcels(base + np.asarray(ids))
    order = draw(st.permutations(range(n + draw(st.integers(0, 20)))))
    return parcels(base + np.arange(len(order))).create_subset(base + np.asarray(order[:n]))


@st.composite
def runs(draw, n):
    """Run arguments for ``n`` items: (batch_size, kwargs for iterate)."""
    bs = draw(st.integers(1, n))
    drop_last = draw(st.booleans())
    per_epoch = n // bs if drop_last else -(-n // bs)
    if draw(st.booleans()):
        length = {"n_epochs": draw(st.integers(1, 3))}
    else:  # n_iters wins over n_epochs, across as many epoch boundaries as it takes
        length = {
            "n_iters": draw(st.integers(1, 3 * per_epoch + 2)),
            "n_epochs": draw(st.sampled_from([None, 1])),
        }
    shuffle = draw(st.sampled_from([False, True]) | SEEDS)
    kwargs = {"shuffle": shuffle, "drop_last": drop_last, **length}
    kwargs["prefetch"] = draw(st.sampled_from([0, 2]))
    if isinstance(shuffle, bool):
        kwargs["seed"] = draw(SEEDS)
    return bs, kwargs


def skips(ds):
    """Ids that make a batch starting with them skip (often none)."""
    return st.one_of(st.just(()), st.sets(st.sampled_from(ds.indices.tolist()), min_size=1)).map(
        lambda s: tuple(sorted(s))
    )


# -- the model ----------------------------------------------------------------------------------


def planned(n, bs, orders, *, drop_last, n_epochs=1, n_iters=None, **_):
    """[(epoch, positions)] of the batches a run cuts, from first principles.

    Every epoch visits a permutation of the positions, cut into consecutive batches of
    ``bs`` (the last one smaller, or dropped with ``drop_last``); ``n_iters``, when given,
    takes that many batches across epochs and ``n_epochs`` does not count.
    """
    per_epoch = n // bs if drop_last else -(-n // bs)
    out = []
    epoch = 0
    while (len(out) < n_iters) if n_iters is not None else (epoch < n_epochs):
        order = np.asarray(orders(epoch)).tolist()
        assert sorted(order) == list(range(n)), "an epoch order is not a permutation"
        cut = [order[b * bs : (b + 1) * bs] for b in range(per_epoch)]
        assert sum(map(len, cut)) == ((n // bs) * bs if drop_last else n)
        out += [(epoch, positions) for positions in cut]
        epoch += 1
    return out[:n_iters] if n_iters is not None else out


def plan_orders(plan, shuffle):
    if shuffle is False:
        return lambda epoch: np.arange(plan.n_items)
    return plan.epoch_order


def chunks(items, size):
    return [items[i : i + size] for i in range(0, len(items), size)]


def flat(batches):
    return [i for b in batches for i in b]


def kept(batches, skip):
    out = [b for b in batches if b[0] not in skip]
    if skip:
        event("SkipBatch", "none skipped" if len(out) == len(batches) else "some skipped")
    return out


def ids_of(batches):
    return [b.indices.tolist() for b in batches]


def run(p, bs, kwargs):
    """The output batches of one run, and its plan."""
    with p.iterate(bs, **kwargs) as it:
        out, plan = list(it), it.plan
    # what the examples reach (pytest --hypothesis-show-statistics)
    event("prefetch", kwargs["prefetch"])
    if kwargs.get("n_iters") is not None:
        event("n_iters crosses an epoch end", kwargs["n_iters"] > plan.batches_per_epoch)
    if kwargs["drop_last"]:
        event("drop_last drops items", len(plan.epoch_order(0)) % bs > 0)
    return out, plan


def expected_batches(ds, bs, kwargs, plan):
    """The ids of the plan's batches, in order, checked against the model."""
    ids = ds.indices.tolist()
    model = planned(len(ds), bs, plan_orders(plan, kwargs["shuffle"]), **kwargs)
    assert [(s.epoch, pos.tolist()) for s, pos in plan.iterate()] == model
    return [[ids[i] for i in positions] for _, positions in model], [e for e, _ in model]


# -- 1. batching ----------------------------------------------------------------------------------


@pytest.mark.slow
@budget(FULL)
@given(datasets(), st.data())
def test_batching_hands_out_each_planned_batch_once_less_exactly_the_skipped(ds, data):
    bs, kwargs = data.draw(runs(len(ds)))
    skip = data.draw(skips(ds), label="skip")
    p = ds.p.skip_first_in(skip) if skip else ds.p
    out, plan = run(p, bs, kwargs)
    batches, epochs = expected_batches(ds, bs, kwargs, plan)
    assert ids_of(out) == kept(batches, skip)
    for b in out:
        check_rows(b)
    # within an epoch each item comes out once at most; a whole epoch that skipped
    # nothing and dropped nothing hands out every item
    per_epoch = plan.batches_per_epoch
    everything = Counter(ds.indices.tolist())
    for epoch in sorted(set(epochs)):
        planned_ids = flat(b for b, e in zip(batches, epochs, strict=True) if e == epoch)
        assert Counter(planned_ids) <= everything
        assert max(Counter(planned_ids).values()) == 1
        if epochs.count(epoch) == per_epoch and not kwargs["drop_last"]:
            assert Counter(planned_ids) == everything
    if kwargs.get("n_iters") is not None:
        assert len(batches) == kwargs["n_iters"]
    else:
        assert len(batches) == per_epoch * kwargs["n_epochs"]


# -- 2. rebatch -----------------------------------------------------------------------------------


@pytest.mark.slow
@budget(FULL)
@given(datasets(), st.data())
def test_rebatch_regroups_every_surviving_item_once_in_order(ds, data):
    bs, kwargs = data.draw(runs(len(ds)))
    before = data.draw(skips(ds), label="skip_before")
    k1 = data.draw(st.integers(1, 2 * len(ds) + 1), label="rebatch_size")
    fn1 = data.draw(st.sampled_from([None, concat]), label="merge_fn")
    after = data.draw(skips(ds), label="skip_after")
    k2 = data.draw(st.none() | st.integers(1, 2 * len(ds) + 1), label="second_rebatch_size")
    fn2 = data.draw(st.sampled_from([None, concat]), label="second_merge_fn")
    p = ds.p.skip_first_in(before) if before else ds.p
    p = p.add(1).rebatch(k1, merge_fn=fn1).add(10)
    if after:
        p = p.skip_first_in(after)
    if k2 is not None:
        p = p.rebatch(k2, merge_fn=fn2).add(100)
    out, plan = run(p, bs, kwargs)
    batches, _ = expected_batches(ds, bs, kwargs, plan)
    expected = kept(chunks(flat(kept(batches, before)), k1), after)
    if k2 is not None:
        expected = chunks(flat(expected), k2)
    assert ids_of(out) == expected
    for b in out:  # every step ran once on every item
        check_rows(b, shift=111 if k2 is not None else 11)


# -- 3. join ----------------------------------------------------------------------------------------


def joined_values(ids):
    return np.asarray(ids, dtype=float) * -5 + 0.25


def joined_rows(ids):
    return rows_of(ids) * 7


@st.composite
def join_sources(draw, ds):
    """1-2 sources holding the dataset's ids and more, in another order, with other data;
    each a Dataset or a Pipeline (adding 1000) over one."""
    out = []
    for _ in range(draw(st.integers(1, 2))):
        more = draw(st.integers(0, 10))
        ids = ds.indices.tolist() + list(range(50_000, 50_000 + more))
        ids = draw(st.permutations(ids))
        src = parcels(ids, values=joined_values, rows=joined_rows)
        out.append(src.p.add(1000) if draw(st.booleans()) else src)
    return out


@pytest.mark.slow
@budget(FULL)
@given(datasets(), st.data())
def test_join_passes_each_batch_the_source_rows_of_its_own_ids(ds, data):
    bs, kwargs = data.draw(runs(len(ds)))
    skip = data.draw(skips(ds), label="skip")
    sources = data.draw(join_sources(ds))
    p = ds.p.skip_first_in(skip) if skip else ds.p
    p = p.join(*sources).absorb()
    out, plan = run(p, bs, kwargs)
    batches, _ = expected_batches(ds, bs, kwargs, plan)
    assert ids_of(out) == kept(batches, skip)
    for b in out:
        check_rows(b)
        ids = b.indices
        assert b.extra.shape == (len(b), 4 * len(sources))
        for k, src in enumerate(sources):
            part = b.extra[:, 4 * k : 4 * (k + 1)]
            shift = 0 if isinstance(src, Dataset) else 1000
            assert part[:, 0].tolist() == ids.tolist()  # the joined batch lines up
            assert part[:, 1].tolist() == (joined_values(ids) + shift).tolist()
            assert part[:, 2:].tolist() == joined_rows(ids).tolist()


# -- 4. merge ---------------------------------------------------------------------------------------


def endless_batches(ids: list[int], bs: int) -> Iterator[list[int]]:
    """A merge source's batches: its items in order, epoch after epoch, cut into ``bs``."""
    while True:
        yield from chunks(ids, bs)


@pytest.mark.slow
@budget(FULL)
@given(datasets(max_size=40), st.data())
def test_merge_appends_the_next_batch_of_each_source_in_its_own_order(ds, data):
    bs, kwargs = data.draw(runs(len(ds)))
    sources, shifts = [], {}
    for k in range(1, data.draw(st.integers(1, 2), label="n_sources") + 1):
        m = data.draw(st.integers(bs, bs + 30), label=f"source_{k}_size")
        src = data.draw(datasets(min_size=m, max_size=m, base=100_000 * k))
        as_pipeline = data.draw(st.booleans(), label=f"source_{k}_pipeline")
        sources.append(src.p.add(1000 * k) if as_pipeline else src)
        shifts.update(dict.fromkeys(src.indices.tolist(), 1000 * k if as_pipeline else 0))
    before = data.draw(skips(ds), label="skip_before")
    after = data.draw(skips(ds), label="skip_after")
    merge_fn = data.draw(st.sampled_from([None, concat]), label="merge_fn")
    p = ds.p.skip_first_in(before) if before else ds.p
    p = p.merge(*sources, merge_fn=merge_fn)
    if after:
        p = p.skip_first_in(after)
    out, plan = run(p.add(1), bs, kwargs)
    batches, _ = expected_batches(ds, bs, kwargs, plan)
    streams = [
        endless_batches((s if isinstance(s, Dataset) else s.dataset).indices.tolist(), bs)
        for s in sources
    ]
    expected = []
    for own in kept(batches, before):
        merged = own + flat(next(s) for s in streams)  # used up even if skipped after
        if own[0] not in after:
            expected.append(merged)
    assert ids_of(out) == expected
    for b in out:
        shift = np.array([shifts.get(i, 0) for i in b.indices.tolist()], dtype=float)
        check_rows(b, shift=shift + 1)
