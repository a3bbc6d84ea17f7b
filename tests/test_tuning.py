import dataclasses
import datetime as dt
import json

import pytest

from cf import evaluation
from cf.tuning import ALL_SEGMENTS, TuningConfig, tune, tune_tifu
from cf.interactions import RecommendationError

CUTOFF = dt.date(2011, 9, 9)
GRID = TuningConfig(budget_seconds=600, rank=(8, 4), reg_param=(0.1,), alpha=(10.0, 1.0), half_life_days=(0.0,), max_iter=(5,))


@pytest.fixture(scope="module")
def window(spark, synthetic):
    from pyspark.sql import functions as F

    clean = synthetic.place("clean")
    train, validation = evaluation.split_by_time(clean, cutoff=CUTOFF, end=dt.date(2011, 12, 10))
    warm = validation.join(train.select("customer_id").distinct(), "customer_id")
    relevant = evaluation.relevant_items(warm, train, mode="new").cache()
    tiers = synthetic.truth("customers")[["customer_id", "tier"]].rename(columns={"tier": "segment"})
    segments = spark.createDataFrame(tiers).where(F.col("customer_id").isin(list(tiers.customer_id)))
    return train, relevant, segments


def test_the_search_records_every_trial_and_keeps_only_improvements(window):
    train, relevant, segments = window
    printed = []
    result = tune(train, relevant, segments, as_of=CUTOFF, config=GRID, segment_names=[ALL_SEGMENTS, "high"], echo=printed.append)
    assert set(result) == {ALL_SEGMENTS, "high"}
    # Each trial is reported as it ends: which model, what changed, its score and the budget left.
    assert len(printed) == 6 and printed[0].startswith("    tuning all (1/2): first settings, NDCG@10 0.")
    assert printed[3].startswith("    tuning high (2/2): first settings") and all("s of the budget left" in line for line in printed)
    for tuned in result.values():
        assert tuned.trials[0].settings == GRID.start()
        # One trial per distinct setting: the start, then one change per parameter with a second value.
        assert len(tuned.trials) == len({trial.settings for trial in tuned.trials}) == 3
        assert tuned.best.ndcg == max(trial.ndcg for trial in tuned.trials) >= tuned.trials[0].ndcg
        assert 0 < tuned.best.ndcg <= 1 and tuned.customers > 0
        manifest = json.loads(json.dumps(tuned.as_dict()))
        assert manifest["chosen"] == dataclasses.asdict(tuned.best.settings) and len(manifest["trials"]) == 3


def test_a_spent_budget_still_runs_the_minimum_number_of_trials(window):
    train, relevant, segments = window
    ticks = iter(range(0, 10_000, 100))  # each reading of the clock is 100 s later: the budget is gone at once
    spent = dataclasses.replace(GRID, budget_seconds=50, min_trials=2)
    result = tune(train, relevant, segments, as_of=CUTOFF, config=spent, segment_names=["low"], clock=lambda: next(ticks))
    assert len(result["low"].trials) == 2 and result["low"].trials[0].settings == GRID.start()
    assert result["low"].as_dict()["trials_run"] == 2
    result = tune(train, relevant, segments, as_of=CUTOFF, config=dataclasses.replace(spent, min_trials=1), segment_names=["low"],
                  clock=lambda: next(ticks))
    assert [trial.settings for trial in result["low"].trials] == [GRID.start()]


def test_tifu_tuning_tries_each_setting_and_reuses_the_fit_for_a_new_alpha(spark, synthetic):
    clean = synthetic.place("clean")
    train, validation = evaluation.split_by_time(clean, cutoff=CUTOFF, end=dt.date(2011, 12, 10))
    relevant = evaluation.relevant_items(validation.join(train.select("customer_id").distinct(), "customer_id"), train).cache()
    printed = []
    result = tune_tifu(train, relevant, as_of=CUTOFF, config=GRID, budget_seconds=600, echo=printed.append)
    first, groups, alpha = result.trials
    best_groups = groups.settings.groups if groups.ndcg > first.ndcg else first.settings.groups
    assert [(t.settings.groups, t.settings.alpha) for t in result.trials] == [(3, 0.7), (7, 0.7), (best_groups, 0.9)]
    assert printed[0].startswith("    tuning tifu: first settings, NDCG@10 0.") and len(printed) == 3
    # for_you over all purchases: the customer's own history makes TIFU-KNN far better than chance
    assert result.best.ndcg == max(trial.ndcg for trial in result.trials) > 0.1
    assert json.loads(json.dumps(result.as_dict()))["trials_run"] == 3


def test_an_empty_grid_or_negative_budget_is_a_clear_error():
    with pytest.raises(RecommendationError, match="tuning.rank needs at least one value"):
        TuningConfig(rank=())
    with pytest.raises(RecommendationError, match="budget_seconds"):
        TuningConfig(budget_seconds=-1)
    with pytest.raises(RecommendationError, match="min_trials must be 1 or more"):
        TuningConfig(min_trials=0)
