"""in_parallel and in_background (independent Spark actions from several driver threads) and state made once under them."""

import threading

import pytest

from cf.base import in_background, in_parallel
from coldstart.popularity import PopularityRecommender


def test_results_come_back_by_name_from_real_spark_jobs(spark):
    tasks = {f"range {n}": (lambda n=n: spark.range(n).groupBy().sum("id").first()[0]) for n in (10, 100, 1000, 10_000, 100_000)}
    assert in_parallel(tasks, workers=3) == {f"range {n}": n * (n - 1) // 2 for n in (10, 100, 1000, 10_000, 100_000)}


def test_a_failing_action_raises_in_the_caller(spark):
    def fails():
        return spark.sql("SELECT no_such_column FROM range(3)").collect()

    with pytest.raises(Exception, match="no_such_column"):
        in_parallel({"fine": lambda: spark.range(5).count(), "fails": fails})


def test_threads_inherit_the_callers_job_group(spark):
    context = spark.sparkContext
    context.setJobGroup("segrec-parallel-test", "job group set by the caller")
    try:
        groups = in_parallel({name: (lambda: context.getLocalProperty("spark.jobGroup.id")) for name in "abc"})
    finally:
        context.setLocalProperty("spark.jobGroup.id", None)
    assert groups == {"a": "segrec-parallel-test", "b": "segrec-parallel-test", "c": "segrec-parallel-test"}


def test_state_made_on_first_use_is_made_once_when_threads_race(spark):
    model = PopularityRecommender()
    model._broadcast = None
    made = []
    start = threading.Barrier(8)

    def make():
        made.append(threading.get_ident())
        return "made"

    def use():
        start.wait()
        return model._made_once("_broadcast", make)

    assert set(in_parallel({i: use for i in range(8)}, workers=8).values()) == {"made"}
    assert len(made) == 1


def test_work_in_the_background_runs_beside_the_caller_with_its_job_group_and_raises_on_result(spark):
    context = spark.sparkContext
    started, go_on = threading.Event(), threading.Event()

    def waits_for_the_caller():
        started.set()
        go_on.wait(30)
        return context.getLocalProperty("spark.jobGroup.id"), spark.range(1000).groupBy().sum("id").first()[0]

    context.setJobGroup("segrec-background-test", "job group set by the caller")
    try:
        background = in_background(waits_for_the_caller)
    finally:
        context.setLocalProperty("spark.jobGroup.id", None)
    assert started.wait(30) and not background.done()
    assert spark.range(10).count() == 10  # the caller's own job runs meanwhile
    go_on.set()
    assert background.result(60) == ("segrec-background-test", 499500)
    failing = in_background(lambda: spark.sql("SELECT no_such_column FROM range(3)").collect())
    with pytest.raises(Exception, match="no_such_column"):
        failing.result(60)
