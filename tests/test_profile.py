"""Profiles: every step's calls and times, where it ran, kept out of the pipeline's value."""

from __future__ import annotations

import pickle
import re
import sys
import time
from typing import Any

import numpy as np
import pytest

from fpipe import Batch, Dataset, FpipeError, Pipeline, ProcessExecutor, action
from fpipe.executors import Executor, Session, Task, work
from fpipe.profile import NOT_MEASURED, Profile, StepTiming

N, BATCH = 24, 4  # 6 batches an epoch


class Prof(Batch):
    components = ("x",)

    @action
    def double(self):
        return self.replace(x=self.x * 2)

    @action
    def nap(self, seconds):
        time.sleep(seconds)
        return self

    @action(effects=True)
    def record(self):
        self.pipeline.update_variable("seen", len(self), mode="a")
        return self

    @action(effects=True)
    def hit(self):
        self.pipeline.update_variable("hits", 1, mode="a")
        return self


def dataset() -> Dataset:
    return Dataset(N, Prof, preloaded=(np.arange(N, dtype=float),))


def pipeline(*middle: Pipeline) -> Pipeline:
    p = Pipeline().init_variable("seen", []).init_variable("hits", []).double()
    for m in middle:
        p = p + m
    return (p + Pipeline().record()) << dataset()


def by_path(profile: Profile) -> dict[str, StepTiming]:
    return {s.path: s for s in profile.steps}


def test_a_profile_counts_every_call_of_every_step_nested_ones_by_their_path():
    p = pipeline(Pipeline().double().hit() @ 0.5)
    result = p.run(BATCH, n_epochs=2, seed=5, profile=True)
    steps = by_path(result.profile)
    assert list(steps) == ["2", "3", "3.0", "3.1", "4"]
    hits = len(result.get_variable("hits"))
    assert 0 < hits < 12
    assert [steps[k].calls for k in steps] == [12, 12, hits, hits, 12]
    assert steps["2"].label == "double()" and steps["3.1"].label == "hit()"
    assert steps["3"].label.endswith("@ 0.5") and steps["3.0"].depth == 1
    assert result.profile.batches == 12
    assert all(s.where == "driver" for s in steps.values())


def test_times_are_measured_per_call_with_percentiles_and_the_share_of_the_wall_time():
    result = pipeline(Pipeline().nap(0.01)).run(BATCH, profile=True)
    profile = result.profile
    nap = profile.step("nap")
    assert nap.path == "3" and nap.calls == 6
    assert nap.total >= 6 * 0.01 and nap.p50 >= 0.01  # sleep sleeps at least that long
    assert nap.mean == pytest.approx(nap.total / 6)
    assert nap.p50 <= nap.p95 <= nap.total
    assert profile.wall >= nap.total
    assert nap.share == pytest.approx(nap.total / profile.wall)
    assert 0.5 < nap.share <= 1
    assert profile.slowest() is nap
    assert 0.5 < profile.driver_share <= 1


def test_steps_on_prefetch_threads_are_timed_there_and_driver_steps_on_the_driver():
    profile = (
        pipeline(Pipeline().nap(0.001)).run(BATCH, n_epochs=2, prefetch=2, profile=True).profile
    )
    steps = by_path(profile)
    assert [(k, s.where, s.calls) for k, s in steps.items()] == [
        ("2", "threads", 12),
        ("3", "threads", 12),
        ("4", "driver", 12),
    ]
    assert steps["3"].total >= 12 * 0.001


def test_worker_processes_send_their_timings_back_with_each_batch():
    p = pipeline(Pipeline().nap(0.002))
    profile = p.run(BATCH, executor=ProcessExecutor(1), profile=True).profile
    steps = by_path(profile)
    assert [(k, s.where, s.calls) for k, s in steps.items()] == [
        ("2", "processes", 6),
        ("3", "processes", 6),
        ("4", "driver", 6),
    ]
    assert steps["3"].total >= 6 * 0.002


@pytest.mark.dask
def test_dask_workers_send_their_timings_back_with_each_batch(dask_client):
    profile = pipeline().run(BATCH, executor=dask_client, profile=True).profile
    assert [(s.path, s.where, s.calls) for s in profile.steps] == [
        ("2", "dask", 6),
        ("3", "driver", 6),
    ]


class _Done:
    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self) -> Any:
        return self.value

    def cancel(self) -> bool:
        return False


class _InlineSession(Session):
    """An executor of the user's own: it runs the pure steps but reports no timings."""

    def __init__(self, job: Any) -> None:
        self.job = job

    def submit(self, task: Task) -> Any:
        return _Done(work(self.job, task))

    def close(self, wait: bool = True) -> None:
        pass


class _Inline(Executor):
    def open(self, job: Any, run: Any) -> Session:
        return _InlineSession(job)


def test_steps_on_an_executor_that_reports_no_timings_are_not_measured():
    result = pipeline().run(BATCH, executor=_Inline(), profile=True)
    double, record = result.profile.steps
    assert (double.where, double.calls, double.total, double.mean) == (NOT_MEASURED, 0, 0.0, None)
    assert (record.where, record.calls) == ("driver", 6)
    row = next(line for line in str(result.profile).splitlines() if line.startswith("2 "))
    assert "not measured" in row and "-" in row.split("not measured")[1]


