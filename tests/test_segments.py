import datetime as dt
import re

import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import adjusted_rand_score

from segmentation import backtest
from segmentation.clv import CLVConfig
from segmentation.customers import segment_customers
from segmentation.rfm import SegmentationError
from segmentation.segments import SegmentConfig, ValueSegmenter, ValueSegmentModel, segment_summary

AS_OF = dt.date(2011, 12, 12)


@pytest.fixture(scope="module")
def segmented(synthetic):
    return segment_customers(synthetic.place("clean"), synthetic.place("returns"), as_of=AS_OF,
                             clv_config=CLVConfig(), segment_config=SegmentConfig())


@pytest.fixture(scope="module")
def customers(segmented):
    return segmented.customers.toPandas()


def test_planted_value_tiers_are_recovered(customers, synthetic):
    truth = synthetic.truth("customers")[["customer_id", "tier"]]
    joined = customers.merge(truth, on="customer_id", validate="one_to_one")
    ari = adjusted_rand_score(joined.tier, joined.segment)
    print(f"adjusted Rand index, planted tiers vs segments: {ari:.3f}")
    assert ari > 0.3
    # Each planted tier lands mostly in its own segment.
    for tier in ("high", "mid", "low"):
        assert joined[joined.tier == tier].segment.value_counts().idxmax() == tier


def test_labels_are_ordered_by_mean_clv(customers):
    mean_clv = customers.groupby("segment").clv.mean()
    assert mean_clv["high"] > mean_clv["mid"] > mean_clv["low"]


def test_the_customers_table_has_the_documented_columns(customers):
    assert list(customers.columns) == [
        "customer_id", "frequency", "recency", "T", "monetary_value", "orders", "total_spend", "first_purchase",
        "last_purchase", "days_since_last", "country", "p_alive", "expected_purchases", "expected_avg_spend", "clv", "segment",
    ]
    assert customers.customer_id.is_unique and customers.segment.notna().all()


def test_rerun_gives_the_same_segments(synthetic, customers):
    again = segment_customers(synthetic.place("clean"), synthetic.place("returns"), as_of=AS_OF,
                              clv_config=CLVConfig(), segment_config=SegmentConfig()).customers.toPandas()
    pd.testing.assert_series_equal(
        customers.set_index("customer_id").segment.sort_index(), again.set_index("customer_id").segment.sort_index()
    )


def test_saved_model_assigns_unseen_customers(spark, segmented, customers, tmp_path):
    segmented.model.save(str(tmp_path / "model"))
    loaded = ValueSegmentModel.load(spark, str(tmp_path / "model"))
    assert loaded.labels == segmented.model.labels
    features = segmented.customers.drop("segment")
    reassigned = loaded.transform(features).select("customer_id", "segment").toPandas()
    pd.testing.assert_frame_equal(reassigned.sort_values("customer_id").reset_index(drop=True),
                                  customers[["customer_id", "segment"]].sort_values("customer_id").reset_index(drop=True))
    big_spender = spark.createDataFrame(
        [("new-1", 2, 60.0, 80_000.0, 90_000.0), ("new-2", 400, 0.0, 15.0, 1.0)],
        "customer_id string, days_since_last int, frequency double, total_spend double, clv double",
    )
    assigned = dict(loaded.transform(big_spender).select("customer_id", "segment").collect())
    assert assigned == {"new-1": "high", "new-2": "low"}


def test_other_k_gets_ranked_value_labels(segmented):
    model = ValueSegmenter(k=4).fit(segmented.customers)
    assert sorted(model.labels.values()) == ["value_1", "value_2", "value_3", "value_4"]
    means = model.transform(segmented.customers.drop("segment")).groupBy("segment").avg("clv").toPandas().set_index("segment")
    assert list(means.sort_values("avg(clv)", ascending=False).index) == ["value_1", "value_2", "value_3", "value_4"]


def test_segment_summary_shares_add_up(segmented):
    summary = segment_summary(segmented.customers).toPandas().set_index("segment")
    assert summary.share_of_customers.sum() == pytest.approx(1.0)
    assert summary.share_of_revenue.sum() == pytest.approx(1.0)
    assert summary.loc["high", "share_of_revenue"] > summary.loc["high", "share_of_customers"]
    assert summary.loc["high", "median_clv"] > summary.loc["mid", "median_clv"] > summary.loc["low", "median_clv"]


