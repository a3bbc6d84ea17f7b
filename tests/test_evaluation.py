import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from cf import evaluation
from cf.interactions import RecommendationError


def pandas_metrics(recommendations: pd.DataFrame, relevant: pd.DataFrame, k: int, catalogue_size: int) -> dict:
    """The textbook definitions, one customer at a time."""
    rows = []
    for customer, items in relevant.groupby("customer_id").item_id:
        wanted = set(items)
        ranked = recommendations[(recommendations.customer_id == customer) & (recommendations["rank"] <= k)].sort_values("rank")
        hits = [r for r, item in zip(ranked["rank"], ranked.item_id) if item in wanted]
        ideal = sum(1 / math.log2(i + 1) for i in range(1, min(len(wanted), k) + 1))
        rows.append({
            "precision": len(hits) / k,
            "recall": len(hits) / len(wanted),
            "ndcg": sum(1 / math.log2(r + 1) for r in hits) / ideal,
            "map": sum((i + 1) / r for i, r in enumerate(hits)) / min(len(wanted), k),
            "mrr": 1 / hits[0] if hits else 0.0,
            "hit_rate": float(bool(hits)),
        })
    evaluated = set(relevant.customer_id)
    shown = recommendations[(recommendations["rank"] <= k) & recommendations.customer_id.isin(evaluated)].item_id.nunique()
    return {**pd.DataFrame(rows).mean().to_dict(), "coverage": shown / catalogue_size, "customers": len(rows)}


def random_case(seed: int):
    rng = np.random.default_rng(seed)
    items = [f"i{j}" for j in range(40)]
    recommendations = pd.DataFrame([
        (f"c{c}", rank, item)
        for c in range(60) if c % 7 != 3  # some customers get no recommendations at all
        for rank, item in enumerate(rng.choice(items, size=15, replace=False), start=1)
    ], columns=["customer_id", "rank", "item_id"])
    relevant = pd.DataFrame([
        (f"c{c}", item) for c in range(50) for item in rng.choice(items, size=rng.integers(1, 12), replace=False)
    ], columns=["customer_id", "item_id"])
    return recommendations, relevant


@pytest.mark.parametrize("seed, k", [(1, 10), (2, 5), (3, 1)])
def test_metrics_match_the_pandas_reference(spark, seed, k):
    recommendations, relevant = random_case(seed)
    ours = evaluation.ranking_metrics(spark.createDataFrame(recommendations), spark.createDataFrame(relevant), k=k, catalogue_size=40)[0]
    reference = pandas_metrics(recommendations, relevant, k, 40)
    assert ours["customers"] == reference["customers"] == 50
    for name in evaluation.METRICS:
        assert ours[name] == pytest.approx(reference[name], abs=1e-12), name


def test_several_lists_scored_together_each_match_the_pandas_reference(spark):
    recommendations, relevant = random_case(5)
    other, _ = random_case(6)
    nothing = other.iloc[:0]
    groups = pd.DataFrame({"customer_id": [f"c{c}" for c in range(50)], "segment": ["high" if c < 20 else "low" for c in range(50)]})
    lists = {"first": recommendations, "second": other, "empty": nothing}
    rows = evaluation.compare_lists({name: spark.createDataFrame(frame, "customer_id string, rank long, item_id string")
                                     for name, frame in lists.items()},
                                    spark.createDataFrame(relevant), k=10, catalogue_size=40, by=spark.createDataFrame(groups))
    # In the order of the lists, each list's overall row before its groups.
    assert [(row["source"], row["segment"]) for row in rows] == [(name, segment) for name in lists for segment in (None, "high", "low")]
    for row in rows:
        customers = groups.customer_id if row["segment"] is None else groups.customer_id[groups.segment == row["segment"]]
        frame = lists[row["source"]]
        reference = pandas_metrics(frame[frame.customer_id.isin(customers)], relevant[relevant.customer_id.isin(customers)], 10, 40)
        assert row["customers"] == reference["customers"]
        for name in evaluation.METRICS:
            assert row[name] == pytest.approx(reference[name], abs=1e-12), (row["source"], row["segment"], name)


def test_paired_differences_and_bootstrap_intervals_match_plain_statistics(spark):
    recommendations, relevant = random_case(5)
    other, _ = random_case(6)
    groups = pd.DataFrame({"customer_id": [f"c{c}" for c in range(50)], "segment": ["high" if c < 20 else "low" for c in range(50)]})
    lists = {"first": recommendations, "second": other}
    frames = {name: spark.createDataFrame(frame, "customer_id string, rank long, item_id string") for name, frame in lists.items()}
    score = lambda: evaluation.compare_lists(frames, spark.createDataFrame(relevant), k=10, catalogue_size=40,  # noqa: E731
                                             by=spark.createDataFrame(groups), baseline="second", intervals=True)
    rows = score()
    per_customer = {name: evaluation.per_customer_metrics(frames[name], spark.createDataFrame(relevant), k=10).toPandas()
                    .set_index("customer_id").sort_index() for name in lists}
    for row in rows:
        customers = per_customer["first"].index if row["segment"] is None else \
            per_customer["first"].index.intersection(groups.customer_id[groups.segment == row["segment"]])
        mine = per_customer[row["source"]].loc[customers]
        difference = mine["ndcg"] - per_customer["second"].loc[customers, "ndcg"]
        assert row["ndcg_vs_baseline"] == pytest.approx(difference.mean(), abs=1e-12)
        assert (row["ndcg_vs_baseline_se"] or 0.0) == pytest.approx(difference.std(ddof=1) / len(customers) ** 0.5 if difference.std() > 0 else 0.0)
        for name in evaluation.PER_CUSTOMER:
            low, high, error = row[f"{name}_low"], row[f"{name}_high"], mine[name].std(ddof=1) / len(customers) ** 0.5
            # a percentile bootstrap of a mean: around it, about as wide as the normal interval
            assert low <= row[name] <= high
            assert (high - low) == pytest.approx(2 * 1.96 * error, rel=0.35) if error > 0 else high == low
    # The same draws on every run; the sums of a draw may add up in another order (the last bit of a float).
    assert score() == [{name: pytest.approx(value, rel=1e-12) if isinstance(value, float) else value for name, value in row.items()}
                       for row in rows]
    with pytest.raises(RecommendationError, match="baseline 'third' is not one of the lists"):
        evaluation.compare_lists(frames, spark.createDataFrame(relevant), k=10, catalogue_size=40, baseline="third")