def test_the_profile_prints_as_an_aligned_table():
    table = str(pipeline(Pipeline().double() @ 1.0).run(BATCH, profile=True).profile)
    head, header, *rows = table.splitlines()
    assert re.match(r"profile of 6 batches in [\d.]+ [mu]?s \(wall time\), [\d.]+% of it", head)
    assert header.split() == [
        "path", "step", "where", "calls", "total", "mean", "p50", "p95", "share"
    ]  # fmt: skip
    assert [r.split()[0] for r in rows] == ["2", "3", "3.0", "4"]
    assert "  double()" in rows[2]  # a nested step is indented under its parent
    for column in ("where", "calls", "share"):
        # every row's cell ends (right-aligned) or starts (left) where the header's does
        at = header.index(column)
        assert all(r[at - 1] == " " for r in rows), table
    assert repr(pipeline().run(BATCH, profile=True).profile).startswith("profile of 6 batches")


def test_the_profile_converts_to_a_pandas_dataframe():
    pytest.importorskip("pandas")
    profile = pipeline().run(BATCH, profile=True).profile
    frame = profile.to_pandas()
    assert list(frame.columns) == [
        "path", "label", "where", "calls", "total", "mean", "p50", "p95", "share"
    ]  # fmt: skip
    assert frame["path"].tolist() == ["2", "3"] and frame["calls"].tolist() == [6, 6]
    assert frame.equals(profile.to_dataframe())


def test_without_pandas_to_pandas_says_what_to_install(monkeypatch):
    profile = pipeline().run(BATCH, profile=True).profile
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if not installed
    with pytest.raises(FpipeError, match=r"needs pandas, which is not installed: `pip install"):
        profile.to_pandas()


def test_a_profile_is_no_part_of_the_value_and_is_lost_by_derived_or_pickled_pipelines():
    p = pipeline()
    profiled = p.run(BATCH, seed=1, profile=True)
    plain = p.run(BATCH, seed=1)
    assert profiled == plain and hash(profiled) == hash(plain)
    assert pickle.loads(pickle.dumps(profiled)) == plain
    for derived in (pickle.loads(pickle.dumps(profiled)), profiled.double(), profiled << {}):
        with pytest.raises(FpipeError, match=r"this pipeline has no profile: only the pipeline"):
            derived.profile
    with pytest.raises(FpipeError, match=r"run\(\.\.\., profile=True\)"):
        plain.profile


def test_profile_and_bar_are_not_stored_by_a_lazy_run():
    with pytest.raises(TypeError, match=r"pass profile= to the later run\(\)"):
        pipeline().run(BATCH, lazy=True, profile=True)
    with pytest.raises(TypeError, match=r"pass bar= and profile= to the later run\(\)"):
        pipeline().run(BATCH, lazy=True, bar=True, profile=True)
    with pytest.raises(TypeError, match=r"run\(profile=\.\.\.\) takes True or False, got 'yes'"):
        pipeline().run(BATCH, profile="yes")


def test_the_wall_time_of_gen_batch_counts_the_loop_over_its_batches():
    it = pipeline().iterate(BATCH, profile=True)
    for _ in it:
        time.sleep(0.01)
    assert it.profile.wall >= 6 * 0.01 > 10 * sum(s.total for s in it.profile.steps)


def test_an_iterator_reports_its_profile_so_far():
    it = pipeline().iterate(BATCH, profile=True)
    next(it), next(it)
    assert [s.calls for s in it.profile.steps] == [2, 2] and it.profile.batches == 2
    it.close()
    with pytest.raises(FpipeError, match=r"this run is not profiled: iterate with iterate"):
        pipeline().iterate(BATCH).profile


def test_a_run_without_profile_or_bar_runs_no_watching_code():
    # the batches come straight from the engine's generator, the steps unwrapped
    plain = pipeline().iterate(BATCH)
    assert plain._gen.__name__ == "generate" and plain._profiler is None
    watched = pipeline().iterate(BATCH, profile=True)
    assert watched._gen.__name__ == "stream"
    assert plain._program.stages[0][0].fn is not watched._program.stages[0][0].fn
    assert watched._program.stages[0][0].fn.__name__ == "timed"


def test_a_step_is_found_by_its_path_or_its_action_name():
    profile = pipeline(Pipeline().double()).run(BATCH, profile=True).profile
    assert profile.step("4").label == "record()" and profile.step("record").path == "4"
    with pytest.raises(KeyError, match=r"several steps are called 'double'.*profile.step\('1'\)"):
        profile.step("double")
    with pytest.raises(KeyError, match=r"no step is called 'nap'"):
        profile.step("nap")


def test_an_error_in_a_step_still_leaves_the_steps_timings_correct():
    class Failing(Prof):
        @action
        def fail_on_third(self):
            if self.x[0] == 16:
                raise ValueError("boom")
            return self

    ds = Dataset(N, Failing, preloaded=(np.arange(N, dtype=float),))
    it = ds.p.double().fail_on_third().iterate(BATCH, profile=True)
    with pytest.raises(Exception, match="boom"):
        list(it)
    assert [s.calls for s in it.profile.steps] == [3, 3]


def test_durations_read_in_the_unit_their_rounded_value_fits():
    from fpipe.profile import _duration

    cases = {
        0.9996: "1 s",  # not "1e+03 ms"
        0.0009996: "1 ms",
        9.9996e-7: "1 us",
        0.0123: "12.3 ms",
        0.000123456: "123 us",
        999.7: "1000 s",
        1234.5: "1234 s",
        5e-7: "0.5 us",
        None: "-",
    }
    assert {s: _duration(s) for s in cases} == cases