def test_as_of_before_the_first_transaction_is_a_clear_error(synthetic):
    with pytest.raises(SegmentationError, match="as-of date 2009-01-01 is not after the first purchase"):
        segment_customers(synthetic.place("clean"), synthetic.place("returns"), as_of=dt.date(2009, 1, 1),
                          clv_config=CLVConfig(), segment_config=SegmentConfig())


def test_fewer_customers_than_segments_is_a_clear_error(spark):
    tiny = spark.createDataFrame([("a", 1, 1.0, 10.0, 5.0)], "customer_id string, days_since_last int, frequency double, total_spend double, clv double")
    with pytest.raises(SegmentationError, match="3 segments need at least 3 customers, found 1"):
        ValueSegmenter().fit(tiny)


@pytest.fixture(scope="module")
def backtest_result(synthetic):
    return backtest.run_backtest(
        synthetic.place("clean"), synthetic.place("returns"),
        calibration_end=dt.date(2011, 9, 8), holdout_end=dt.date(2011, 12, 10), models=("bgnbd", "mbgnbd"),
    )


def test_backtest_reports_every_variant_next_to_the_naive_ranker(backtest_result):
    names = [row["variant"] for row in backtest_result["variants"]]
    assert names == ["bgnbd", "bgnbd+seasonal", "mbgnbd", "mbgnbd+seasonal", "past spend"]
    bgnbd, seasonal = backtest_result["variants"][0], backtest_result["variants"][1]
    assert bgnbd["actual_purchases"] == seasonal["actual_purchases"] > 0
    # The hold-out holds the planted November-December bump: the seasonal index must close most of the gap.
    assert abs(seasonal["aggregate_error"]) < abs(bgnbd["aggregate_error"])
    assert abs(seasonal["aggregate_error"]) < 0.15
    assert bgnbd["spearman"] > 0.3 and bgnbd["top_20_capture"] > 0.2
    print(backtest.format_backtest(backtest_result))


def test_backtest_segments_order_holdout_revenue(backtest_result):
    per_customer = {label: v["holdout_revenue_per_customer"] for label, v in backtest_result["segments"]["by_segment"].items()}
    assert per_customer["high"] > 2 * per_customer["mid"] > 2 * per_customer["low"]
    assert set(backtest_result["segments"]["ratios"]) == {"high/mid", "mid/low"}


def test_backtest_segments_are_the_ones_the_segments_job_fits_on_the_calibration_period(synthetic, backtest_result):
    """The check reuses the backtest's CLV fit: the segments must be those a fit of their own gives."""
    alone = segment_customers(synthetic.place("clean"), synthetic.place("returns"), as_of=dt.date(2011, 9, 9),
                              clv_config=CLVConfig(), segment_config=SegmentConfig())
    sizes = {row["segment"]: row["count"] for row in alone.customers.groupBy("segment").count().collect()}
    assert {label: v["customers"] for label, v in backtest_result["segments"]["by_segment"].items()} == sizes
    assert backtest_result["segments"]["silhouette"] == pytest.approx(alone.model.silhouette, rel=1e-12)


def test_backtest_by_frequency_table(backtest_result):
    table = pd.DataFrame(backtest_result["by_frequency"])
    assert table.customers.sum() == backtest_result["customers"]
    assert table.actual.iloc[-1] > table.actual.iloc[0]  # frequent buyers keep buying more


def test_ranking_metrics_match_a_pandas_reference(spark):
    rows = [(str(i), float(i % 7), float((i * 37) % 11) + (i % 3 == 0) * 5.0) for i in range(200)]
    frame = spark.createDataFrame(rows, "customer_id string, score double, target double")
    ours = backtest.ranking_metrics(frame, "score", "target", 0.2)

    reference = pd.DataFrame(rows, columns=["customer_id", "score", "target"])
    assert ours["spearman"] == pytest.approx(spearmanr(reference.score, reference.target).statistic, abs=1e-12)
    top = reference.sort_values(["score", "customer_id"], ascending=[False, True]).head(40)
    assert ours["top_20_capture"] == pytest.approx(top.target.sum() / reference.target.sum())