def test_a_perfect_list_scores_one(spark):
    relevant = pd.DataFrame({"customer_id": ["a", "a", "b"], "item_id": ["x", "y", "z"]})
    perfect = pd.DataFrame({"customer_id": ["a", "a", "b"], "rank": [1, 2, 1], "item_id": ["y", "x", "z"]})
    scores = evaluation.ranking_metrics(spark.createDataFrame(perfect), spark.createDataFrame(relevant), k=10, catalogue_size=3)[0]
    assert scores["ndcg"] == scores["map"] == scores["mrr"] == scores["recall"] == scores["hit_rate"] == 1.0
    assert scores["precision"] == pytest.approx(1.5 / 10)


def test_metrics_per_group(spark):
    recommendations, relevant = random_case(4)
    groups = pd.DataFrame({"customer_id": [f"c{c}" for c in range(50)], "segment": ["high" if c < 20 else "low" for c in range(50)]})
    rows = evaluation.ranking_metrics(spark.createDataFrame(recommendations), spark.createDataFrame(relevant), k=10,
                                      catalogue_size=40, by=spark.createDataFrame(groups))
    by_segment = {row["segment"]: row for row in rows}
    for segment, customers in groups.groupby("segment").customer_id:
        reference = pandas_metrics(recommendations[recommendations.customer_id.isin(customers)],
                                   relevant[relevant.customer_id.isin(customers)], 10, 40)
        assert by_segment[segment]["customers"] == reference["customers"]
        assert by_segment[segment]["ndcg"] == pytest.approx(reference["ndcg"], abs=1e-12)
        assert by_segment[segment]["coverage"] == pytest.approx(reference["coverage"], abs=1e-12)


def test_new_items_mode_drops_what_was_bought_before(spark):
    def frame(rows):
        return spark.createDataFrame(pd.DataFrame(rows, columns=["customer_id", "item_id"]))

    train, test = frame([("a", "x"), ("b", "y")]), frame([("a", "x"), ("a", "z"), ("b", "x")])
    assert sorted(map(tuple, evaluation.relevant_items(test, train, mode="new").collect())) == [("a", "z"), ("b", "x")]
    assert evaluation.relevant_items(test, train, mode="all").count() == 3


def test_split_leaves_nothing_of_the_test_window_in_training(spark, synthetic):
    from pyspark.sql import functions as F

    train, test = evaluation.split_by_time(synthetic.place("clean"), cutoff=dt.date(2011, 9, 9), end=dt.date(2011, 12, 10))
    assert train.agg(F.max("timestamp")).first()[0] < dt.datetime(2011, 9, 9)
    assert test.agg(F.min("timestamp")).first()[0] >= dt.datetime(2011, 9, 9)
    assert train.count() + test.count() == synthetic.place("clean").where("timestamp < '2011-12-10'").count()


def test_bad_arguments_are_clear_errors(spark):
    frame = spark.createDataFrame(pd.DataFrame({"customer_id": ["a"], "item_id": ["x"]}))
    with pytest.raises(RecommendationError, match="recommendations lack column"):
        evaluation.ranking_metrics(frame, frame, k=10, catalogue_size=1)
    with pytest.raises(RecommendationError, match="k must be at least 1"):
        evaluation.per_customer_metrics(frame, frame, k=0)
    with pytest.raises(RecommendationError, match="relevance mode must be one of all, new"):
        evaluation.relevant_items(frame, frame, mode="old")


def test_validation_samples_whole_customers_beyond_its_limit_and_keeps_everyone_below(synthetic):
    from routing.validation import customer_sample

    purchases, returns = synthetic.place("clean"), synthetic.place("returns")
    everyone = purchases.select("customer_id").distinct().count()
    assert customer_sample(purchases, returns, everyone)[2] == 1.0

    sampled, sampled_returns, share = customer_sample(purchases, returns, everyone // 4)
    kept = sampled.select("customer_id").distinct()
    assert 0.18 < kept.count() / everyone < 0.32
    assert share == pytest.approx(0.25, rel=0.01)
    # Whole customers: every purchase and return of a kept customer, nothing of the others.
    assert sampled.count() == purchases.join(kept, "customer_id").count()
    buyers = purchases.select("customer_id").distinct()
    assert sampled_returns.join(buyers, "customer_id").join(kept, "customer_id", "left_anti").count() == 0
    assert sampled_returns.join(buyers, "customer_id").count() == returns.join(kept, "customer_id").count()
    # The same customers every time.
    again = customer_sample(purchases, returns, everyone // 4)[0].select("customer_id").distinct()
    assert again.exceptAll(kept).count() == 0
