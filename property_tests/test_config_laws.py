"""How configs combine (docs/laws.md, "Configs and templates"), and what C(...) reads.

Configs merge key by key at the top level under ``Pipeline(config)``, ``<<`` and ``+``,
the later one winning; templates whose arguments are ``C(...)`` expressions run like the
same pipeline with the config's values written in, and ``p @ C(k)`` / ``p * C(k)`` like
``p @ x`` / ``p * n``.
"""

from __future__ import annotations

import pickle

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fpipe import Batch, C, Dataset, Pipeline, R, V, action


class CfgNums(Batch):
    """One float component, ``data``."""

    @action
    def shift(self, by):
        return self.replace(data=self.data + by)

    @action
    def scale(self, k):
        return self.replace(data=self.data * k)

    @action
    def noise(self, sigma):
        return self.replace(data=self.data + sigma * self.random.normal(size=len(self)))


DS = Dataset(10, CfgNums, preloaded=np.arange(10, dtype=float))
SETTINGS = settings(max_examples=40, deadline=None)

KEYS = ("a", "b", "k", "lr", "model")
small = st.integers(-3, 3)
leaves_ = st.one_of(
    small,
    st.floats(-2, 2, allow_nan=False).map(lambda x: round(x, 3)),
    st.tuples(small, small),
    st.text("xyz", max_size=2),
)
values = st.one_of(leaves_, st.dictionaries(st.sampled_from(("lr", "units")), leaves_, max_size=2))
configs = st.dictionaries(st.sampled_from(KEYS), values, max_size=4)


@st.composite
def plain_pipelines(draw):
    p = Pipeline()
    for kind, arg in draw(
        st.lists(st.tuples(st.sampled_from(("shift", "scale")), small), max_size=3)
    ):
        p = getattr(p, kind)(arg)
    return p


# -- how configs combine -------------------------------------------------------------------------
@SETTINGS
@given(plain_pipelines(), configs)
def test_a_config_is_what_lshift_merges_in(p, a):
    assert Pipeline(a) == Pipeline() << a
    assert p << {} == p
    assert (p << a).config == a


@SETTINGS
@given(plain_pipelines(), configs, configs)
def test_lshift_twice_merges_key_by_key_the_later_winning(p, a, b):
    twice = (p << a) << b
    assert twice == p << {**a, **b} and hash(twice) == hash(p << {**a, **b})
    for key, value in b.items():
        assert twice.config[key] == value  # a nested dict given later replaces the earlier
    assert pickle.loads(pickle.dumps(twice)) == twice


@SETTINGS
@given(plain_pipelines(), configs, configs)
def test_lshift_twice_commutes_when_the_configs_share_no_key(p, a, b):
    assume(not set(a) & set(b))
    assert (p << a) << b == (p << b) << a


@SETTINGS
@given(plain_pipelines(), configs, configs)
def test_lshift_twice_does_not_commute_when_a_shared_key_differs(p, a, b):
    shared = [k for k in set(a) & set(b) if (p << {k: a[k]}) != (p << {k: b[k]})]
    assume(shared)
    assert (p << a) << b != (p << b) << a


@SETTINGS
@given(plain_pipelines(), plain_pipelines(), plain_pipelines(), configs, configs, configs)
def test_a_sum_holds_both_configs_the_right_one_winning(p, q, r, a, b, c):
    assert (p << a) + (q << b) == (p + q) << {**a, **b}
    assert ((p << a) + (q << b)) + (r << c) == (p << a) + ((q << b) + (r << c))


@SETTINGS
@given(plain_pipelines(), configs)
def test_configuring_and_linking_commute(p, a):
    assert (p << a) << DS == (p << DS) << a == (DS >> p) << a


# -- what C(...) reads ---------------------------------------------------------------------------
numbers = st.floats(-2, 2, allow_nan=False).map(lambda x: round(x, 3))


@st.composite
def templates(draw):
    """A template reading the config, the same pipeline with the values written in, and
    the config: ``(template, written, config)``."""
    config: dict = {}
    template, written = Pipeline(), Pipeline()
    for i, kind in enumerate(
        draw(st.lists(st.sampled_from(("shift", "scale", "noise")), max_size=4))
    ):
        value = draw(numbers)
        nested = draw(st.booleans())
        if nested:
            config.setdefault("m", {})[f"v{i}"] = value
            expr = C(f"m/v{i}")
        else:
            config[f"v{i}"] = value
            expr = C(f"v{i}")
        if draw(st.booleans()):  # an operator over the leaf, resolved when the step runs
            expr, value = expr * 2 + 1, value * 2 + 1
        template = getattr(template, kind)(expr)
        written = getattr(written, kind)(value)
    return template, written, config


def outputs(pipeline, seed, **run):
    return [b.data.tolist() for b in (pipeline << DS).gen_batch(3, shuffle=True, seed=seed, **run)]


@SETTINGS
@given(templates(), st.integers(0, 2**32))
def test_a_template_runs_like_the_pipeline_with_the_config_written_in(made, seed):
    template, written, config = made
    assert outputs(template << config, seed) == outputs(written << config, seed)
    assert pickle.loads(pickle.dumps(template)) == template
    assert hash(template) == hash(pickle.loads(pickle.dumps(template)))


@settings(max_examples=20, deadline=None)
@given(templates(), st.integers(0, 2**32))
def test_a_template_reading_only_the_config_runs_alike_under_prefetch(made, seed):
    template, _, config = made
    assert outputs(template << config, seed, prefetch=2) == outputs(template << config, seed)


@SETTINGS
@given(st.sampled_from([0.0, 0.3, 0.5, 1.0]), st.integers(0, 2**32))
def test_at_a_config_key_draws_the_same_coin_as_at_its_value(x, seed):
    p = Pipeline().noise(1.0).shift(R("uniform"))
    assert outputs((p @ C("q")) << {"q": x}, seed) == outputs((p @ x) << {"q": x}, seed)


@SETTINGS
@given(plain_pipelines(), st.integers(0, 4), st.integers(0, 2**32))
def test_times_a_config_key_runs_the_steps_that_many_times(p, n, seed):
    counted = p + Pipeline().update_variable("n", V("n") + 1)
    declared = Pipeline().init_variable("n", 0)
    by_config = (declared + counted * C("times")) << {"times": n} << DS
    by_number = (declared + counted * n) << DS
    assert outputs(by_config, seed) == outputs(by_number, seed)
    assert by_config.run(5).get_variable("n") == by_number.run(5).get_variable("n") == 2 * n