def test_empty_holdout_is_a_clear_error(synthetic):
    with pytest.raises(SegmentationError, match="hold-out after 2011-12-12 is empty"):
        backtest.run_backtest(synthetic.place("clean"), synthetic.place("returns"),
                              calibration_end=dt.date(2011, 12, 12), holdout_end=dt.date(2011, 12, 12))


# ------------------------------------------------------------------ lifecycle states

def _customer(customer_id, *, first, last, frequency, p_alive, segment="mid", spend=100.0, as_of=dt.date(2011, 12, 10)):
    return {"customer_id": customer_id, "segment": segment, "frequency": float(frequency), "p_alive": p_alive, "total_spend": spend,
            "first_purchase": pd.Timestamp(first), "last_purchase": pd.Timestamp(last),
            "days_since_last": (as_of - dt.date.fromisoformat(last)).days}


def test_lifecycle_states_follow_the_usual_gap_and_the_chance_of_being_alive(spark):
    from segmentation.lifecycle import LifecycleConfig, lifecycle_summary, with_lifecycle

    # Repeat buyers every 33.4 days (334 days over 10 repeats): the shop's usual gap, which one-time buyers are held to.
    repeat = {"first": "2011-01-01", "last": "2011-12-01", "frequency": 10}
    rows = [
        _customer("new", first="2011-11-20", last="2011-11-20", frequency=0, p_alive=1.0),
        _customer("active", **repeat, p_alive=0.95),
        _customer("late", **{**repeat, "first": "2010-11-06", "last": "2011-10-06"}, p_alive=0.95),  # 65 days: under 2 gaps
        _customer("overdue", **{**repeat, "first": "2010-10-28", "last": "2011-09-27"}, p_alive=0.95),  # 74 days: over 2 gaps
        _customer("gone", **{**repeat, "first": "2010-08-14", "last": "2011-07-14"}, p_alive=0.95),  # 149 days: over 4 gaps
        _customer("doubtful", **repeat, p_alive=0.6),
        _customer("unlikely", **repeat, p_alive=0.4, segment="high", spend=5000.0),
        _customer("once_lately", first="2011-11-01", last="2011-11-01", frequency=0, p_alive=1.0),  # 39 days: new is 30
        _customer("once_long_ago", first="2011-06-01", last="2011-06-01", frequency=0, p_alive=1.0, segment="low"),
    ]
    customers = spark.createDataFrame(pd.DataFrame(rows))
    found = with_lifecycle(customers, as_of=dt.date(2011, 12, 10)).toPandas().set_index("customer_id")
    assert found["lifecycle"].to_dict() == {
        "new": "new", "active": "active", "late": "active", "overdue": "at_risk", "gone": "lapsed", "doubtful": "at_risk",
        "unlikely": "lapsed", "once_lately": "active", "once_long_ago": "lapsed"}
    assert found.loc["active", "usual_gap_days"] == pytest.approx(33.4) == found.loc["once_long_ago", "usual_gap_days"]
    # Thresholds are settings: a longer "new" and a stricter chance of being alive.
    stricter = with_lifecycle(customers, as_of=dt.date(2011, 12, 10), config=LifecycleConfig(new_days=60, at_risk_p_alive=0.99))
    assert stricter.toPandas().set_index("customer_id")["lifecycle"][["once_lately", "active"]].tolist() == ["new", "at_risk"]
    summary = lifecycle_summary(with_lifecycle(customers, as_of=dt.date(2011, 12, 10))).toPandas().set_index(["lifecycle", "segment"])
    assert summary.loc[("lapsed", "high"), "revenue"] == 5000.0 and summary["customers"].sum() == len(rows)


@pytest.mark.parametrize("settings, message", [
    ({"at_risk_gaps": 4.0, "lapsed_gaps": 2.0}, "lifecycle.at_risk_gaps (4.0) must be above 0 and below lifecycle.lapsed_gaps (2.0)"),
    ({"lapsed_p_alive": 0.9}, "lifecycle.lapsed_p_alive (0.9) must be at most lifecycle.at_risk_p_alive (0.8)"),
    ({"new_days": -1}, "lifecycle.new_days must be 0 or more"),
])
def test_lifecycle_thresholds_that_contradict_each_other_are_refused(settings, message):
    from segmentation.lifecycle import LifecycleConfig

    with pytest.raises(SegmentationError, match=re.escape(message)):
        LifecycleConfig(**settings)
